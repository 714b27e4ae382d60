/**
 * The test API server's authentication and authorization: bearer tokens it issued (and can
 * revoke), and RBAC as a ClusterRole and ClusterRoleBinding declare it, read from
 * deploy/rbac.yaml, so a permission the agent needs and the manifest lacks fails a test.
 * Like kube-apiserver, any authenticated user may read discovery.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';

export const RBAC_MANIFEST = join(import.meta.dirname, '..', '..', 'deploy', 'rbac.yaml');

export interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}

/** What one request asks to do to a resource, as kube-apiserver's RequestInfo says it. */
export interface ResourceAttributes {
  verb: string;
  apiGroup: string;
  resource: string;
  namespace?: string;
}

export interface Rbac {
  rules: PolicyRule[];
  /** Users the role is bound to: `system:serviceaccount:NS:NAME` for a ServiceAccount. */
  users: string[];
}

interface Doc {
  kind?: string;
  metadata?: { name?: string };
  rules?: Array<Partial<PolicyRule>>;
  roleRef?: { kind?: string; name?: string };
  subjects?: Array<{ kind?: string; name?: string; namespace?: string }>;
}

export function readManifests(path = RBAC_MANIFEST): Doc[] {
  return parseAllDocuments(readFileSync(path, 'utf8')).map((d) => d.toJS() as Doc);
}

/** The ClusterRole's rules and its binding's users, from manifests like deploy/rbac.yaml. */
export function rbacFrom(docs: readonly Doc[]): Rbac {
  const role = docs.find((d) => d.kind === 'ClusterRole');
  const binding = docs.find((d) => d.kind === 'ClusterRoleBinding' && d.roleRef?.kind === 'ClusterRole' && d.roleRef.name === role?.metadata?.name);
  if (!role || !binding) throw new Error('rbac: want a ClusterRole and a ClusterRoleBinding to it');
  const rules = (role.rules ?? []).map((r) => ({ apiGroups: r.apiGroups ?? [], resources: r.resources ?? [], verbs: r.verbs ?? [] }));
  const users = (binding.subjects ?? []).map((s) => (s.kind === 'ServiceAccount' ? `system:serviceaccount:${s.namespace}:${s.name}` : String(s.name)));
  return { rules, users };
}

const matches = (granted: string[], asked: string) => granted.includes('*') || granted.includes(asked);

export function allows(rbac: Rbac, user: string, a: ResourceAttributes): boolean {
  return rbac.users.includes(user) && rbac.rules.some((r) => matches(r.verbs, a.verb) && matches(r.apiGroups, a.apiGroup) && matches(r.resources, a.resource));
}

/** kube-apiserver's words for a refusal. */
export function forbiddenMessage(user: string, a: ResourceAttributes): string {
  const qualified = a.apiGroup === '' ? a.resource : `${a.resource}.${a.apiGroup}`;
  const scope = a.namespace === undefined ? 'at the cluster scope' : `in the namespace "${a.namespace}"`;
  return `${qualified} is forbidden: User "${user}" cannot ${a.verb} resource "${a.resource}" in API group "${a.apiGroup}" ${scope}`;
}

/** Bearer tokens and the RBAC they are checked against. */
export class AccessControl {
  private readonly tokens = new Map<string, string>();
  private readonly revoked = new Set<string>();

  constructor(readonly rbac: Rbac) {}

  /** A new token for `user` (a ServiceAccount's by default, as kubelet would get one). */
  issue(user = this.rbac.users[0] ?? 'system:anonymous'): string {
    const token = randomBytes(24).toString('base64url');
    this.tokens.set(token, user);
    return token;
  }

  revoke(token: string): void {
    this.revoked.add(token);
  }

  /** The user of an `Authorization: Bearer` header, or undefined when it names no valid token. */
  authenticate(header: string | undefined): { user: string; token: string } | undefined {
    const m = /^Bearer ([^\s]+)$/i.exec(header ?? '');
    const token = m?.[1];
    const user = token === undefined || this.revoked.has(token) ? undefined : this.tokens.get(token);
    return user === undefined ? undefined : { user, token: token! };
  }

  authorize(user: string, a: ResourceAttributes): boolean {
    return allows(this.rbac, user, a);
  }
}
