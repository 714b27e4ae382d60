/**
 * Running the kernel's tools: argument arrays only, never a shell string. The one place
 * in the agent that starts processes.
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
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
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
