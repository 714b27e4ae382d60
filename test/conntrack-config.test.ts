/**
 * The conntrack settings as configuration: the `conntrack` section of a
 * KubeProxyConfiguration and the `--conntrack-*` flags, their validation, their
 * --write-config-to round trip, and the sysctls they come to (with a recording sysctl:
 * the real ones are in conntrack-netns.test.ts, in a namespace).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { parseInvocation } from '../src/cli/program.js';
import { ConfigError, loadKubeProxyConfiguration } from '../src/config/kubeproxyconfig.js';
import { conntrackConfig, DEFAULT_CONFIG, DEFAULT_CONNTRACK, type ProxyConfig } from '../src/config/options.js';
import { applyConntrackSettings, conntrackMax, conntrackSysctls, type Hashsize } from '../src/conntrack/settings.js';
import type { Sysctls } from '../src/exec/sysctl.js';
import { cli } from './support/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'kpt-ctcfg-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const io = { readFile: (p: string) => readFileSync(p, 'utf8') };
let n = 0;
const HEAD = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n';

function configFile(body: string): string {
  const path = join(dir, `c${n++}.yaml`);
  writeFileSync(path, HEAD + body);
  return path;
}

const ALL_FIELDS = `conntrack:
  maxPerCore: 0
  min: 65536
  tcpEstablishedTimeout: 2h
  tcpCloseWaitTimeout: 30m
  tcpBeLiberal: true
  udpTimeout: 45s
  udpStreamTimeout: 2m30s
`;

const ALL_FLAGS = [
  '--conntrack-max-per-core', '0',
  '--conntrack-min', '65536',
  '--conntrack-tcp-timeout-established', '2h',
  '--conntrack-tcp-timeout-close-wait', '30m',
  '--conntrack-tcp-be-liberal',
  '--conntrack-udp-timeout', '45s',
  '--conntrack-udp-timeout-stream', '150s',
];

const ALL_VALUES = {
  maxPerCore: 0,
  min: 65536,
  tcpEstablishedTimeoutMs: 7_200_000,
  tcpCloseWaitTimeoutMs: 1_800_000,
  tcpBeLiberal: true,
  udpTimeoutMs: 45_000,
  udpStreamTimeoutMs: 150_000,
};

describe('conntrack in a KubeProxyConfiguration', () => {
  it('reads every field, without a warning', () => {
    const loaded = loadKubeProxyConfiguration(HEAD + ALL_FIELDS, 'c.yaml');
    expect(loaded.warnings).toEqual([]);
    expect(loaded.layer.conntrack).toEqual(ALL_VALUES);
  });

  it("upstream's defaults when absent, a field at a time when some are given; null is not set", () => {
    expect(conntrackConfig(parseInvocation([], io, 'h').config)).toEqual(DEFAULT_CONNTRACK);
    expect(DEFAULT_CONNTRACK).toEqual({
      maxPerCore: 32768,
      min: 131072,
      tcpEstablishedTimeoutMs: 86_400_000,
      tcpCloseWaitTimeoutMs: 3_600_000,
      tcpBeLiberal: false,
      udpTimeoutMs: 0,
      udpStreamTimeoutMs: 0,
    });
    const cfg = parseInvocation(['--config', configFile('conntrack: {udpTimeout: 10s, min: null}\n')], io, 'h').config;
    expect(cfg.conntrack).toEqual({ ...DEFAULT_CONNTRACK, udpTimeoutMs: 10_000 });
  });

  it('names an unknown field in a warning, and still applies the others', () => {
    const loaded = loadKubeProxyConfiguration(HEAD + 'conntrack: {turbo: 1, tcpBeLiberal: true}\n', 'c.yaml');
    expect(loaded.warnings).toEqual(['c.yaml: unknown field conntrack.turbo is ignored']);
    expect(loaded.layer.conntrack).toEqual({ tcpBeLiberal: true });
  });

  it.each([
    ['conntrack: 5', /conntrack: 5 is not a mapping/],
    ['conntrack: {maxPerCore: "1"}', /conntrack.maxPerCore: "1" is not an integer/],
    ['conntrack: {min: 1.5}', /conntrack.min: 1.5 is not an integer/],
    ['conntrack: {min: -1}', /conntrack.min: -1 is not an integer in 0-2147483647/],
    ['conntrack: {maxPerCore: 3000000000}', /conntrack.maxPerCore: 3000000000 is not an integer in 0-2147483647/],
    ['conntrack: {tcpEstablishedTimeout: 24}', /conntrack.tcpEstablishedTimeout: 24 is not a duration/],
    ['conntrack: {udpTimeout: 500ms}', /conntrack.udpTimeout: 500ms is shorter than 1s/],
    ['conntrack: {udpStreamTimeout: 1000h}', /conntrack.udpStreamTimeout: 1000h0m0s is longer than 596h31m23s/],
    ['conntrack: {tcpBeLiberal: "yes"}', /conntrack.tcpBeLiberal: "yes" is not a boolean/],
  ])('%s: exit 2 with one line saying why', (body, why) => {
    expect(() => parseInvocation(['--config', configFile(`${body}\n`)], io, 'h')).toThrow(ConfigError);
    const r = cli(['--dry-run', '--from-file', configFile(''), '--config', configFile(`${body}\n`)]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(why);
  });
});

describe('--conntrack-* flags', () => {
  it('set every field, and override the file field by field', () => {
    expect(parseInvocation(ALL_FLAGS, io, 'h').config.conntrack).toEqual(ALL_VALUES);
    const cfg = parseInvocation(['--config', configFile(ALL_FIELDS), '--conntrack-min', '1000', '--conntrack-tcp-be-liberal=false'], io, 'h').config;
    expect(cfg.conntrack).toEqual({ ...ALL_VALUES, min: 1000, tcpBeLiberal: false });
  });

  it('are validated as the file is', () => {
    expect(() => parseInvocation(['--conntrack-min', '-5'], io, 'h')).toThrow(/conntrack.min: -5/);
    expect(() => parseInvocation(['--conntrack-udp-timeout', '100ms'], io, 'h')).toThrow(/conntrack.udpTimeout: 100ms is shorter than 1s/);
    expect(cli(['--conntrack-udp-timeout', 'soon']).stderr).toMatch(/--conntrack-udp-timeout.*want a duration/);
  });

  it('show in --help, in a group of their own', () => {
    const help = cli(['--help']).stdout;
    const group = help.slice(help.indexOf('Conntrack (set by the node agent at start-up):'), help.indexOf('Node agent:'));
    for (const flag of ALL_FLAGS.filter((f) => f.startsWith('--'))) expect(group).toContain(flag);
  });
});

describe('--write-config-to with conntrack', () => {
  function roundTrip(flags: string[]): { written: ProxyConfig; reloaded: ProxyConfig; warnings: string[]; text: string } {
    const first = parseInvocation([...flags, '--write-config-to', '-'], io, 'h');
    const text = first.writeConfig!.text;
    const second = parseInvocation(['--config', configFile(text.replace(HEAD, ''))], io, 'h');
    return { written: first.config, reloaded: second.config, warnings: second.warnings, text };
  }

  it('writes every conntrack field, which loads back to the same config, without warnings', () => {
    const { written, reloaded, warnings, text } = roundTrip(ALL_FLAGS);
    for (const [k, v] of Object.entries(DEFAULT_CONNTRACK)) expect(written.conntrack![k as keyof typeof DEFAULT_CONNTRACK], `conntrack.${k}`).not.toEqual(v);
    expect(warnings).toEqual([]);
    expect(reloaded).toEqual(written);
    expect(text).toContain('conntrack:\n  maxPerCore: 0\n  min: 65536\n  tcpEstablishedTimeout: 2h0m0s\n  tcpCloseWaitTimeout: 30m0s\n  tcpBeLiberal: true\n  udpTimeout: 45s\n  udpStreamTimeout: 2m30s\n');
  });

  it('the defaults spelt out load back the same; none given writes no conntrack block, and means the defaults', () => {
    const spelt = roundTrip(['--conntrack-max-per-core', '32768', '--conntrack-udp-timeout', '0s']);
    expect(spelt.reloaded).toEqual(spelt.written);
    expect(spelt.written.conntrack).toEqual(DEFAULT_CONNTRACK);
    const none = roundTrip([]);
    expect(none.text).not.toContain('conntrack');
    expect(none.reloaded).toEqual(none.written);
    expect(conntrackConfig(none.reloaded)).toEqual(DEFAULT_CONNTRACK);
  });
});

/** Records what would be written; `refuse` names sysctls that fail as a read-only file does. */
function recordingSysctl(now: Record<string, number>, refuse: string[] = []) {
  const writes: [string, number][] = [];
  const sysctl: Sysctls = {
    async ensure(name, value) {
      if (now[name] === value) return;
      if (refuse.includes(name)) throw Object.assign(new Error(`EACCES: permission denied, open '/proc/sys/${name}'`), { code: 'EACCES' });
      writes.push([name, value]);
      now[name] = value;
    },
  };
  return { sysctl, writes };
}

