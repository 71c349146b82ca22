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
import { chmodSync, copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { build } from 'esbuild';

const APP = 'dist/mailferry-app.cjs';
const CACHE = 'dist/mailferry-app.cache';
const LOADER = 'dist/mailferry.mjs';

// libmime (imapflow's MIME helper) builds iconv-lite's GBK codec tables when it loads, only
// to compare decoders by identity later: ~7 ms of every start plus ~20 ms of TurboFan
// compiling the table fillers, for a codec mailferry's commands never use. Built on first
// use instead. Should a libmime upgrade change these lines, the build says so and bundles
// libmime as it is (correct, only slower to start).
const lazyGbk = {
  name: 'lazy-gbk',
  setup(b) {
    b.onLoad({ filter: /[\\/]libmime[\\/]dist[\\/](esm|cjs)[\\/]charset\.js$/ }, (args) => {
      const text = readFileSync(args.path, 'utf8');
      const decl = /const DBCS_DECODER = ([\w.]+)\.getCodec\('gbk'\)\.decoder;/;
      const m = decl.exec(text);
      const uses = text.split('=== DBCS_DECODER)').length - 1;
      if (!m || uses !== 1) {
        console.warn(`bundle: ${args.path} changed; its GBK codec is built at start-up`);
        return undefined;
      }
      const patched = text
        .replace(decl, `let DBCS_DECODER_; const dbcsDecoder = () => (DBCS_DECODER_ ??= ${m[1]}.getCodec('gbk').decoder);`)
        .replace('=== DBCS_DECODER)', '=== dbcsDecoder())');
      return { contents: patched, loader: 'js' };
    });
  },
};

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
  plugins: [lazyGbk],
});

// main.ts's shebang: not valid inside the loader's function wrapper (kept a comment, so
// line numbers and the source map stay right).
const appText = readFileSync(APP, 'utf8');
if (appText.startsWith('#!')) writeFileSync(APP, `//${appText}`);

// Exit-time checks for a grown cache, per cache (see the loader).
const MAX_CHECKS = 3;
// V8's tiering budgets for the CLI (see the loader): 16× and a quarter of V8's defaults.
const INTERRUPT_BUDGET = 16 * 67584;
const INLINE_BUDGET = 230;
// The young generation's cap (both semi-spaces; see the loader): V8's maximum is 32 MiB.
const YOUNG_CAP = 16 * 1024 * 1024;

