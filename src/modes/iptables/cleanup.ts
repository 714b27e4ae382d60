/**
 * What --cleanup writes: from a table as iptables-save prints it, the restore that
 * removes every chain kube-proxy owns there and every rule elsewhere that jumps or goes
 * to one, whatever its other arguments. Everything else (kubelet's chains, a user's
 * chains and rules) is left as it is. Pure.
 */
import { isOwnedChain, type CleanupTable } from './chains.js';
import { tokenize } from './rule.js';

const JUMP = new Set(['-j', '--jump', '-g', '--goto']);

/** The chain a saved rule jumps or goes to, or null. */
function targetOf(args: string[]): string | null {
  const i = args.findIndex((a) => JUMP.has(a));
  return i < 0 ? null : (args[i + 1] ?? null);
}

/** Restore input that cleans `table`, or null when nothing of ours is in it. */
export function cleanupRestore(table: CleanupTable, saved: string, isOwned: (name: string) => boolean = (name) => isOwnedChain(table, name)): string | null {
  const lines = saved.split('\n');
  const owned: string[] = [];
  for (const line of lines) {
    if (!line.startsWith(':')) continue;
    const name = line.slice(1, line.indexOf(' '));
    if (isOwned(name)) owned.push(name);
  }
  const out = [`*${table}`];
  // Jumps into our chains first: a chain can only be deleted once nothing refers to it.
  for (const line of lines) {
    if (!line.startsWith('-A ')) continue;
    const [, chain, ...args] = tokenize(line);
    const target = targetOf(args);
    if (chain !== undefined && !isOwned(chain) && target !== null && isOwned(target)) out.push(`-D ${line.slice(3)}`);
  }
  if (owned.length === 0 && out.length === 1) return null;
  for (const c of owned) out.push(`:${c} - [0:0]`);
  for (const c of owned) out.push(`-X ${c}`);
  out.push('COMMIT', '');
  return out.join('\n');
}
