/**
 * Golden cases: `test/golden/<case>/` holds `case.yaml` (description, CLI flags, and the
 * input when it is not the case's own `cluster.yaml`), and per mode the expected stdout
 * (`<mode>.txt`) and stderr (`<mode>.stderr`) of `--dry-run`. Every mode's goldens cover
 * the same inputs.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parse } from 'yaml';

export const GOLDEN_ROOT = join(import.meta.dirname, '..', 'golden');
const REPO = resolve(import.meta.dirname, '..', '..');

/** The modes that have an expected output for every golden case. */
export const GOLDEN_MODES = ['iptables', 'nftables'] as const;

export interface GoldenCase {
  name: string;
  description: string;
  args: string[];
  /** The manifests' path. */
  input: string;
}

export const goldenCaseNames = (): string[] => readdirSync(GOLDEN_ROOT).filter((d) => existsSync(join(GOLDEN_ROOT, d, 'case.yaml'))).sort();

export function readGoldenCase(name: string): GoldenCase {
  const c = parse(readFileSync(join(GOLDEN_ROOT, name, 'case.yaml'), 'utf8')) as { description: string; args?: unknown[]; input?: string };
  return {
    name,
    description: c.description,
    args: (c.args ?? []).map(String),
    input: c.input === undefined ? join(GOLDEN_ROOT, name, 'cluster.yaml') : join(REPO, c.input),
  };
}

export const goldenPath = (name: string, file: string): string => join(GOLDEN_ROOT, name, file);
