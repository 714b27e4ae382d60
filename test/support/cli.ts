/** Runs the CLI in-process with files from disk and captured output. */
import { readFileSync } from 'node:fs';
import { runCli } from '../../src/cli/run.js';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function cli(argv: string[], stdin = ''): CliResult {
  const r = run(argv, stdin);
  if (typeof r.code !== 'number') throw new Error('cli(): this invocation starts the agent or reads a live cluster; use cliAsync');
  return { code: r.code, stdout: r.stdout, stderr: r.stderr };
}

/** For invocations that answer later: a live cluster's --dry-run and trace. */
export async function cliAsync(argv: string[], stdin = ''): Promise<CliResult> {
  const r = run(argv, stdin);
  const code = await r.code;
  return { code, stdout: r.stdout, stderr: r.stderr };
}

function run(argv: string[], stdin: string) {
  const out = { stdout: '', stderr: '' };
  const code = runCli(argv, {
    readFile: (p) => readFileSync(p, 'utf8'),
    readStdin: () => stdin,
    stdout: (t) => {
      out.stdout += t;
    },
    stderr: (t) => {
      out.stderr += t;
    },
    hostname: 'test-host',
  });
  // Getters: output written after an asynchronous answer is read when the caller looks.
  return {
    code,
    get stdout() {
      return out.stdout;
    },
    get stderr() {
      return out.stderr;
    },
  };
}
