/**
 * `--dry-run`: what a mode would program for one node, for people and for the mode's own
 * tools. Pure: cluster objects, the node's name and a configured mode in; text out.
 */
import type { ClusterObjects } from '../kube/objects.js';
import { buildNodeModel, type BuildResult } from '../model/build.js';
import type { ConfiguredMode } from '../modes/mode.js';

export interface DryRun {
  text: string;
  build: BuildResult;
}

export function dryRun(objects: ClusterObjects, nodeName: string, mode: ConfiguredMode, explain = false): DryRun {
  const build = buildNodeModel(objects, nodeName);
  const text = (['IPv4', 'IPv6'] as const).map((f) => mode.rulesText(build.model.families[f], build.model.node, explain)).join('\n');
  return { text, build };
}
