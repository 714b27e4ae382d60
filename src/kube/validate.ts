/**
 * Validation of raw API objects. Each object is checked on its own: one that fails is
 * reported with its namespace/name and the reason, and the rest of the cluster renders.
 * Strings that reach rules (names, port names) must match Kubernetes' own name grammars,
 * which leave no room for quotes, spaces or newlines in a restore file.
 */
import { parseCIDR, parseIP, type IPFamily, type ParsedCIDR, type ParsedIP } from '../net/ip.js';
import {
  SERVICE_NAME_LABEL,
  MAX_CONNECTION_AGE_ANNOTATION,
  SOURCE_RANGES_ANNOTATION,
  type Problem,
  type Protocol,
  type EndpointSliceInfo,
  type NodeInfo,
  type ServiceCIDRInfo,
  type ServiceInfo,
  type ServicePortSpec,
  type ServiceType,
  type SliceEndpoint,
  type SlicePort,
  type TrafficPolicy,
} from './objects.js';

export type Validated<T> = { ok: true; value: T } | { ok: false; problem: Problem };

class Invalid extends Error {
  constructor(
    readonly path: string,
    readonly why: string,
  ) {
    super(`${path}: ${why}`);
  }
}

/**
 * Checks one item of a list with paths relative to it, prefixed only when it fails: a
 * slice's endpoints are checked 100,000 times at start-up, and building every field's
 * path string up front was most of that work.
 */
function item<T>(prefix: string, i: number, raw: unknown, check: (raw: unknown) => T): T {
  try {
    return check(raw);
  } catch (err) {
    if (!(err instanceof Invalid)) throw err;
    throw new Invalid(err.path === '' ? `${prefix}[${i}]` : `${prefix}[${i}].${err.path}`, err.why);
  }
}

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const PROTOCOLS: readonly Protocol[] = ['TCP', 'UDP', 'SCTP'];

/** A value as the reason shows it: JSON-escaped (no newlines), cut short, never throwing. */
function show(v: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(v) ?? String(v);
  } catch {
    text = '<unprintable value>';
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function fail(path: string, why: string): never {
  throw new Invalid(path, why);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function record(v: unknown, path: string): Record<string, unknown> {
  if (v === undefined || v === null) return {};
  if (!isRecord(v)) fail(path, 'must be an object');
  return v;
}

function list(v: unknown, path: string): unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) fail(path, 'must be a list');
  return v;
}

function optString(v: unknown, path: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') fail(path, `must be a string, got ${show(v)}`);
  return v;
}

function name(v: unknown, path: string, grammar: RegExp, max: number): string {
  const s = optString(v, path);
  if (s === undefined || s === '') fail(path, 'is required');
  if (s.length > max || !grammar.test(s)) fail(path, `${show(s)} is not a valid name`);
  return s;
}

function optName(v: unknown, path: string, grammar: RegExp, max: number): string {
  const s = optString(v, path);
  return s === undefined || s === '' ? '' : name(s, path, grammar, max);
}

function labelValue(v: unknown, path: string): string {
  const s = optString(v, path) ?? '';
  if (s.length > 63 || !LABEL_VALUE.test(s)) fail(path, `${show(s)} is not a valid label value`);
  return s;
}

function stringMap(v: unknown, path: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(record(v, path))) {
    out[k] = optString(val, `${path}[${show(k)}]`) ?? '';
  }
  return out;
}

function port(v: unknown, path: string, allowZero: boolean): number {
  if (v === undefined || v === null) {
    if (allowZero) return 0;
    fail(path, 'is required');
  }
  if (typeof v !== 'number' || !Number.isInteger(v) || v < (allowZero ? 0 : 1) || v > 65535) {
    fail(path, `${show(v)} is not a port number (1-65535)`);
  }
  return v;
}

function protocol(v: unknown, path: string): Protocol {
  const s = optString(v, path) ?? 'TCP';
  if (!(PROTOCOLS as readonly string[]).includes(s)) {
    fail(path, `unknown protocol ${show(s)} (want TCP, UDP or SCTP)`);
  }
  return s as Protocol;
}

function ip(v: unknown, path: string): ParsedIP {
  const s = optString(v, path);
  const parsed = s === undefined ? null : parseIP(s);
  if (!parsed) fail(path, `${show(v)} is not an IP address`);
  return parsed;
}

