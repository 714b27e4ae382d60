/**
 * One family's userspace mode as `--dry-run` and /debug/rules print it: the listeners
 * the agent would open (port, what each captures, where it sends), the service ports it
 * refuses, then the capture rules as iptables-restore input. Everything but the restore
 * input is a comment, so the text stays valid restore input.
 */
import { describeSet, endpointState, table } from '../../model/explain.js';
import type { FamilyModel, NodeContext } from '../../model/types.js';
import { FAMILY_BANNER, jumpCommands } from '../iptables/dryrun.js';
import { restoreText } from '../iptables/ruleset.js';
import { connectionAge, describeAge } from './age.js';
import { renderUserspace, type Listener, type UserspaceOptions, type UserspacePlan } from './render.js';

export interface UserspaceTextOptions extends UserspaceOptions {
  scheduler: 'rr' | 'lc';
  maxConnectionAgeMs: number;
}

/** Endpoints named on a listener's line; --explain lists them all. */
const LISTED_ENDPOINTS = 8;

export const SCHEDULER_NAMES = { rr: 'round-robin', lc: 'least connections' } as const;

export const SOURCE_IP_NOTE = [
  'source IP: the agent opens its own connection to the endpoint, so the backend sees this',
  "node's address, never the client's, whatever the traffic policies. Where the backend needs",
  'the client address: --proxy-mode iptables (or nftables, ipvs) keeps it for traffic from pods',
  'and the node, and with externalTrafficPolicy: Local for outside clients too.',
];

function scheduling(l: Listener, opts: UserspaceTextOptions): string {
  const affinity = l.servicePort.sessionAffinity;
  const pick = affinity ? `ClientIP affinity ${affinity.timeoutSeconds} s, else ${SCHEDULER_NAMES[opts.scheduler]}` : SCHEDULER_NAMES[opts.scheduler];
  return l.protocol === 'TCP' ? `${pick}; ${describeAge(connectionAge(l.servicePort, opts.maxConnectionAgeMs).ms)}` : `${pick}, per client session`;
}

function listenerLines(l: Listener, node: NodeContext, opts: UserspaceTextOptions, explain: boolean): string[] {
  const n = l.set.endpoints.length;
  const shown = l.set.endpoints.slice(0, LISTED_ENDPOINTS).map((e) => e.address);
  const where = n === 0 ? 'no endpoints: connections reset' : `${shown.join(', ')}${n > shown.length ? ` (+${n - shown.length} more)` : ''}`;
  const lines = [`${l.port}/${l.protocol.toLowerCase()} ${l.key}: ${l.captures.join(', ')} -> ${where}`];
  if (!explain) return lines;
  const sp = l.servicePort;
  const local = l.set === sp.local;
  const candidates = local ? sp.endpoints.filter((e) => e.isLocal) : sp.endpoints;
  lines.push(`  ${local ? 'local' : 'cluster'} set: ${describeSet(l.set, candidates, node)}`);
  lines.push(`  scheduler: ${scheduling(l, opts)}`);
  const ageProblem = connectionAge(sp, opts.maxConnectionAgeMs).problem;
  if (ageProblem) lines.push(`  ${ageProblem}`);
  if (n > 0) lines.push(...table([['endpoint', 'node', 'state'], ...l.set.endpoints.map((e) => [e.address, e.nodeName ?? '-', endpointState(e)])]).map((r) => `    ${r}`));
  return lines;
}

/** `plan`: what the agent runs (its listeners' ports); a dry run renders its own. */
export function userspaceRulesText(model: FamilyModel, node: NodeContext, opts: UserspaceTextOptions, explain: boolean, plan: UserspacePlan = renderUserspace(model, node, opts)): string {
  const listeners = plan.listeners.flatMap((l) => listenerLines(l, node, opts, explain));
  return [
    FAMILY_BANNER[model.family],
    `# node ${node.nodeName}, userspace mode: ${plan.listeners.length} listener${plan.listeners.length === 1 ? '' : 's'}`,
    `# listeners (the agent proxies from these local ports; ${SCHEDULER_NAMES[opts.scheduler]}):`,
    ...(listeners.length > 0 ? listeners : ['none']).map((l) => `#   ${l}`),
    ...(plan.refused.length > 0 ? ['# not proxied:', ...plan.refused.map((r) => `#   ${r.servicePort}: ${r.reason}`)] : []),
    ...(explain ? SOURCE_IP_NOTE.map((l) => `# ${l}`) : []),
    '# chains and jump rules kube-proxy-ts ensures outside the restore:',
    ...jumpCommands(plan.ruleset).map((c) => `#   ${c}`),
    restoreText(plan.ruleset),
  ].join('\n');
}
