/**
 * Property tests over random clusters given as raw API objects, mixed with hostile values.
 *
 * Every generated object is built clean (valid by construction) and then, sometimes,
 * broken by exactly one fault; the generator therefore knows which objects must come back
 * as problems. Hostile values that the API allows (label and annotation values, unknown
 * fields, Hostname addresses, FQDN slices) are sprinkled over clean objects too, and must
 * neither invalidate them nor reach the output.
 *
 * Properties, per generated cluster and IP family:
 *  (a) restoreText passes iptables-restore --test / ip6tables-restore --test, in one
 *      namespace created for this file. On the nf_tables backend every COMMIT of a --test
 *      run still costs the kernel ~10 ms, serialised per namespace, so this is the costly
 *      part: it covers RESTORE_RUNS x RESTORE_BATCH clusters (each cluster and family a
 *      restore of its own, a batch at a time), and the pure properties run on more.
 *      `--test` there checks syntax, not chain references; (c) checks those;
 *  (b) rendering is deterministic and independent of the order of the input objects;
 *  (c) every line is `*filter`, `*nat`, `COMMIT`, `:CHAIN - [0:0]` or `-A CHAIN ...`, with
 *      chains declared in their table, jump targets declared or built in, quotes balanced,
 *      and no hostile marker anywhere;
 *  (d) each object that failed validation is a problem (kind, identity, non-empty reason),
 *      no valid object is, and every valid proxied Service port has its cluster IP rule.
 *
 * The nftables renderer runs over the same clusters: deterministic and order-independent,
 * every line of the writer's shapes with every chain, set and jump target declared and no
 * hostile marker, every proxied cluster IP dispatched or blocked by exactly one element,
 * and (root) every script loads with `nft -f`, each over the previous cluster's table as
 * a full sync does.
 *
 * The objects are JSON-shaped (what an API server sends); cyclic values that YAML aliases
 * can produce are covered in cli.test.ts.
 */
import fc from 'fast-check';
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildNodeModel } from '../src/model/build.js';
import type { IPFamily, Problem } from '../src/model/types.js';
import { renderIptables, type IptablesOptions } from '../src/modes/iptables/render.js';
import { restoreText } from '../src/modes/iptables/ruleset.js';
import { renderNftables } from '../src/modes/nftables/render.js';
import { MAX_COMMENT, scriptText } from '../src/modes/nftables/ruleset.js';
import { restoreTest } from './support/iptables-check.js';
import { Netns } from './support/netns.js';
import { privilegedTestsCanRun } from './support/privileges.js';

// ---------------------------------------------------------------------------------------
// Hostile values
// ---------------------------------------------------------------------------------------

/** Appears in every hostile value; must never reach the output. */
const MARK = 'X_PWNED_X';

/**
 * Every entry holds a character (or length) that no name grammar and no label-value
 * grammar admits, so an object carrying one in a validated field is invalid for sure.
 */
const HOSTILE_STRINGS: string[] = [
  `a"b ${MARK}`,
  `x -j ACCEPT ${MARK}`,
  `\n-A INPUT -j ACCEPT -m comment --comment ${MARK}\n`,
  `COMMIT\n*filter\n:${MARK} - [0:0]\n-A ${MARK} -j ACCEPT\nCOMMIT`,
  `svc ${MARK}`,
  `"${MARK}"`,
  `${MARK}\u0000`,
  `ünïcödé-${MARK}`,
  `\u{1F4A5}-${MARK}`,
  'a'.repeat(300) + MARK,
  `'; ${MARK}`,
  `$(${MARK})`,
  `${MARK}\r\n`,
  `\t${MARK}`,
  `ns1/svc1:p80 ${MARK}`,
  `-${MARK}-`,
  `${MARK}\u202e`,
];

const HOSTILE_IPS: unknown[] = [
  `1.2.3.4\n-A INPUT -j ACCEPT ${MARK}`,
  '256.1.1.1',
  '::ffff:1.2.3.4',
  '1.2.3',
  '1.2.3.4.5',
  'fe80::1%eth0',
  '10.0.0.1/24',
  `1.2.3.4 ${MARK}`,
  '0x7f.0.0.1',
  '1:2:3:4:5:6:7:8:9',
  '::g',
  ' ',
  'localhost',
  '-1.2.3.4',
  '1.2.3.4 -j ACCEPT',
  'fd00:::1',
  '1111.1.1.1',
  '1.2.3.4\u0000',
  123,
  1.5,
  true,
  { ip: '1.2.3.4' },
  ['1.2.3.4'],
];
const HOSTILE_PORTS: unknown[] = [0, -1, 65536, 70000, '80', 1.5, true, '0x50', 1e10, null];
const HOSTILE_SLICE_PORTS: unknown[] = [0, -1, 65536, 70000, '80', 1.5, true, '0x50'];
const HOSTILE_NODE_PORTS: unknown[] = [-1, 65536, 70000, '30000', 1.5, true];
const HOSTILE_PROTOCOLS: unknown[] = ['tcp', 'ICMP', 'HTTP', '', 6, ' TCP', `TCP\n-j ACCEPT ${MARK}`, 'SCTP ', {}];
const HOSTILE_CIDRS: unknown[] = ['10.0.0.0/33', '1.2.3.4', 'fd00::/129', `10.0.0.0/8\n-j ACCEPT ${MARK}`, 5, '10.0.0.0/-1', '10.0.0.0/8/8', '/8', 'fd00::/1x', '256.0.0.0/8'];
const HOSTILE_TIMEOUTS: unknown[] = [0, 86401, 1.5, '100', -5, true];
const HOSTILE_POLICIES: unknown[] = ['Lokal', 'local', 'cluster', 5, ''];
const HOSTILE_BOOLS: unknown[] = ['true', 1, 'yes', 0, {}];
const HOSTILE_NON_STRINGS: unknown[] = [5, true, {}, [], 1.5];
const HOSTILE_NON_MAPPINGS: unknown[] = [MARK, 42, null, [], true];
const HOSTILE_TYPES: unknown[] = ['Foo', 'clusterip', 5, `NodePort ${MARK}`, ''];
const HOSTILE_ADDRESS_TYPES: unknown[] = ['IPv5', 'ipv4', 'fqdn', 4, undefined, ''];

const pick = <T>(pool: readonly T[], n: number): T => pool[n % pool.length]!;

const hostileStringArb = fc
  .tuple(fc.string({ unit: 'binary', maxLength: 10 }), fc.constantFrom(...HOSTILE_STRINGS), fc.string({ unit: 'grapheme', maxLength: 6 }))
  .map(([a, b, c]) => a + b + c);

/** Strings the API accepts where they are not validated (label and annotation values). */
const freeStringArb = fc.oneof(hostileStringArb, fc.constantFrom('', 'ok', MARK));

// ---------------------------------------------------------------------------------------
// Clean values, with the canonical text the renderer must print
// ---------------------------------------------------------------------------------------

interface GenIP {
  raw: string;
  canon: string;
  family: IPFamily;
}

/** IPv4 `a.b.c.d`, octets sometimes written with leading zeros (decimal, never octal). */
function v4Arb(a: number, b: number | [number, number], c: [number, number] = [0, 255]): fc.Arbitrary<GenIP> {
  const bArb = typeof b === 'number' ? fc.constant(b) : fc.integer({ min: b[0], max: b[1] });
  return fc
    .tuple(bArb, fc.integer({ min: c[0], max: c[1] }), fc.integer({ min: 1, max: 254 }), fc.integer({ min: 0, max: 15 }))
    .map(([bb, cc, d, pad]) => {
      const octets = [a, bb, cc, d];
      const raw = octets.map((o, i) => ((pad >> i) & 1 ? String(o).padStart(3, '0') : String(o))).join('.');
      return { raw, canon: octets.join('.'), family: 'IPv4' as const };
    });
}

