/**
 * The YAML library, loaded the first time something is YAML: JSON input and a dry run
 * without --config never pay for it (~35 ms of a dry run's start).
 */
import { createRequire } from 'node:module';

type Yaml = typeof import('yaml');
let loaded: Yaml | null = null;

export function yaml(): Yaml {
  loaded ??= createRequire(import.meta.url)('yaml') as Yaml;
  return loaded;
}
