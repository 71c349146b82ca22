/**
 * The CLI's loader (dist/mailferry.mjs, written by scripts/bundle.mjs) and its V8 code cache:
 * a missing or unusable cache is replaced after start-up, and a usable one is read back and
 * left alone. The cache file is V8's data plus one trailing byte (the loader's count of
 * exit-time checks): a loader that misread that layout would have V8 reject the cache on
 * every start and rewrite it, which costs start-up time and shows nowhere else.
 *
 * Runs a copy of the bundle in a temp dir, so the build's own cache is not touched.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../', import.meta.url));
const root = path.dirname(dist.replace(/\/$/, ''));
const dir = mkdtempSync(path.join(os.tmpdir(), 'mailferry-loader-'));
after(() => rmSync(dir, { recursive: true, force: true }));

mkdirSync(path.join(dir, 'dist'));
for (const f of ['mailferry.mjs', 'mailferry-app.cjs']) copyFileSync(path.join(dist, f), path.join(dir, 'dist', f));
copyFileSync(path.join(root, 'package.json'), path.join(dir, 'package.json'));
// The bundle leaves native and optional drivers (better-sqlite3, pg) to node_modules.
symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
const loader = path.join(dir, 'dist', 'mailferry.mjs');
const cache = path.join(dir, 'dist', 'mailferry-app.cache');

function version(): string {
  const r = spawnSync(process.execPath, [loader, '--version'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

/** The cache file's inode: the loader replaces the file by renaming a new one into place, so a rewrite changes it. */
function cacheInode(): number {
  return statSync(cache).ino;
}

test('the code cache is written when missing, then read back without being rewritten', () => {
  rmSync(cache, { force: true });
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string };
  assert.equal(version(), pkg.version);
  const first = readFileSync(cache);
  assert.ok(first.length > 100_000, `a cache of the start-up code, not ${first.length} bytes`);
  assert.equal(first[first.length - 1], 0, 'a fresh cache has had no exit-time checks');
  const ino = cacheInode();
  // Short runs (under a second of CPU) never check at exit, so an accepted cache stays as it is.
  for (let i = 0; i < 2; i++) {
    assert.equal(version(), pkg.version);
    assert.equal(cacheInode(), ino, `run ${i + 2} rewrote a cache V8 should have accepted`);
  }
});

test('an unusable code cache (garbage, empty, or without the trailing byte) is replaced, and the command still runs', () => {
  version();
  const good = readFileSync(cache);
  const unusable: [string, Buffer][] = [
    ['garbage', Buffer.from('not a V8 code cache at all, just some bytes\n')],
    ['empty', Buffer.alloc(0)],
    ['without the trailing byte', good.subarray(0, good.length - 1)],
  ];
  for (const [what, bytes] of unusable) {
    rmSync(cache);
    writeFileSync(cache, bytes);
    const ino = cacheInode();
    assert.ok(version().length > 0, what);
    assert.notEqual(cacheInode(), ino, `${what}: the cache was not replaced`);
    const now = readFileSync(cache);
    assert.ok(now.length > 100_000, `${what}: replaced by ${now.length} bytes`);
    assert.equal(now[now.length - 1], 0, what);
    // And the replacement is one V8 accepts.
    const replaced = cacheInode();
    version();
    assert.equal(cacheInode(), replaced, `${what}: its replacement was rewritten too`);
  }
});

test('the young generation stops growing at 16 MiB, and a long run still checks its cache at exit', () => {
  // A stand-in app beside a copy of the loader: it keeps many objects alive for over a
  // second of CPU (as a sync's chunks do), yielding like an event-driven program, and reports the
  // largest young generation it saw. Without the cap V8 grows it to 32 MiB.
  const standIn = mkdtempSync(path.join(os.tmpdir(), 'mailferry-loader-young-'));
  try {
    copyFileSync(loader, path.join(standIn, 'mailferry.mjs'));
    writeFileSync(
      path.join(standIn, 'mailferry-app.cjs'),
      `const v8 = require('node:v8');
const keep = [];
let largest = 0;
let n = 0;
// Works for 1.5 s of CPU (the loader's threshold is CPU time, so a loaded machine only
// makes this take longer).
const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
function step() {
  for (let i = 0; i < 4000; i++, n++) {
    keep.push({ n, text: 'message ' + n });
    if (keep.length > 150000) keep.splice(0, 75000);
  }
  largest = Math.max(largest, v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size);
  if (cpu() < 1.5) setImmediate(step);
  else process.stdout.write(JSON.stringify({ largest }));
}
step();
`,
    );
    const run = () => {
      const r = spawnSync(process.execPath, [path.join(standIn, 'mailferry.mjs')], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      return JSON.parse(r.stdout) as { largest: number };
    };
    const { largest } = run();
    assert.ok(largest <= 16 * 1024 * 1024, `young generation reached ${largest / 1024 / 1024} MiB`);
    assert.ok(largest >= 8 * 1024 * 1024, `the stand-in made it grow at all (${largest / 1024 / 1024} MiB)`);
    // Both runs worked for over a second of CPU, so both checked the cache for growth at exit: which
    // the loader skips unless V8's flags are back as they were at start.
    run();
    const file = readFileSync(path.join(standIn, 'mailferry-app.cache'));
    assert.equal(file[file.length - 1], 2, 'both runs checked at exit (the count is 2)');
  } finally {
    rmSync(standIn, { recursive: true, force: true });
  }
});