const loader = `#!/usr/bin/env node
// The mailferry command: runs ./mailferry-app.cjs with V8's code cache (see scripts/bundle.mjs).
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { PerformanceObserver } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';

// V8 optimizes a function once it has run for an "interrupt budget" of bytecode (66 KB by
// default). Most of a sync is a few hot loops, but with the default budget TurboFan also
// compiled some 120 functions of start-up, scan and copy code, many twice or three times as
// their types settled: about a quarter of the CPU of a 5,000-message migration, taken from
// the IMAP servers that share the machine. 16 times the budget and a smaller inlining
// budget optimize fewer functions, later: 5,000 messages took 0.93 instead of 1.2 CPU-s,
// 25,000 took 3.3 instead of 3.6 (the hot loops are still optimized, only later). Set
// before the app is compiled, so the code cache is made and read under the same flags.
v8.setFlagsFromString('--interrupt-budget=${INTERRUPT_BUDGET}');
v8.setFlagsFromString('--max-inlined-bytecode-size-cumulative=${INLINE_BUDGET}');
// The sync engine sets this when it first forces a collection (src/sync/reclaim.ts);
// set here, a big migration that does so still leaves its grown code cache at exit.
v8.setFlagsFromString('--expose-gc');
const app = fileURLToPath(new URL('./mailferry-app.cjs', import.meta.url));
const cache = fileURLToPath(new URL('./mailferry-app.cache', import.meta.url));
// The cache file is V8's data followed by one byte: how many exit-time checks it has had
// (see below).
let cachedData;
let checks = 0;
try {
  const file = readFileSync(cache);
  cachedData = file.subarray(0, file.length - 1);
  checks = file[file.length - 1] ?? 0;
} catch {
  cachedData = undefined;
}
const script = new vm.Script(
  '(function (exports, require, module, __filename, __dirname) {' + readFileSync(app, 'utf8') + '\\n})',
  { filename: app, ...(cachedData ? { cachedData } : {}) },
);
const save = (data, n) => {
  const tmp = cache + '.' + process.pid;
  try {
    writeFileSync(tmp, Buffer.concat([data, Buffer.from([n])]));
    renameSync(tmp, cache);
  } catch {
    try { rmSync(tmp, { force: true }); } catch { /* best effort */ }
  }
};
// A cache to write anew: after start-up has run (the command's modules are loaded by
// then), or at exit for a command that ends before (process.exit() from a handler).
let fresh = cachedData === undefined || script.cachedDataRejected;
const saveFresh = () => {
  if (!fresh) return;
  fresh = false;
  save((cachedData = script.createCachedData()), 0);
};
if (fresh) {
  checks = 0;
  cachedData = undefined;
  setImmediate(saveFresh);
}
// A command that ran more of the app than the cache holds (a sync's copy path is compiled
// lazily, after start-up) leaves a bigger cache at exit, so the next run reads that code
// back instead of parsing and compiling it again (~0.1 s of a 5,000-message sync's CPU).
// Serializing the cache costs ~15 ms, so only a run that worked for over a second of CPU
// checks (CPU, not wall time: a short command on a loaded machine can take a second and
// compiles no more for it),
// only the first ${MAX_CHECKS} such runs of a cache do (a short run, a no-op sync, compiles
// little), and the cache is rewritten only when it grew by a tenth. Only with V8's flags
// as they were at start: a changed flag set would make V8 reject the cache.
const versionTag = v8.cachedDataVersionTag();
const cpuSeconds = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
// V8's young generation (two semi-spaces) starts at 1 MiB and doubles whenever enough of it
// survives, up to 16 MiB per semi-space: a sync's chunks live long enough that it always
// gets there, and those 32 MiB were a fifth of the peak RSS the issue caps at 150 MB. The
// maximum can only be set on the command line (--max-semi-space-size, read when the heap
// is made), which 'node dist/mailferry.mjs' and npm's bin link would not pass; the growth
// factor is read each time the young generation grows, so once it reaches the cap growth is
// turned off. Measured: 8 MiB semi-spaces took 10 MB off the peak (30,000 messages of 6 KB:
// 134 instead of 144 MB; 5,000 of 36 KB: 117 instead of 127 MB) for no measurable CPU.
// Checked after every garbage collection (V8 grows the young generation only in one; it
// has no event for the growth itself): a timer polling every 20 ms missed the step from 16
// to 32 MiB on a fast machine, where a burst of allocation doubled it twice in one tick.
const YOUNG_CAP = ${YOUNG_CAP};
const capWatch = new PerformanceObserver(() => {
  const young = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
  if (young && young.space_size >= YOUNG_CAP) {
    v8.setFlagsFromString('--semi-space-growth-factor=1');
    capWatch.disconnect();
  }
});
capWatch.observe({ entryTypes: ['gc'] });
process.once('exit', () => {
  // V8's default again, so the flags (and the cache's version tag) are those of the start.
  v8.setFlagsFromString('--semi-space-growth-factor=2');
  if (fresh) return saveFresh();
  if (!cachedData || checks >= ${MAX_CHECKS} || cpuSeconds() < 1 || v8.cachedDataVersionTag() !== versionTag) return;
  const data = script.createCachedData();
  save(data.length >= cachedData.length * 1.1 + 4096 ? data : cachedData, checks + 1);
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

// The web admin page (src/web): its script bundled for browsers (type-checked by
// `tsc -p src/web/client`), its page and style sheet copied; served by src/http/web-assets.ts.
mkdirSync('dist/web', { recursive: true });
await build({
  entryPoints: ['src/web/client/app.ts'],
  outfile: 'dist/web/app.js',
  bundle: true,
  platform: 'browser',
  target: ['chrome110', 'firefox110', 'safari16'],
  format: 'iife',
  minify: true,
  sourcemap: true,
  logLevel: 'warning',
});
for (const f of ['index.html', 'style.css']) copyFileSync(`src/web/${f}`, `dist/web/${f}`);
