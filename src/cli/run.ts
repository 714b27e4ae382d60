/**
 * The command line's edge: reads files and stdin, writes stdout and stderr, returns an
 * exit code. Everything it calls is pure.
 */
import { ConfigError } from '../config/kubeproxyconfig.js';
import { ManifestError, parseManifests } from '../kube/manifests.js';
import type { Problem } from '../model/types.js';
import { cleanupRules, runAgent } from '../agent/main.js';
import { createLogger } from '../log.js';
import { dryRun } from './dryrun.js';
import { buildProgram, CommanderError, parseInvocation } from './program.js';

export interface CliIO {
  readFile(path: string): string;
  readStdin(): string;
  stdout(text: string): void;
  stderr(text: string): void;
  hostname: string;
}

/** Names of rejected objects may hold anything, newlines included: quote all but the plain ones. */
function printable(s: string): string {
  return /^[A-Za-z0-9][-A-Za-z0-9_./:<>]*$/.test(s) ? s : JSON.stringify(s);
}

export function describeProblem(p: Problem): string {
  const who = p.namespace ? `${p.namespace}/${p.name}` : p.name;
  return `skipped ${p.kind} ${printable(who)}: ${p.reason}`;
}

/**
 * Runs the command line. Dry runs and errors answer at once; the agent and --cleanup
 * return a promise of the exit code.
 */
export function runCli(argv: string[], io: CliIO): number | Promise<number> {
  const fail = (msg: string) => {
    io.stderr(`kube-proxy-ts: ${msg}\n`);
    return 2;
  };
  let inv;
  try {
    inv = parseInvocation(argv, io, io.hostname);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.help') {
        io.stdout(buildProgram().helpInformation());
        return 0;
      }
      return fail(err.message.replace(/^error: /, ''));
    }
    if (err instanceof ConfigError) return fail(err.message);
    throw err;
  }
  for (const w of inv.warnings) io.stderr(`kube-proxy-ts: warning: ${w}\n`);

  if (inv.config.mode !== 'iptables') return fail(`--proxy-mode ${inv.config.mode} is not implemented yet; use iptables`);
  if (inv.cleanup) return cleanupRules(createLogger(inv.verbosity));
  if (!inv.dryRun) {
    if (inv.fromFile !== null) return fail('--from-file goes with --dry-run; the agent reads the API server');
    return runAgent(inv.config, createLogger(inv.verbosity));
  }
  if (inv.fromFile === null) return fail('--dry-run needs --from-file (reading a live cluster is not implemented yet)');

  let text: string;
  try {
    text = inv.fromFile === '-' ? io.readStdin() : io.readFile(inv.fromFile);
  } catch (err) {
    return fail(`--from-file ${inv.fromFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let parsed;
  try {
    parsed = parseManifests(text, inv.fromFile === '-' ? '<stdin>' : inv.fromFile);
  } catch (err) {
    if (err instanceof ManifestError) return fail(err.message);
    throw err;
  }
  const result = dryRun(parsed.objects, inv.config);
  for (const p of [...parsed.problems, ...result.build.problems]) io.stderr(`kube-proxy-ts: ${describeProblem(p)}\n`);
  if (!result.build.nodeKnown) {
    io.stderr(
      `kube-proxy-ts: warning: no Node ${inv.config.hostnameOverride} in the input; without its zone and addresses, topology hints and --nodeport-addresses cannot apply\n`,
    );
  }
  if (inv.verbosity > 0) {
    for (const s of result.build.skipped) io.stderr(`kube-proxy-ts: not proxied: Service ${s.namespace}/${s.name}: ${s.reason}\n`);
  }
  io.stdout(result.text);
  return 0;
}
