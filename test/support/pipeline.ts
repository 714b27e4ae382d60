/**
 * The one way tests go from manifests to what a mode makes of them: the flags' config,
 * the node's model, the configured mode, its dry-run text and traces through its rules.
 * The golden, trace and e2e-shaped tests share it, so they all test the same wiring the
 * CLI and the agent use.
 */
import { parseInvocation } from '../../src/cli/program.js';
import type { ProxyConfig } from '../../src/config/options.js';
import { parseManifests } from '../../src/kube/manifests.js';
import type { Problem } from '../../src/kube/objects.js';
import { buildNodeModel, type BuildResult } from '../../src/model/build.js';
import type { ConfiguredMode } from '../../src/modes/mode.js';
import { modeByName } from '../../src/modes/registry.js';
import { dryRun } from '../../src/offline/dryrun.js';
import { packetFamily } from '../../src/trace/packet.js';
import { traceThrough } from '../../src/trace/trace.js';
import type { Dataplane, Packet, TraceResult } from '../../src/trace/types.js';

export type PacketSpec = Partial<Packet> & Pick<Packet, 'src' | 'dst' | 'dstPort'>;

export interface Pipeline {
  config: ProxyConfig;
  /** Objects the manifest parser refused. */
  problems: Problem[];
  build: BuildResult;
  mode: ConfiguredMode;
  /** What `--dry-run` prints on stdout. */
  dryRunText(explain?: boolean): string;
  /** A packet (TCP from a pod unless said otherwise) traced through the mode's rules, or through `dataplane`. */
  trace(spec: PacketSpec, dataplane?: Dataplane): TraceResult;
}

/** `args`: the flags as the command line takes them (`--proxy-mode`, `--hostname-override`, ...). */
export function pipeline(manifests: string, args: string[], source = 'manifests'): Pipeline {
  const noFiles = () => {
    throw new Error('pipeline(): flags that read files are not supported here');
  };
  const config = parseInvocation(['--dry-run', ...args], { readFile: noFiles }, 'test-host').config;
  const parsed = parseManifests(manifests, source);
  const build = buildNodeModel(parsed.objects, config.hostnameOverride);
  const mode = modeByName(config.mode).configure(config);
  return {
    config,
    problems: parsed.problems,
    build,
    mode,
    dryRunText: (explain = false) => dryRun(parsed.objects, config.hostnameOverride, mode, explain).text,
    trace(spec, dataplane) {
      const packet: Packet = { protocol: 'tcp', srcPort: null, from: 'pod', ...spec };
      const model = build.model.families[packetFamily(packet)];
      return traceThrough(dataplane ?? mode.dataplane(model, build.model.node, packet), model, build.model.node, packet);
    },
  };
}
