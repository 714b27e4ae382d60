/**
 * The agent and the offline tools reach @kubernetes/client-node only through
 * src/kube/client.ts, which the build bundles (see there for why): one import of the
 * package from anywhere else would load all of its modules again at every start.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..');
const SRC = join(ROOT, 'src');

const sources = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));

describe('the client-node bundle', () => {
  it('is the only way src/ imports @kubernetes/client-node at run time', () => {
    const importers = sources(SRC).filter((f) => /^(import|export) (?!type )[^;]*from '@kubernetes\/client-node(\/[^']*)?';/m.test(readFileSync(f, 'utf8')));
    expect(importers.map((f) => relative(ROOT, f))).toEqual(['src/kube/client.ts']);
  });

  it('is built: dist/src/kube/client.js holds client-node itself, not an import of it', () => {
    const built = readFileSync(join(ROOT, 'dist', 'src', 'kube', 'client.js'), 'utf8');
    expect(built).not.toMatch(/from ['"]@kubernetes\/client-node['"]/);
    expect(built).toMatch(/KubeConfig = class/);
  });
});