/** IPv6 `P1:P2::x` (P1, P2 non-zero groups), written compressed, expanded, padded or uppercase. */
function v6Arb(p1: string, p2: string, max = 0xffff): fc.Arbitrary<GenIP> {
  return fc.tuple(fc.integer({ min: 1, max }), fc.integer({ min: 0, max: 4 })).map(([x, variant]) => {
    const h = x.toString(16);
    const canon = `${p1}:${p2}::${h}`;
    const forms = [
      canon,
      `${p1}:${p2}:0:0:0:0:0:${h}`,
      `${p1.padStart(4, '0')}:${p2.padStart(4, '0')}:0000:0000:0000:0000:0000:${h.padStart(4, '0')}`,
      canon.toUpperCase(),
      `${p1}:${p2}:0:0:0::${h}`,
    ];
    return { raw: forms[variant]!, canon, family: 'IPv6' as const };
  });
}

const anyFamily = (v4: fc.Arbitrary<GenIP>, v6: fc.Arbitrary<GenIP>) => fc.oneof(v4, v6);

const cidrArb: fc.Arbitrary<string> = fc.oneof(
  fc.tuple(v4Arb(10, [0, 255]), fc.integer({ min: 0, max: 32 })).map(([ip, p]) => `${ip.raw}/${p}`),
  fc.tuple(v6Arb('2001', 'db8'), fc.integer({ min: 0, max: 128 })).map(([ip, p]) => `${ip.raw}/${p}`),
);

const PORT_NAMES = [undefined, '', 'http', 'dns', 'p80', 'metrics-0', 'p' + 'x'.repeat(61) + '9'];
const NAMESPACES = [undefined, 'default', 'ns1', 'kube-system', 'n' + 'a'.repeat(61) + '0'];
const NODE_NAMES = ['node-0', 'node-1', 'node-2', 'node-3'];
const ZONES = ['zone-a', 'zone-b', 'zone-c'];
const ZONE_LABEL = 'topology.kubernetes.io/zone';
const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
const SOURCE_RANGES_ANNOTATION = 'service.beta.kubernetes.io/load-balancer-source-ranges';

const faultArb = fc.record({ which: fc.nat(), value: fc.nat(), target: fc.nat(), str: hostileStringArb });
type Fault = { which: number; value: number; target: number; str: string };
/** About one object in five is broken. */
const maybeFault = fc.oneof({ weight: 4, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: faultArb });

const extrasArb = fc.record(
  {
    labels: fc.dictionary(fc.constantFrom('app', 'tier', `x-${MARK}`, `we ird\n${MARK}`), freeStringArb, { maxKeys: 2 }),
    annotations: fc.dictionary(fc.constantFrom('note', `y-${MARK}`, 'kubectl.kubernetes.io/last-applied-configuration'), freeStringArb, { maxKeys: 2 }),
    unknownField: freeStringArb,
  },
  { requiredKeys: [] },
);

const portSpecArb = fc.record({
  name: fc.constantFrom(...PORT_NAMES),
  protocol: fc.constantFrom(undefined, 'TCP', 'UDP', 'SCTP'),
  port: fc.integer({ min: 1, max: 65535 }),
  nodePort: fc.oneof(fc.constant(undefined), fc.constant(0), fc.integer({ min: 1, max: 65535 })),
  appProtocol: fc.option(freeStringArb, { nil: undefined }),
});

const serviceSpecArb = fc.record({
  filler: fc.stringMatching(/^[a-z0-9-]{0,60}$/),
  namespace: fc.constantFrom(...NAMESPACES),
  type: fc.constantFrom(undefined, undefined, 'ClusterIP', 'ClusterIP', 'NodePort', 'NodePort', 'LoadBalancer', 'LoadBalancer', 'LoadBalancer', 'ExternalName'),
  ipMode: fc.constantFrom(...'v4 v4 v4 v4 v6 v6 v6 dual46 dual46 dual46 dual64 dual64 v4field None empty missing'.split(' ')),
  cip4: v4Arb(172, 30, [0, 3]),
  cip6: v6Arb('fd00', '30'),
  ports: fc.oneof({ weight: 1, arbitrary: fc.constant([]) }, { weight: 5, arbitrary: fc.array(portSpecArb, { minLength: 1, maxLength: 3 }) }),
  externalIPs: fc.array(anyFamily(v4Arb(198, 51, [100, 100]), v6Arb('2001', 'db8', 8)), { maxLength: 2 }),
  ingress: fc.array(
    fc.record({
      ip: fc.oneof(anyFamily(v4Arb(203, 0, [113, 113]), v6Arb('2001', 'db9', 8)), fc.constant(null)),
      ipMode: fc.constantFrom(undefined, 'VIP', 'Proxy'),
      hostname: fc.option(freeStringArb, { nil: undefined }),
    }),
    { maxLength: 2 },
  ),
  sourceRanges: fc.array(cidrArb, { maxLength: 2 }),
  sourceRangesVia: fc.constantFrom('field', 'annotation'),
  etp: fc.constantFrom(undefined, 'Cluster', 'Local'),
  itp: fc.constantFrom(undefined, 'Cluster', 'Local'),
  affinity: fc.constantFrom(undefined, 'None', 'ClientIP'),
  timeout: fc.option(fc.integer({ min: 1, max: 86400 }), { nil: undefined }),
  hcnp: fc.option(fc.integer({ min: 0, max: 65535 }), { nil: undefined }),
  special: fc.oneof(
    { weight: 14, arbitrary: fc.constant(null) },
    { weight: 1, arbitrary: fc.constantFrom('service.kubernetes.io/service-proxy-name', 'service.kubernetes.io/headless') },
  ),
  extras: extrasArb,
  fault: maybeFault,
});

const endpointSpecArb = fc.record({
  ip4: v4Arb(10, [0, 1], [0, 1]),
  ip6: v6Arb('fd00', '10', 0x3ff),
  second: fc.boolean(),
  ready: fc.constantFrom(undefined, true, true, false),
  serving: fc.constantFrom(undefined, true, false),
  terminating: fc.constantFrom(undefined, false, true),
  nodeName: fc.constantFrom(undefined, ...NODE_NAMES),
  zone: fc.constantFrom(undefined, ...ZONES),
  zoneHints: fc.option(fc.subarray(ZONES), { nil: undefined }),
  nodeHints: fc.option(fc.subarray(NODE_NAMES), { nil: undefined }),
});

const sliceSpecArb = fc.record({
  svcIndex: fc.nat(),
  otherNamespace: fc.constantFrom(false, false, false, false, false, false, false, true),
  ghostService: fc.constantFrom(false, false, false, false, false, false, false, true),
  /** `match`: the family of one of the Service's cluster IPs. */
  addressType: fc.constantFrom('match', 'match', 'match', 'match', 'IPv4', 'IPv6', 'FQDN'),
  matchIndex: fc.nat(1),
  mirror: fc.constantFrom(true, true, true, true, false),
  ports: fc.array(portSpecArb, { maxLength: 3 }),
  targetPorts: fc.array(fc.integer({ min: 1, max: 65535 }), { minLength: 3, maxLength: 3 }),
  allPortsEntry: fc.constantFrom(false, false, false, false, true),
  endpoints: fc.array(endpointSpecArb, { maxLength: 5 }),
  extras: extrasArb,
  fault: maybeFault,
});

const nodeSpecArb = fc.record({
  zone: fc.option(fc.oneof(fc.constantFrom(...ZONES), freeStringArb), { nil: undefined }),
  addresses: fc.array(
    fc.oneof(
      fc.record({ type: fc.constantFrom('InternalIP', 'ExternalIP'), ip: fc.oneof(v4Arb(192, 168, [0, 1]), v6Arb('fd00', '192', 8)) }),
      fc.record({ type: fc.constantFrom('InternalIP'), ip: fc.constantFrom<GenIP>({ raw: '127.0.0.1', canon: '127.0.0.1', family: 'IPv4' }, { raw: '::1', canon: '::1', family: 'IPv6' }) }),
      fc.record({ type: fc.constantFrom('Hostname', 'InternalDNS'), ip: freeStringArb }),
    ),
    { maxLength: 3 },
  ),
  extras: extrasArb,
  fault: maybeFault,
});

const optionsArb: fc.Arbitrary<IptablesOptions> = fc.record({
  masqueradeBit: fc.integer({ min: 0, max: 31 }),
  masqueradeAll: fc.boolean(),
  clusterCIDRs: fc.subarray(['10.0.0.0/8', 'fd00:10::/64']).chain((cs) => fc.shuffledSubarray(cs, { minLength: cs.length })),
  nodePortAddresses: fc.subarray(['primary', '192.168.0.0/16', '0.0.0.0/0', '::/0', 'fd00::/8', '127.0.0.0/8', '::1/128']),
  localhostNodePorts: fc.boolean(),
  randomFully: fc.boolean(),
  dropInvalid: fc.boolean(),
});

