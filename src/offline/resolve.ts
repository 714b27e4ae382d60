/**
 * A trace query as people write it (`shop/cart:http`, `nodeport:node-b:30080`,
 * `shop/client-7d9f`) resolved to addresses on the cluster's objects and the node's
 * model. Pure. An error names what was not found and what there is nearby.
 */
import { isRecord, type ClusterObjects } from '../kube/objects.js';
import { validateNode } from '../kube/validate.js';
import type { IPFamily, NodeModel, ServicePort } from '../model/types.js';
import { parseIP } from '../net/ip.js';
import type { TraceProtocol, TraceQuery, TraceRequest } from '../trace/types.js';

const list = (names: string[]) => (names.length > 0 ? [...new Set(names)].sort().join(', ') : 'none');

function servicePort(q: TraceQuery, dst: Extract<TraceQuery['dst'], { kind: 'service' }>, model: NodeModel, family: IPFamily | null): ServicePort | string {
  const all = [...model.families.IPv4.servicePorts, ...model.families.IPv6.servicePorts];
  const ofService = all.filter((sp) => sp.namespace === dst.namespace && sp.serviceName === dst.name);
  if (ofService.length === 0) {
    const inNamespace = all.filter((sp) => sp.namespace === dst.namespace).map((sp) => sp.serviceName);
    return `no Service ${dst.namespace}/${dst.name} with a cluster IP in the input (Services in ${dst.namespace}: ${list(inNamespace)})`;
  }
  const ports = ofService.filter((sp) => sp.portName === dst.port || String(sp.port) === dst.port);
  const protocol = ports.filter((sp) => q.protocol === null || sp.protocol.toLowerCase() === q.protocol);
  // The source's family, else IPv4: the family a dual-stack Service's clients use unless they ask.
  const found = protocol.find((sp) => sp.family === (family ?? 'IPv4')) ?? protocol[0];
  if (found) return found;
  const known = ofService.map((sp) => `${sp.portName || '(unnamed)'} ${sp.port}/${sp.protocol}`);
  const what = ports.length > 0 ? `port ${dst.port} over ${q.protocol!.toUpperCase()}` : `port ${dst.port}`;
  return `Service ${dst.namespace}/${dst.name} has no ${what}; its ports: ${list(known)}`;
}

/** The node's first address: a node port's trace runs on that node's model. */
function nodeAddress(node: string, objects: ClusterObjects, model: NodeModel, family: IPFamily | null): string {
  const names = objects.nodes.flatMap((o) => {
    const r = validateNode(o);
    return r.ok ? [r.value.name] : [];
  });
  if (!names.includes(node)) throw new ResolveError(`no Node ${node} in the input (nodes: ${list(names)})`);
  const ip = model.node.nodeIPs.find((a) => family === null || parseIP(a)?.family === family) ?? model.node.nodeIPs[0];
  if (!ip) throw new ResolveError(`Node ${node} has no InternalIP or ExternalIP in the input`);
  return ip;
}

/** The pod's address of `family` (the destination's), else its first. */
function podAddress(namespace: string, name: string, objects: ClusterObjects, family: IPFamily): string {
  if (!objects.pods || objects.pods.length === 0) throw new ResolveError(`the input has no Pods to find ${namespace}/${name} in: give --src as an IP`);
  const pods = objects.pods.filter(isRecord);
  const meta = (p: Record<string, unknown>) => (isRecord(p.metadata) ? p.metadata : {});
  const pod = pods.find((p) => meta(p).name === name && (meta(p).namespace ?? 'default') === namespace);
  if (!pod) {
    const inNamespace = pods.filter((p) => (meta(p).namespace ?? 'default') === namespace).map((p) => String(meta(p).name));
    throw new ResolveError(`no Pod ${namespace}/${name} in the input (Pods in ${namespace}: ${list(inNamespace)})`);
  }
  const status = isRecord(pod.status) ? pod.status : {};
  const ips = [...(Array.isArray(status.podIPs) ? status.podIPs.map((p) => (isRecord(p) ? p.ip : undefined)) : []), status.podIP];
  const parsed = ips.flatMap((t) => (typeof t === 'string' ? [parseIP(t)] : [])).filter((p) => p !== null);
  const ip = parsed.find((p) => p.family === family) ?? parsed[0];
  if (!ip) throw new ResolveError(`Pod ${namespace}/${name} has no IP in the input`);
  return ip.text;
}

class ResolveError extends Error {}

export function resolveQuery(q: TraceQuery, objects: ClusterObjects, model: NodeModel): TraceRequest | { error: string } {
  try {
    // A source given as an address decides the destination's family; a pod takes the destination's.
    const family = q.src?.kind === 'address' ? (parseIP(q.src.ip)?.family ?? null) : null;
    let dst: TraceRequest['dst'];
    let protocol: TraceProtocol = q.protocol ?? 'tcp';
    if (q.dst.kind === 'address') dst = { ip: q.dst.ip, port: q.dst.port };
    else if (q.dst.kind === 'nodePort') dst = { ip: nodeAddress(q.dst.node, objects, model, family), port: q.dst.port };
    else {
      const sp = servicePort(q, q.dst, model, family);
      if (typeof sp === 'string') throw new ResolveError(sp);
      dst = { ip: sp.clusterIP, port: sp.port };
      protocol = sp.protocol.toLowerCase() as TraceProtocol;
    }
    const dstFamily = parseIP(dst.ip)!.family;
    const src =
      q.src === null ? null : q.src.kind === 'address' ? { ip: q.src.ip, port: q.src.port } : { ip: podAddress(q.src.namespace, q.src.name, objects, dstFamily), port: null };
    return { src, dst, protocol, from: q.from, output: q.output };
  } catch (err) {
    if (err instanceof ResolveError) return { error: `trace: ${err.message}` };
    throw err;
  }
}
