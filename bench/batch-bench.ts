/**
 * `npm run bench:batch`: a whole batch under `mailferry serve` (issue 4): N mailboxes of M
 * messages each, between two local Dovecots, with the endpoint's maximum concurrent
 * migrations at 20 — total time, throughput, and the peak RSS and CPU of the service.
 *
 *   npm run bench:batch -- [--mailboxes 20] [--messages 1000] [--average-size 36000]
 *                          [--max-concurrent 20] [--max-concurrent-incremental 10]
 *                          [--concurrency 20] [--connections 2] [--db sqlite|postgres|both]
 *                          [--seed 1] [--rounds 1] [--timeout-minutes 60] [--cli FILE] [--json]
 *
 * --max-concurrent is the endpoint's `--max-concurrent-migrations`, --max-concurrent-incremental
 * its `--max-concurrent-incremental-syncs` (the CLI's default, 10); --concurrency and
 * --connections are `serve`'s own (defaults as the CLI's: 20 mailboxes at once, 2 copy lanes
 * per mailbox). --cli FILE measures another mailferry entry point (default: package.json's
 * bin.mailferry, the bundle).
 *
 * What it measures:
 * 1. a source Dovecot ('.' separator, Maildir) with N users, each loaded with its own
 *    generated corpus (seed × 1000 + i; M messages of the generator's realistic size mix around
 *    --average-size, up to 8 MB, in its 24 Outlook-like folders) by loadCorpusFast — once,
 *    shared by every --db run;
 * 2. per database (SQLite file, or a throwaway database on the local PostgreSQL): a fresh
 *    target Dovecot ('/' separator, sdbox, master user `admin`), a fresh state database,
 *    `mailferry endpoint create … --max-concurrent-migrations`, `target create`, then
 *    `mailferry serve` started as a child process (idle: no batch yet);
 * 3. the initial sync: from just before `mailferry batch create … --autostart` until the
 *    batch's status (read from the database with src/batch/view.ts, every 250 ms) is Synced —
 *    wall time, messages/s and MB/s over the whole batch, the slowest and median mailbox's
 *    own sync time (sync_run rows), serve's CPU seconds (/proc/PID/stat utime+stime) and
 *    RSS (/proc/PID/status VmRSS, sampled every second), and how busy the machine was
 *    (/proc/stat, all processes: serve, both Dovecots, anything else running);
 * 4. one round of incremental syncs with nothing new (--rounds N: N rounds one after the
 *    other, with serve's RSS after each, to tell a plateau from a leak): from just before
 *    `mailferry batch sync-now` until every mailbox has a finished incremental sync_run started after it
 *    (the service runs with the default --incremental-every 24h, so only sync-now triggers
 *    them) — wall time, serve CPU, messages copied (must be 0). Both phases' wall times
 *    include starting that one CLI command (~0.3 s) and up to one idle worker poll (1 s);
 * 5. serve's peak RSS (VmHWM) just before it is stopped with SIGTERM (exit status recorded);
 * 6. exactness: every target mailbox's folders counted with LIST-STATUS, against what was
 *    loaded into the source, folder by folder (special-use folders mapped as the tests do),
 *    and the batch's own `copied` per mailbox;
 * 7. serve's log (level info) is scanned for warnings and errors (and kept, with its path
 *    printed, when there are any or a check failed).
 * Then a table per database, the command to reproduce, and with `--json` one JSON object as
 * the last line of stdout. Exit status 1 when a mailbox failed, a no-op round copied
 * anything, or the target is not exact.
 *
 * MB here are MiB (2^20 bytes), like the CLI's summary. The machine is shared and small:
 * the 1-minute load average is shown beside each figure (taken when its phase started).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { findBatch } from '../src/batch/store.js';
import { type BatchDetail, loadBatchDetail } from '../src/batch/view.js';
import type { ImapLogin } from '../src/imap/endpoint.js';
import { openSession } from '../src/imap/imapflow-session.js';
import { type CorpusMessage, generateCorpus } from '../src/lab/corpus.js';
import { type DovecotServer, startDovecot } from '../src/lab/dovecot.js';
import { type FastLoadCorpus, loadCorpusFast } from '../src/lab/fast-load.js';
import type { Store } from '../src/store/open.js';
import { ADMIN_PASSWORD, type DialectName, freshDb, PG_BASE, postgresUnavailable, type TestDb } from '../test/helpers/batch-lab.js';
import { type CliResult, lastJson } from '../test/helpers/cli.js';
import { expectedTargetPath, TARGET_SPECIAL_USE } from '../test/helpers/lab-pair.js';
import { children, CLK_TCK, load1, median, r1, r2, release, releaseAll, releaseAllBut, resolveCli, say, tailOf, track, wholeNumber } from './common.js';

let CLI = resolveCli();
const MiB = 1024 * 1024;
const BATCH = 'bench';
const TARGET_USER_PASSWORD = 'Bench-Target-Pw1';

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

interface BenchOptions {
  mailboxes: number;
  messages: number;
  averageSize: number;
  maxConcurrent: number;
  maxConcurrentIncremental: number;
  concurrency: number;
  connections: number;
  db: 'sqlite' | 'postgres' | 'both';
  seed: number;
  /** Incremental rounds (sync-now) after the initial sync. */
  rounds: number;
  timeoutMinutes: number;
  cli: string | undefined;
  json: boolean;
}