const clusterSpecArb = fc.record({
  services: fc.array(serviceSpecArb, { minLength: 1, maxLength: 7 }),
  slices: fc.array(sliceSpecArb, { minLength: 1, maxLength: 9 }),
  nodes: fc.array(nodeSpecArb, { maxLength: 3 }),
  nodeName: fc.constantFrom(...NODE_NAMES),
  options: optionsArb,
  shuffleSeed: fc.nat(),
});
type ClusterSpec = typeof clusterSpecArb extends fc.Arbitrary<infer T> ? T : never;

// ---------------------------------------------------------------------------------------
// Assembly: specs -> raw objects + what the test knows about them
// ---------------------------------------------------------------------------------------

type Raw = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

interface KnownPort {
  name: string;
  protocol: string;
  port: number;
}
interface KnownService {
  namespace: string;
  name: string;
  proxied: boolean;
  clusterIPs: GenIP[];
  ports: KnownPort[];
  itp: string;
}
interface KnownEndpoint {
  ip: string;
  usable: boolean;
  nodeName: string | undefined;
}
interface KnownSlice {
  name: string;
  namespace: string;
  serviceName: string;
  addressType: string;
  ports: (KnownPort | { name: string; protocol: string; port: null })[];
  endpoints: KnownEndpoint[];
}
interface GenObject {
  kind: 'Service' | 'EndpointSlice' | 'Node';
  raw: unknown;
  valid: boolean;
  /** Which fault broke it, for failure messages. */
  fault?: string;
}
interface Cluster {
  services: GenObject[];
  slices: GenObject[];
  nodes: GenObject[];
  knownServices: KnownService[];
  knownSlices: KnownSlice[];
  nodeName: string;
  options: IptablesOptions;
  shuffleSeed: number;
}

function applyExtras(meta: Raw, extras: { labels?: Record<string, string>; annotations?: Record<string, string> }): void {
  if (extras.labels && Object.keys(extras.labels).length) meta.labels = { ...extras.labels, ...(meta.labels ?? {}) };
  if (extras.annotations && Object.keys(extras.annotations).length) meta.annotations = { ...extras.annotations, ...(meta.annotations ?? {}) };
}

function serviceName(i: number, filler: string): string {
  let n = filler ? `s${i}-${filler}` : `s${i}`;
  n = n.slice(0, 63);
  if (n.endsWith('-')) n = n.slice(0, 62) + 'z';
  return n;
}

function buildService(i: number, s: ClusterSpec['services'][number]): { raw: Raw; known: KnownService } {
  const name = serviceName(i, s.filler);
  const meta: Raw = { name };
  if (s.namespace !== undefined) meta.namespace = s.namespace;
  const spec: Raw = {};
  if (s.type !== undefined) spec.type = s.type;
  let ips: GenIP[] = [];
  switch (s.ipMode) {
    case 'v4':
      ips = [s.cip4];
      spec.clusterIPs = [s.cip4.raw];
      spec.clusterIP = s.cip4.raw;
      break;
    case 'v6':
      ips = [s.cip6];
      spec.clusterIPs = [s.cip6.raw];
      break;
    case 'dual46':
      ips = [s.cip4, s.cip6];
      spec.clusterIP = s.cip4.raw;
      spec.clusterIPs = [s.cip4.raw, s.cip6.raw];
      break;
    case 'dual64':
      ips = [s.cip6, s.cip4];
      spec.clusterIPs = [s.cip6.raw, s.cip4.raw];
      break;
    case 'v4field':
      ips = [s.cip4];
      spec.clusterIP = s.cip4.raw;
      break;
    case 'None':
      spec.clusterIP = 'None';
      spec.clusterIPs = ['None'];
      break;
    case 'empty':
      spec.clusterIP = '';
      break;
  }
  const seen = new Set<string>();
  const ports: KnownPort[] = [];
  const rawPorts: Raw[] = [];
  for (const p of s.ports) {
    const known = { name: p.name ?? '', protocol: p.protocol ?? 'TCP', port: p.port };
    if (seen.has(`${known.name}/${known.protocol}`)) continue;
    seen.add(`${known.name}/${known.protocol}`);
    ports.push(known);
    const rp: Raw = { port: p.port };
    if (p.name !== undefined) rp.name = p.name;
    if (p.protocol !== undefined) rp.protocol = p.protocol;
    if (p.nodePort !== undefined) rp.nodePort = p.nodePort;
    if (p.appProtocol !== undefined) rp.appProtocol = p.appProtocol;
    rawPorts.push(rp);
  }
  if (rawPorts.length) spec.ports = rawPorts;
  if (s.externalIPs.length) spec.externalIPs = s.externalIPs.map((x) => x.raw);
  if (s.sourceRanges.length) {
    if (s.sourceRangesVia === 'field') spec.loadBalancerSourceRanges = s.sourceRanges;
    else meta.annotations = { [SOURCE_RANGES_ANNOTATION]: s.sourceRanges.join(', ') };
  }
  if (s.etp !== undefined) spec.externalTrafficPolicy = s.etp;
  if (s.itp !== undefined) spec.internalTrafficPolicy = s.itp;
  if (s.affinity !== undefined) spec.sessionAffinity = s.affinity;
  if (s.affinity === 'ClientIP' && s.timeout !== undefined) spec.sessionAffinityConfig = { clientIP: { timeoutSeconds: s.timeout } };
  if (s.hcnp !== undefined) spec.healthCheckNodePort = s.hcnp;
  if (s.extras.unknownField !== undefined) spec.someFutureField = s.extras.unknownField;
  if (s.special) meta.labels = { [s.special]: '' };
  applyExtras(meta, s.extras);
  const raw: Raw = { apiVersion: 'v1', kind: 'Service', metadata: meta, spec };
  if (s.ingress.length) {
    raw.status = {
      loadBalancer: {
        ingress: s.ingress.map((g) => {
          const ing: Raw = {};
          if (g.ip) ing.ip = g.ip.raw;
          if (g.ipMode) ing.ipMode = g.ipMode;
          if (g.hostname !== undefined) ing.hostname = g.hostname;
          return ing;
        }),
      },
    };
  }
  const headless = s.ipMode === 'None';
  return {
    raw,
    known: {
      namespace: s.namespace ?? 'default',
      name,
      proxied: s.type !== 'ExternalName' && !headless && ips.length > 0 && !s.special,
      clusterIPs: ips,
      ports,
      itp: s.itp ?? 'Cluster',
    },
  };
}

