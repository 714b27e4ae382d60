/**
 * Kernel settings under /proc/sys, as kube-proxy sets them: read first, written only when
 * different, so a node whose admin already set one sees no write. A process in a network
 * namespace reads and writes that namespace's `net.*` settings.
 */
import { readFile, writeFile } from 'node:fs/promises';

export interface Sysctls {
  /** Sets `name` (`net/ipv4/conf/all/route_localnet`) to `value` unless it already is. */
  ensure(name: string, value: number): Promise<void>;
}

export const procSysctls: Sysctls = {
  async ensure(name, value) {
    const path = `/proc/sys/${name}`;
    if ((await readFile(path, 'utf8')).trim() === String(value)) return;
    await writeFile(path, `${value}\n`);
  },
};
