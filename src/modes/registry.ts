/**
 * Every mode, by the name `--proxy-mode` and `mode:` give it. A record over the names, so
 * a mode name without a mode does not compile.
 */
import type { ProxyModeName } from '../config/options.js';
import { iptablesMode } from './iptables/mode.js';
import { ipvsMode } from './ipvs/mode.js';
import { nftablesMode } from './nftables/mode.js';
import type { ProxyMode } from './mode.js';
import { userspaceMode } from './userspace/mode.js';

const MODES: Readonly<Record<ProxyModeName, ProxyMode>> = { iptables: iptablesMode, nftables: nftablesMode, ipvs: ipvsMode, userspace: userspaceMode };

export function modeByName(name: ProxyModeName): ProxyMode {
  return MODES[name];
}

/** Every mode: `--cleanup` removes what any of them left, so a node can switch modes. */
export function allModes(): readonly ProxyMode[] {
  return Object.values(MODES);
}

/** The modes whose leftovers `mode` removes when it starts: every other one but those sharing its rules. */
export function otherModes(mode: ProxyMode): ProxyMode[] {
  return allModes().filter((m) => m.name !== mode.name && !(mode.sharesRulesWith ?? []).includes(m.name));
}