function cidr(v: unknown, path: string): ParsedCIDR {
  const s = optString(v, path);
  const parsed = s === undefined ? null : parseCIDR(s);
  if (!parsed) fail(path, `${show(v)} is not a CIDR`);
  return parsed;
}

function policy(v: unknown, path: string): TrafficPolicy {
  const s = optString(v, path) ?? 'Cluster';
  if (s !== 'Cluster' && s !== 'Local') fail(path, `${show(s)} is not Cluster or Local`);
  return s;
}

// Most endpoints carry no hints; 100,000 empty arrays are worth sharing.
const NO_HINTS = Object.freeze([]) as unknown as string[];

function hintList(v: unknown, path: string, each: (item: unknown, i: number) => string): string[] {
  const items = list(v, path);
  return items.length === 0 ? NO_HINTS : items.map(each);
}

function optBool(v: unknown, path: string): boolean | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') fail(path, `${show(v)} is not a boolean`);
  return v;
}

interface Meta {
  namespace: string;
  name: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

/** Namespace and name as well as they can be read, for the problem report. */
function identify(obj: unknown): { namespace: string; name: string } {
  const meta = isRecord(obj) && isRecord(obj.metadata) ? obj.metadata : {};
  const show = (v: unknown, dflt: string) => (typeof v === 'string' ? v : dflt);
  return { namespace: show(meta.namespace, 'default'), name: show(meta.name, '<unnamed>') };
}

function metadata(obj: Record<string, unknown>, nameGrammar: RegExp, nameMax: number): Meta {
  const meta = record(obj.metadata, 'metadata');
  return {
    namespace: optName(meta.namespace, 'metadata.namespace', DNS1123_LABEL, 63) || 'default',
    name: name(meta.name, 'metadata.name', nameGrammar, nameMax),
    labels: stringMap(meta.labels, 'metadata.labels'),
    annotations: stringMap(meta.annotations, 'metadata.annotations'),
  };
}

function validated<T>(kind: string, obj: unknown, check: (o: Record<string, unknown>) => T): Validated<T> {
  try {
    if (!isRecord(obj)) fail('object', 'is not a mapping');
    return { ok: true, value: check(obj) };
  } catch (err) {
    if (!(err instanceof Invalid)) throw err;
    return { ok: false, problem: { kind, ...identify(obj), reason: err.message } };
  }
}

function distinctFamilies(ips: ParsedIP[], path: string): void {
  if (ips.length === 2 && ips[0]!.family === ips[1]!.family) fail(path, 'dual-stack IPs must be of different families');
  if (ips.length > 2) fail(path, 'at most two cluster IPs (one per family)');
}

export function validateService(obj: unknown): Validated<ServiceInfo> {
  return validated('Service', obj, (o) => {
    const meta = metadata(o, DNS1035_LABEL, 63);
    const spec = record(o.spec, 'spec');
    const status = record(o.status, 'status');
    const type = (optString(spec.type, 'spec.type') ?? 'ClusterIP') as ServiceType;
    if (!['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'].includes(type)) {
      fail('spec.type', `unknown service type ${show(type)}`);
    }
    const rawIPs = list(spec.clusterIPs, 'spec.clusterIPs');
    const single = optString(spec.clusterIP, 'spec.clusterIP');
    const ipTexts = rawIPs.length > 0 ? rawIPs : single !== undefined && single !== '' ? [single] : [];
    const headless = ipTexts.length > 0 && ipTexts[0] === 'None';
    const clusterIPs =
      headless || type === 'ExternalName' ? [] : ipTexts.map((v, i) => ip(v, `spec.clusterIPs[${i}]`));
    distinctFamilies(clusterIPs, 'spec.clusterIPs');

    const ports: ServicePortSpec[] = list(spec.ports, 'spec.ports').map((raw, i) => {
      const path = `spec.ports[${i}]`;
      const p = record(raw, path);
      return {
        name: optName(p.name, `${path}.name`, DNS1123_LABEL, 63),
        protocol: protocol(p.protocol, `${path}.protocol`),
        port: port(p.port, `${path}.port`, false),
        nodePort: type === 'NodePort' || type === 'LoadBalancer' ? port(p.nodePort, `${path}.nodePort`, true) : 0,
      };
    });
    const seen = new Set<string>();
    for (const p of ports) {
      const key = `${p.name}/${p.protocol}`;
      if (seen.has(key)) fail('spec.ports', `duplicate port name ${show(p.name)} for ${p.protocol}`);
      seen.add(key);
    }

    const ingress = list(record(status.loadBalancer, 'status.loadBalancer').ingress, 'status.loadBalancer.ingress');
    const loadBalancerIPs: ParsedIP[] = [];
    ingress.forEach((raw, i) => {
      const path = `status.loadBalancer.ingress[${i}]`;
      const ing = record(raw, path);
      if (ing.ip === undefined || ing.ip === null || ing.ip === '') return;
      const mode = optString(ing.ipMode, `${path}.ipMode`) ?? 'VIP';
      if (mode !== 'VIP' && mode !== 'Proxy') fail(`${path}.ipMode`, `${show(mode)} is not VIP or Proxy`);
      const parsed = ip(ing.ip, `${path}.ip`);
      if (mode === 'VIP') loadBalancerIPs.push(parsed);
    });

    // The field wins over the legacy annotation, as in the API's own defaulting.
    let ranges = list(spec.loadBalancerSourceRanges, 'spec.loadBalancerSourceRanges').map((v, i) =>
      cidr(v, `spec.loadBalancerSourceRanges[${i}]`),
    );
    const annotation = meta.annotations[SOURCE_RANGES_ANNOTATION];
    if (ranges.length === 0 && annotation !== undefined && annotation.trim() !== '') {
      ranges = annotation.split(',').map((v) => cidr(v, `metadata.annotations[${SOURCE_RANGES_ANNOTATION}]`));
    }

    const affinity = optString(spec.sessionAffinity, 'spec.sessionAffinity') ?? 'None';
    if (affinity !== 'None' && affinity !== 'ClientIP') {
      fail('spec.sessionAffinity', `${show(affinity)} is not None or ClientIP`);
    }
    let affinityTimeoutSeconds: number | null = null;
    if (affinity === 'ClientIP') {
      const cfg = record(record(spec.sessionAffinityConfig, 'spec.sessionAffinityConfig').clientIP, 'spec.sessionAffinityConfig.clientIP');
      const t = cfg.timeoutSeconds ?? 10800;
      if (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > 86400) {
        fail('spec.sessionAffinityConfig.clientIP.timeoutSeconds', `${show(t)} is not 1-86400`);
      }
      affinityTimeoutSeconds = t;
    }

    return {
      namespace: meta.namespace,
      name: meta.name,
      type,
      labels: meta.labels,
      clusterIPs,
      headless,
      ports,
      externalIPs: list(spec.externalIPs, 'spec.externalIPs').map((v, i) => ip(v, `spec.externalIPs[${i}]`)),
      loadBalancerIPs: type === 'LoadBalancer' ? loadBalancerIPs : [],
      loadBalancerSourceRanges: ranges,
      externalTrafficPolicy: policy(spec.externalTrafficPolicy, 'spec.externalTrafficPolicy'),
      internalTrafficPolicy: policy(spec.internalTrafficPolicy, 'spec.internalTrafficPolicy'),
      affinityTimeoutSeconds,
      healthCheckNodePort: port(spec.healthCheckNodePort, 'spec.healthCheckNodePort', true),
      maxConnectionAge: meta.annotations[MAX_CONNECTION_AGE_ANNOTATION] ?? null,
    };
  });
}

/** Slices of addressType FQDN are valid but carry nothing a proxy can use: `value` is null. */
export function validateEndpointSlice(obj: unknown): Validated<EndpointSliceInfo | null> {
  return validated('EndpointSlice', obj, (o) => {
    const meta = metadata(o, DNS1123_SUBDOMAIN, 253);
    const addressType = optString(o.addressType, 'addressType');
    if (addressType === 'FQDN') return null;
    if (addressType !== 'IPv4' && addressType !== 'IPv6') {
      fail('addressType', `${show(addressType)} is not IPv4, IPv6 or FQDN`);
    }
    const family: IPFamily = addressType;
    const serviceName = meta.labels[SERVICE_NAME_LABEL];
    if (serviceName === undefined) fail(`metadata.labels[${SERVICE_NAME_LABEL}]`, 'is required');
    name(serviceName, `metadata.labels[${SERVICE_NAME_LABEL}]`, DNS1035_LABEL, 63);

    const ports: SlicePort[] = [];
    list(o.ports, 'ports').forEach((raw, i) => {
      const path = `ports[${i}]`;
      const p = record(raw, path);
      // A port with no number means "all ports" for selector-less use; a proxy cannot route it.
      if (p.port === undefined || p.port === null) return;
      ports.push({
        name: optName(p.name, `${path}.name`, DNS1123_LABEL, 63),
        protocol: protocol(p.protocol, `${path}.protocol`),
        port: port(p.port, `${path}.port`, false),
      });
    });

    const check = (e: unknown) => sliceEndpoint(e, family);
    const endpoints: SliceEndpoint[] = list(o.endpoints, 'endpoints').map((raw, i) => item('endpoints', i, raw, check));
    return { namespace: meta.namespace, name: meta.name, serviceName, addressType: family, ports, endpoints };
  });
}

function sliceEndpoint(raw: unknown, family: IPFamily): SliceEndpoint {
  const e = record(raw, '');
  const addresses = list(e.addresses, 'addresses');
  if (addresses.length === 0) fail('addresses', 'needs at least one address');
  // Addresses are fungible; like every proxy, use the first.
  const addr = ip(addresses[0], 'addresses[0]');
  if (addr.family !== family) fail('addresses[0]', `${addr.text} is not ${family}`);
  const cond = record(e.conditions, 'conditions');
  // As kube-proxy reads them: unknown readiness and unknown serving both count as true.
  const ready = optBool(cond.ready, 'conditions.ready') ?? true;
  const serving = optBool(cond.serving, 'conditions.serving') ?? true;
  const terminating = optBool(cond.terminating, 'conditions.terminating') ?? false;
  const hints = record(e.hints, 'hints');
  const nodeName = optName(e.nodeName, 'nodeName', DNS1123_SUBDOMAIN, 253);
  const zone = e.zone === undefined || e.zone === null ? '' : labelValue(e.zone, 'zone');
  return {
    ip: addr.text,
    ready,
    serving,
    terminating,
    nodeName: nodeName || null,
    zone: zone || null,
    zoneHints: hintList(hints.forZones, 'hints.forZones', (z, j) => labelValue(record(z, `hints.forZones[${j}]`).name, `hints.forZones[${j}].name`)),
    nodeHints: hintList(hints.forNodes, 'hints.forNodes', (n, j) =>
      name(record(n, `hints.forNodes[${j}]`).name, `hints.forNodes[${j}].name`, DNS1123_SUBDOMAIN, 253),
    ),
  };
}

export function validateNode(obj: unknown): Validated<NodeInfo> {
  return validated('Node', obj, (o) => {
    const meta = record(o.metadata, 'metadata');
    const nodeName = name(meta.name, 'metadata.name', DNS1123_SUBDOMAIN, 253);
    const internal: ParsedIP[] = [];
    const external: ParsedIP[] = [];
    list(record(o.status, 'status').addresses, 'status.addresses').forEach((raw, i) => {
      const a = record(raw, `status.addresses[${i}]`);
      if (a.type === 'InternalIP') internal.push(ip(a.address, `status.addresses[${i}].address`));
      else if (a.type === 'ExternalIP') external.push(ip(a.address, `status.addresses[${i}].address`));
    });
    // InternalIPs first: the node's primary address is its first InternalIP, as kubelet reports.
    return { name: nodeName, labels: stringMap(meta.labels, 'metadata.labels'), addresses: [...internal, ...external] };
  });
}

export function validateServiceCIDR(obj: unknown): Validated<ServiceCIDRInfo> {
  return validated('ServiceCIDR', obj, (o) => {
    const meta = record(o.metadata, 'metadata');
    const cidrName = name(meta.name, 'metadata.name', DNS1123_SUBDOMAIN, 253);
    const raw = list(record(o.spec, 'spec').cidrs, 'spec.cidrs');
    // The API server allows one range, or two of different families.
    if (raw.length > 2) fail('spec.cidrs', `has ${raw.length} entries; at most 2 (one per IP family)`);
    const cidrs = raw.map((c, i) => cidr(c, `spec.cidrs[${i}]`));
    if (cidrs.length === 2 && cidrs[0]!.family === cidrs[1]!.family) fail('spec.cidrs', 'holds two ranges of the same IP family');
    return { name: cidrName, cidrs };
  });
}
