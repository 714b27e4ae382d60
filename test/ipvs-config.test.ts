/**
 * ipvs mode's flags and the KubeProxyConfiguration `ipvs:` block: parsed, validated as
 * upstream validates them, layered (flags over file), written back by
 * --write-config-to, and seen in what --dry-run prints.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseInvocation } from '../src/cli/program.js';
import { ConfigError, loadKubeProxyConfiguration } from '../src/config/kubeproxyconfig.js';
import { cli } from './support/cli.js';

const io = { readFile: () => '' };
const parse = (argv: string[]) => parseInvocation(argv, io, 'host').config;
const HEAD = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n';

describe('ipvs flags', () => {
  it('take upstream\'s names and defaults', () => {
    const d = parse(['--proxy-mode', 'ipvs']);
    expect(d.ipvs).toMatchObject({ scheduler: 'rr', strictARP: false, excludeCIDRs: [], tcpTimeoutMs: 0 });
    const c = parse([
      '--proxy-mode', 'ipvs',
      '--ipvs-scheduler', 'lc',
      '--ipvs-strict-arp',
      '--ipvs-exclude-cidrs', '10.0.0.0/8, 192.168.0.0/16',
      '--ipvs-sync-period', '45s',
      '--ipvs-min-sync-period', '2s',
      '--ipvs-tcp-timeout', '15m',
      '--ipvs-tcpfin-timeout', '30s',
      '--ipvs-udp-timeout', '5m',
    ]);
    expect(c.ipvs).toEqual({ scheduler: 'lc', strictARP: true, excludeCIDRs: ['10.0.0.0/8', '192.168.0.0/16'], syncPeriodMs: 45_000, minSyncPeriodMs: 2_000, tcpTimeoutMs: 900_000, tcpFinTimeoutMs: 30_000, udpTimeoutMs: 300_000 });
    // In ipvs mode its sync periods are the agent's.
    expect([c.syncPeriodMs, c.minSyncPeriodMs]).toEqual([45_000, 2_000]);
  });

  it('leave the sync periods of another mode alone', () => {
    const c = parse(['--proxy-mode', 'iptables', '--ipvs-sync-period', '45s', '--iptables-sync-period', '20s']);
    expect(c.syncPeriodMs).toBe(20_000);
  });

  it('refuse a scheduler upstream does not accept, naming those it does', () => {
    expect(() => parse(['--proxy-mode', 'ipvs', '--ipvs-scheduler', 'fastest'])).toThrow(/ipvs.scheduler: "fastest" is not one of rr, wrr, lc, wlc, lblc, lblcr, sh, dh, sed, nq, mh/);
    expect(() => parse(['--ipvs-exclude-cidrs', '10.0.0.0/33'])).toThrow(/ipvs.excludeCIDRs: "10.0.0.0\/33" is not a CIDR/);
    expect(() => parse(['--ipvs-tcp-timeout', '1500ms'])).toThrow(/ipvs.tcpTimeout: .* whole number of seconds/);
  });

  it('show in the dry run: the scheduler of every virtual server', () => {
    const cluster = join(import.meta.dirname, 'golden', 'clusterip-three-endpoints', 'cluster.yaml');
    const r = cli(['--dry-run', '--proxy-mode', 'ipvs', '--ipvs-scheduler', 'wrr', '--hostname-override', 'node-a', '--from-file', cluster]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('-A -t 10.96.10.10:80 -s wrr\n');
    expect(r.stdout).not.toContain(' -s rr');
  });

  it('with --explain: what each virtual server serves, as comments that leave the sections valid input', () => {
    const cluster = join(import.meta.dirname, 'golden', 'etp-local-with-local-endpoint', 'cluster.yaml');
    const r = cli(['--dry-run', '--explain', '--proxy-mode', 'ipvs', '--hostname-override', 'node-a', '--from-file', cluster]);
    expect(r.stdout).toContain('#   -t 192.0.2.70:80  shop/ingress:http load balancer IP, local set: 10.244.1.70:8080\n');
    expect(r.stdout).toContain('#   -t 10.96.70.70:80  shop/ingress:http cluster IP, cluster set: 10.244.1.70:8080 10.244.2.70:8080\n');
  });
});

describe('the ipvs: block of a KubeProxyConfiguration', () => {
  it('loads upstream\'s fields, an empty scheduler meaning rr, and warns about unknown ones', () => {
    const loaded = loadKubeProxyConfiguration(
      `${HEAD}mode: ipvs\nipvs:\n  scheduler: ""\n  strictARP: true\n  excludeCIDRs: [10.1.0.0/16]\n  syncPeriod: 40s\n  minSyncPeriod: 0s\n  tcpTimeout: 0s\n  tcpFinTimeout: 0s\n  udpTimeout: 0s\n  turbo: true\n`,
      'kpc.yaml',
    );
    expect(loaded.layer.ipvs).toEqual({ strictARP: true, excludeCIDRs: ['10.1.0.0/16'], syncPeriodMs: 40_000, minSyncPeriodMs: 0, tcpTimeoutMs: 0, tcpFinTimeoutMs: 0, udpTimeoutMs: 0 });
    expect(loaded.warnings).toEqual(['kpc.yaml: unknown field ipvs.turbo is ignored']);
    expect(() => loadKubeProxyConfiguration(`${HEAD}ipvs: {strictARP: yes-please}\n`, 'x')).toThrow(ConfigError);
  });

  it('is overridden by flags, and --write-config-to writes what loads back the same', () => {
    const path = 'kpc.yaml';
    const read = { readFile: (p: string) => (p === path ? `${HEAD}mode: ipvs\nipvs: {scheduler: sh, excludeCIDRs: [10.1.0.0/16]}\n` : '') };
    const inv = parseInvocation(['--config', path, '--ipvs-scheduler', 'mh', '--write-config-to', '-'], read, 'host');
    expect(inv.config.ipvs.scheduler).toBe('mh');
    expect(inv.config.ipvs.excludeCIDRs).toEqual(['10.1.0.0/16']);
    const again = loadKubeProxyConfiguration(inv.writeConfig!.text, 'written');
    expect(again.warnings).toEqual([]);
    const back = parseInvocation(['--config', 'w'], { readFile: () => inv.writeConfig!.text }, 'host').config;
    expect(back.ipvs).toEqual(inv.config.ipvs);
  });

  it('is left out of a written configuration of another mode that does not use it', () => {
    const inv = parseInvocation(['--proxy-mode', 'iptables', '--write-config-to', '-'], io, 'host');
    expect(inv.writeConfig!.text).not.toContain('ipvs:');
  });
});