function buildSlice(
  i: number,
  s: ClusterSpec['slices'][number],
  services: KnownService[],
): { raw: Raw; known: KnownSlice } {
  const svc = services.length ? services[s.svcIndex % services.length]! : undefined;
  const svcName = svc && !s.ghostService ? svc.name : 'ghost';
  const namespace = svc && !s.otherNamespace ? svc.namespace : 'ns1';
  const name = `${svcName}-${i}`.slice(0, 200) + `-e${i}`;
  const meta: Raw = { name, namespace, labels: { [SERVICE_NAME_LABEL]: svcName } };
  applyExtras(meta, s.extras);
  const addressType =
    s.addressType !== 'match' ? s.addressType : svc && svc.clusterIPs.length ? svc.clusterIPs[s.matchIndex % svc.clusterIPs.length]!.family : 'IPv4';
  const family = addressType === 'IPv6' ? 'IPv6' : 'IPv4';
  const ports: KnownSlice['ports'] = [];
  const rawPorts: Raw[] = [];
  const portSource = s.mirror && svc ? svc.ports.map((p) => ({ name: p.name, protocol: p.protocol })) : s.ports;
  portSource.forEach((p, j) => {
    const port = s.targetPorts[j % s.targetPorts.length]!;
    ports.push({ name: p.name ?? '', protocol: p.protocol ?? 'TCP', port });
    const rp: Raw = { port };
    if (p.name !== undefined) rp.name = p.name;
    if (p.protocol !== undefined) rp.protocol = p.protocol;
    rawPorts.push(rp);
  });
  if (s.allPortsEntry) {
    // A port with no number: "all ports", unusable by a proxy, not an error.
    ports.push({ name: 'all', protocol: 'TCP', port: null });
    rawPorts.push({ name: 'all', protocol: 'TCP' });
  }
  const endpoints: KnownEndpoint[] = [];
  const rawEndpoints = s.endpoints.map((e) => {
    const ip = family === 'IPv4' ? e.ip4 : e.ip6;
    const re: Raw = { addresses: addressType === 'FQDN' ? [`pod.example.com`, MARK] : e.second ? [ip.raw, 'anything'] : [ip.raw] };
    const cond: Raw = {};
    if (e.ready !== undefined) cond.ready = e.ready;
    if (e.serving !== undefined) cond.serving = e.serving;
    if (e.terminating !== undefined) cond.terminating = e.terminating;
    re.conditions = cond;
    if (e.nodeName !== undefined) re.nodeName = e.nodeName;
    if (e.zone !== undefined) re.zone = e.zone;
    if (e.zoneHints !== undefined || e.nodeHints !== undefined) {
      re.hints = {};
      if (e.zoneHints !== undefined) re.hints.forZones = e.zoneHints.map((z) => ({ name: z }));
      if (e.nodeHints !== undefined) re.hints.forNodes = e.nodeHints.map((n) => ({ name: n }));
    }
    // As kube-proxy reads conditions: unset ready and unset serving both mean true.
    const ready = e.ready ?? true;
    const serving = e.serving ?? true;
    const terminating = e.terminating ?? false;
    endpoints.push({ ip: ip.canon, usable: ready || (serving && terminating), nodeName: e.nodeName });
    return re;
  });
  const raw: Raw = { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: meta, addressType };
  if (rawPorts.length) raw.ports = rawPorts;
  if (rawEndpoints.length) raw.endpoints = rawEndpoints;
  return { raw, known: { name, namespace, serviceName: svcName, addressType, ports, endpoints } };
}

function buildNode(i: number, s: ClusterSpec['nodes'][number]): Raw {
  const meta: Raw = { name: NODE_NAMES[i]! };
  applyExtras(meta, s.extras);
  if (s.zone !== undefined) meta.labels = { ...(meta.labels ?? {}), [ZONE_LABEL]: s.zone };
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: meta,
    status: { addresses: s.addresses.map((a) => ({ type: a.type, address: typeof a.ip === 'string' ? a.ip : a.ip.raw })) },
  };
}

// --- faults: each one makes the object invalid, whatever the clean object was -----------

/** The object's port entries that carry a number (only those are validated), made non-empty. */
const ensurePorts = (ports: Raw[] | undefined, holder: Raw): Raw[] => {
  const numbered = Array.isArray(ports) ? ports.filter((p) => p.port !== undefined) : [];
  if (numbered.length > 0) return numbered;
  holder.ports = [{ port: 80 }, ...(Array.isArray(ports) ? ports : [])];
  return [holder.ports[0] as Raw];
};
const meta = (o: Raw): Raw => (o.metadata ??= {});
const at = <T>(xs: T[], n: number): T => xs[n % xs.length]!;

/** Applies fault number `which` (the last one replaces the whole object by a non-mapping). */
function applyFault(o: Raw, f: Fault, faults: (() => unknown)[]): { raw: unknown; fault: string } {
  const n = f.which % (faults.length + 1);
  const fault = `fault #${n} (value ${f.value}, target ${f.target})`;
  if (n === faults.length) return { raw: pick(HOSTILE_NON_MAPPINGS, f.value), fault };
  faults[n]!();
  return { raw: o, fault };
}

function breakService(o: Raw, f: Fault): { raw: unknown; fault: string } {
  const spec = (o.spec ??= {}) as Raw;
  const unExternalName = () => {
    if (spec.type === 'ExternalName') spec.type = 'ClusterIP';
  };
  const faults: (() => unknown)[] = [
    () => {
      const v = pick([f.str, 123, undefined, ''], f.value);
      if (v === undefined) delete meta(o).name;
      else meta(o).name = v;
    },
    () => void (meta(o).namespace = pick([f.str, 7], f.value)),
    () => void (spec.type = pick(HOSTILE_TYPES, f.value)),
    () => {
      unExternalName();
      if (f.target % 2) {
        delete spec.clusterIPs;
        spec.clusterIP = pick(HOSTILE_IPS, f.value);
      } else {
        spec.clusterIPs = f.target % 4 === 0 ? [pick(HOSTILE_IPS, f.value)] : ['172.30.9.9', pick(HOSTILE_IPS, f.value)];
      }
    },
    () => {
      unExternalName();
      spec.clusterIPs = pick([['172.30.9.1', '172.30.9.2'], ['fd00:30::1', 'fd00:30::2'], ['172.30.9.1', 'fd00:30::1', '172.30.9.3']], f.value);
    },
    () => void (at(ensurePorts(spec.ports, spec), f.target).port = pick(HOSTILE_PORTS, f.value)),
    () => void (at(ensurePorts(spec.ports, spec), f.target).protocol = pick(HOSTILE_PROTOCOLS, f.value)),
    () => void (at(ensurePorts(spec.ports, spec), f.target).name = pick([f.str, 8080], f.value)),
    () => {
      const copy = { ...at(ensurePorts(spec.ports, spec), f.target) };
      (spec.ports as Raw[]).push(copy);
    },
    () => {
      spec.type = 'NodePort';
      at(ensurePorts(spec.ports, spec), f.target).nodePort = pick(HOSTILE_NODE_PORTS, f.value);
    },
    () => void (spec.externalIPs = [...(spec.externalIPs ?? []), pick(HOSTILE_IPS, f.value)]),
    () => {
      const status = (o.status ??= {}) as Raw;
      const lb = (status.loadBalancer ??= {}) as Raw;
      lb.ingress = [...(lb.ingress ?? []), f.target % 3 ? { ip: pick(HOSTILE_IPS, f.value) } : { ip: '203.0.113.9', ipMode: pick(['Tunnel', 5, 'vip'], f.value) }];
    },
    () => void (spec.loadBalancerSourceRanges = [...(spec.loadBalancerSourceRanges ?? []), pick(HOSTILE_CIDRS, f.value)]),
    () => {
      delete spec.loadBalancerSourceRanges;
      meta(o).annotations = { ...(meta(o).annotations ?? {}), [SOURCE_RANGES_ANNOTATION]: `10.0.0.0/8,${String(pick(HOSTILE_CIDRS, f.value))}` };
    },
    () => void (spec.sessionAffinity = pick(['Sticky', 5, 'clientip'], f.value)),
    () => {
      spec.sessionAffinity = 'ClientIP';
      spec.sessionAffinityConfig = { clientIP: { timeoutSeconds: pick(HOSTILE_TIMEOUTS, f.value) } };
    },
    () => void (spec[f.target % 2 ? 'externalTrafficPolicy' : 'internalTrafficPolicy'] = pick(HOSTILE_POLICIES, f.value)),
    () => void (spec.healthCheckNodePort = pick(HOSTILE_NODE_PORTS, f.value)),
    () => void (meta(o).labels = { ...(meta(o).labels ?? {}), app: pick(HOSTILE_NON_STRINGS, f.value) }),
    () => void (meta(o).annotations = { ...(meta(o).annotations ?? {}), note: pick(HOSTILE_NON_STRINGS, f.value) }),
    () => void (o.spec = pick([MARK, [], 5], f.value)),
    () => void (o.metadata = pick([[], MARK, 5], f.value)),
    () => void (spec.ports = pick([MARK, 80, { port: 80 }], f.value)),
  ];
  return applyFault(o, f, faults);
}