function usage(msg: string): never {
  process.stderr.write(
    `bench:batch: ${msg}\nusage: npm run bench:batch -- [--mailboxes N] [--messages N] [--average-size BYTES] [--max-concurrent N] ` +
      `[--max-concurrent-incremental N] [--concurrency N] [--connections N] [--db sqlite|postgres|both] [--seed N] [--rounds N] [--timeout-minutes N] [--cli FILE] [--json]\n`,
  );
  process.exit(2);
}

function parseOptions(argv: string[]): BenchOptions {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        mailboxes: { type: 'string', default: '20' },
        messages: { type: 'string', default: '1000' },
        'average-size': { type: 'string', default: '36000' },
        'max-concurrent': { type: 'string', default: '20' },
        'max-concurrent-incremental': { type: 'string', default: '10' },
        concurrency: { type: 'string', default: '20' },
        connections: { type: 'string', default: '2' },
        db: { type: 'string', default: 'sqlite' },
        seed: { type: 'string', default: '1' },
        rounds: { type: 'string', default: '1' },
        'timeout-minutes': { type: 'string', default: '60' },
        cli: { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', default: false },
      },
      strict: true,
    }));
  } catch (err) {
    usage((err as Error).message);
  }
  if (values.help) usage('help');
  const int = (name: string, v: string, min: number): number => wholeNumber(name, v, min, usage);
  const db = values.db;
  if (db !== 'sqlite' && db !== 'postgres' && db !== 'both') usage(`--db must be sqlite, postgres or both, not "${db}"`);
  return {
    mailboxes: int('mailboxes', values.mailboxes, 1),
    messages: int('messages', values.messages, 1),
    averageSize: int('average-size', values['average-size'], 1000),
    maxConcurrent: int('max-concurrent', values['max-concurrent'], 1),
    maxConcurrentIncremental: int('max-concurrent-incremental', values['max-concurrent-incremental'], 1),
    concurrency: int('concurrency', values.concurrency, 1),
    connections: int('connections', values.connections, 1),
    db,
    seed: int('seed', values.seed, 0),
    rounds: int('rounds', values.rounds, 1),
    timeoutMinutes: int('timeout-minutes', values['timeout-minutes'], 1),
    cli: values.cli ? path.resolve(values.cli) : undefined,
    json: values.json,
  };
}

function reproduceCommand(o: BenchOptions): string {
  const parts = [
    'npm run bench:batch --',
    `--mailboxes ${o.mailboxes}`,
    `--messages ${o.messages}`,
    `--average-size ${o.averageSize}`,
    `--max-concurrent ${o.maxConcurrent}`,
    `--max-concurrent-incremental ${o.maxConcurrentIncremental}`,
    `--concurrency ${o.concurrency}`,
    `--connections ${o.connections}`,
    `--db ${o.db}`,
  ];
  if (o.seed !== 1) parts.push(`--seed ${o.seed}`);
  if (o.rounds !== 1) parts.push(`--rounds ${o.rounds}`);
  if (o.timeoutMinutes !== 60) parts.push(`--timeout-minutes ${o.timeoutMinutes}`);
  if (o.cli) parts.push(`--cli ${o.cli}`);
  if (o.json) parts.push('--json');
  return parts.join(' ');
}

// ---------------------------------------------------------------------------------------
// Resources: every server, database, child and temp dir is released at the end, also on
// error or Ctrl-C. (Dovecots also die with this process on their own: src/lab/dovecot.ts.)
// ---------------------------------------------------------------------------------------





// ---------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));


/** CPU seconds (utime + stime) of a live process, from /proc/PID/stat; null if gone. */
function processCpuSeconds(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 14 and 15 of proc(5); `fields` starts at field 3.
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return Number.isFinite(utime) && Number.isFinite(stime) ? (utime + stime) / CLK_TCK : null;
  } catch {
    return null;
  }
}

/** VmRSS and VmHWM (peak RSS) of a live process in MiB, from /proc/PID/status; null if gone. */
function processMemory(pid: number): { rssMb: number; hwmMb: number } | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
    return { rssMb: r1(kb('VmRSS') / 1024), hwmMb: r1(kb('VmHWM') / 1024) };
  } catch {
    return null;
  }
}

/** The machine's CPU time so far, all CPUs (/proc/stat), busy and total, in ticks. */
function machineCpu(): { busy: number; total: number } {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
    const total = v.reduce((a, b) => a + b, 0);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    return { busy: total - idle, total };
  } catch {
    return { busy: 0, total: 0 };
  }
}

/** Share of all CPUs that was busy between two machineCpu() readings, in percent. */
function busyPercent(a: { busy: number; total: number }, b: { busy: number; total: number }): number | null {
  const total = b.total - a.total;
  return total > 0 ? r1((100 * (b.busy - a.busy)) / total) : null;
}




// ---------------------------------------------------------------------------------------
// The CLI and the service as child processes
// ---------------------------------------------------------------------------------------

/** Runs the CLI to completion (asynchronously: the lab servers in this process keep serving). */
function runCli(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 300_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      children.delete(child);
      reject(err);
    });
    child.on('close', (status) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ status, stdout, stderr, json: lastJson(stdout) });
    });
  });
}

async function mustCli(what: string, args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  const r = await runCli(args, env);
  if (r.status !== 0) throw new Error(`${what} exited ${r.status}: ${tailOf(r.stderr + r.stdout, 10)}`);
  return r;
}

interface Service {
  child: ChildProcess;
  pid: number;
  logPath: string;
  exited: Promise<number | string | null>;
  samples: { t: number; rssMb: number }[];
  stopSampling(): void;
}

