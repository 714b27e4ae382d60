/**
 * The running agent's answers to "what did you program, and where does this packet go?":
 * GET /debug/rules and GET /debug/trace on the metrics address. Built from the agent's
 * model by the same mode functions as --dry-run and `kube-proxy-ts trace`, so the three agree.
 */
import type { FamilyModel, IPFamily, NodeContext } from '../model/types.js';
import type { ConfiguredMode } from '../modes/mode.js';
import { parseHostPort } from '../trace/packet.js';
import { tracePacket } from '../trace/request.js';
import type { TraceRequest } from '../trace/types.js';

export interface DebugSource {
  models(): Record<IPFamily, FamilyModel>;
  families: IPFamily[];
  node(): NodeContext;
  mode: ConfiguredMode;
  /** When the oldest change not yet programmed arrived, or null when the kernel is current. */
  pendingSince(): number | null;
}

export interface DebugAnswer {
  status: number;
  contentType: string;
  body: string;
}

const text = (status: number, body: string): DebugAnswer => ({ status, contentType: 'text/plain; charset=utf-8', body });

function pendingNote(src: DebugSource): string[] {
  const since = src.pendingSince();
  return since === null ? [] : [`# changes seen since ${new Date(since).toISOString()} are not programmed yet; these are the rules they lead to`];
}

export function debugRules(src: DebugSource): DebugAnswer {
  const models = src.models();
  return text(200, [...pendingNote(src), ...src.families.map((f) => src.mode.rulesText(models[f], src.node(), false))].join('\n'));
}

/** `?src=IP[:PORT]&dst=IP:PORT&proto=tcp|udp|sctp&from=pod|node|external&output=text|json` */
export function debugTrace(src: DebugSource, query: URLSearchParams): DebugAnswer {
  const dst = parseHostPort(query.get('dst') ?? '');
  if (!dst || dst.port === null) return text(400, 'dst: want IP:PORT or [IPv6]:PORT\n');
  const from = query.get('from') ?? 'pod';
  if (from !== 'pod' && from !== 'node' && from !== 'external') return text(400, 'from: want pod, node or external\n');
  const proto = query.get('proto') ?? 'tcp';
  if (proto !== 'tcp' && proto !== 'udp' && proto !== 'sctp') return text(400, 'proto: want tcp, udp or sctp\n');
  const srcText = query.get('src');
  const source = srcText === null ? null : parseHostPort(srcText);
  if (srcText !== null && !source) return text(400, 'src: want IP or IP:PORT\n');
  const output = query.get('output') === 'json' ? 'json' : 'text';
  const req: TraceRequest = { src: source, dst: { ip: dst.ip, port: dst.port }, protocol: proto, from, output };
  const r = tracePacket((m, n, p) => src.mode.dataplane(m, n, p), src.models(), src.node(), req);
  if ('error' in r) return text(400, `${r.error}\n`);
  const body = output === 'json' ? r.text : [...pendingNote(src), r.text].join('\n');
  return { status: 200, contentType: output === 'json' ? 'application/json' : 'text/plain; charset=utf-8', body };
}
