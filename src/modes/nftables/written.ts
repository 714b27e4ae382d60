/**
 * What the nftables syncer keeps of a table it wrote, and reads back: the services' ports
 * by Service, the destinations they claim, the endpoint-count groups, the table's fixed
 * part, and the rule counts `nft list chain` shows. Pure.
 */
import type { ServicePort } from '../../model/types.js';
import { groupCount } from './names.js';
import { chainSpec, elementText, ruleText, setSpec, TABLE_NAME, tableRef, type NftFamily, type NftTable } from './ruleset.js';

/** Endpoint counts whose groups the table declares (every kind and protocol has every count). */
export type Groups = readonly number[];

/** Rule lines of each chain in `nft list chain` output (several chains listed one after another). */
export function listedRuleCounts(listing: string): Map<string, number> {
  const counts = new Map<string, number>();
  let chain: string | null = null;
  for (const raw of listing.split('\n')) {
    const line = raw.trim();
    const m = /^chain (\S+) \{$/.exec(line);
    if (m) {
      chain = m[1]!;
      counts.set(chain, 0);
    } else if (chain !== null && line === '}') chain = null;
    else if (chain !== null && line !== '' && !line.startsWith('type ') && !line.startsWith('comment ')) counts.set(chain, counts.get(chain)! + 1);
  }
  return counts;
}

/** The chains, sets and maps a table holds in the kernel, by name. */
export interface TableObjects {
  chains: ReadonlySet<string>;
  sets: ReadonlyMap<string, 'set' | 'map'>;
}

/** The commands whose output `listedObjects` reads: names and declarations only (with `nft -t`), cheap at any size. */
export const LIST_OBJECTS = 'list chains\nlist sets\nlist maps\n';

/** What our names are made of (names.ts): a listed name goes into a script only if it is one of these. */
const NAME = /^[A-Za-z0-9_./-]+$/;

/**
 * Our table's chains, sets and maps in the output of LIST_OBJECTS (every table's, one
 * block per table and command); null when one has a name we would not write (someone
 * else's object, which a script must not name verbatim).
 */
export function listedObjects(listing: string, family: NftFamily): TableObjects | null {
  const chains = new Set<string>();
  const sets = new Map<string, 'set' | 'map'>();
  const header = `table ${tableRef({ family, name: TABLE_NAME })} {`;
  let ours = false;
  for (const line of listing.split('\n')) {
    if (line.startsWith('table ')) ours = line === header;
    else if (line === '}') ours = false;
    else if (ours) {
      const m = /^\t(chain|set|map) (.+) \{$/.exec(line);
      if (m && !NAME.test(m[2]!)) return null;
      if (m?.[1] === 'chain') chains.add(m[2]!);
      else if (m) sets.set(m[2]!, m[1] as 'set' | 'map');
    }
  }
  return { chains, sets };
}

/**
 * The destinations a service port claims, as the renderer's `claim` in render.ts: its
 * cluster IP, external and load-balancer IPs (address . protocol . port) and its node
 * port (protocol . port). Where two service ports claim one, the first in model order
 * gets it, in whatever set or map; only a full render can say who, so a partial sync
 * that touches such a destination becomes a full one.
 */
function claimKeys(sp: ServicePort): string[] {
  const proto = sp.protocol.toLowerCase();
  const keys = [sp.clusterIP, ...sp.externalIPs, ...sp.loadBalancerIPs].map((ip) => `${ip} . ${proto} . ${sp.port}`);
  if (sp.nodePort !== 0) keys.push(`${proto} . ${sp.nodePort}`);
  return keys;
}

export function countClaims(ports: Iterable<ServicePort>, into = new Map<string, number>(), by = 1): Map<string, number> {
  for (const sp of ports) for (const k of claimKeys(sp)) into.set(k, (into.get(k) ?? 0) + by);
  return into;
}

const serviceKey = (sp: ServicePort) => `${sp.namespace}/${sp.serviceName}`;

export function byService(ports: readonly ServicePort[]): Map<string, ServicePort[]> {
  const out = new Map<string, ServicePort[]>();
  for (const sp of ports) {
    const k = serviceKey(sp);
    const list = out.get(k);
    if (list) list.push(sp);
    else out.set(k, [sp]);
  }
  return out;
}

/** A table's fixed part as text: what must not change under a partial sync. */
export function frameOf(t: NftTable): string {
  return [
    ...t.chains.map((c) => `${c.name}${chainSpec(c)}\n${c.rules.map(ruleText).join('\n')}`),
    ...t.sets.map((x) => `${x.kind} ${x.name} ${setSpec(x)} ${x.elements.map((e) => elementText(e)).join(', ')}`),
  ].join('\n');
}

export function mergeGroups(a: Groups, b: Groups): Groups {
  return [...new Set([...a, ...b])].sort((x, y) => x - y);
}

/**
 * The endpoint counts whose groups a written table declares: kept in the next render, so
 * that a service moving to another endpoint count changes elements only, not the table's
 * maps and rules. A full sync renders without them, and drops unused groups.
 */
export function writtenGroups(t: NftTable): number[] {
  const out = new Set<number>();
  for (const s of t.sets) {
    const n = groupCount(s.name);
    if (n !== null) out.add(n);
  }
  return [...out].sort((a, b) => a - b);
}
