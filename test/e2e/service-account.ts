/**
 * A service account volume as kubelet projects one into a pod: `token`, `ca.crt` and
 * `namespace`, each a symlink through `..data` to a timestamped directory, and every
 * rewrite (a rotated token) a new directory swapped in by renaming `..data` at once, so a
 * reader sees the old files or the new ones, never half of each.
 */
import { mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface ServiceAccountFiles {
  token: string;
  'ca.crt': string;
  namespace: string;
}

export class ServiceAccountVolume {
  private files: ServiceAccountFiles;
  private current: string | null = null;
  private generation = 0;

  constructor(
    readonly dir: string,
    files: ServiceAccountFiles,
  ) {
    this.files = files;
    mkdirSync(dir, { recursive: true });
    this.write({});
    for (const name of Object.keys(files)) symlinkSync(join('..data', name), join(dir, name));
  }

  get token(): string {
    return this.files.token;
  }

  /** Rewrites the volume with some files changed, as kubelet does. */
  write(changed: Partial<ServiceAccountFiles>): void {
    this.files = { ...this.files, ...changed };
    const data = `..${new Date().toISOString().replace(/[-:.]/g, '_')}.${++this.generation}`;
    mkdirSync(join(this.dir, data));
    for (const [name, text] of Object.entries(this.files)) writeFileSync(join(this.dir, data, name), text, { mode: 0o644 });
    symlinkSync(data, join(this.dir, '..data_tmp'));
    renameSync(join(this.dir, '..data_tmp'), join(this.dir, '..data'));
    if (this.current) rmSync(join(this.dir, this.current), { recursive: true, force: true });
    this.current = data;
  }
}
