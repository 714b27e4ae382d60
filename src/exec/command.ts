/**
 * Running the kernel's tools: argument arrays only, never a shell string. The one place
 * in the agent that starts processes. A tool that cannot be started (missing, or no
 * descriptors left: EMFILE) is a rejected promise, never an uncaught error.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface CommandResult {
  status: number;
  stdout: string;
  stderr: string;
}

export type Runner = (cmd: string, args: string[], input?: Buffer[]) => Promise<CommandResult>;

/**
 * Inputs above this reach the tool as a file (deleted once open) rather than a pipe. A
 * pipe takes 64 KB at a time, each needing a turn of the event loop: while other work
 * runs there (the nftables ledger, counted during a full sync), 10 MB of script took the
 * tool most of a second to receive, and nft does nothing until it has all of it.
 */
export const FILE_INPUT_BYTES = 1 << 20;

/** The input in a file of its own, open for reading from its start; null where none can be made. */
async function inputFile(input: Buffer[]): Promise<number | null> {
  let dir: string | null = null;
  try {
    dir = await mkdtemp(join(tmpdir(), 'kpt-input-'));
    const path = join(dir, 'input');
    await writeFile(path, input, { flag: 'wx', mode: 0o600 });
    return openSync(path, 'r');
  } catch {
    return null;
  } finally {
    if (dir) await rm(dir, { recursive: true, force: true }).catch(() => {});
  }
}

export const runCommand: Runner = async (cmd, args, input) => {
  const bytes = (input ?? []).reduce((n, b) => n + b.length, 0);
  const file = bytes > FILE_INPUT_BYTES ? await inputFile(input!) : null;
  return new Promise((resolve, reject) => {
    let child;
    try {
      child = spawn(cmd, args, { stdio: [file ?? 'pipe', 'pipe', 'pipe'] });
    } finally {
      // The child has its own copy of the descriptor, if it started.
      if (file !== null) closeSync(file);
    }
    // First: when spawning fails, the error comes as an event, and the pipes may be missing.
    child.on('error', reject);
    if ((file === null && !child.stdin) || !child.stdout || !child.stderr) return;
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
    if (!child.stdin) return;
    // A tool that exits early (bad input) closes its stdin: that is its answer, not ours to throw.
    child.stdin.on('error', () => {});
    for (const chunk of input ?? []) child.stdin.write(chunk);
    child.stdin.end();
  });
};
