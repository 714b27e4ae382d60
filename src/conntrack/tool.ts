/** Deletes stale conntrack entries with the conntrack tool (argument arrays only). */
import type { ConntrackDeletion } from './stale.js';
import type { Runner } from '../exec/command.js';

export function conntrackArgs(d: ConntrackDeletion): string[] {
  const args = ['-D', '-f', d.family === 'IPv6' ? 'ipv6' : 'ipv4', '-p', 'udp'];
  if ('origDst' in d) args.push('--orig-dst', d.origDst);
  else args.push('--orig-port-dst', String(d.origPortDst));
  if (d.dnatTo !== null) args.push('--dst-nat', d.dnatTo);
  return args;
}

/** Runs the deletions; returns the ones that failed, with why. "0 flow entries" is success. */
export async function deleteFlows(run: Runner, deletions: ConntrackDeletion[]): Promise<string[]> {
  const failures: string[] = [];
  for (const d of deletions) {
    const args = conntrackArgs(d);
    const r = await run('conntrack', args).catch((err: Error) => ({ status: -1, stdout: '', stderr: err.message }));
    if (r.status !== 0 && !/0 flow entries/.test(r.stderr)) failures.push(`conntrack ${args.join(' ')}: ${r.stderr.trim()}`);
  }
  return failures;
}