/** Starts `mailferry serve`, its output into `logPath`; resolves once it says it runs. */
async function startServe(o: BenchOptions, env: NodeJS.ProcessEnv, logPath: string): Promise<Service> {
  const args = [CLI, 'serve', '--no-listen', '--concurrency', String(o.concurrency), '--connections', String(o.connections), '--log-level', 'info'];
  const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const log = createWriteStream(logPath);
  let head = '';
  const onData = (d: Buffer) => {
    log.write(d);
    if (head.length < 100_000) head += d.toString();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<number | string | null>((resolve) =>
    child.on('close', (code, signal) => {
      children.delete(child);
      log.end();
      resolve(code ?? signal);
    }),
  );
  const pid = child.pid;
  if (pid === undefined) throw new Error('serve did not start');
  const t0 = Date.now();
  let gone = false;
  void exited.then(() => (gone = true));
  while (!/serve running as/.test(head)) {
    if (gone) throw new Error(`serve exited at start: ${tailOf(head)}`);
    if (Date.now() - t0 > 30_000) throw new Error(`serve did not say it runs within 30 s: ${tailOf(head)}`);
    await sleep(50);
  }
  const samples: { t: number; rssMb: number }[] = [];
  const sample = () => {
    const m = processMemory(pid);
    if (m) samples.push({ t: Date.now(), rssMb: m.rssMb });
  };
  sample();
  const timer = setInterval(sample, 1000);
  return { child, pid, logPath, exited, samples, stopSampling: () => clearInterval(timer) };
}

/** Warnings and errors in serve's log (pino JSON lines; level 40 warn, 50 error, 60 fatal). */
function scanLog(logPath: string): { lines: number; warnings: number; errors: number; examples: string[]; notices: string[]; nonJson: string[] } {
  const text = existsSync(logPath) ? readFileSync(logPath, 'utf8') : '';
  let warnings = 0;
  let errors = 0;
  const examples = new Map<string, number>();
  const notices: string[] = [];
  const nonJson: string[] = [];
  const lines = text.split('\n').filter((l) => l.trim());
  for (const line of lines) {
    let entry: { level?: number; msg?: string; err?: unknown; error?: unknown };
    try {
      entry = JSON.parse(line) as typeof entry;
    } catch {
      // The CLI's own plain notices ("mailferry: …") are expected; anything else is not.
      if (/^mailferry: /.test(line)) {
        if (!/^mailferry: serve running as/.test(line)) notices.push(line.slice(0, 300));
      } else nonJson.push(line.slice(0, 300));
      continue;
    }
    const level = entry.level ?? 0;
    if (level < 40) continue;
    if (level >= 50) errors++;
    else warnings++;
    const detail = entry.err ?? entry.error;
    const key = `${level >= 50 ? 'error' : 'warn'}: ${entry.msg ?? ''}${detail ? ` (${String(typeof detail === 'string' ? detail : JSON.stringify(detail)).slice(0, 200)})` : ''}`;
    examples.set(key, (examples.get(key) ?? 0) + 1);
  }
  return {
    lines: lines.length,
    warnings,
    errors,
    examples: [...examples].slice(0, 8).map(([k, n]) => (n > 1 ? `${n}× ${k}` : k)),
    notices: notices.slice(0, 5),
    nonJson: nonJson.slice(0, 5),
  };
}

// ---------------------------------------------------------------------------------------
// The lab
// ---------------------------------------------------------------------------------------

interface BenchUser {
  user: string;
  password: string;
  address: string;
}

interface LoadedMailbox extends BenchUser {
  messages: number;
  bytes: number;
  /** Messages per target folder path ('/'-separated, special-use folders mapped). */
  expected: Map<string, number>;
}

function benchUsers(n: number): BenchUser[] {
  return Array.from({ length: n }, (_, i) => ({ user: `user${i + 1}`, password: `Src-Pass-${i + 1}-x7`, address: `user${i + 1}@example.org` }));
}

/** Loads every user's own corpus into the source, a few mailboxes at a time. */
async function loadSource(o: BenchOptions, source: DovecotServer, users: BenchUser[]): Promise<{ mailboxes: LoadedMailbox[]; seconds: number }> {
  const started = performance.now();
  const out: LoadedMailbox[] = new Array(users.length);
  let next = 0;
  let done = 0;
  const parallel = Math.min(4, users.length);
  const loadOne = async (i: number) => {
    const u = users[i]!;
    const corpus = generateCorpus({ seed: o.seed * 1000 + i, messages: o.messages, averageSize: o.averageSize });
    const expected = new Map<string, number>();
    let bytes = 0;
    const counting: FastLoadCorpus = {
      folders: corpus.folders,
      *messages(): Generator<CorpusMessage> {
        for (const m of corpus.messages()) {
          const target = expectedTargetPath(m.folder.join('.'));
          expected.set(target, (expected.get(target) ?? 0) + 1);
          bytes += m.raw.length;
          yield m;
        }
      },
    };
    const login: ImapLogin = { method: 'login', username: u.user, password: u.password };
    // Maildir: concurrent APPENDs to one folder queue on its uidlist lock (see fast-load.ts).
    const r = await loadCorpusFast(source.endpoint(), login, counting, { separator: '.', connections: 2, oneConnectionPerFolder: true });
    if (r.appended !== corpus.count) throw new Error(`loading ${u.user}: appended ${r.appended} of ${corpus.count}`);
    out[i] = { ...u, messages: r.appended, bytes, expected };
    done++;
    if (done % 5 === 0 || done === users.length) process.stdout.write(`  ${done}/${users.length} mailboxes loaded (${r1((performance.now() - started) / 1000)} s)\n`);
  };
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < users.length) await loadOne(next++);
    }),
  );
  return { mailboxes: out, seconds: (performance.now() - started) / 1000 };
}

