/**
 * Running the kernel's tools: argument arrays only, never a shell string. The one place
 * in the agent that starts processes. A tool that cannot be started (missing, or no
 * descriptors left: EMFILE) is a rejected promise, never an uncaught error.
 */
import { spawn } from 'node:child_process';

export interface CommandResult {
  status: number;
  stdout: string;
  stderr: string;
}

export type Runner = (cmd: string, args: string[], input?: Buffer[]) => Promise<CommandResult>;

export const runCommand: Runner = (cmd, args, input) =>
  new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    // First: when spawning fails, the error comes as an event, and the pipes may be missing.
    child.on('error', reject);
    if (!child.stdin || !child.stdout || !child.stderr) return;
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('close', (code, signal) =>
      resolve({
        status: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      }),
    );
    // A tool that exits early (bad input) closes its stdin: that is its answer, not ours to throw.
    child.stdin.on('error', () => {});
    for (const chunk of input ?? []) child.stdin.write(chunk);
    child.stdin.end();
  });
