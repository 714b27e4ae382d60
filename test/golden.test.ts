/**
 * Golden files: every case under test/golden/iptables/<case>/ holds `cluster.yaml`
 * (manifests), `case.yaml` (description and CLI flags: the node context) and the
 * expected stdout and stderr of `--dry-run`. UPDATE_GOLDEN=1 rewrites the expectations.
 * Each expected output must also pass iptables-restore --test / ip6tables-restore --test.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { splitFamilies } from '../src/offline/dryrun.js';
import { cli } from './support/cli.js';
import { Netns } from './support/netns.js';
import { privilegedTestsCanRun } from './support/privileges.js';
import { restoreTest } from './support/iptables-check.js';

const root = join(import.meta.dirname, 'golden', 'iptables');
const update = process.env.UPDATE_GOLDEN === '1';
const cases = readdirSync(root).filter((d) => existsSync(join(root, d, 'case.yaml'))).sort();

interface GoldenCase {
  description: string;
  args: string[];
}

function readCase(name: string): GoldenCase {
  const c = parse(readFileSync(join(root, name, 'case.yaml'), 'utf8')) as GoldenCase;
  return { description: c.description, args: (c.args ?? []).map(String) };
}

function runCase(name: string) {
  const c = readCase(name);
  return cli(['--dry-run', '--from-file', join(root, name, 'cluster.yaml'), ...c.args]);
}

function golden(name: string, file: string, actual: string): string {
  const path = join(root, name, file);
  if (update) writeFileSync(path, actual);
  return existsSync(path) ? readFileSync(path, 'utf8') : '';
}

describe('iptables golden files', () => {
  it('has at least 20 cases', () => {
    expect(cases.length).toBeGreaterThanOrEqual(20);
  });

  for (const name of cases) {
    it(`${name}: ${readCase(name).description}`, () => {
      const r = runCase(name);
      expect(r.code, r.stderr).toBe(0);
      // Paths differ between checkouts; the golden file holds the case-relative name.
      const stderr = r.stderr.split(join(root, name) + '/').join('');
      expect(r.stdout).toBe(golden(name, 'expected.txt', r.stdout));
      expect(stderr).toBe(golden(name, 'expected.stderr', stderr));
    });
  }
});

describe('golden outputs pass iptables-restore --test', () => {
  const canRun = privilegedTestsCanRun('iptables-restore --test of golden files', ['ip', 'iptables-restore', 'ip6tables-restore']);
  let ns: Netns | undefined;
  beforeAll(() => {
    if (canRun) ns = new Netns('golden');
  });
  afterAll(() => ns?.remove());

  for (const name of cases) {
    it.runIf(canRun)(name, () => {
      const expected = readFileSync(join(root, name, 'expected.txt'), 'utf8');
      const byFamily = splitFamilies(expected);
      expect(restoreTest(ns!, 'IPv4', byFamily.IPv4)).toBeNull();
      expect(restoreTest(ns!, 'IPv6', byFamily.IPv6)).toBeNull();
    });
  }
});
