/**
 * Cluster objects from manifest text: multi-document YAML or JSON, with `List` objects
 * (as `kubectl get -o yaml` prints) flattened. Kinds the proxy does not use are ignored.
 * JSON (what `kubectl get -o json` prints) is read with JSON.parse: a 10,000-service dump
 * is 30 MB, which a YAML parser takes many seconds and gigabytes to read.
 */
import { isRecord, type ClusterObjects, type Problem } from './objects.js';
import { yaml } from './yaml.js';

export class ManifestError extends Error {}

export interface ParsedManifests {
  objects: ClusterObjects;
  /** Objects that could not even be classified (no kind, or a list item that is not a mapping). */
  problems: Problem[];
}

/**
 * The document, when the text is one JSON value; otherwise why JSON.parse refused it, or
 * null when it does not look like JSON. Either way it is then read as YAML (a YAML flow
 * mapping starts with `{` too).
 */
function parseJson(text: string): { value: unknown } | { error: string } | null {
  const first = text.trimStart()[0];
  if (first !== '{' && first !== '[') return null;
  try {
    return { value: JSON.parse(text) as unknown };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

export function parseManifests(text: string, source: string): ParsedManifests {
  const objects: ClusterObjects = { services: [], endpointSlices: [], nodes: [] };
  const problems: Problem[] = [];

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
      case 'ServiceCIDR':
        (objects.serviceCIDRs ??= []).push(obj);
        break;
      case 'Pod':
        (objects.pods ??= []).push(obj);
        break;
      case undefined:
        problems.push({ kind: 'object', namespace: '', name: where, reason: 'has no kind' });
        break;
      default:
        break;
    }
  };

  const json = parseJson(text);
  if (json && 'value' in json) {
    if (Array.isArray(json.value)) json.value.forEach((item, i) => add(item, `item ${i}`));
    else if (isRecord(json.value)) add(json.value, 'document 1');
    else throw new ManifestError(`${source}: not a Kubernetes object or List (a JSON object with a kind)`);
    return { objects, problems };
  }
  const notJson = json ? ` (nor JSON: ${json.error})` : '';
  const docs = yaml().parseAllDocuments(text, { uniqueKeys: false });
  if (!Array.isArray(docs)) throw new ManifestError(`${source}: not YAML`);
  docs.forEach((doc, i) => {
    const err = doc.errors[0];
    if (err) {
      const line = err.linePos?.[0].line;
      throw new ManifestError(`${source}${line ? `:${line}` : ''}: not valid YAML: ${err.message.split('\n')[0]}${notJson}`);
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
