/** `iptables-restore --test` of rendered text inside a namespace: what the kernel tools accept. */
import type { IPFamily } from '../../src/model/types.js';
import type { Netns } from './netns.js';

export function restoreTest(ns: Netns, family: IPFamily, text: string): string | null {
  const bin = family === 'IPv4' ? 'iptables-restore' : 'ip6tables-restore';
  const r = ns.exec(bin, ['--test', '-w'], text);
  return r.status === 0 ? null : `${bin} --test failed (${r.status}): ${r.stderr.trim()}`;
}
