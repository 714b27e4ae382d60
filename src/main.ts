#!/usr/bin/env node
// First: it sets V8 flags that must hold before the other modules load.
import './v8-flags.js';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { runCli } from './cli/run.js';

const result = runCli(process.argv.slice(2), {
  readFile: (p) => readFileSync(p, 'utf8'),
  readStdin: () => readFileSync(0, 'utf8'),
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
  hostname: hostname(),
});
if (typeof result === 'number') process.exitCode = result;
else {
  result.then(
    (code) => process.exit(code),
    (err: Error) => {
      process.stderr.write(`kube-proxy-ts: ${err.message}\n`);
      process.exit(1);
    },
  );
}
