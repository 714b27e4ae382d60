// Replaces the compiled dist/src/kube/client.js with a bundle of it and its dependencies
// (see src/kube/client.ts for why). Native and worker-based packages stay external.
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';

const file = fileURLToPath(new URL('../dist/src/kube/client.js', import.meta.url));
await build({
  entryPoints: [file],
  outfile: file,
  allowOverwrite: true,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  // CommonJS dependencies call require(): give the ES module bundle one.
  banner: { js: "import { createRequire as __bundleRequire } from 'node:module'; const require = __bundleRequire(import.meta.url);" },
  logLevel: 'warning',
});
