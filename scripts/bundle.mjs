// Bundles the CLI into one file, started through a small loader with V8's code cache.
//
// Why a bundle: Node 20 has no compile cache, and resolving and loading a few hundred
// small module files (imapflow's dependency tree, kysely, pino…) took ~0.8 s of every
// `mailferry` start; one bundle starts in ~0.3 s, which is what makes an incremental sync
// of an unchanged mailbox finish well under a second.
//
// Why the loader (dist/mailferry.mjs, the package's bin): even bundled, V8 parsed and
// compiled the 3 MB bundle and every function that start-up runs, on every start. The
// app is bundled as a CommonJS script (dist/mailferry-app.cjs) that the loader compiles
// with `vm.Script` and V8's code cache (`cachedData`, dist/mailferry-app.cache): the
// bytecode of what start-up ran is then read back instead of compiled. The cache is
// written by the first run that finds none (or finds it rejected: another Node or V8
// flags), right after start-up, atomically and best effort (a read-only install simply
// runs without one); the build primes it with `--help`, which loads every command.
// A cache V8 rejects costs nothing but the normal compile: correctness never depends on it.
//
// Native and optional database drivers stay external (better-sqlite3 is a compiled addon;
// pg is loaded only for postgres:// URLs).
import { spawnSync } from 'node:child_process';
import { chmodSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { build } from 'esbuild';

const APP = 'dist/mailferry-app.cjs';
const CACHE = 'dist/mailferry-app.cache';
const LOADER = 'dist/mailferry.mjs';

await build({
  entryPoints: ['dist/src/cli/main.js'],
  outfile: APP,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  // `import('pg')` as require(): a vm.Script has no dynamic-import callback.
  supported: { 'dynamic-import': false },
  // Less to read and hash at every start (names stay: stack traces remain readable).
  minifyWhitespace: true,
  external: ['better-sqlite3', 'pg', 'pg-native'],
  // imapflow's SOCKS proxy support: never used (see the stub).
  alias: { socks: './scripts/stubs/socks.cjs' },
  sourcemap: true,
  logLevel: 'warning',
});

// main.ts's shebang: not valid inside the loader's function wrapper (kept a comment, so
// line numbers and the source map stay right).
const appText = readFileSync(APP, 'utf8');
if (appText.startsWith('#!')) writeFileSync(APP, `//${appText}`);

const loader = `#!/usr/bin/env node
// The mailferry command: runs ./mailferry-app.cjs with V8's code cache (see scripts/bundle.mjs).
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';

const app = fileURLToPath(new URL('./mailferry-app.cjs', import.meta.url));
const cache = fileURLToPath(new URL('./mailferry-app.cache', import.meta.url));
let cachedData;
try {
  cachedData = readFileSync(cache);
} catch {
  cachedData = undefined;
}
const script = new vm.Script(
  '(function (exports, require, module, __filename, __dirname) {' + readFileSync(app, 'utf8') + '\\n})',
  { filename: app, ...(cachedData ? { cachedData } : {}) },
);
if (cachedData === undefined || script.cachedDataRejected) {
  // After start-up has run (the command's modules are loaded by then), before the command
  // itself can change V8 flags (the sync engine enables gc()), which would make V8 reject it.
  setImmediate(() => {
    const tmp = cache + '.' + process.pid;
    try {
      writeFileSync(tmp, script.createCachedData());
      renameSync(tmp, cache);
    } catch {
      try { rmSync(tmp, { force: true }); } catch { /* best effort */ }
    }
  });
}
// A command that ran more of the app than the cache holds (a sync's copy path is compiled
// lazily, after start-up) leaves a bigger cache at exit, so the next run reads that code
// back instead of parsing and compiling it again (~0.1 s of a 5,000-message sync's CPU).
// Only with V8's flags as they were at start (a changed flag set would make V8 reject
// the cache), and only when it grew by a tenth, so a cache that covers what runs stops
// being rewritten.
const versionTag = v8.cachedDataVersionTag();
const cachedSize = cachedData?.length ?? 0;
process.once('exit', () => {
  if (v8.cachedDataVersionTag() !== versionTag) return;
  const tmp = cache + '.' + process.pid;
  try {
    const data = script.createCachedData();
    if (data.length < cachedSize * 1.1 + 4096) return;
    writeFileSync(tmp, data);
    renameSync(tmp, cache);
  } catch {
    try { rmSync(tmp, { force: true }); } catch { /* best effort */ }
  }
});
const module = { exports: {} };
script.runInThisContext()(module.exports, createRequire(app), module, app, fileURLToPath(new URL('.', import.meta.url)));
`;
writeFileSync(LOADER, loader);
chmodSync(LOADER, 0o755);

// Prime the cache (every command's modules: help loads them all).
rmSync(CACHE, { force: true });
rmSync('dist/mailferry.mjs.map', { force: true }); // the old, single-file bundle's
const primed = spawnSync(process.execPath, [LOADER, '--help'], { stdio: 'ignore' });
if (primed.status !== 0) throw new Error(`bundle: ${LOADER} --help exited ${primed.status ?? primed.signal}`);