/** Counts each target mailbox's messages per folder (LIST-STATUS) against what was loaded. */
async function verifyTarget(target: DovecotServer, mailboxes: LoadedMailbox[], detail: BatchDetail): Promise<{ exact: boolean; targetMessages: number; expected: number; problems: string[] }> {
  const problems: string[] = [];
  let targetMessages = 0;
  const byAddress = new Map(detail.mailboxes.map((m) => [m.emailAddress, m]));
  for (const mb of mailboxes) {
    const client = await openSession({ endpoint: target.endpoint(), login: { method: 'login', username: mb.address, password: TARGET_USER_PASSWORD } });
    try {
      const counts = new Map<string, number>();
      for (const box of await client.list({ statusQuery: { messages: true } })) {
        if (box.flags.has('\\Noselect') || box.flags.has('\\NonExistent')) continue;
        const n = box.status?.messages ?? 0;
        if (n > 0) counts.set(box.path, n);
      }
      const total = [...counts.values()].reduce((a, b) => a + b, 0);
      targetMessages += total;
      if (total !== mb.messages) problems.push(`${mb.address}: ${total} messages on the target, ${mb.messages} loaded`);
      for (const p of new Set([...counts.keys(), ...mb.expected.keys()])) {
        const want = mb.expected.get(p) ?? 0;
        const got = counts.get(p) ?? 0;
        if (want !== got) problems.push(`${mb.address} ${JSON.stringify(p)}: ${got} on the target, ${want} expected`);
      }
      const view = byAddress.get(mb.address);
      if (!view) problems.push(`${mb.address}: not in the batch`);
      else if (view.copied !== mb.messages) problems.push(`${mb.address}: the batch says copied ${view.copied}, ${mb.messages} loaded`);
    } finally {
      await client.logout().catch(() => client.close());
    }
  }
  const expected = mailboxes.reduce((n, m) => n + m.messages, 0);
  return { exact: problems.length === 0 && targetMessages === expected, targetMessages, expected, problems };
}

// ---------------------------------------------------------------------------------------
// One run: one state database
// ---------------------------------------------------------------------------------------

interface PhaseFigures {
  wallSeconds: number;
  load1: number;
  /** serve's user+system CPU over the phase. */
  serveCpuSeconds: number | null;
  /** Share of the machine's CPUs busy over the phase (every process), percent. */
  machineBusyPercent: number | null;
  /** Largest VmRSS sampled over the phase. */
  maxRssMb: number;
}

interface InitialFigures extends PhaseFigures {
  messages: number;
  bytes: number;
  msgsPerSec: number;
  mbPerSec: number;
  /** From the database: the batch's startedAt to its initialSyncedAt. */
  dbSeconds: number | null;
  /** Each mailbox's own initial sync (sync_run), median and slowest. */
  mailboxSecondsMedian: number;
  mailboxSecondsMax: number;
  /** Most mailboxes seen syncing at once (polls). */
  maxSyncingAtOnce: number;
  failedMailboxes: string[];
}

interface IncrementalFigures extends PhaseFigures {
  /** serve's VmRSS right after the round. */
  rssAfterMb: number | null;
  copied: number;
  runs: number;
  notSynced: number;
  mailboxSecondsMedian: number;
  mailboxSecondsMax: number;
}

interface RunResult {
  dialect: DialectName;
  skipped?: string;
  error?: string;
  dbUrl?: string;
  initial?: InitialFigures;
  /** One per --rounds. */
  incrementals?: IncrementalFigures[];
  serve?: { pid: number; peakRssMb: number | null; rssTimeline: [number, number][]; rssAtStartMb: number | null; rssAfterInitialMb: number | null; rssAtEndMb: number | null; cpuSeconds: number | null; exit: number | string | null; stopSeconds: number };
  exactness?: { exact: boolean; targetMessages: number; expected: number; problems: string[] };
  log?: ReturnType<typeof scanLog>;
}

