/**
 * The modes this build implements, by the name `--proxy-mode` and `mode:` give them.
 * Upstream's other mode names are valid configuration that this version refuses with a
 * clear error rather than silently programming something else.
 */
import type { ProxyModeName } from '../config/options.js';
import { iptablesMode } from './iptables/mode.js';
import { nftablesMode } from './nftables/mode.js';
import type { ProxyMode } from './mode.js';

const MODES: readonly ProxyMode[] = [iptablesMode, nftablesMode];

export function modeByName(name: ProxyModeName): ProxyMode | null {
  return MODES.find((m) => m.name === name) ?? null;
}

export function implementedModes(): ProxyModeName[] {
  return MODES.map((m) => m.name);
}

/** Every implemented mode: `--cleanup` removes what any of them left, so a node can switch modes. */
export function allModes(): readonly ProxyMode[] {
  return MODES;
}
