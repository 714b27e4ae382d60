/**
 * Label and field selectors as kube-apiserver parses them, for the test apiserver.
 * Labels: `k=v`, `k==v`, `k!=v` (also true when k is absent), `k`, `!k`, `k in (a,b)`,
 * `k notin (a,b)`, comma-separated and ANDed. Fields: `metadata.name` and
 * `metadata.namespace` with `=`, `==`, `!=`. Anything else throws SelectorError.
 */

export class SelectorError extends Error {}

export interface SelectableMeta {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
}

export type Predicate = (meta: SelectableMeta) => boolean;

const KEY = String.raw`[A-Za-z0-9][-A-Za-z0-9_./]*`;
const VALUE = String.raw`[-A-Za-z0-9_.]*`;
const EQUALITY = new RegExp(String.raw`^(${KEY})\s*(==|=|!=)\s*(${VALUE})$`);
const EXISTS = new RegExp(String.raw`^(!?)\s*(${KEY})$`);
const SET = new RegExp(String.raw`^(${KEY})\s+(in|notin)\s+\(([^)]*)\)$`);

function terms(selector: string): string[] {
  // Commas inside `in (a,b)` do not separate terms.
  return selector
    .split(/,(?![^(]*\))/)
    .map((t) => t.trim())
    .filter((t) => t !== '');
}

function labelTerm(term: string): Predicate {
  let m = EQUALITY.exec(term);
  if (m) {
    const [, key = '', op, value = ''] = m;
    return op === '!=' ? (o) => o.labels?.[key] !== value : (o) => o.labels?.[key] === value;
  }
  m = EXISTS.exec(term);
  if (m) {
    const [, bang, key = ''] = m;
    return bang ? (o) => o.labels?.[key] === undefined : (o) => o.labels?.[key] !== undefined;
  }
  m = SET.exec(term);
  if (m) {
    const [, key = '', op, list = ''] = m;
    const values = new Set(list.split(',').map((v) => v.trim()));
    return op === 'in'
      ? (o) => values.has(o.labels?.[key] ?? '\0absent')
      : (o) => !values.has(o.labels?.[key] ?? '\0absent');
  }
  throw new SelectorError(`unable to parse requirement: ${JSON.stringify(term)}`);
}

function fieldTerm(term: string): Predicate {
  const m = /^(metadata\.name|metadata\.namespace)\s*(==|=|!=)\s*(.*)$/.exec(term);
  if (!m) throw new SelectorError(`field label not supported: ${term.split(/[=!]/)[0] ?? term}`);
  const [, field, op, value] = m;
  const get = field === 'metadata.name' ? (o: SelectableMeta) => o.name : (o: SelectableMeta) => o.namespace ?? '';
  return op === '!=' ? (o) => get(o) !== value : (o) => get(o) === value;
}

function all(predicates: Predicate[]): Predicate {
  return (o) => predicates.every((p) => p(o));
}

export function parseLabelSelector(selector: string): Predicate {
  return all(terms(selector).map(labelTerm));
}

export function parseFieldSelector(selector: string): Predicate {
  return all(terms(selector).map(fieldTerm));
}
