/**
 * Cluster objects from manifest text: multi-document YAML or JSON, with `List` objects
 * (as `kubectl get -o yaml` prints) flattened. Kinds the proxy does not use are ignored.
 */
import { parseAllDocuments } from 'yaml';
import type { ClusterObjects } from './objects.js';
import type { Problem } from './objects.js';

export class ManifestError extends Error {}

export interface ParsedManifests {
  objects: ClusterObjects;
  /** Objects that could not even be classified (no kind, or a list item that is not a mapping). */
  problems: Problem[];
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export function parseManifests(text: string, source: string): ParsedManifests {
  const objects: ClusterObjects = { services: [], endpointSlices: [], nodes: [] };
  const problems: Problem[] = [];
  const docs = parseAllDocuments(text, { uniqueKeys: false });
  if (!Array.isArray(docs)) throw new ManifestError(`${source}: not YAML`);

  const add = (obj: unknown, where: string) => {
    if (!isRecord(obj)) {
      problems.push({ kind: 'object', namespace: '', name: where, reason: 'is not a mapping' });
      return;
    }
    const kind = obj.kind;
    if (typeof kind === 'string' && kind.endsWith('List') && Array.isArray(obj.items)) {
      obj.items.forEach((item, i) => add(item, `${where} item ${i}`));
      return;
    }
    switch (kind) {
      case 'Service':
        objects.services.push(obj);
        break;
      case 'EndpointSlice':
        objects.endpointSlices.push(obj);
        break;
      case 'Node':
        objects.nodes.push(obj);
        break;
      case undefined:
        problems.push({ kind: 'object', namespace: '', name: where, reason: 'has no kind' });
        break;
      default:
        break;
    }
  };

  docs.forEach((doc, i) => {
    const err = doc.errors[0];
    if (err) {
      const line = err.linePos?.[0].line;
      throw new ManifestError(`${source}${line ? `:${line}` : ''}: not valid YAML: ${err.message.split('\n')[0]}`);
    }
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (err) {
      // Alias bombs and the like: the document is refused whole, with the parser's reason.
      throw new ManifestError(`${source}: document ${i + 1}: ${(err as Error).message.split('\n')[0]}`);
    }
    if (value === null || value === undefined) return;
    if (!isRecord(value)) {
      throw new ManifestError(`${source}: document ${i + 1} is not a Kubernetes object (a YAML mapping with a kind)`);
    }
    add(value, `document ${i + 1}`);
  });
  return { objects, problems };
}