function breakSlice(o: Raw, f: Fault): { raw: unknown; fault: string } {
  const labels = (meta(o).labels ??= {}) as Raw;
  /** FQDN slices stop validating after metadata; make the slice an IP one first. */
  const unFQDN = () => {
    if (o.addressType !== 'IPv4' && o.addressType !== 'IPv6') {
      o.addressType = 'IPv4';
      delete o.endpoints;
    }
  };
  const anEndpoint = (): Raw => {
    unFQDN();
    if (!Array.isArray(o.endpoints) || o.endpoints.length === 0) {
      o.endpoints = [{ addresses: [o.addressType === 'IPv4' ? '10.9.9.9' : 'fd00:10::99'] }];
    }
    return at(o.endpoints as Raw[], f.target);
  };
  const faults: (() => unknown)[] = [
    () => {
      const v = pick([f.str, 123, undefined, ''], f.value);
      if (v === undefined) delete meta(o).name;
      else meta(o).name = v;
    },
    () => void (meta(o).namespace = pick([f.str, 7], f.value)),
    () => {
      unFQDN();
      delete labels[SERVICE_NAME_LABEL];
    },
    () => {
      unFQDN();
      labels[SERVICE_NAME_LABEL] = pick([f.str, '', 'Upper', 5], f.value);
    },
    () => void (o.addressType = pick(HOSTILE_ADDRESS_TYPES, f.value)),
    () => {
      unFQDN();
      at(ensurePorts(o.ports, o), f.target).port = pick(HOSTILE_SLICE_PORTS, f.value);
    },
    () => {
      unFQDN();
      at(ensurePorts(o.ports, o), f.target).protocol = pick(HOSTILE_PROTOCOLS, f.value);
    },
    () => {
      unFQDN();
      at(ensurePorts(o.ports, o), f.target).name = pick([f.str, 53], f.value);
    },
    () => {
      const e = anEndpoint();
      const wrongFamily = o.addressType === 'IPv4' ? 'fd00:10::1' : '10.0.0.1';
      e.addresses = pick([[], [pick(HOSTILE_IPS, f.value >> 2)], [wrongFamily], MARK], f.value);
    },
    () => void (((anEndpoint().conditions ??= {}) as Raw)[pick(['ready', 'serving', 'terminating'], f.target)] = pick(HOSTILE_BOOLS, f.value)),
    () => void (anEndpoint().nodeName = pick([f.str, 5], f.value)),
    () => void (anEndpoint().zone = pick([f.str, 5], f.value)),
    () => {
      const e = anEndpoint();
      e.hints = pick([{ forZones: [{ name: f.str }] }, { forNodes: [{ name: f.str }] }, { forZones: MARK }, { forNodes: [5] }], f.value);
    },
    () => {
      unFQDN();
      o.endpoints = pick([MARK, { addresses: ['10.0.0.1'] }], f.value);
    },
    () => void (labels.app = pick(HOSTILE_NON_STRINGS, f.value)),
  ];
  return applyFault(o, f, faults);
}

function breakNode(o: Raw, f: Fault): { raw: unknown; fault: string } {
  const faults: (() => unknown)[] = [
    () => {
      const v = pick([f.str, 123, undefined, ''], f.value);
      if (v === undefined) delete meta(o).name;
      else meta(o).name = v;
    },
    () => {
      const status = (o.status ??= {}) as Raw;
      status.addresses = [...(Array.isArray(status.addresses) ? status.addresses : []), { type: pick(['InternalIP', 'ExternalIP'], f.target), address: pick(HOSTILE_IPS, f.value) }];
    },
    () => void (meta(o).labels = { ...(meta(o).labels ?? {}), [ZONE_LABEL]: pick(HOSTILE_NON_STRINGS, f.value) }),
    () => void (o.status = { addresses: pick([MARK, { type: 'InternalIP' }], f.value) }),
  ];
  return applyFault(o, f, faults);
}

function assemble(spec: ClusterSpec): Cluster {
  const services: GenObject[] = [];
  const knownServices: KnownService[] = [];
  const allServices: KnownService[] = [];
  spec.services.forEach((s, i) => {
    const { raw, known } = buildService(i, s);
    allServices.push(known);
    if (s.fault) services.push({ kind: 'Service', ...breakService(raw, s.fault), valid: false });
    else {
      services.push({ kind: 'Service', raw, valid: true });
      knownServices.push(known);
    }
  });
  const slices: GenObject[] = [];
  const knownSlices: KnownSlice[] = [];
  spec.slices.forEach((s, i) => {
    const { raw, known } = buildSlice(i, s, allServices);
    if (s.fault) slices.push({ kind: 'EndpointSlice', ...breakSlice(raw, s.fault), valid: false });
    else {
      slices.push({ kind: 'EndpointSlice', raw, valid: true });
      knownSlices.push(known);
    }
  });
  const nodes: GenObject[] = spec.nodes.map((n, i) => {
    const raw = buildNode(i, n);
    return n.fault ? { kind: 'Node', ...breakNode(raw, n.fault), valid: false } : { kind: 'Node', raw, valid: true };
  });
  return { services, slices, nodes, knownServices, knownSlices, nodeName: spec.nodeName, options: spec.options, shuffleSeed: spec.shuffleSeed };
}

const clusterArb = clusterSpecArb.map(assemble);

// ---------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------

const FAMILIES: IPFamily[] = ['IPv4', 'IPv6'];

function render(objects: { services: unknown[]; endpointSlices: unknown[]; nodes: unknown[] }, c: Cluster) {
  const built = buildNodeModel(objects, c.nodeName);
  const texts = Object.fromEntries(
    FAMILIES.map((f) => [f, restoreText(renderIptables(built.model.families[f], built.model.node, c.options))]),
  ) as Record<IPFamily, string>;
  return { built, texts };
}

