/**
 * Which endpoints a node uses for a service port: the ready ones, narrowed by topology
 * hints when every ready endpoint carries them, else the serving-and-terminating ones so a
 * rollout never leaves a service without backends.
 */
import type { Endpoint, EndpointSet, NodeContext } from './types.js';

// Frozen: the model is never mutated, and a shared empty list must not become non-empty.
const NONE = Object.freeze([]) as unknown as Endpoint[];

function hintFilter(
  ready: Endpoint[],
  hintsOf: (e: Endpoint) => string[],
  mine: string | null,
): Endpoint[] | null {
  if (mine === null || ready.length === 0) return null;
  if (!ready.every((e) => hintsOf(e).length > 0)) return null;
  const matching = ready.filter((e) => hintsOf(e).includes(mine));
  return matching.length > 0 ? matching : null;
}

function select(candidates: Endpoint[], node: NodeContext | null): EndpointSet {
  // Usually every candidate is ready: share the array instead of copying it.
  const ready = candidates.every((e) => e.ready) ? candidates : candidates.filter((e) => e.ready);
  if (ready.length > 0) {
    if (node) {
      const byNode = hintFilter(ready, (e) => e.nodeHints, node.nodeName);
      if (byNode) return { endpoints: byNode, selection: 'ready, node hints' };
      const byZone = hintFilter(ready, (e) => e.zoneHints, node.zone);
      if (byZone) return { endpoints: byZone, selection: 'ready, zone hints' };
    }
    return { endpoints: ready, selection: 'ready' };
  }
  const fallback = candidates.filter((e) => e.serving && e.terminating);
  if (fallback.length > 0) return { endpoints: fallback, selection: 'serving-terminating fallback' };
  return { endpoints: NONE, selection: 'none' };
}

/** Endpoints for Cluster-policy traffic: topology hints apply. */
export function clusterEndpoints(all: Endpoint[], node: NodeContext): EndpointSet {
  return select(all, node);
}

/** Endpoints on this node, for Local policies: hints are moot when the node is the scope. */
export function localEndpoints(all: Endpoint[]): EndpointSet {
  return select(
    all.some((e) => e.isLocal) ? all.filter((e) => e.isLocal) : NONE,
    null,
  );
}
