/**
 * A pod's mounts on a host that lacks their mount points, as the operations pod-mounts.sh
 * runs in a private mount namespace. A mount point that does not exist (say
 * /var/run/secrets/kubernetes.io/serviceaccount) is made inside a tmpfs mounted over its
 * deepest existing ancestor (/run), as a container has its own /run; a host path hidden
 * by such a tmpfs (/run/xtables.lock) is bound aside first, to a tmpfs scratch directory,
 * and bound back. Every mkdir and touch lands in a tmpfs of that namespace.
 */
import { existsSync, realpathSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';

export interface PodMount {
  /** Where the container sees it. */
  path: string;
  /** The host file or directory shown there. */
  source: string;
  readOnly: boolean;
}

const SCRIPT = join(import.meta.dirname, 'pod-mounts.sh');

const within = (dir: string, p: string) => p === dir || !relative(dir, p).startsWith('..');

/** The path with its deepest existing ancestor resolved (symlinks followed), and that ancestor. */
function resolveOnHost(path: string): { real: string; existing: string } {
  let existing = path;
  while (!existsSync(existing)) existing = dirname(existing);
  const realAncestor = realpathSync(existing);
  return { real: join(realAncestor, relative(existing, path)), existing: realAncestor };
}

/** `sh pod-mounts.sh OPS... --`: prefix `command` with it; `scratch` is an empty directory of the test's. */
export function podMountArgs(mounts: readonly PodMount[], scratch: string): string[] {
  const targets = mounts.map((m) => ({ ...m, ...resolveOnHost(m.path), dir: statSync(m.source).isDirectory() }));
  const shadows = [...new Set(targets.filter((t) => !existsSync(t.path)).map((t) => t.existing))];
  const topShadows = shadows.filter((s) => !shadows.some((o) => o !== s && within(o, s)));
  const shadowed = (p: string) => topShadows.some((s) => within(s, p));
  if (shadowed(scratch)) throw new Error(`pod-mounts: the scratch directory ${scratch} would be hidden`);
  const ops: string[] = ['tmpfs', scratch];
  const sources = targets.map((t, i) => {
    const real = realpathSync(t.source);
    if (!shadowed(real)) return real;
    const aside = join(scratch, String(i));
    ops.push(t.dir ? 'mkdir' : 'touch', aside, 'bind', real, aside);
    return aside;
  });
  for (const s of topShadows) ops.push('tmpfs', s);
  targets.forEach((t, i) => {
    // Under a fresh tmpfs nothing exists yet: make the mount point there.
    if (shadowed(t.real)) {
      ops.push('mkdir', t.dir ? t.real : dirname(t.real));
      if (!t.dir) ops.push('touch', t.real);
    }
    ops.push(t.readOnly ? 'bind-ro' : 'bind', sources[i]!, t.real);
  });
  return ['sh', SCRIPT, ...ops, '--'];
}
