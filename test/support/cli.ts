/** Runs the CLI in-process with files from disk and captured output. */
import { readFileSync } from 'node:fs';
import { runCli } from '../../src/cli/run.js';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function cli(argv: string[], stdin = ''): CliResult {
  let stdout = '';
  let stderr = '';
  const code = runCli(argv, {
    readFile: (p) => readFileSync(p, 'utf8'),
    readStdin: () => stdin,
    stdout: (t) => {
      stdout += t;
    },
    stderr: (t) => {
      stderr += t;
    },
    hostname: 'test-host',
  });
  if (typeof code !== 'number') throw new Error('cli(): this invocation starts the agent; tests run it as a process');
  return { code, stdout, stderr };
}
