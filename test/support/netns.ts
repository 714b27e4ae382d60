/**
 * Throwaway network namespaces for tests. Names carry the process id so parallel runs
 * and leftovers from a crashed run never collide; `remove` is safe to call twice.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export interface CommandResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function run(cmd: string, args: string[], input?: string): CommandResult {
  const r = spawnSync(cmd, args, { input, encoding: 'utf8', maxBuffer: 1 << 30 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export class Netns {
  readonly name: string;

  constructor(prefix: string) {
    this.name = `kpt-${prefix}-${process.pid}-${randomBytes(3).toString('hex')}`;
    const r = run('ip', ['netns', 'add', this.name]);
    if (r.status !== 0) throw new Error(`ip netns add ${this.name}: ${r.stderr}`);
  }

  exec(cmd: string, args: string[], input?: string): CommandResult {
    return run('ip', ['netns', 'exec', this.name, cmd, ...args], input);
  }

  remove(): void {
    run('ip', ['netns', 'del', this.name]);
  }
}
