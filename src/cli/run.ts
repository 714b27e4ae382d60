/**
 * The command line's edge: reads files and stdin, writes stdout, stderr and the file of
 * --write-config-to, returns an exit code. Everything it calls is pure.
 */
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { ConfigError } from '../config/kubeproxyconfig.js';
import { ManifestError, parseManifests } from '../kube/manifests.js';
import type { ClusterObjects, Problem } from '../kube/objects.js';
import { validateNode } from '../kube/validate.js';
import { ModeUnavailableError } from '../modes/mode.js';
import { allModes, implementedModes, modeByName } from '../modes/registry.js';
import { dryRun } from '../offline/dryrun.js';
import { runTrace } from '../offline/trace.js';
import { CommanderError, HelpRequested, parseInvocation, type Invocation } from './program.js';

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

/** The version in the project's package.json: two levels above this file in the source tree, three in dist/. */
function version(): string {
  const require = createRequire(import.meta.url);
  for (const path of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = require(path) as { name?: string; version?: string };
      if (pkg.name === 'kube-proxy-ts' && pkg.version) return pkg.version;
    } catch {
      // not at this level
    }
  }
  return 'unknown';
}

const agent = async () => ({ main: await import('../agent/main.js'), log: await import('../log.js') });

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
    if (err instanceof HelpRequested) {
      io.stdout(err.text);
      return 0;
    }
    if (err instanceof CommanderError) return fail(err.message.replace(/^error: /, ''));
    if (err instanceof ConfigError) return fail(err.message);
    throw err;
  }
  for (const w of inv.warnings) io.stderr(`kube-proxy-ts: warning: ${w}\n`);
  if (inv.version) {
    io.stdout(`kube-proxy-ts ${version()} (Node.js ${process.version})\n`);
    return 0;
  }

  // Before the mode check: a configuration for a mode not implemented yet is still worth writing.
  if (inv.writeConfig) {
    const { path, text } = inv.writeConfig;
    if (path === '-') io.stdout(text);
    else {
      try {
        writeFileSync(path, text);
      } catch (err) {
        return fail(`--write-config-to ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
    return 0;
  }

  const mode = modeByName(inv.config.mode);
  if (!mode) return fail(`--proxy-mode ${inv.config.mode} is not implemented yet; use ${implementedModes().join(' or ')}`);
  // The agent's modules (the API client alone takes ~0.5 s to load) only when it runs.
  if (inv.cleanup) return agent().then(({ main, log }) => main.cleanupModes(allModes(), log.createLogger(inv.verbosity)));
  if (!inv.dryRun && !inv.trace) {
    if (inv.fromFile !== null) return fail('--from-file goes with --dry-run; the agent reads the API server');
    if (inv.explain) return fail('--explain goes with --dry-run');
    return agent().then(({ main, log }) => main.runAgent(inv.config, mode, log.createLogger(inv.verbosity)));
  }
  const offline = (objects: ClusterObjects, problems: Problem[]): number => {
    const configured = mode.configure(inv.config);
    const node = inv.config.hostnameOverride;
    let result;
    try {
      result = inv.trace ? runTrace(objects, node, configured, inv.trace) : dryRun(objects, node, configured, inv.explain);
    } catch (err) {
      if (err instanceof ModeUnavailableError) return fail(err.message);
      throw err;
    }
    for (const p of [...problems, ...result.build.problems]) io.stderr(`kube-proxy-ts: ${describeProblem(p)}\n`);
    if (!result.build.nodeKnown && !('error' in result)) {
      io.stderr(
        `kube-proxy-ts: warning: no Node ${result.build.model.node.nodeName} in the input; without its zone and addresses, topology hints and --nodeport-addresses cannot apply\n`,
      );
    }
    if (inv.verbosity > 0) {
      for (const s of result.build.skipped) io.stderr(`kube-proxy-ts: not proxied: Service ${s.namespace}/${s.name}: ${s.reason}\n`);
    }
    if ('error' in result) return fail(result.error);
    io.stdout(result.text);
    return 0;
  };

  if (inv.fromFile === null) return live(inv, fail, offline);
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
  return offline(parsed.objects, parsed.problems);
}

/**
 * --dry-run and trace on the cluster itself. The node must be named, and be one of the
 * cluster's: a live cluster has many, and guessing from this host's name would be wrong.
 */
async function live(inv: Invocation, fail: (msg: string) => number, offline: (objects: ClusterObjects, problems: Problem[]) => number): Promise<number> {
  const command = inv.trace ? 'trace' : '--dry-run';
  let objects: ClusterObjects;
  try {
    const { readLiveCluster } = await import('../kube/live.js');
    objects = await readLiveCluster(inv.config.kubeconfig || null);
  } catch (err) {
    return fail(`${command}: reading the cluster: ${(err as Error).message}`);
  }
  const names = objects.nodes.flatMap((n) => {
    const r = validateNode(n);
    return r.ok ? [r.value.name] : [];
  });
  const known = names.length > 0 ? names.sort().join(', ') : 'none';
  if (!inv.hostnameGiven) return fail(`${command} on a live cluster needs --hostname-override NODE (its nodes: ${known})`);
  if (!names.includes(inv.config.hostnameOverride)) return fail(`${command}: no Node ${inv.config.hostnameOverride} in the cluster (its nodes: ${known})`);
  return offline(objects, []);
}
