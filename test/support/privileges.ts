/**
 * Tests that need root and kernel tools skip, with a printed reason, where they cannot
 * run; under CI (`.ci/run` sets KPT_REQUIRE_PRIVILEGED=1) a missing prerequisite fails
 * the run instead, so CI never passes by skipping.
 */
import { spawnSync } from 'node:child_process';

export function missingPrerequisite(tools: string[]): string | null {
  if (process.getuid?.() !== 0) return 'not running as root';
  for (const tool of tools) {
    const r = spawnSync('sh', ['-c', 'command -v "$1"', 'sh', tool], { encoding: 'utf8' });
    if (r.status !== 0) return `${tool} is not installed`;
  }
  return null;
}

/** Returns true when the suite may run; prints why not, or throws under CI. */
export function privilegedTestsCanRun(suite: string, tools: string[]): boolean {
  const why = missingPrerequisite(tools);
  if (why === null) return true;
  if (process.env.KPT_REQUIRE_PRIVILEGED === '1') {
    throw new Error(`${suite}: required but cannot run: ${why}`);
  }
  console.warn(`SKIP ${suite}: ${why}`);
  return false;
}
