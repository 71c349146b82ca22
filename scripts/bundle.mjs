// Bundles the CLI into one ESM file. Why: Node 20 has no compile cache, and resolving and
// loading a few hundred small module files (imapflow's dependency tree, kysely, pino…)
// took ~0.8 s of every `mailferry` start; one bundle starts in ~0.3 s, which is what makes
// an incremental sync of an unchanged mailbox finish well under a second.
// Native and optional database drivers stay external (better-sqlite3 is a compiled addon;
// pg is loaded only for postgres:// URLs).
import { build } from 'esbuild';

await build({
  entryPoints: ['dist/src/cli/main.js'],
  outfile: 'dist/mailferry.mjs',
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  external: ['better-sqlite3', 'pg', 'pg-native'],
  // CommonJS dependencies inside an ESM bundle still call require().
  banner: { js: "import { createRequire as __mfRequire } from 'node:module'; const require = __mfRequire(import.meta.url);" },
  sourcemap: true,
  logLevel: 'warning',
});