async function runOne(o: BenchOptions, dialect: DialectName, source: DovecotServer, users: BenchUser[], loaded: LoadedMailbox[], work: string): Promise<RunResult> {
  const result: RunResult = { dialect };
  if (dialect === 'postgres') {
    const why = await postgresUnavailable();
    if (why) {
      say(`\n[postgres] skipped: ${why}`);
      return { dialect, skipped: why };
    }
  }
  const dir = mkdtempSync(path.join(work, `${dialect}-`));
  const db: TestDb = await freshDb(dialect, dir);
  track({ stop: () => db.drop() });
  result.dbUrl = dialect === 'postgres' ? db.url.replace(/:[^:@/]*@/, ':***@') : db.url;
  const target = track(
    await startDovecot({
      name: `bench-batch-target-${dialect}`,
      separator: '/',
      users: users.map((u) => ({ username: u.address, password: TARGET_USER_PASSWORD })),
      masterUsers: [{ username: 'admin', password: ADMIN_PASSWORD }],
      specialUse: { ...TARGET_SPECIAL_USE },
    }),
  );
  say(`\n[${dialect}] state ${result.dbUrl}; fresh target Dovecot ('/') on 127.0.0.1:${target.port}`);
  const env: NodeJS.ProcessEnv = { ...process.env, MAILFERRY_HOME: dir, MAILFERRY_DB: db.url, MAILFERRY_TARGET_PASSWORD: ADMIN_PASSWORD };
  delete env.MAILFERRY_SECRET_KEY;
  delete env.MAILFERRY_TEST_PASSWORD;
  await mustCli('endpoint create', [
    'endpoint', 'create', 'src', '--host', '127.0.0.1', '--port', String(source.port), '--tls', 'none',
    '--max-concurrent-migrations', String(o.maxConcurrent), '--max-concurrent-incremental-syncs', String(o.maxConcurrentIncremental),
  ], env);
  await mustCli('target create', ['target', 'create', 'tgt', '--host', '127.0.0.1', '--port', String(target.port), '--tls', 'none', '--admin-user', 'admin', '--impersonation', 'sasl'], env);
  const csv = path.join(dir, 'batch.csv');
  writeFileSync(csv, ['EmailAddress,UserName,Password', ...users.map((u) => `${u.address},${u.user},${u.password}`)].join('\r\n') + '\r\n');

  const logPath = path.join(work, `serve-${dialect}.log`);
  const service = await startServe(o, env, logPath);
  const svc = track({
    stop: async () => {
      service.stopSampling();
      if (service.child.exitCode === null && service.child.signalCode === null) service.child.kill('SIGKILL');
      await service.exited;
    },
  });
  say(`  serve (pid ${service.pid}) --concurrency ${o.concurrency} --connections ${o.connections}; endpoint --max-concurrent-migrations ${o.maxConcurrent} --max-concurrent-incremental-syncs ${o.maxConcurrentIncremental}; log ${logPath}`);
  const rssAtStartMb = processMemory(service.pid)?.rssMb ?? null;
  const store: Store = await db.open();
  track({ stop: () => store.close() });
  const deadline = Date.now() + o.timeoutMinutes * 60_000;
  const expectedMessages = loaded.reduce((n, m) => n + m.messages, 0);
  const expectedBytes = loaded.reduce((n, m) => n + m.bytes, 0);
  const maxRssSince = (t: number): number => Math.max(0, ...service.samples.filter((s) => s.t >= t).map((s) => s.rssMb));
  const detailNow = async (): Promise<BatchDetail> => {
    const b = await findBatch(store.db, BATCH);
    if (!b) throw new Error(`batch ${BATCH} not found`);
    return loadBatchDetail(store.db, b);
  };

  try {
    // ---- The initial sync ----------------------------------------------------------------
    const l1 = load1();
    const m0 = machineCpu();
    const c0 = processCpuSeconds(service.pid);
    const t0 = Date.now();
    say(`  initial sync: batch create ${BATCH} --autostart (${users.length} mailboxes, ${expectedMessages} messages, ${r1(expectedBytes / MiB)} MB; load ${l1})…`);
    await mustCli('batch create', ['batch', 'create', BATCH, '--csv', csv, '--endpoint', 'src', '--target', 'tgt', '--autostart'], env);
    let detail: BatchDetail;
    let maxSyncing = 0;
    let lastReport = Date.now();
    for (;;) {
      detail = await detailNow();
      maxSyncing = Math.max(maxSyncing, detail.batch.counts.Syncing);
      if (detail.batch.status === 'Synced' || detail.batch.status === 'SyncedWithErrors') break;
      if (service.child.exitCode !== null || service.child.signalCode !== null) throw new Error(`serve exited during the initial sync: ${tailOf(readFileSync(logPath, 'utf8'))}`);
      if (Date.now() > deadline) throw new Error(`the initial sync did not finish within ${o.timeoutMinutes} min (status ${detail.batch.status})`);
      if (Date.now() - lastReport >= 10_000) {
        lastReport = Date.now();
        const copied = detail.mailboxes.reduce((n, m) => n + (m.syncing ? m.syncing.copied : m.copied), 0);
        const c = detail.batch.counts;
        // Phases of the running syncs, as their last heartbeat wrote them.
        const phases = new Map<string, number>();
        for (const m of detail.mailboxes) if (m.syncing) phases.set(m.syncing.phase ?? '?', (phases.get(m.syncing.phase ?? '?') ?? 0) + 1);
        const phaseText = [...phases].map(([k, v]) => `${v} ${k}`).join(', ');
        say(`    ${r1((Date.now() - t0) / 1000)} s: ${copied}/${expectedMessages} copied; ${c.Queued} queued, ${c.Syncing} syncing${phaseText ? ` (${phaseText})` : ''}, ${c.Synced + c.IncrementalSyncing} synced, ${c.Failed} failed; serve RSS ${processMemory(service.pid)?.rssMb ?? '?'} MB (load ${load1()})`);
      }
      await sleep(250);
    }
    const t1 = Date.now();
    const c1 = processCpuSeconds(service.pid);
    const m1 = machineCpu();
    const wall = (t1 - t0) / 1000;
    const batchRow = (await findBatch(store.db, BATCH))!;
    const initialRuns = await store.db.selectFrom('sync_run').selectAll().where('batch_id', '=', batchRow.id).where('kind', '=', 'initial').where('outcome', '=', 'synced').execute();
    const initialDurations = initialRuns.map((r) => ((r.ended_at ?? r.started_at) - r.started_at) / 1000);
    const copiedBytes = detail.batch.totals.bytes;
    const initial: InitialFigures = {
      wallSeconds: r2(wall),
      load1: l1,
      serveCpuSeconds: c0 !== null && c1 !== null ? r2(c1 - c0) : null,
      machineBusyPercent: busyPercent(m0, m1),
      maxRssMb: maxRssSince(t0),
      messages: detail.batch.totals.copied,
      bytes: copiedBytes,
      msgsPerSec: r1(detail.batch.totals.copied / wall),
      mbPerSec: r2(copiedBytes / MiB / wall),
      dbSeconds: batchRow.started_at !== null && batchRow.initial_synced_at !== null ? r2((batchRow.initial_synced_at - batchRow.started_at) / 1000) : null,
      mailboxSecondsMedian: r1(median(initialDurations)),
      mailboxSecondsMax: r1(Math.max(0, ...initialDurations)),
      maxSyncingAtOnce: maxSyncing,
      failedMailboxes: detail.mailboxes.filter((m) => m.status === 'Failed').map((m) => `${m.emailAddress}: ${m.lastError ?? '?'}`),
    };
    result.initial = initial;
    const rssAfterInitialMb = processMemory(service.pid)?.rssMb ?? null;
    say(
      `  initial sync ${detail.batch.status} in ${initial.wallSeconds} s (database: ${initial.dbSeconds ?? '?'} s): ${initial.messages} messages, ${r1(copiedBytes / MiB)} MB, ` +
        `${initial.msgsPerSec} msg/s, ${initial.mbPerSec} MB/s; per mailbox median ${initial.mailboxSecondsMedian} s, slowest ${initial.mailboxSecondsMax} s; ` +
        `${initial.maxSyncingAtOnce} syncing at once at most; serve CPU ${initial.serveCpuSeconds ?? '?'} s, RSS now ${rssAfterInitialMb ?? '?'} MB (max sampled ${initial.maxRssMb} MB); machine ${initial.machineBusyPercent ?? '?'}% busy (load ${l1} → ${load1()})`,
    );
    for (const f of initial.failedMailboxes) say(`    ! ${f}`);

    // ---- Incremental rounds with nothing new ------------------------------------------------
    const mailboxIds = (await store.db.selectFrom('batch_mailbox').select('id').where('batch_id', '=', batchRow.id).execute()).map((r) => r.id);
    result.incrementals = [];
    for (let round = 1; round <= o.rounds; round++) {
      const label = o.rounds > 1 ? `incremental round ${round}/${o.rounds}` : 'incremental round';
      const l2 = load1();
      const m2 = machineCpu();
      const c2 = processCpuSeconds(service.pid);
      const t2 = Date.now();
      say(`  ${label}: batch sync-now ${BATCH} (nothing new on the source; load ${l2})…`);
      await mustCli('batch sync-now', ['batch', 'sync-now', BATCH], env);
      let incRuns: { mailbox_id: number; started_at: number; ended_at: number | null; outcome: string | null; copied: number }[] = [];
      for (;;) {
        incRuns = await store.db
          .selectFrom('sync_run')
          .select(['mailbox_id', 'started_at', 'ended_at', 'outcome', 'copied'])
          .where('batch_id', '=', batchRow.id)
          .where('kind', '=', 'incremental')
          .where('started_at', '>=', t2)
          .execute();
        const done = new Set(incRuns.filter((r) => r.ended_at !== null).map((r) => r.mailbox_id));
        if (mailboxIds.every((id) => done.has(id))) break;
        if (service.child.exitCode !== null || service.child.signalCode !== null) throw new Error(`serve exited during the ${label}: ${tailOf(readFileSync(logPath, 'utf8'))}`);
        if (Date.now() > deadline) throw new Error(`the ${label} did not finish within ${o.timeoutMinutes} min (${done.size}/${mailboxIds.length} done)`);
        await sleep(100);
      }
      const t3 = Date.now();
      const c3 = processCpuSeconds(service.pid);
      const m3 = machineCpu();
      const ended = incRuns.filter((r) => r.ended_at !== null);
      const incDurations = ended.map((r) => (r.ended_at! - r.started_at) / 1000);
      const incremental: IncrementalFigures = {
        wallSeconds: r2((t3 - t2) / 1000),
        load1: l2,
        serveCpuSeconds: c2 !== null && c3 !== null ? r2(c3 - c2) : null,
        machineBusyPercent: busyPercent(m2, m3),
        maxRssMb: maxRssSince(t2),
        rssAfterMb: processMemory(service.pid)?.rssMb ?? null,
        copied: ended.reduce((n, r) => n + r.copied, 0),
        runs: ended.length,
        notSynced: ended.filter((r) => r.outcome !== 'synced').length,
        mailboxSecondsMedian: r2(median(incDurations)),
        mailboxSecondsMax: r2(Math.max(0, ...incDurations)),
      };
      result.incrementals.push(incremental);
      say(
        `  ${label} in ${incremental.wallSeconds} s: ${incremental.runs} runs (${incremental.notSynced} not synced), copied ${incremental.copied}; ` +
          `per mailbox median ${incremental.mailboxSecondsMedian} s, slowest ${incremental.mailboxSecondsMax} s; serve CPU ${incremental.serveCpuSeconds ?? '?'} s, RSS after ${incremental.rssAfterMb ?? '?'} MB; machine ${incremental.machineBusyPercent ?? '?'}% busy (load ${l2})`,
      );
    }

    // ---- serve's peak memory and CPU, then a graceful stop -----------------------------------
    const mem = processMemory(service.pid);
    const cpuTotal = processCpuSeconds(service.pid);
    service.stopSampling();
    const ts = Date.now();
    service.child.kill('SIGTERM');
    const exit = await Promise.race([service.exited, sleep(30_000).then(() => 'no exit within 30 s')]);
    const stopSeconds = r2((Date.now() - ts) / 1000);
    await release(svc);
    // VmRSS over serve's life, every 5 s: [seconds since the batch was created, MB].
    const rssTimeline = service.samples.filter((_, k) => k % 5 === 0).map((x): [number, number] => [r1((x.t - t0) / 1000), x.rssMb]);
    result.serve = { pid: service.pid, peakRssMb: mem?.hwmMb ?? null, rssTimeline, rssAtStartMb, rssAfterInitialMb, rssAtEndMb: mem?.rssMb ?? null, cpuSeconds: cpuTotal === null ? null : r2(cpuTotal), exit, stopSeconds };
    say(`  serve: peak RSS (VmHWM) ${result.serve.peakRssMb ?? '?'} MB; RSS ${rssAtStartMb ?? '?'} MB idle at start, ${rssAfterInitialMb ?? '?'} after the initial sync, ${result.serve.rssAtEndMb ?? '?'} at the end; CPU ${result.serve.cpuSeconds ?? '?'} s in all; SIGTERM → exit ${exit} in ${stopSeconds} s`);

    // ---- Exactness --------------------------------------------------------------------------
    result.exactness = await verifyTarget(target, loaded, await detailNow());
    say(`  exactness: ${result.exactness.targetMessages}/${result.exactness.expected} messages on the target, folder by folder ${result.exactness.exact ? 'exact' : 'NOT exact'}`);
    for (const p of result.exactness.problems.slice(0, 20)) say(`    ! ${p}`);
  } catch (err) {
    result.error = (err as Error).message;
    say(`  ! ${result.error}`);
  } finally {
    result.log = scanLog(logPath);
    say(`  serve log: ${result.log.lines} lines, ${result.log.warnings} warnings, ${result.log.errors} errors${result.log.examples.length ? `: ${result.log.examples.join(' | ')}` : ''}`);
    if (result.log.notices.length) say(`  serve said: ${result.log.notices.join(' | ')}`);
    if (result.log.nonJson.length) say(`  ! serve log, not JSON: ${result.log.nonJson.join(' | ')}`);
    await release(svc);
    await releaseAllBut(source);
    rmSync(dir, { recursive: true, force: true });
  }
  return result;
}