/** Deterministic Fisher-Yates from a seed (mulberry32), so a failure replays. */
function shuffled<T>(xs: T[], seed: number): T[] {
  let a = seed >>> 0;
  const rnd = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

const BUILTIN_TARGETS = new Set(['ACCEPT', 'DROP', 'REJECT', 'RETURN', 'MARK', 'MASQUERADE', 'DNAT']);
const NAT_ONLY_TARGETS = new Set(['MASQUERADE', 'DNAT']);

/** A cheap assertion for hot loops (vitest's expect costs too much per line). */
function ok(cond: boolean, msg: () => string): asserts cond {
  if (!cond) expect.fail(msg());
}

/** (c): the shape of every line, and the invariants iptables-nft-restore --test does not check. */
function checkShape(text: string, family: IPFamily, opts: IptablesOptions): void {
  ok(text.endsWith('\n'), () => `${family}: no final newline`);
  ok(!text.includes(MARK), () => `${family}: hostile marker in output:\n${text}`);
  ok(/^[\x20-\x7e\n]*$/.test(text), () => `${family}: non-printable or non-ASCII output:\n${text}`);
  const tables: string[] = [];
  let table: string | null = null;
  let declared = new Set<string>();
  const rules: string[] = [];
  const finish = () => {
    for (const r of rules) {
      const chain = r.split(' ')[1]!;
      ok(declared.has(chain), () => `${family} ${table}: rule in undeclared chain: ${r}`);
      const target = / -j ([^ ]+)/.exec(r.replace(/"[^"]*"/g, '""'))?.[1];
      if (target === undefined) continue;
      ok(declared.has(target) || BUILTIN_TARGETS.has(target), () => `${family} ${table}: unknown target: ${r}`);
      ok(!NAT_ONLY_TARGETS.has(target) || table === 'nat', () => `${family} ${table}: nat-only target: ${r}`);
      ok(target !== 'REJECT' || table === 'filter', () => `${family} ${table}: REJECT outside filter: ${r}`);
    }
    rules.length = 0;
  };
  for (const line of text.slice(0, -1).split('\n')) {
    if (line === '*filter' || line === '*nat') {
      ok(table === null, () => `${family}: table ${line} opened inside ${table}`);
      table = line.slice(1);
      tables.push(table);
      declared = new Set();
    } else if (line === 'COMMIT') {
      ok(table !== null, () => `${family}: COMMIT outside a table`);
      finish();
      table = null;
    } else if (/^:[A-Z][A-Z0-9-]{0,28} - \[0:0\]$/.test(line)) {
      ok(table !== null, () => `${family}: declaration outside a table: ${line}`);
      const chain = line.slice(1, line.indexOf(' '));
      ok(!declared.has(chain), () => `${family}: chain declared twice: ${line}`);
      declared.add(chain);
    } else if (/^-A [A-Z][A-Z0-9-]{0,28} .+$/.test(line)) {
      ok(table !== null, () => `${family}: rule outside a table: ${line}`);
      // Quotes pair up and a quoted argument holds no quote: nothing can open a new rule.
      ok((line.match(/"/g) ?? []).length % 2 === 0, () => `${family}: unbalanced quotes: ${line}`);
      for (const m of line.matchAll(/--comment ("([^"]*)"|[^ "]+)/g)) {
        const body = m[2] ?? m[1]!;
        ok(body.length <= 255, () => `${family}: comment longer than 255: ${line}`);
      }
      rules.push(line);
    } else {
      expect.fail(`${family}: line of unexpected shape: ${JSON.stringify(line)}`);
    }
  }
  ok(table === null, () => `${family}: last table not committed`);
  ok(tables.join() === 'filter,nat', () => `${family}: tables ${tables.join()}, want filter,nat`);
  const mark = `0x${(2 ** opts.masqueradeBit).toString(16)}`;
  ok(text.includes(`-A KUBE-MARK-MASQ -j MARK --or-mark ${mark}\n`), () => `${family}: no --or-mark ${mark}`);
}

function identity(raw: unknown): { namespace: string; name: string } {
  const isRec = (v: unknown): v is Raw => typeof v === 'object' && v !== null && !Array.isArray(v);
  const m = isRec(raw) && isRec(raw.metadata) ? raw.metadata : {};
  return {
    namespace: typeof m.namespace === 'string' ? m.namespace : 'default',
    name: typeof m.name === 'string' ? m.name : '<unnamed>',
  };
}

/** (d), first half: problems are exactly the broken objects. */
function checkProblems(c: Cluster, problems: Problem[]): void {
  const key = (kind: string, ns: string, name: string) => JSON.stringify([kind, ns, name]);
  const expected = [...c.services, ...c.slices, ...c.nodes]
    .filter((o) => !o.valid)
    .map((o) => {
      const id = identity(o.raw);
      return key(o.kind, id.namespace, id.name);
    })
    .sort();
  for (const p of problems) {
    ok(typeof p.reason === 'string' && p.reason.trim() !== '', () => `problem without a reason: ${JSON.stringify(p)}`);
  }
  const actual = problems.map((p) => key(p.kind, p.namespace, p.name)).sort();
  if (actual.join('\n') === expected.join('\n')) return;
  const broken = [...c.services, ...c.slices, ...c.nodes].filter((o) => !o.valid);
  expect(actual, `broken objects:\n${broken.map((o) => `${o.kind} ${o.fault}: ${JSON.stringify(o.raw)}`).join('\n')}\nproblems:\n${problems.map((p) => JSON.stringify(p)).join('\n')}`).toEqual(expected);
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Every valid proxied Service port with a cluster IP of `family`, with its rule patterns. */
function* proxiedPorts(c: Cluster, texts: Record<IPFamily, string>) {
  for (const svc of c.knownServices) {
    for (const port of svc.ports) {
      const spn = port.name ? `${svc.namespace}/${svc.name}:${port.name}` : `${svc.namespace}/${svc.name}`;
      const proto = port.protocol.toLowerCase();
      for (const family of FAMILIES) {
        const text = texts[family];
        const cip = svc.clusterIPs.find((ip) => ip.family === family);
        if (!svc.proxied || !cip) {
          yield { svc, port, spn, family, text, cip: null, natHits: [], filterHits: [] };
          continue;
        }
        const match = `-m ${proto} -p ${proto} -d ${escapeRe(cip.canon)} --dport ${port.port}`;
        const nat = new RegExp(`^-A KUBE-SERVICES -m comment --comment "${escapeRe(spn)} cluster IP" ${match} -j (KUBE-SV[CL]-[A-Z2-7]{16})$`, 'gm');
        const filter = new RegExp(`^-A KUBE-SERVICES -m comment --comment "${escapeRe(spn)} has no (local )?endpoints" ${match} -j (REJECT|DROP)$`, 'gm');
        yield { svc, port, spn, family, text, cip, natHits: [...text.matchAll(nat)], filterHits: [...text.matchAll(filter)] };
      }
    }
  }
}

/** (d), second half: every valid proxied Service port has exactly one cluster IP rule. */
function checkServicesRender(c: Cluster, texts: Record<IPFamily, string>): void {
  for (const { spn, family, text, cip, port, natHits, filterHits } of proxiedPorts(c, texts)) {
    if (!cip) {
      ok(!text.includes(`--comment "${spn} cluster IP"`), () => `${family}: ${spn} is not proxied in ${family} but rendered:\n${text}`);
      continue;
    }
    ok(natHits.length + filterHits.length === 1, () => `${family}: want one cluster IP rule for ${spn} (${cip.canon}:${port.port}), got ${natHits.length + filterHits.length}:\n${text}`);
  }
}

/**
 * Which rule the cluster IP gets, from what the test knows of the endpoints (spec, "Per
 * service port" 1): REJECT "has no endpoints" only when no endpoint is usable anywhere;
 * DROP "has no local endpoints" under internal Local policy with usable endpoints on other
 * nodes only; otherwise a jump to KUBE-SVC (Cluster) or KUBE-SVL (Local).
 */
function checkRuleKinds(c: Cluster, texts: Record<IPFamily, string>): void {
  for (const { svc, spn, family, port, cip, natHits, filterHits } of proxiedPorts(c, texts)) {
    if (!cip) continue;
    // Copies of each IP:PORT across the Service's valid slices of this family.
    const copies = new Map<string, KnownEndpoint[]>();
    for (const sl of c.knownSlices) {
      if (sl.namespace !== svc.namespace || sl.serviceName !== svc.name || sl.addressType !== family) continue;
      const sp = sl.ports.find((p) => p.name === port.name && p.protocol === port.protocol);
      if (!sp || sp.port === null) continue;
      for (const e of sl.endpoints) {
        const addr = `${e.ip}:${sp.port}`;
        copies.set(addr, [...(copies.get(addr) ?? []), e]);
      }
    }
    // Copies may disagree; only conclusions that hold whichever copy wins are checked.
    const all = [...copies.values()];
    const surelyUsable = all.some((cs) => cs.every((e) => e.usable));
    const surelyNone = all.every((cs) => cs.every((e) => !e.usable));
    const got = natHits[0]?.[1] ?? filterHits[0]?.[0] ?? '(none)';
    if (surelyNone) {
      expect(got, `${family} ${spn}: no usable endpoint anywhere -> REJECT`).toMatch(/has no endpoints" .* -j REJECT$/);
    } else if (surelyUsable && svc.itp === 'Cluster') {
      expect(got, `${family} ${spn}: usable endpoints -> KUBE-SVC`).toMatch(/^KUBE-SVC-/);
    } else if (svc.itp === 'Local') {
      const localUsable = all.some((cs) => cs.every((e) => e.usable) && cs.some((e) => e.nodeName === c.nodeName));
      const noLocal = all.every((cs) => cs.every((e) => e.nodeName !== c.nodeName));
      if (localUsable) expect(got, `${family} ${spn}: usable local endpoint -> KUBE-SVL`).toMatch(/^KUBE-SVL-/);
      if (noLocal && surelyUsable) {
        expect(got, `${family} ${spn}: internalTrafficPolicy Local, usable endpoints only on other nodes -> DROP`).toMatch(
          /has no local endpoints" .* -j DROP$/,
        );
      }
    }
  }
}

/** All pure properties of one cluster; returns the restore text per family. */
function checkCluster(c: Cluster): Record<IPFamily, string> {
  const objects = { services: c.services.map((o) => o.raw), endpointSlices: c.slices.map((o) => o.raw), nodes: c.nodes.map((o) => o.raw) };
  const before = JSON.stringify(objects);
  const first = render(objects, c);
  ok(JSON.stringify(objects) === before, () => 'buildNodeModel changed its input');

  // (b) deterministic, and independent of input order.
  const again = render(objects, c);
  for (const f of FAMILIES) ok(again.texts[f] === first.texts[f], () => `${f}: a second render differs`);
  const reordered = render(
    {
      services: shuffled(objects.services, c.shuffleSeed),
      endpointSlices: shuffled(objects.endpointSlices, c.shuffleSeed + 1),
      nodes: shuffled(objects.nodes, c.shuffleSeed + 2),
    },
    c,
  );
  for (const f of FAMILIES) if (reordered.texts[f] !== first.texts[f]) expect(reordered.texts[f], `${f}: input order changed the output`).toBe(first.texts[f]);

  // (c)
  for (const f of FAMILIES) checkShape(first.texts[f], f, c.options);

  // (d)
  checkProblems(c, first.built.problems);
  checkServicesRender(c, first.texts);
  return first.texts;
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

/** restoreTest, but without blocking: `ip netns exec NS iptables-restore --test -w`. */
function restoreTestAsync(ns: Netns, family: IPFamily, text: string): Promise<string | null> {
  const bin = family === 'IPv4' ? 'iptables-restore' : 'ip6tables-restore';
  return new Promise((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', ns.name, bin, '--test', '-w'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve(code === 0 ? null : `${bin} --test failed (${code}): ${stderr.trim()}`));
    p.stdin.end(text);
  });
}

const PURE_RUNS = 1000;
const KIND_RUNS = 500;
const RESTORE_RUNS = 75;
const RESTORE_BATCH = 8;
let generated = 0;

describe('iptables renderer over random hostile clusters', () => {
  it('generates what it claims: broken objects, valid proxied services, both families', () => {
    // Guards the generator itself: a property over clusters that never exercise the
    // interesting cases would pass vacuously.
    const sample = fc.sample(clusterArb, { numRuns: 300, seed: 42 });
    const objects = sample.flatMap((c) => [...c.services, ...c.slices, ...c.nodes]);
    const invalid = objects.filter((o) => !o.valid);
    expect(invalid.length).toBeGreaterThan(objects.length / 10);
    for (const kind of ['Service', 'EndpointSlice', 'Node']) expect(invalid.some((o) => o.kind === kind)).toBe(true);
    const proxied = sample.flatMap((c) => c.knownServices.filter((s) => s.proxied && s.ports.length > 0));
    expect(proxied.some((s) => s.clusterIPs.some((ip) => ip.family === 'IPv6'))).toBe(true);
    expect(proxied.some((s) => s.clusterIPs.length === 2)).toBe(true);
    let v4 = 0;
    let v6 = 0;
    let both = 0;
    for (const c of sample) {
      const t = checkCluster(c);
      v4 += Number(t.IPv4.includes('KUBE-SEP-'));
      v6 += Number(t.IPv6.includes('KUBE-SEP-'));
      both += Number(t.IPv4.includes('KUBE-SEP-') && t.IPv6.includes('KUBE-SEP-'));
    }
    expect(v4).toBeGreaterThan(30);
    expect(v6).toBeGreaterThan(30);
    expect(both).toBeGreaterThan(5);
    generated += sample.length;
  });

  it('the shape check itself rejects malformed output', () => {
    // A checker that cannot fail proves nothing: break a real output in each way it looks for.
    const c = fc.sample(clusterArb, { numRuns: 50, seed: 3 }).find((x) => checkCluster(x).IPv4.includes('KUBE-SEP-'))!;
    const good = checkCluster(c).IPv4;
    const opts = c.options;
    const sep = /^:(KUBE-SEP-[A-Z2-7]{16}) /m.exec(good)![1]!;
    const broken: [string, string][] = [
      ['rule in a built-in chain', good.replace('COMMIT\n', '-A INPUT -j ACCEPT\nCOMMIT\n')],
      ['jump to an undeclared chain', good.replace('COMMIT\n', '-A KUBE-SERVICES -j KUBE-SVC-AAAAAAAAAAAAAAAA\nCOMMIT\n')],
      ['chain declared twice', good.replace(`:${sep} - [0:0]\n`, `:${sep} - [0:0]\n:${sep} - [0:0]\n`)],
      ['missing COMMIT', good.replace(/COMMIT\n$/, '')],
      ['stray line', good.replace('*nat\n', '*nat\nhello\n')],
      ['unbalanced quote', good.replace('--comment "', '--comment ""')],
      ['hostile marker', good.replace('--comment "', `--comment "${MARK} `)],
      ['DNAT in filter', good.replace('*filter\n', '*filter\n:X - [0:0]\n-A X -j DNAT --to-destination 1.2.3.4\n')],
      ['comment longer than 255', good.replace('--comment "', `--comment "${'a'.repeat(256)} `)],
      ['wrong mark', good.replace(/--or-mark 0x[0-9a-f]+/, '--or-mark 0x3')],
      ['non-ASCII', good.replace('--comment "', '--comment "\u00e9')],
    ];
    expect(() => checkShape(good, 'IPv4', opts)).not.toThrow();
    for (const [what, text] of broken) {
      expect(text, what).not.toBe(good);
      expect(() => checkShape(text, 'IPv4', opts), what).toThrow();
    }
  });

  it(`(d) the cluster IP rule's kind follows the endpoints, for ${KIND_RUNS} clusters`, () => {
    fc.assert(
      fc.property(clusterArb, (c) => {
        generated++;
        checkRuleKinds(c, checkCluster(c));
      }),
      { numRuns: KIND_RUNS },
    );
  });

  it(`(b)(c)(d) hold for ${PURE_RUNS} clusters: deterministic, order-independent, well-formed, problems exact`, () => {
    fc.assert(
      fc.property(clusterArb, (c) => {
        generated++;
        checkCluster(c);
      }),
      { numRuns: PURE_RUNS },
    );
  });

  const canRun = privilegedTestsCanRun('iptables-restore --test of random clusters', ['ip', 'iptables-restore', 'ip6tables-restore']);
  let ns: Netns | undefined;
  beforeAll(() => {
    if (canRun) ns = new Netns('prop');
  });
  afterAll(() => {
    ns?.remove();
    console.log(`property.test.ts: ${generated} clusters generated`);
  });

  it.runIf(canRun)(`(a) ${RESTORE_RUNS * RESTORE_BATCH} clusters pass iptables-restore --test and ip6tables-restore --test`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(clusterArb, { minLength: RESTORE_BATCH, maxLength: RESTORE_BATCH }), async (batch) => {
        generated += batch.length;
        const texts = batch.map(checkCluster);
        // Each restore waits on the kernel far more than it computes: run a batch at once.
        const results = await Promise.all(texts.flatMap((t) => FAMILIES.map((f) => restoreTestAsync(ns!, f, t[f]))));
        results.forEach((r, i) => {
          if (r === null) return;
          const family = FAMILIES[i % 2]!;
          const text = texts[Math.floor(i / 2)]![family];
          // Confirm on its own with the shared helper: concurrency alone must not fail a cluster.
          expect(restoreTest(ns!, family, text), `${family} restore input:\n${text}`).toBeNull();
        });
      }),
      { numRuns: RESTORE_RUNS },
    );
  });
});

// ---------------------------------------------------------------------------------------
// The nftables renderer over the same clusters
// ---------------------------------------------------------------------------------------

const SERVICE_CIDRS = [{ apiVersion: 'networking.k8s.io/v1', kind: 'ServiceCIDR', metadata: { name: 'kubernetes' }, spec: { cidrs: ['10.96.0.0/12', 'fd00:10:96::/112'] } }];

function renderNft(objects: { services: unknown[]; endpointSlices: unknown[]; nodes: unknown[] }, c: Cluster): Record<IPFamily, string> {
  const built = buildNodeModel({ ...objects, serviceCIDRs: SERVICE_CIDRS }, c.nodeName);
  return Object.fromEntries(FAMILIES.map((f) => [f, scriptText(renderNftables(built.model.families[f], built.model.node, c.options))])) as Record<IPFamily, string>;
}

const NFT_TABLE: Record<IPFamily, string> = { IPv4: 'ip kube-proxy', IPv6: 'ip6 kube-proxy' };

/**
 * Every line is a command of the shapes the writer emits (or an element line inside an
 * `add element` block); rules live in declared chains, every `@set`, `jump` and `goto`
 * names a declared set or chain, elements go to declared sets, quotes pair up on each
 * line, and nothing from the input's hostile values appears.
 */
function checkNftShape(text: string, family: IPFamily): void {
  const t = NFT_TABLE[family];
  ok(text.endsWith('\n'), () => `${family}: no final newline`);
  ok(!text.includes(MARK), () => `${family}: hostile marker in output:\n${text}`);
  ok(/^[\x20-\x7e\n\t]*$/.test(text), () => `${family}: non-printable or non-ASCII output:\n${text}`);
  const lines = text.slice(0, -1).split('\n');
  ok(lines[0] === `add table ${t} { comment "rules for kube-proxy" ; }` && lines[1] === `flush table ${t}`, () => `${family}: does not start with add + flush table`);
  const chains = new Set<string>();
  const sets = new Set<string>();
  const rules: string[] = [];
  let inElements: string | null = null;
  const name = String.raw`[a-z][a-z0-9-]*(?:-[A-Z2-7]{8}-[a-z0-9.:/_-]+)?`;
  const chainRe = new RegExp(`^add chain ${t} (${name})( \\{ .* ; \\})?$`);
  const setRe = new RegExp(`^add (set|map) ${t} (${name}) \\{ .* ; \\}$`);
  const ruleRe = new RegExp(`^add rule ${t} (${name}) (.+)$`);
  const elementsRe = new RegExp(`^add element ${t} (${name}) \\{$`);
  const flushRe = new RegExp(`^flush (set|map) ${t} (${name})$`);
  for (const line of lines.slice(2)) {
    ok((line.match(/"/g) ?? []).length % 2 === 0, () => `${family}: unbalanced quotes: ${line}`);
    if (inElements !== null) {
      if (line === '}') inElements = null;
      else ok(/^\t[^{};]+,?$/.test(line), () => `${family}: element line of unexpected shape: ${JSON.stringify(line)}`);
      continue;
    }
    let m: RegExpExecArray | null;
    if ((m = chainRe.exec(line))) {
      ok(!chains.has(m[1]!), () => `${family}: chain declared twice: ${line}`);
      chains.add(m[1]!);
    } else if ((m = setRe.exec(line))) {
      ok(!sets.has(m[2]!), () => `${family}: set declared twice: ${line}`);
      sets.add(m[2]!);
    } else if ((m = flushRe.exec(line))) {
      ok(sets.has(m[2]!), () => `${family}: flush of an undeclared set: ${line}`);
    } else if ((m = ruleRe.exec(line))) {
      ok(chains.has(m[1]!), () => `${family}: rule in an undeclared chain: ${line}`);
      rules.push(m[2]!);
    } else if ((m = elementsRe.exec(line))) {
      ok(sets.has(m[1]!), () => `${family}: elements of an undeclared set: ${line}`);
      inElements = m[1]!;
    } else {
      expect.fail(`${family}: line of unexpected shape: ${JSON.stringify(line)}`);
    }
  }
  ok(inElements === null, () => `${family}: element block not closed`);
  for (const body of [...rules, ...[...text.matchAll(/ : (goto \S+)/g)].map((m) => m[1]!)]) {
    const bare = body.replace(/"[^"]*"/g, '""');
    for (const ref of bare.matchAll(/@([^\s,}]+)/g)) ok(sets.has(ref[1]!), () => `${family}: reference to an undeclared set: ${body}`);
    for (const ref of bare.matchAll(/\b(?:jump|goto) ([^\s,}]+)/g)) ok(chains.has(ref[1]!), () => `${family}: jump to an undeclared chain: ${body}`);
  }
}

/**
 * Every valid proxied Service port's cluster IP is dispatched or blocked: one element for
 * its address, protocol and port, named for it or for another Service port holding the
 * same (the first one owns a shared address, as the first matching rule would).
 */
function checkNftServices(c: Cluster, texts: Record<IPFamily, string>): void {
  const owners = new Map<string, Set<string>>();
  for (const { spn, family, text, cip, port } of proxiedPorts(c, texts)) {
    if (!cip) {
      ok(!text.includes(`comment "${spn.slice(0, MAX_COMMENT)}"`), () => `${family}: ${spn} is not proxied in ${family} but rendered:\n${text}`);
      continue;
    }
    const key = `${family}\t${cip.canon} . ${port.protocol.toLowerCase()} . ${port.port} comment "`;
    owners.set(key, (owners.get(key) ?? new Set()).add(spn.slice(0, MAX_COMMENT)));
  }
  for (const [key, spns] of owners) {
    const [family, prefix] = [key.slice(0, 4), key.slice(4)] as [IPFamily, string];
    const hits = texts[family].split('\n').filter((l) => l.startsWith(prefix));
    ok(hits.length === 1, () => `${family}: want one service-ips or no-endpoint-services element for ${prefix.trim()}, got ${hits.length}:\n${texts[family]}`);
    const owner = /comment "([^"]*)"/.exec(hits[0]!)![1]!;
    ok(spns.has(owner), () => `${family}: ${prefix.trim()} is named for ${owner}, not one of ${[...spns].join(', ')}`);
  }
}

function checkNftCluster(c: Cluster): Record<IPFamily, string> {
  const objects = { services: c.services.map((o) => o.raw), endpointSlices: c.slices.map((o) => o.raw), nodes: c.nodes.map((o) => o.raw) };
  const first = renderNft(objects, c);
  const again = renderNft(objects, c);
  const reordered = renderNft(
    {
      services: shuffled(objects.services, c.shuffleSeed),
      endpointSlices: shuffled(objects.endpointSlices, c.shuffleSeed + 1),
      nodes: shuffled(objects.nodes, c.shuffleSeed + 2),
    },
    c,
  );
  for (const f of FAMILIES) {
    ok(again[f] === first[f], () => `${f}: a second nftables render differs`);
    if (reordered[f] !== first[f]) expect(reordered[f], `${f}: input order changed the nftables output`).toBe(first[f]);
    checkNftShape(first[f], f);
  }
  checkNftServices(c, first);
  return first;
}

const NFT_PURE_RUNS = 500;
const NFT_LOAD_RUNS = 150;

describe('nftables renderer over random hostile clusters', () => {
  it('the shape check itself rejects malformed output', () => {
    const c = fc.sample(clusterArb, { numRuns: 50, seed: 3 }).find((x) => checkNftCluster(x).IPv4.includes('cluster-endpoints-'))!;
    const good = checkNftCluster(c).IPv4;
    const broken: [string, string][] = [
      ['rule in an undeclared chain', `${good}add rule ip kube-proxy nowhere accept\n`],
      ['goto an undeclared chain', good.replace(/ : goto \S+/, ' : goto nowhere')],
      ['lookup in an undeclared set', good.replace('vmap @service-ips', 'vmap @nothing')],
      ['chain declared twice', good.replace('add chain ip kube-proxy services\n', 'add chain ip kube-proxy services\nadd chain ip kube-proxy services\n')],
      ['stray line', good.replace('flush table ip kube-proxy\n', 'flush table ip kube-proxy\nflush ruleset\n')],
      ['unbalanced quote', good.replace('comment "', 'comment ""')],
      ['hostile marker', good.replace('comment "', `comment "${MARK} `)],
      ['unclosed element block', good.replace(/\n\}\n$/, '\n')],
      ['non-ASCII', good.replace('comment "', 'comment "\u00e9')],
    ];
    expect(() => checkNftShape(good, 'IPv4')).not.toThrow();
    for (const [what, text] of broken) {
      expect(text, what).not.toBe(good);
      expect(() => checkNftShape(text, 'IPv4'), what).toThrow();
    }
  });

  it(`deterministic, order-independent, well-formed, every cluster IP dispatched, for ${NFT_PURE_RUNS} clusters`, () => {
    fc.assert(
      fc.property(clusterArb, (c) => {
        generated++;
        checkNftCluster(c);
      }),
      { numRuns: NFT_PURE_RUNS },
    );
  });

  const canRun = privilegedTestsCanRun('nft -f of random clusters', ['ip', 'nft']);
  let ns: Netns | undefined;
  beforeAll(() => {
    if (canRun) ns = new Netns('prop-nft');
  });
  afterAll(() => ns?.remove());

  let last: Record<IPFamily, string> = { IPv4: '', IPv6: '' };
  it.runIf(canRun)(`${NFT_LOAD_RUNS} clusters load with nft -f, each over the last one's table (a full sync)`, () => {
    fc.assert(
      fc.property(clusterArb, (c) => {
        generated++;
        const texts = checkNftCluster(c);
        for (const f of FAMILIES) {
          const r = ns!.exec('nft', ['-f', '-'], texts[f]);
          ok(r.status === 0, () => `${f}: nft -f failed: ${r.stderr}\n${texts[f]}\nover the table of:\n${last[f]}`);
        }
        last = texts;
      }),
      { numRuns: NFT_LOAD_RUNS },
    );
  });
});
