/**
 * The two ways nftables mode runs a script, against a real kernel in a throwaway network
 * namespace: libnftables in process (through koffi, as the agent does) and `nft -f -` (the
 * fallback when the library does not load). A test process cannot change its own namespace,
 * so the runner is loaded from the compiled agent (`npx tsc -p .` first) in a child started
 * with `ip netns exec`. Both must apply a script atomically, return what list commands
 * print, and return nft's own error text.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Netns, run } from './support/netns.js';
import { privilegedTestsCanRun } from './support/privileges.js';

const DIST = join(import.meta.dirname, '..', 'dist', 'src');

/** Run inside the namespace: choose a runner, run each script, print the results. */
const RUNNER_CHILD = `
import { pathToFileURL } from 'node:url';
const [dist, spec] = process.argv.slice(1);
const { chooseNft } = await import(pathToFileURL(dist + '/modes/nftables/nft.js').href);
const { runCommand } = await import(pathToFileURL(dist + '/exec/command.js').href);
const { library, scripts: given, file } = JSON.parse(spec);
const scripts = file ? [(await import('node:fs')).readFileSync(file, 'latin1')] : given;
const logs = [];
const log = { info: (o, msg) => logs.push({ level: 'info', msg, ...o }), warn: (o, msg) => logs.push({ level: 'warn', msg, ...o }) };
const nft = await chooseNft(runCommand, log, library ? { library } : {});
const results = [];
for (const s of scripts) results.push(await (s.startsWith('list') ? nft.list(s) : nft.run(s)));
nft.close();
process.stdout.write(JSON.stringify({ kind: nft.kind, results, logs }) + '\\n');
`;

interface Outcome {
  kind: string;
  results: { ok: boolean; output: string; error: string }[];
  logs: { level: string; msg: string }[];
}

const canRun = privilegedTestsCanRun('nft runners in a network namespace', ['ip', 'nft']);
const libraryLoads = canRun && spawnSync(process.execPath, ['-e', "require('koffi').load('libnftables.so.1')"], { cwd: join(import.meta.dirname, '..') }).status === 0;
if (canRun && !libraryLoads) {
  if (process.env.KPT_REQUIRE_PRIVILEGED === '1') throw new Error('nft runners: libnftables.so.1 (or koffi) does not load');
  console.warn('SKIP libnftables in a network namespace: libnftables.so.1 (or koffi) does not load');
}

const RUNNERS = [
  { name: 'libnftables in process', library: null, kind: 'library', runs: libraryLoads },
  { name: 'nft -f - (the fallback)', library: '/nonexistent/libnftables.so.1', kind: 'command', runs: true },
] as const;

/** A set of `n` addresses, as one script: past IN_PROCESS_MAX_BYTES at 90,000. */
function bigScript(n: number): string {
  const lines = ['add table ip kube-proxy', 'add set ip kube-proxy big { type ipv4_addr ; }'];
  for (let i = 0; i < n; i += 1000) {
    const items = Array.from({ length: Math.min(1000, n - i) }, (_, j) => `10.${((i + j) >> 16) & 255}.${((i + j) >> 8) & 255}.${(i + j) & 255}`);
    lines.push(`add element ip kube-proxy big { ${items.join(', ')} }`);
  }
  return `${lines.join('\n')}\n`;
}

const TABLE = 'add table ip kube-proxy\nadd chain ip kube-proxy services\nadd map ip kube-proxy service-ips { type ipv4_addr . inet_service : verdict ; }\n';

describe.runIf(canRun)('nft runners against a real kernel', () => {
  let ns: Netns;
  beforeEach(() => {
    ns = new Netns('nft');
  });
  afterEach(() => ns?.remove());

  it.runIf(libraryLoads)('a script over 1 MB applies through nft -f -, and in process where there is no nft command', () => {
    const script = bigScript(90_000);
    expect(script.length).toBeGreaterThan(1 << 20);
    const dir = mkdtempSync(join(tmpdir(), 'kpt-nft-'));
    const file = join(dir, 'big.nft');
    writeFileSync(file, script);
    for (const path of [process.env.PATH ?? '/usr/sbin:/usr/bin', '/nonexistent']) {
      ns.exec('nft', ['flush', 'ruleset']);
      const c = ns.exec('env', [`PATH=${path}`, process.execPath, '--input-type=module', '-e', RUNNER_CHILD, DIST, JSON.stringify({ library: null, file })]);
      expect(c.status, c.stderr).toBe(0);
      const out = JSON.parse(c.stdout.trim().split('\n').at(-1)!) as Outcome;
      expect(out.kind).toBe('library');
      expect(out.results[0]!.ok, `${path}: ${out.results[0]!.error}`).toBe(true);
      expect(ns.exec('nft', ['list', 'set', 'ip', 'kube-proxy', 'big']).stdout).toContain('10.1.95.143');
    }
    rmSync(dir, { recursive: true, force: true });
  });

  for (const r of RUNNERS) {
    const runIn = (scripts: string[]) => {
      const c = ns.exec(process.execPath, ['--input-type=module', '-e', RUNNER_CHILD, DIST, JSON.stringify({ library: r.library, scripts })]);
      if (c.status !== 0) throw new Error(`child failed (${c.status}): ${c.stderr}`);
      const out = JSON.parse(c.stdout.trim().split('\n').at(-1)!) as Outcome;
      expect(out.kind).toBe(r.kind);
      // The fallback says why, once.
      expect(out.logs.filter((l) => l.level === 'warn')).toHaveLength(r.kind === 'command' ? 1 : 0);
      return out.results;
    };

    it.runIf(r.runs)(`${r.name}: applies a script in the namespace and lists it back`, () => {
      const [add, list] = runIn([TABLE + 'add element ip kube-proxy service-ips { 10.96.0.10 . 80 : goto services }\n', 'list map ip kube-proxy service-ips\n']);
      expect(add).toEqual({ ok: true, output: '', error: '' });
      expect(list!.ok).toBe(true);
      expect(list!.output).toMatch(/10\.96\.0\.10 \. 80 : goto services/);
      expect(ns.exec('nft', ['list', 'chain', 'ip', 'kube-proxy', 'services']).status).toBe(0);
      // The namespace's, not the host's.
      expect(run('nft', ['list', 'tables']).stdout).not.toMatch(/\bkube-proxy\b/);
    });

    it.runIf(r.runs)(`${r.name}: a failing script changes nothing and returns nft's error text`, () => {
      const [first, bad] = runIn([TABLE, 'add chain ip kube-proxy other\nadd rule ip kube-proxy missing-chain accept\n']);
      expect(first!.ok).toBe(true);
      expect(bad!.ok).toBe(false);
      expect(bad!.error).toMatch(/Error: .*No such file or directory/);
      // Atomic: the chain added before the failing line is not there either.
      expect(ns.exec('nft', ['list', 'chain', 'ip', 'kube-proxy', 'other']).status).not.toBe(0);
    });
  }
});
