/**
 * Golden files (see support/golden.ts): for every case and mode, `--dry-run`'s stdout and
 * stderr must equal the expected files; UPDATE_GOLDEN=1 rewrites them. The test pipeline
 * must print the same text as the CLI. Each iptables output must also pass
 * iptables-restore --test / ip6tables-restore --test, and each nftables output must load
 * with `nft -f` (twice: over a fresh namespace and over its own table) with every chain,
 * set and map it declares there afterwards.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { familySections } from '../src/modes/family-sections.js';
import { FAMILY_BANNER } from '../src/modes/iptables/dryrun.js';
import { FAMILY_BANNER as NFT_FAMILY_BANNER } from '../src/modes/nftables/dryrun.js';
import { cli } from './support/cli.js';
import { GOLDEN_MODES, goldenCaseNames, goldenPath, readGoldenCase } from './support/golden.js';
import { restoreTest } from './support/iptables-check.js';
import { Netns } from './support/netns.js';
import { declared, listed, nftLoad } from './support/nft-check.js';
import { pipeline } from './support/pipeline.js';
import { privilegedTestsCanRun } from './support/privileges.js';

const update = process.env.UPDATE_GOLDEN === '1';
const cases = goldenCaseNames();

function golden(name: string, file: string, actual: string): string {
  const path = goldenPath(name, file);
  if (update) writeFileSync(path, actual);
  return existsSync(path) ? readFileSync(path, 'utf8') : '';
}

for (const mode of GOLDEN_MODES) {
  describe(`${mode} golden files`, () => {
    it('has at least 20 cases', () => {
      expect(cases.length).toBeGreaterThanOrEqual(20);
    });

    for (const name of cases) {
      const c = readGoldenCase(name);
      it(`${name}: ${c.description}`, () => {
        const args = ['--proxy-mode', mode, ...c.args];
        const r = cli(['--dry-run', '--from-file', c.input, ...args]);
        expect(r.code, r.stderr).toBe(0);
        // Paths differ between checkouts; the golden file holds the input's own name.
        const stderr = r.stderr.split(dirname(c.input) + '/').join('');
        expect(r.stdout).toBe(golden(name, `${mode}.txt`, r.stdout));
        expect(stderr).toBe(golden(name, `${mode}.stderr`, stderr));
        expect(pipeline(readFileSync(c.input, 'utf8'), args, name).dryRunText()).toBe(r.stdout);
      });
    }
  });
}

// userspace mode's capture rules are iptables-restore input too.
describe.each(['iptables', 'userspace'])('%s golden outputs pass iptables-restore --test', (mode) => {
  const canRun = privilegedTestsCanRun('iptables-restore --test of golden files', ['ip', 'iptables-restore', 'ip6tables-restore']);
  let ns: Netns | undefined;
  beforeAll(() => {
    if (canRun) ns = new Netns('golden');
  });
  afterAll(() => ns?.remove());

  for (const name of cases) {
    it.runIf(canRun)(name, () => {
      const byFamily = familySections(readFileSync(goldenPath(name, `${mode}.txt`), 'utf8'), FAMILY_BANNER);
      expect(restoreTest(ns!, 'IPv4', byFamily.IPv4)).toBeNull();
      expect(restoreTest(ns!, 'IPv6', byFamily.IPv6)).toBeNull();
    });
  }
});

describe('nftables golden outputs load with nft -f', () => {
  const canRun = privilegedTestsCanRun('nft -f of golden files', ['ip', 'nft']);
  let ns: Netns | undefined;
  beforeAll(() => {
    if (canRun) ns = new Netns('golden-nft');
  });
  afterAll(() => ns?.remove());

  for (const name of cases) {
    it.runIf(canRun)(name, () => {
      const byFamily = familySections(readFileSync(goldenPath(name, 'nftables.txt'), 'utf8'), NFT_FAMILY_BANNER);
      for (const [script, table] of [
        [byFamily.IPv4, 'ip kube-proxy'],
        [byFamily.IPv6, 'ip6 kube-proxy'],
      ] as const) {
        const r = nftLoad(ns!, script, table);
        expect(r.error).toBeNull();
        expect(listed(r.listing)).toEqual(declared(script));
      }
      ns!.exec('nft', ['flush', 'ruleset']);
    });
  }
});