// ---------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  if (o.cli) {
    if (!existsSync(o.cli)) usage(`--cli ${o.cli}: no such file`);
    CLI = o.cli;
  }
  const work = mkdtempSync(path.join(os.tmpdir(), 'mailferry-batch-bench-'));
  const startedAt = new Date();
  const loadAtStart = os.loadavg().map(r2);
  const dovecotVersion = spawnSync('dovecot', ['--version'], { encoding: 'utf8' }).stdout?.trim() || 'unknown';
  const dialects: DialectName[] = o.db === 'both' ? ['sqlite', 'postgres'] : [o.db];

  say(`mailferry batch bench — ${startedAt.toISOString()}`);
  say(`  node ${process.version}, dovecot ${dovecotVersion}, ${os.cpus().length} CPUs, load average ${loadAtStart.join(' ')} (1/5/15 min)`);
  say(`  CLI: node ${path.relative(process.cwd(), CLI) || CLI}; databases: ${dialects.join(', ')}${dialects.includes('postgres') ? ` (PostgreSQL ${PG_BASE.replace(/:[^:@/]*@/, ':***@')})` : ''}`);

  const users = benchUsers(o.mailboxes);
  const source = track(await startDovecot({ name: 'bench-batch-source', separator: '.', users: users.map((u) => ({ username: u.user, password: u.password })) }));
  say(`\nsource Dovecot ('.') on 127.0.0.1:${source.port}: loading ${o.mailboxes} mailboxes × ${o.messages} messages (~${o.averageSize} bytes on average) with loadCorpusFast (load ${load1()})…`);
  const l0 = load1();
  const { mailboxes: loaded, seconds: loadSeconds } = await loadSource(o, source, users);
  const corpusMessages = loaded.reduce((n, m) => n + m.messages, 0);
  const corpusBytes = loaded.reduce((n, m) => n + m.bytes, 0);
  const load = { messages: corpusMessages, bytes: corpusBytes, mb: r1(corpusBytes / MiB), seconds: r2(loadSeconds), msgsPerSec: r1(corpusMessages / loadSeconds), load1: l0 };
  say(`  loaded ${corpusMessages} messages, ${load.mb} MB in ${load.seconds} s (${load.msgsPerSec} msg/s, generating included)`);

  const runs: RunResult[] = [];
  for (const dialect of dialects) runs.push(await runOne(o, dialect, source, users, loaded, work));
  await release(source);

  // ---- Figures -------------------------------------------------------------------------
  const loadAtEnd = os.loadavg().map(r2);
  const command = reproduceCommand(o);
  const rows: [string, string][] = [];
  const row = (k: string, v: string) => rows.push([k, v]);
  const na = (x: number | null | undefined, unit = ''): string => (x === null || x === undefined || Number.isNaN(x) ? 'n/a' : `${x}${unit}`);
  row('corpus', `${o.mailboxes} mailboxes × ${o.messages} messages = ${corpusMessages} messages, ${load.mb} MB (~${o.averageSize} bytes average, seed ${o.seed})`);
  row('load into source', `${load.seconds} s, ${load.msgsPerSec} msg/s (loadCorpusFast, incl. generating) (load ${l0})`);
  for (const r of runs) {
    const p = `[${r.dialect}]`;
    if (r.skipped) {
      row(p, `skipped: ${r.skipped}`);
      continue;
    }
    if (r.error) row(`${p} ERROR`, r.error);
    const i = r.initial;
    if (i) {
      row(`${p} initial sync, wall`, `${i.wallSeconds} s: ${i.msgsPerSec} msg/s, ${i.mbPerSec} MB/s (load ${i.load1})`);
      row(`${p} initial sync, database`, `${na(i.dbSeconds, ' s')} batch startedAt → initialSyncedAt; per mailbox median ${i.mailboxSecondsMedian} s, slowest ${i.mailboxSecondsMax} s; ${i.maxSyncingAtOnce} syncing at once`);
      row(`${p} initial sync, CPU`, `serve ${na(i.serveCpuSeconds, ' s')}; machine ${na(i.machineBusyPercent, '%')} busy (all processes, ${os.cpus().length} CPUs)`);
      if (i.failedMailboxes.length) row(`${p} failed mailboxes`, i.failedMailboxes.join('; '));
    }
    const incs = r.incrementals ?? [];
    const n = incs[0];
    if (n) {
      row(`${p} incremental round (no-op)`, `${n.wallSeconds} s for ${n.runs} mailboxes, copied ${n.copied}${n.notSynced ? `, ${n.notSynced} not synced` : ''}; per mailbox median ${n.mailboxSecondsMedian} s, slowest ${n.mailboxSecondsMax} s (load ${n.load1})`);
      row(`${p} incremental round, CPU`, `serve ${na(n.serveCpuSeconds, ' s')}; machine ${na(n.machineBusyPercent, '%')} busy`);
    }
    if (incs.length > 1) {
      row(`${p} all ${incs.length} rounds`, `${incs.map((x) => x.wallSeconds).join(', ')} s; copied ${incs.reduce((a, x) => a + x.copied, 0)}; serve CPU ${incs.map((x) => na(x.serveCpuSeconds)).join(', ')} s`);
      row(`${p} RSS after each round`, `${incs.map((x) => na(x.rssAfterMb)).join(', ')} MB`);
    }
    const s = r.serve;
    if (s) {
      row(`${p} serve peak RSS`, `${na(s.peakRssMb, ' MB')} (VmHWM); RSS ${na(s.rssAtStartMb)} → ${na(s.rssAfterInitialMb)} → ${na(s.rssAtEndMb)} MB (idle start → after initial → end)`);
      row(`${p} serve CPU, whole life`, `${na(s.cpuSeconds, ' s')}; SIGTERM → exit ${s.exit} in ${s.stopSeconds} s`);
    }
    const e = r.exactness;
    if (e) row(`${p} exact`, `${e.exact ? 'yes' : 'NO'}: ${e.targetMessages}/${e.expected} on the target, folder by folder${e.problems.length ? ` (${e.problems.length} problems)` : ''}`);
    if (r.log) row(`${p} serve log`, `${r.log.warnings} warnings, ${r.log.errors} errors${r.log.nonJson.length ? `, ${r.log.nonJson.length} other lines` : ''} in ${r.log.lines} lines`);
  }
  row('load average', `start ${loadAtStart.join(' ')}, end ${loadAtEnd.join(' ')} (${os.cpus().length} CPUs)`);

  const width = Math.max(...rows.map(([k]) => k.length));
  say(`\n${'='.repeat(100)}`);
  for (const [k, v] of rows) say(`${k.padEnd(width)}  ${v}`);
  say('-'.repeat(100));
  say(`reproduce: ${command}`);

  const ok = runs.every((r) => r.skipped || (!r.error && r.exactness?.exact && r.initial?.failedMailboxes.length === 0 && r.incrementals?.length === o.rounds && r.incrementals.every((x) => x.copied === 0 && x.notSynced === 0)));
  if (!ok) process.exitCode = 1;
  if (o.json) {
    const result = {
      startedAt: startedAt.toISOString(),
      command,
      options: o,
      environment: { cli: CLI, node: process.version, dovecot: dovecotVersion, cpus: os.cpus().length, loadAverageStart: loadAtStart, loadAverageEnd: loadAtEnd },
      corpus: { mailboxes: o.mailboxes, messagesPerMailbox: o.messages, messages: corpusMessages, bytes: corpusBytes, averageSize: o.averageSize, seed: o.seed },
      load,
      runs: runs.map((r) => ({ ...r, exactness: r.exactness ? { ...r.exactness, problems: r.exactness.problems.slice(0, 50) } : undefined })),
      ok,
    };
    say(JSON.stringify(result));
  }
  // serve's logs stay for a look when something was off.
  if (ok && runs.every((r) => !r.log || (r.log.warnings === 0 && r.log.errors === 0 && r.log.nonJson.length === 0))) rmSync(work, { recursive: true, force: true });
  else process.stderr.write(`bench:batch: serve logs kept in ${work}\n`);
}

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    if (interrupted) return;
    interrupted = true;
    process.stderr.write(`\nbench:batch: ${sig}, stopping servers…\n`);
    void releaseAll().finally(() => process.exit(130));
  });
}

try {
  await main();
} catch (err) {
  process.stderr.write(`bench:batch: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exitCode = 1;
} finally {
  await releaseAll();
}