function recordingLog() {
  const lines: Record<string, unknown>[] = [];
  return { log: pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) }), lines };
}

function fakeHashsize(value: number, fail?: string): Hashsize & { written: number[] } {
  const written: number[] = [];
  return {
    written,
    read: async () => value,
    write: async (v) => {
      if (fail) throw Object.assign(new Error(fail), { code: fail });
      written.push(v);
    },
  };
}

describe('the conntrack settings on a node', () => {
  const withConntrack = (c: Partial<typeof DEFAULT_CONNTRACK>): ProxyConfig => ({ ...DEFAULT_CONFIG, conntrack: { ...DEFAULT_CONNTRACK, ...c } });

  it("computes nf_conntrack_max as upstream: max per core times the CPUs, at least min; 0 per core leaves it (and min) alone", () => {
    expect(conntrackMax(DEFAULT_CONNTRACK, 2)).toBe(131072);
    expect(conntrackMax(DEFAULT_CONNTRACK, 8)).toBe(262144);
    expect(conntrackMax({ ...DEFAULT_CONNTRACK, maxPerCore: 0 }, 64)).toBe(0);
    expect(conntrackMax({ ...DEFAULT_CONNTRACK, min: 0 }, 1)).toBe(32768);
  });

  it('sets the defaults (table, hash size a quarter of it, TCP timeouts) and nothing left at 0', async () => {
    const { sysctl, writes } = recordingSysctl({});
    const hashsize = fakeHashsize(1024);
    await applyConntrackSettings(DEFAULT_CONFIG, { sysctl, log: pino({ level: 'silent' }), cpus: 8, hashsize });
    expect(writes).toEqual([
      ['net/netfilter/nf_conntrack_max', 262144],
      ['net/netfilter/nf_conntrack_tcp_timeout_established', 86400],
      ['net/netfilter/nf_conntrack_tcp_timeout_close_wait', 3600],
    ]);
    expect(hashsize.written).toEqual([65536]);
  });

  it('every setting, in whole seconds; a hash size already large enough is left', async () => {
    const { sysctl, writes } = recordingSysctl({});
    const hashsize = fakeHashsize(1 << 20);
    await applyConntrackSettings(withConntrack({ ...ALL_VALUES, maxPerCore: 1000, tcpCloseWaitTimeoutMs: 1_500 }), { sysctl, log: pino({ level: 'silent' }), cpus: 4, hashsize });
    expect(writes).toEqual([
      ['net/netfilter/nf_conntrack_max', 65536],
      ['net/netfilter/nf_conntrack_tcp_timeout_established', 7200],
      ['net/netfilter/nf_conntrack_tcp_timeout_close_wait', 1],
      ['net/netfilter/nf_conntrack_tcp_be_liberal', 1],
      ['net/netfilter/nf_conntrack_udp_timeout', 45],
      ['net/netfilter/nf_conntrack_udp_timeout_stream', 150],
    ]);
    expect(hashsize.written).toEqual([]);
    expect(conntrackSysctls(DEFAULT_CONNTRACK).map((s) => s.name)).toEqual([
      'net/netfilter/nf_conntrack_tcp_timeout_established',
      'net/netfilter/nf_conntrack_tcp_timeout_close_wait',
    ]);
  });

  it('a read-only nf_conntrack_max (a non-host namespace): logged with why, skipped with the hash size, and the rest applied', async () => {
    const { sysctl, writes } = recordingSysctl({}, ['net/netfilter/nf_conntrack_max']);
    const { log, lines } = recordingLog();
    const hashsize = fakeHashsize(1024);
    await applyConntrackSettings(DEFAULT_CONFIG, { sysctl, log, cpus: 2, hashsize });
    expect(writes.map(([name]) => name)).toEqual(['net/netfilter/nf_conntrack_tcp_timeout_established', 'net/netfilter/nf_conntrack_tcp_timeout_close_wait']);
    expect(hashsize.written).toEqual([]);
    const warnings = lines.filter((l) => l.level === 40);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ sysctl: 'net/netfilter/nf_conntrack_max', value: 131072, msg: 'left nf_conntrack_max as it is' });
    expect(String(warnings[0]!.reason)).toMatch(/read-only here \(EACCES/);
  });

  it('a hash size that cannot be changed, a sysctl that does not exist: each logged and skipped, never thrown', async () => {
    const missing = 'net/netfilter/nf_conntrack_tcp_timeout_close_wait';
    const sysctl: Sysctls = {
      ensure: async (name) => {
        if (name === missing) throw Object.assign(new Error('ENOENT'), { code: 'ENOENT' });
      },
    };
    const { log, lines } = recordingLog();
    await applyConntrackSettings(DEFAULT_CONFIG, { sysctl, log, cpus: 64, hashsize: fakeHashsize(1024, 'EOPNOTSUPP') });
    const reasons = lines.filter((l) => l.level === 40).map((l) => String(l.reason));
    expect(reasons).toEqual([
      expect.stringMatching(/hashsize cannot be changed here \(EOPNOTSUPP/),
      expect.stringMatching(/close_wait does not exist \(is nf_conntrack loaded\?\)/),
    ]);
  });
});
