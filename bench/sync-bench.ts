/**
 * `npm run bench`: how fast mailferry migrates one mailbox between two local Dovecots,
 * against the lab's limit (a pipelined APPEND-only writer) and against mbsync.
 *
 *   npm run bench -- [--messages 5000] [--average-size 36000] [--connections 4]
 *                    [--rtt-ms 20] [--large 30] [--skip-mbsync] [--repeat 1]
 *                    [--sample 200] [--seed 1] [--cpu-prof DIR] [--cli FILE] [--disk] [--json]
 *
 * --connections defaults to the CLI's own default (4). --repeat N runs the loopback trio
 * (limit, mailferry, mbsync) N times, interleaved, and reports medians. --cpu-prof DIR
 * writes a V8 CPU profile of the first loopback sync into DIR; --cli FILE measures another
 * mailferry entry point (default: package.json's bin.mailferry). The servers' mail stores
 * and the database live on /dev/shm (tmpfs) where there is one, --disk keeps them under
 * the temp dir (see `storage` in main for why).
 *
 * What it measures (every migration starts from an empty, freshly started target Dovecot):
 * 1. loads a generated corpus into a source Dovecot ('.' separator) with loadCorpusFast;
 * 2. the lab's limit: the same messages, pre-generated in memory, APPENDed straight into a
 *    target ('/' separator) over `--connections` pipelined connections — no source server;
 *    twice: one APPEND command per message, and in MULTIAPPEND batches (RFC 3502), as
 *    mailferry sends them. The goal is judged against the faster of the two;
 * 3. `mailferry sync --json` on loopback (a child process, as an admin runs it), then the
 *    same command again (a no-op re-run);
 * 4. mbsync (Debian `isync`) on loopback, when /usr/bin/mbsync exists;
 * 5. both again through a TcpProxy in front of source AND target (`--rtt-ms` round trip).
 * Then a table of every figure, the goals of issue 2, the command to reproduce, and with
 * `--json` one JSON object as the last line of stdout.
 *
 * Exactness is checked on every target: message count against the corpus, and a sample
 * of target messages hashed against the corpus (mbsync's copies are also tried with its
 * X-TUID header removed, to show that header is the only difference).
 *
 * MB here are MiB (2^20 bytes), like the CLI's summary. The machine is shared and small:
 * the 1-minute load average is recorded before every measurement.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants as fsConstants, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { ImapFlow } from 'imapflow';
import type { ImapEndpoint, ImapLogin } from '../src/imap/endpoint.js';
import { openSession } from '../src/imap/imapflow-session.js';
import { type CorpusMessage, generateCorpus } from '../src/lab/corpus.js';
import { type DovecotServer, startDovecot } from '../src/lab/dovecot.js';
import { type FastLoadCorpus, loadCorpusFast } from '../src/lab/fast-load.js';
import { TcpProxy } from '../src/lab/proxy.js';
import { busyText, children, CLK_TCK, load1, machineCpu, median, r1, r2, release, releaseAll, resolveCli, say, tailOf, track, wholeNumber } from './common.js';

let CLI = resolveCli();
const MBSYNC = '/usr/bin/mbsync';
const MiB = 1024 * 1024;
const CHILD_TIMEOUT_MS = 20 * 60_000;

const SOURCE = { username: 'alice', password: 'bench-source-pw' } as const;
const TARGET = { username: 'alice', password: 'bench-target-pw' } as const;
const TARGET_SPECIAL_USE = { '\\Sent': 'Sent', '\\Drafts': 'Drafts', '\\Trash': 'Trash', '\\Junk': 'Junk', '\\Archive': 'Archive' } as const;
const sourceLogin: ImapLogin = { method: 'login', ...SOURCE };
const targetLogin: ImapLogin = { method: 'login', ...TARGET };

/** The limit's two ways of writing (see step 2 above). */
type LimitMode = 'single' | 'multi';
const LIMIT_MODES: readonly LimitMode[] = ['single', 'multi'];
const LIMIT_LABEL: Record<LimitMode, string> = { single: 'one APPEND per message', multi: 'MULTIAPPEND batches' };
interface LimitRun {
  seconds: number;
  appended: number;
  bytes: number;
  load1: number;
  cpuSeconds: number;
  machine: { busy: number; capacity: number } | null;
}

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

interface BenchOptions {
  messages: number;
  averageSize: number;
  connections: number;
  rttMs: number;
  largeMb: number;
  skipMbsync: boolean;
  /** Keep the servers' mail stores and the database under os.tmpdir() even when /dev/shm exists. */
  disk: boolean;
  repeat: number;
  sample: number;
  seed: number;
  cpuProf: string | undefined;
  /** Another mailferry entry point to measure (e.g. a build of another branch). */
  cli: string | undefined;
  json: boolean;
}

function usage(msg: string): never {
  process.stderr.write(
    `bench: ${msg}\nusage: npm run bench -- [--messages N] [--average-size BYTES] [--connections N] [--rtt-ms N] ` +
      `[--large MB] [--skip-mbsync] [--repeat N] [--sample N] [--seed N] [--cpu-prof DIR] [--cli FILE] [--disk] [--json]\n`,
  );
  process.exit(2);
}

function parseOptions(argv: string[]): BenchOptions {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        messages: { type: 'string', default: '5000' },
        'average-size': { type: 'string', default: '36000' },
        connections: { type: 'string', default: '4' },
        'rtt-ms': { type: 'string', default: '20' },
        large: { type: 'string', default: '30' },
        'skip-mbsync': { type: 'boolean', default: false },
        disk: { type: 'boolean', default: false },
        repeat: { type: 'string', default: '1' },
        sample: { type: 'string', default: '200' },
        seed: { type: 'string', default: '1' },
        'cpu-prof': { type: 'string' },
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
  const large = Number(values.large);
  if (!(large >= 0)) usage(`--large must be a number of MB >= 0, not "${values.large}"`);
  return {
    messages: int('messages', values.messages, 1),
    averageSize: int('average-size', values['average-size'], 1000),
    connections: int('connections', values.connections, 1),
    rttMs: int('rtt-ms', values['rtt-ms'], 0),
    largeMb: large,
    skipMbsync: values['skip-mbsync'],
    disk: values.disk,
    repeat: int('repeat', values.repeat, 1),
    sample: int('sample', values.sample, 0),
    seed: int('seed', values.seed, 0),
    cpuProf: values['cpu-prof'] ? path.resolve(values['cpu-prof']) : undefined,
    cli: values.cli ? path.resolve(values.cli) : undefined,
    json: values.json,
  };
}

/** /dev/shm is a writable directory (tmpfs on Linux). */
function tmpfsUsable(): boolean {
  try {
    accessSync('/dev/shm', fsConstants.W_OK);
    return statSync('/dev/shm').isDirectory();
  } catch {
    return false;
  }
}

function reproduceCommand(o: BenchOptions): string {
  const parts = [
    'npm run bench --',
    `--messages ${o.messages}`,
    `--average-size ${o.averageSize}`,
    `--connections ${o.connections}`,
    `--rtt-ms ${o.rttMs}`,
    `--large ${o.largeMb}`,
  ];
  if (o.skipMbsync) parts.push('--skip-mbsync');
  if (o.disk) parts.push('--disk');
  if (o.repeat !== 1) parts.push(`--repeat ${o.repeat}`);
  if (o.sample !== 200) parts.push(`--sample ${o.sample}`);
  if (o.seed !== 1) parts.push(`--seed ${o.seed}`);
  if (o.cli) parts.push(`--cli ${o.cli}`);
  if (o.json) parts.push('--json');
  return parts.join(' ');
}

// ---------------------------------------------------------------------------------------
// Resources: every server, proxy, child and temp dir is released at the end, also on error
// or Ctrl-C. (Dovecots also die with this process on their own: see src/lab/dovecot.ts.)
// ---------------------------------------------------------------------------------------





function startSource(): Promise<DovecotServer> {
  return startDovecot({ name: 'bench-source', separator: '.', users: [SOURCE] }).then(track);
}

function startTarget(label: string): Promise<DovecotServer> {
  return startDovecot({ name: `bench-target-${label}`, separator: '/', users: [TARGET], specialUse: { ...TARGET_SPECIAL_USE } }).then(track);
}

async function startProxies(source: DovecotServer, target: DovecotServer, rttMs: number): Promise<{ source: TcpProxy; target: TcpProxy }> {
  const delayMs = rttMs / 2; // the proxy's delay is one-way
  const sp = track(await TcpProxy.start({ targetHost: source.host, targetPort: source.port, delayMs }));
  const tp = track(await TcpProxy.start({ targetHost: target.host, targetPort: target.port, delayMs }));
  return { source: sp, target: tp };
}

// ---------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------

interface ChildResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  wallSeconds: number;
  /** CPU seconds the child used (user + system), null if unknown. */
  cpuSeconds: number | null;
}


/**
 * CPU seconds (user + system) of this process's waited-for children so far, from
 * /proc/self/stat (cutime + cstime), or null off Linux. The difference around one child
 * is that child's CPU (and its own children's): a measure that does not grow when the
 * machine is busy, unlike wall time. Only one child runs at a time here.
 */
function childrenCpuSeconds(): number | null {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 16 and 17 of proc(5); `fields` starts at field 3.
    const cutime = Number(fields[13]);
    const cstime = Number(fields[14]);
    return Number.isFinite(cutime) && Number.isFinite(cstime) ? (cutime + cstime) / CLK_TCK : null;
  } catch {
    return null;
  }
}

function runChild(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const cpu0 = childrenCpuSeconds();
    const t0 = performance.now();
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (stderr.length > 1_000_000) stderr = stderr.slice(-200_000);
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_TIMEOUT_MS);
    child.on('error', (err) => {
      clearTimeout(timer);
      children.delete(child);
      reject(err);
    });
    child.on('close', (status, signal) => {
      const wallSeconds = (performance.now() - t0) / 1000;
      clearTimeout(timer);
      children.delete(child);
      const cpu1 = childrenCpuSeconds();
      const cpuSeconds = cpu0 !== null && cpu1 !== null ? cpu1 - cpu0 : null;
      resolve({ status, signal, stdout, stderr, wallSeconds, cpuSeconds });
    });
  });
}


// ---------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------

const r3 = (n: number): number => Math.round(n * 1000) / 1000;

interface SyncRun {
  copied: number;
  found: number;
  skipped: number;
  failed: number;
  bytes: number;
  /** The CLI's own `seconds` (in-process, from its start of work to the summary). */
  seconds: number;
  /** The child's whole life: node start-up, migration, exit. */
  wallSeconds: number;
  /** CPU seconds the mailferry process used (user + system). */
  cpuSeconds: number | null;
  /**
   * Peak RSS of the mailferry process itself: VmHWM from /proc/self/status, written by a
   * preloaded probe at exit (see RSS_PROBE). Not the CLI's own `peakRssMb`: that is
   * getrusage's ru_maxrss, which Linux carries over fork and exec, so a child spawned by
   * this (large: it holds the pre-generated corpus) bench process reported the bench's RSS
   * at fork time (~240 MB) rather than its own (~150 MB then).
   */
  peakRssMb: number;
  /** The CLI's own figure (ru_maxrss; see peakRssMb), for reference. */
  cliPeakRssMb: number;
  reconnects: number;
  /** The whole machine's CPU over the run (see machineCpu): the servers share it. */
  machine: { busy: number; capacity: number } | null;
  exitStatus: number | null;
  msgsPerSec: number;
  msgsPerSecWall: number;
  mbPerSec: number;
  mbPerSecWall: number;
  load1: number;
  /** Set when the run produced no summary (crashed); the numbers are then NaN. */
  error?: string;
}

interface Counted {
  targetMessages: number;
  complete: boolean;
}

interface Exactness extends Counted {
  sampled: number;
  exact: number;
  /** Of the mismatches, how many match once an X-TUID header line is removed. */
  exactWithoutXTuid: number;
}

/**
 * Preloaded into every mailferry child (`node --require`): prints the process's own peak
 * RSS (VmHWM, /proc/self/status, reset by exec unlike ru_maxrss) on stderr at exit.
 */
const RSS_PROBE = `process.on('exit', () => { try { const m = /VmHWM:\\s*(\\d+) kB/.exec(require('fs').readFileSync('/proc/self/status', 'utf8')); if (m) require('fs').writeSync(2, '\\nmailferry-bench-vmhwm-kb ' + m[1] + '\\n'); } catch {} });\n`;
let rssProbeFile: string | null = null;

async function runMailferry(o: BenchOptions, sourcePort: number, targetPort: number, db: string, cpuProfDir?: string): Promise<SyncRun> {
  const nodeArgs = cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : [];
  if (rssProbeFile) nodeArgs.push('--require', rssProbeFile);
  const args = [
    ...nodeArgs,
    CLI,
    'sync',
    '--source', `127.0.0.1:${sourcePort}`, '--source-user', SOURCE.username, '--source-tls', 'none',
    '--target', `127.0.0.1:${targetPort}`, '--target-user', TARGET.username, '--target-tls', 'none',
    '--db', `sqlite:${db}`,
    '--connections', String(o.connections),
    '--json',
  ];
  const env = { ...process.env, MAILFERRY_SOURCE_PASSWORD: SOURCE.password, MAILFERRY_TARGET_PASSWORD: TARGET.password };
  const load = load1();
  const meter = machineCpu();
  const res = await runChild(process.execPath, args, env);
  const machine = meter();
  const line = res.stdout.trim().split('\n').pop() ?? '';
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(line) as Record<string, unknown>;
  } catch {
    // Keep measuring the rest; this run shows up as FAILED in the table and the goals.
    const error = `mailferry sync exited ${res.status ?? res.signal} without a JSON summary`;
    process.stdout.write(`  ! ${error}; its stderr ends:\n${tailOf(res.stderr, 25).replace(/^/gm, '    ')}\n`);
    json = { error: `${error}: ${res.stderr.split('\n').find((l) => /Error|mailferry:/.test(l))?.trim() ?? tailOf(res.stderr, 1)}` };
  }
  const num = (k: string): number => (typeof json[k] === 'number' ? (json[k] as number) : NaN);
  const copied = num('copied');
  const bytes = num('bytes');
  const seconds = num('seconds');
  const hwm = /mailferry-bench-vmhwm-kb (\d+)/.exec(res.stderr);
  const vmHwmKb = hwm ? Number(hwm[1]) : null;
  if (res.status !== 0) process.stdout.write(`  ! mailferry exited ${res.status}: ${tailOf(res.stderr, 5)}\n`);
  return {
    copied,
    found: num('found'),
    skipped: num('skipped'),
    failed: num('failed'),
    bytes,
    seconds: r3(seconds),
    wallSeconds: r3(res.wallSeconds),
    cpuSeconds: res.cpuSeconds === null ? null : r2(res.cpuSeconds),
    peakRssMb: vmHwmKb !== null ? r1(vmHwmKb / 1024) : r1(num('peakRssMb')),
    cliPeakRssMb: r1(num('peakRssMb')),
    reconnects: num('reconnects'),
    machine,
    exitStatus: res.status,
    msgsPerSec: seconds > 0 ? r1(copied / seconds) : 0,
    msgsPerSecWall: r1(copied / res.wallSeconds),
    mbPerSec: seconds > 0 ? r2(bytes / MiB / seconds) : 0,
    mbPerSecWall: r2(bytes / MiB / res.wallSeconds),
    load1: load,
    ...(typeof json.error === 'string' ? { error: json.error } : {}),
  };
}

interface MbsyncRun {
  wallSeconds: number;
  cpuSeconds: number | null;
  exitStatus: number | null;
  msgsPerSec: number;
  mbPerSec: number;
  load1: number;
  machine: { busy: number; capacity: number } | null;
  /** mbsync's warnings/errors, if it exited non-zero. */
  problem?: string;
}

function mbsyncVersion(): string | null {
  if (!existsSync(MBSYNC)) return null;
  const r = spawnSync(MBSYNC, ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

function mbsyncConfig(dir: string, sourcePort: number, targetPort: number, exclude: string[]): string {
  const q = (s: string): string => `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
  const account = (name: string, port: number, user: string, pass: string) => [
    `IMAPAccount ${name}`,
    'Host 127.0.0.1',
    `Port ${port}`,
    `User ${q(user)}`,
    `Pass ${q(pass)}`,
    'SSLType None',
    'AuthMechs LOGIN',
    'PipelineDepth 50',
    '',
    `IMAPStore ${name}`,
    `Account ${name}`,
    '',
  ];
  return [
    '# Written by bench/sync-bench.ts: a one-way IMAP-to-IMAP copy, source -> target.',
    ...account('source', sourcePort, SOURCE.username, SOURCE.password),
    ...account('target', targetPort, TARGET.username, TARGET.password),
    'Channel bench',
    // Far = source, Near = target; both sides are IMAP stores, so mbsync maps each
    // server's own hierarchy delimiter (source '.', target '/', from NAMESPACE) to its
    // canonical '/' itself: no Flatten (that is for flattening a hierarchy into names).
    'Far :source:',
    'Near :target:',
    // Patterns match the mailboxes of BOTH sides; the target's special-use folders that
    // the source does not have are excluded, else mbsync fails to open them on the source.
    // INBOX is not matched by wildcards (man mbsync), so it is named.
    `Patterns * INBOX${exclude.map((e) => ` ${q(`!${e}`)}`).join('')}`,
    'Create Near',
    'Remove None',
    'Expunge None',
    'Sync Pull',
    'CopyArrivalDate yes',
    `SyncState ${dir}/state/`,
    '',
  ].join('\n');
}

async function runMbsync(dir: string, sourcePort: number, targetPort: number, exclude: string[], messages: number, bytes: number): Promise<MbsyncRun> {
  mkdirSync(path.join(dir, 'state'), { recursive: true });
  const rc = path.join(dir, 'mbsyncrc');
  writeFileSync(rc, mbsyncConfig(dir, sourcePort, targetPort, exclude), { mode: 0o600 });
  const load = load1();
  const meter = machineCpu();
  const res = await runChild(MBSYNC, ['-c', rc, '-q', 'bench'], { ...process.env, HOME: dir });
  const machine = meter();
  const run: MbsyncRun = {
    wallSeconds: r3(res.wallSeconds),
    cpuSeconds: res.cpuSeconds === null ? null : r2(res.cpuSeconds),
    exitStatus: res.status,
    msgsPerSec: r1(messages / res.wallSeconds),
    mbPerSec: r2(bytes / MiB / res.wallSeconds),
    load1: load,
    machine,
  };
  if (res.status !== 0) {
    // mbsync always warns about the plaintext password on these loopback servers.
    const lines = res.stderr.split('\n').filter((l) => l.trim() && !/Password is being sent in the clear/.test(l));
    run.problem = lines.slice(-5).join(' | ') || `exit ${res.status ?? res.signal}`;
  }
  return run;
}

/** The selectable target folders that hold messages, with their counts. */
async function listTarget(client: ImapFlow): Promise<{ path: string; messages: number }[]> {
  const boxes: { path: string; messages: number }[] = [];
  for (const box of await client.list()) {
    if (box.flags.has('\\Noselect') || box.flags.has('\\NonExistent')) continue;
    const st = await client.status(box.path, { messages: true });
    const n = st ? (st.messages ?? 0) : 0;
    if (n > 0) boxes.push({ path: box.path, messages: n });
  }
  return boxes;
}

/** Total messages over all target folders. */
async function countTarget(endpoint: ImapEndpoint, expected: number): Promise<Counted> {
  const client = await openSession({ endpoint, login: targetLogin });
  try {
    const total = (await listTarget(client)).reduce((n, b) => n + b.messages, 0);
    return { targetMessages: total, complete: total === expected };
  } finally {
    await client.logout().catch(() => client.close());
  }
}

function stripXTuid(raw: Buffer): Buffer | null {
  const s = raw.toString('latin1');
  const headerEnd = s.indexOf('\r\n\r\n');
  const m = /(^|\r\n)X-TUID: [^\r\n]*\r\n/i.exec(headerEnd >= 0 ? s.slice(0, headerEnd + 2) : s);
  if (!m) return null;
  const start = m.index + m[1]!.length;
  return Buffer.from(s.slice(0, start) + s.slice(start + m[0].length - m[1]!.length), 'latin1');
}

/**
 * Counts the target's messages, then fetches an evenly spread sample of them and checks
 * each one's SHA-256 against the set of the corpus's hashes.
 */
async function checkTarget(endpoint: ImapEndpoint, hashes: ReadonlyMap<string, number>, expected: number, sample: number): Promise<Exactness> {
  const client = await openSession({ endpoint, login: targetLogin });
  let sampled = 0;
  let exact = 0;
  let exactWithoutXTuid = 0;
  let total = 0;
  try {
    const boxes = await listTarget(client);
    total = boxes.reduce((n, b) => n + b.messages, 0);
    for (const box of boxes) {
      if (sample === 0 || total === 0) break;
      const k = Math.min(box.messages, Math.max(1, Math.round((sample * box.messages) / total)));
      const seqs = [...new Set(Array.from({ length: k }, (_, i) => Math.floor(((i + 0.5) * box.messages) / k) + 1))];
      await client.mailboxOpen(box.path, { readOnly: true });
      for await (const msg of client.fetch(seqs.join(','), { source: true })) {
        if (!msg.source) continue;
        sampled++;
        const h = createHash('sha256').update(msg.source).digest('hex');
        if (hashes.has(h)) {
          exact++;
          continue;
        }
        const stripped = stripXTuid(msg.source);
        if (stripped && hashes.has(createHash('sha256').update(stripped).digest('hex'))) exactWithoutXTuid++;
      }
    }
  } finally {
    await client.logout().catch(() => client.close());
  }
  return { targetMessages: total, complete: total === expected, sampled, exact, exactWithoutXTuid };
}


/** The run whose `key` is the median (for an even count: the lower middle). */
function medianRun<T>(runs: T[], key: (r: T) => number): T {
  const s = [...runs].sort((a, b) => key(a) - key(b));
  return s[Math.floor((s.length - 1) / 2)]!;
}

// ---------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------

function cpuText(s: number | null): string {
  return s === null ? 'n/a' : `${s.toFixed(2)} s`;
}


async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  if (o.cli) {
    if (!existsSync(o.cli)) usage(`--cli ${o.cli}: no such file`);
    CLI = o.cli;
  }
  // Mail stores (every lab server makes its dir under os.tmpdir()) and the database on
  // tmpfs unless --disk: on this kind of machine the kernel's writeback of the previous
  // run's 200 MB, running beside the next measurement, made the same APPEND-only limit
  // take anywhere from 1.5 to 3.4 s. In memory the figures are about the software, and
  // the limit gets faster, so no goal gets easier.
  const diskTmp = os.tmpdir();
  const storage = !o.disk && tmpfsUsable() ? '/dev/shm' : null;
  if (storage) process.env.TMPDIR = storage;
  const work = mkdtempSync(path.join(os.tmpdir(), 'mailferry-bench-'));
  track({ stop: async () => rmSync(work, { recursive: true, force: true }) });
  if (existsSync('/proc/self/status')) {
    rssProbeFile = path.join(work, 'rss-probe.cjs');
    writeFileSync(rssProbeFile, RSS_PROBE);
  }
  const startedAt = new Date();
  const loadAtStart = os.loadavg().map(r2);
  const mbsync = o.skipMbsync ? null : mbsyncVersion();
  const mbsyncSkipReason = o.skipMbsync ? '--skip-mbsync' : mbsync ? null : `${MBSYNC} not found (apt-get install isync)`;
  const dovecotVersion = spawnSync('dovecot', ['--version'], { encoding: 'utf8' }).stdout?.trim() || 'unknown';

  say(`mailferry bench — ${startedAt.toISOString()}`);
  say(`  node ${process.version}, dovecot ${dovecotVersion}, ${mbsync ?? `mbsync skipped: ${mbsyncSkipReason}`}`);
  say(`  ${os.cpus().length} CPUs, load average ${loadAtStart.join(' ')} (1/5/15 min)`);
  say(`  CLI: node ${path.relative(process.cwd(), CLI) || CLI}`);
  say(`  mail stores and database: ${storage ? `${storage} (tmpfs; --disk for ${diskTmp})` : diskTmp}`);

  // The corpus: lazy, hashed as it is loaded (for the exactness checks).
  const extraLarge = o.largeMb > 0 ? [Math.round(o.largeMb * MiB)] : [];
  const corpus = generateCorpus({ seed: o.seed, messages: o.messages, averageSize: o.averageSize, extraLarge });
  const hashes = new Map<string, number>();
  let corpusBytes = 0;
  const hashing: FastLoadCorpus = {
    folders: corpus.folders,
    *messages() {
      for (const m of corpus.messages()) {
        const h = createHash('sha256').update(m.raw).digest('hex');
        hashes.set(h, (hashes.get(h) ?? 0) + 1);
        corpusBytes += m.raw.length;
        yield m;
      }
    },
  };

  const source = await startSource();
  say(`\nsource Dovecot ('.') on 127.0.0.1:${source.port}`);
  say(`loading ${corpus.count} messages (${o.messages} of ~${o.averageSize} bytes${extraLarge.length ? ` + one of ${o.largeMb} MB` : ''}) into the source with loadCorpusFast (${o.connections} connections, one per folder at a time: Maildir)…`);
  // Maildir: concurrent APPENDs to one folder queue on its uidlist lock (see fast-load.ts).
  const loaded = await loadCorpusFast(source.endpoint(), sourceLogin, hashing, { separator: '.', connections: o.connections, oneConnectionPerFolder: true });
  const load = {
    messages: loaded.appended,
    bytes: loaded.bytes,
    mb: r1(loaded.bytes / MiB),
    seconds: r3(loaded.seconds),
    msgsPerSec: r1(loaded.appended / loaded.seconds),
    note: 'includes generating the corpus',
  };
  say(`  loaded ${load.messages} messages, ${load.mb} MB in ${load.seconds} s (${load.msgsPerSec} msg/s, corpus generated on the fly)`);
  const expected = corpus.count;

  // mbsync must not try to open target-only special-use folders on the source.
  const corpusPaths = new Set(corpus.folders.map((f) => f.path.join('/')));
  const mbsyncExclude = Object.values(TARGET_SPECIAL_USE).filter((n) => !corpusPaths.has(n));

  // The limit's messages, generated once, up front: its writer does no generating.
  say(`pre-generating the corpus in memory for the APPEND-only limit…`);
  let pregenerated: CorpusMessage[] | null = [...corpus.messages()];
  const pre = pregenerated;
  const limitCorpus: FastLoadCorpus = { folders: corpus.folders, messages: () => pre };

  // The limit per way of writing: one APPEND per message, and MULTIAPPEND batches.
  const limitRuns: Record<LimitMode, LimitRun[]> = { single: [], multi: [] };
  const loopRuns: SyncRun[] = [];
  const noopRuns: SyncRun[] = [];
  const loopChecks: Exactness[] = [];
  const mbLoopRuns: MbsyncRun[] = [];
  const mbLoopChecks: Exactness[] = [];

  for (let round = 1; round <= o.repeat; round++) {
    if (o.repeat > 1) say(`\n— round ${round} of ${o.repeat} —`);

    // The lab's limit, both ways.
    for (const mode of LIMIT_MODES) {
      const target = await startTarget('limit');
      say(`\n[limit: ${LIMIT_LABEL[mode]}] pipelined APPEND-only writer, ${o.connections} connections, pre-generated messages → fresh target :${target.port}`);
      const l1 = load1();
      const cpu0 = process.cpuUsage();
      const meter = machineCpu();
      const r = await loadCorpusFast(target.endpoint(), targetLogin, limitCorpus, { separator: '/', connections: o.connections, multiAppend: mode === 'multi' });
      const machine = meter();
      const cpu = process.cpuUsage(cpu0);
      const cpuSeconds = r2((cpu.user + cpu.system) / 1e6);
      limitRuns[mode].push({ seconds: r.seconds, appended: r.appended, bytes: r.bytes, load1: l1, cpuSeconds, machine });
      say(`  ${r.appended} messages, ${r1(r.bytes / MiB)} MB in ${r3(r.seconds)} s: ${r1(r.appended / r.seconds)} msg/s, ${r2(r.bytes / MiB / r.seconds)} MB/s, writer CPU ${cpuText(cpuSeconds)} (load ${l1}; ${busyText(machine)})`);
      await release(target);
    }

    // mailferry on loopback, then the no-op re-run on the same target and database.
    {
      const target = await startTarget('loop');
      const db = path.join(work, `loop-${round}.sqlite`);
      say(`\n[mailferry, loopback] sync --connections ${o.connections} → fresh target :${target.port}`);
      const prof = round === 1 ? o.cpuProf : undefined;
      const run = await runMailferry(o, source.port, target.port, db, prof);
      loopRuns.push(run);
      if (!run.error) say(`  copied ${run.copied}/${run.found} (${r1(run.bytes / MiB)} MB), skipped ${run.skipped}, failed ${run.failed}`);
      if (!run.error) say(`  in-process ${run.seconds} s: ${run.msgsPerSec} msg/s, ${run.mbPerSec} MB/s | wall ${run.wallSeconds} s: ${run.msgsPerSecWall} msg/s, ${run.mbPerSecWall} MB/s | CPU ${cpuText(run.cpuSeconds)} | peak RSS ${run.peakRssMb} MB, reconnects ${run.reconnects} (load ${run.load1}; ${busyText(run.machine)})`);
      const check = await checkTarget(target.endpoint(), hashes, expected, o.sample);
      loopChecks.push(check);
      say(`  target holds ${check.targetMessages}/${expected} messages; sample ${check.exact}/${check.sampled} byte-exact`);
      const noop = await runMailferry(o, source.port, target.port, db);
      noopRuns.push(noop);
      if (!noop.error) say(`[mailferry, no-op re-run] copied ${noop.copied}; in-process ${noop.seconds} s, whole command ${noop.wallSeconds} s (load ${noop.load1})`);
      await release(target);
    }

    // mbsync on loopback.
    if (!mbsyncSkipReason) {
      const target = await startTarget('mbsync');
      say(`\n[mbsync, loopback] PipelineDepth 50 → fresh target :${target.port}`);
      const run = await runMbsync(path.join(work, `mbsync-loop-${round}`), source.port, target.port, mbsyncExclude, expected, corpusBytes);
      mbLoopRuns.push(run);
      say(`  ${run.wallSeconds} s: ${run.msgsPerSec} msg/s, ${run.mbPerSec} MB/s, CPU ${cpuText(run.cpuSeconds)}, exit ${run.exitStatus}${run.problem ? ` (${run.problem})` : ''} (load ${run.load1}; ${busyText(run.machine)})`);
      const check = await checkTarget(target.endpoint(), hashes, expected, o.sample);
      mbLoopChecks.push(check);
      say(`  target holds ${check.targetMessages}/${expected} messages; sample ${check.exact}/${check.sampled} byte-exact, ${check.exactWithoutXTuid} more once X-TUID is removed`);
      await release(target);
    }
  }
  pregenerated = null;
  limitCorpus.messages = () => [];

  // Through the delay proxy.
  let rttRun: SyncRun;
  let rttCheck: Counted;
  {
    const target = await startTarget('rtt');
    const proxies = await startProxies(source, target, o.rttMs);
    say(`\n[mailferry, ${o.rttMs} ms RTT] proxies :${proxies.source.port} → source, :${proxies.target.port} → fresh target`);
    rttRun = await runMailferry(o, proxies.source.port, proxies.target.port, path.join(work, 'rtt.sqlite'));
    if (!rttRun.error) say(`  copied ${rttRun.copied}/${rttRun.found}; in-process ${rttRun.seconds} s: ${rttRun.msgsPerSec} msg/s, ${rttRun.mbPerSec} MB/s | wall ${rttRun.wallSeconds} s: ${rttRun.msgsPerSecWall} msg/s | CPU ${cpuText(rttRun.cpuSeconds)} | peak RSS ${rttRun.peakRssMb} MB, reconnects ${rttRun.reconnects} (load ${rttRun.load1})`);
    await release(proxies.source);
    await release(proxies.target);
    rttCheck = await countTarget(target.endpoint(), expected);
    say(`  target holds ${rttCheck.targetMessages}/${expected} messages`);
    await release(target);
  }
  let mbRttRun: MbsyncRun | null = null;
  let mbRttCheck: Counted | null = null;
  if (!mbsyncSkipReason) {
    const target = await startTarget('mbsync-rtt');
    const proxies = await startProxies(source, target, o.rttMs);
    say(`\n[mbsync, ${o.rttMs} ms RTT] proxies :${proxies.source.port} → source, :${proxies.target.port} → fresh target`);
    mbRttRun = await runMbsync(path.join(work, 'mbsync-rtt'), proxies.source.port, proxies.target.port, mbsyncExclude, expected, corpusBytes);
    say(`  ${mbRttRun.wallSeconds} s: ${mbRttRun.msgsPerSec} msg/s, CPU ${cpuText(mbRttRun.cpuSeconds)}, exit ${mbRttRun.exitStatus}${mbRttRun.problem ? ` (${mbRttRun.problem})` : ''} (load ${mbRttRun.load1})`);
    await release(proxies.source);
    await release(proxies.target);
    mbRttCheck = await countTarget(target.endpoint(), expected);
    say(`  target holds ${mbRttCheck.targetMessages}/${expected} messages`);
    await release(target);
  }
  await release(source);

  // ---- Figures -------------------------------------------------------------------------
  const limitSecondsOf = (mode: LimitMode): number => median(limitRuns[mode].map((r) => r.seconds));
  // The lab's limit is the faster way of writing (on Dovecot, MULTIAPPEND).
  const limitMode: LimitMode = limitSecondsOf('multi') <= limitSecondsOf('single') ? 'multi' : 'single';
  const limitSeconds = limitSecondsOf(limitMode);
  // Figures and ratios come from runs that completed; a crashed run fails its goals.
  const okLoops = loopRuns.filter((r) => !r.error);
  const loop = okLoops.length ? medianRun(okLoops, (r) => r.seconds) : loopRuns[0]!;
  const noop = medianRun(noopRuns, (r) => r.wallSeconds);
  const okMbLoops = mbLoopRuns.filter((r) => r.exitStatus === 0);
  const mbLoop = mbLoopRuns.length ? medianRun(okMbLoops.length ? okMbLoops : mbLoopRuns, (r) => r.wallSeconds) : null;
  const loopCheck = loopChecks[0]!;
  const mbLoopCheck = mbLoopChecks[0] ?? null;
  const ratio = (a: number, b: number): number | null => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? r3(a / b) : null);
  const ratios = {
    mailferryOverLimit: okLoops.length ? ratio(median(okLoops.map((r) => r.seconds)), limitSeconds) : null,
    mailferryWallOverLimit: okLoops.length ? ratio(median(okLoops.map((r) => r.wallSeconds)), limitSeconds) : null,
    mailferryOverSingleLimit: okLoops.length ? ratio(median(okLoops.map((r) => r.seconds)), limitSecondsOf('single')) : null,
    mailferryOverMbsyncLoopback: okLoops.length && okMbLoops.length ? ratio(median(okLoops.map((r) => r.wallSeconds)), median(okMbLoops.map((r) => r.wallSeconds))) : null,
    mailferryOverMbsyncRtt: !rttRun.error && mbRttRun && mbRttRun.exitStatus === 0 ? ratio(rttRun.wallSeconds, mbRttRun.wallSeconds) : null,
  };
  const loadAtEnd = os.loadavg().map(r2);
  const command = reproduceCommand(o);

  const goal = (ok: boolean | null): string => (ok === null ? 'n/a' : ok ? 'PASS' : 'FAIL');
  const allLoopsOk = okLoops.length === loopRuns.length;
  const mfRuns = [...loopRuns, rttRun];
  const vsMbsync = (r: number | null, ok: (x: number) => boolean): boolean | null => (mbsyncSkipReason ? null : r === null ? false : ok(r));
  const goals = {
    exactLoopback: allLoopsOk && loopChecks.every((c) => c.complete && c.exact === c.sampled) && loopRuns.every((r) => r.failed === 0 && r.skipped === 0),
    secondRunCopiesNothing: allLoopsOk && noopRuns.every((r) => !r.error && r.copied === 0),
    withinLimit: ratios.mailferryOverLimit === null ? false : ratios.mailferryOverLimit <= 1.1,
    rtt400: !rttRun.error && rttRun.msgsPerSec >= 400,
    noopUnderOneSecond: allLoopsOk && !noop.error && noop.wallSeconds < 1,
    peakRssUnder150: mfRuns.every((r) => !r.error) && Math.max(...mfRuns.map((r) => r.peakRssMb)) < 150,
    notSlowerThanMbsyncLoopback: vsMbsync(ratios.mailferryOverMbsyncLoopback, (x) => x <= 1.0),
    fasterThanMbsyncRtt: vsMbsync(ratios.mailferryOverMbsyncRtt, (x) => x < 1.0),
  };

  const rows: [string, string][] = [];
  const row = (k: string, v: string) => rows.push([k, v]);
  const rep = (xs: number[]) => (xs.length > 1 ? ` [runs: ${xs.map((x) => x.toFixed(2)).join(', ')}]` : '');
  row('corpus', `${expected} messages, ${r1(corpusBytes / MiB)} MB, ${corpus.folders.length} folders (seed ${o.seed}${extraLarge.length ? `, incl. one ${o.largeMb} MB message` : ''})`);
  row('load into source (loadCorpusFast)', `${load.seconds} s, ${load.msgsPerSec} msg/s (incl. generating)`);
  for (const mode of LIMIT_MODES) {
    const runs = limitRuns[mode];
    const lr = medianRun(runs, (r) => r.seconds);
    row(`limit: ${LIMIT_LABEL[mode]}, ${o.connections} conns`, `${r3(limitSecondsOf(mode))} s, ${r1(lr.appended / lr.seconds)} msg/s, ${r2(lr.bytes / MiB / lr.seconds)} MB/s, writer CPU ${cpuText(lr.cpuSeconds)}${rep(runs.map((r) => r.seconds))}${mode === limitMode ? ' ← the limit' : ''}`);
  }
  const failed = (r: SyncRun): string | null => (r.error ? `FAILED: ${r.error}` : null);
  row('mailferry loopback (in-process)', failed(loop) ?? `${loop.seconds} s, ${loop.msgsPerSec} msg/s, ${loop.mbPerSec} MB/s, reconnects ${loop.reconnects}${rep(loopRuns.map((r) => r.seconds))}`);
  row('mailferry loopback (wall)', failed(loop) ?? `${loop.wallSeconds} s, ${loop.msgsPerSecWall} msg/s, ${loop.mbPerSecWall} MB/s${rep(loopRuns.map((r) => r.wallSeconds))}`);
  const crashed = (r: SyncRun, text: string): string => (r.error ? `${text} (crashed run)` : text);
  row('mailferry CPU', `${crashed(loop, cpuText(loop.cpuSeconds))} loopback, ${crashed(rttRun, cpuText(rttRun.cpuSeconds))} at ${o.rttMs} ms (user+sys of the sync process)`);
  row('mailferry peak RSS', `${loop.error ? 'n/a' : `${loop.peakRssMb} MB`} (loopback), ${rttRun.error ? 'n/a' : `${rttRun.peakRssMb} MB`} (${o.rttMs} ms) (VmHWM of the sync process; the CLI's ru_maxrss, inherited over fork: ${loop.cliPeakRssMb} / ${rttRun.cliPeakRssMb} MB)`);
  row('mailferry ÷ limit', `${ratios.mailferryOverLimit ?? 'n/a'} in-process, ${ratios.mailferryWallOverLimit ?? 'n/a'} wall (goal ≤ 1.1; ${ratios.mailferryOverSingleLimit ?? 'n/a'} in-process over the one-APPEND-per-message writer)`);
  row('mailferry exact (loopback)', `${loopCheck.targetMessages}/${expected} on target, sample ${loopCheck.exact}/${loopCheck.sampled} byte-exact`);
  row('no-op re-run', failed(noop) ?? `copied ${noop.copied}, in-process ${noop.seconds} s, whole command ${noop.wallSeconds} s${rep(noopRuns.map((r) => r.wallSeconds))}`);
  row(`mailferry ${o.rttMs} ms RTT`, failed(rttRun) ?? `${rttRun.seconds} s in-process (${rttRun.msgsPerSec} msg/s, ${rttRun.mbPerSec} MB/s), wall ${rttRun.wallSeconds} s (${rttRun.msgsPerSecWall} msg/s), reconnects ${rttRun.reconnects}; ${rttCheck.targetMessages}/${expected} on target`);
  if (mbsyncSkipReason) {
    row('mbsync', `skipped: ${mbsyncSkipReason}`);
  } else {
    row('mbsync loopback', `${mbLoop!.wallSeconds} s, ${mbLoop!.msgsPerSec} msg/s, CPU ${cpuText(mbLoop!.cpuSeconds)}, exit ${mbLoop!.exitStatus}${rep(mbLoopRuns.map((r) => r.wallSeconds))}`);
    row(`mbsync ${o.rttMs} ms RTT`, `${mbRttRun!.wallSeconds} s, ${mbRttRun!.msgsPerSec} msg/s, CPU ${cpuText(mbRttRun!.cpuSeconds)}, exit ${mbRttRun!.exitStatus}; ${mbRttCheck!.targetMessages}/${expected} on target`);
    row('mailferry ÷ mbsync (wall)', `${ratios.mailferryOverMbsyncLoopback ?? 'n/a'} loopback (goal ≤ 1.0), ${ratios.mailferryOverMbsyncRtt ?? 'n/a'} at ${o.rttMs} ms (goal < 1.0)`);
    row('mbsync exact (loopback)', `${mbLoopCheck!.targetMessages}/${expected} on target, sample ${mbLoopCheck!.exact}/${mbLoopCheck!.sampled} byte-exact, ${mbLoopCheck!.exactWithoutXTuid} match once X-TUID is removed`);
  }
  {
    // Is the loopback run bound by CPU? Median busy CPU-seconds of the whole machine
    // (mailferry or mbsync, plus both Dovecots and the kernel) against its capacity.
    const busy = (runs: readonly { machine: { busy: number; capacity: number } | null }[]): string => {
      const ms = runs.map((r) => r.machine).filter((m): m is { busy: number; capacity: number } => m !== null);
      return ms.length ? busyText({ busy: r2(median(ms.map((m) => m.busy))), capacity: r2(median(ms.map((m) => m.capacity))) }).replace('machine busy ', '') : 'n/a';
    };
    row('machine CPU (loopback)', `limit ${busy(limitRuns[limitMode])}; mailferry ${busy(loopRuns)}${mbLoopRuns.length ? `; mbsync ${busy(mbLoopRuns)}` : ''} (medians; all processes, ${os.cpus().length} CPUs)`);
  }
  row('load average', `start ${loadAtStart.join(' ')}, end ${loadAtEnd.join(' ')} (${os.cpus().length} CPUs)`);

  const width = Math.max(...rows.map(([k]) => k.length));
  say(`\n${'='.repeat(100)}`);
  for (const [k, v] of rows) say(`${k.padEnd(width)}  ${v}`);
  say('-'.repeat(100));
  say(`goals: exact ${goal(goals.exactLoopback)}, 2nd run copies 0 ${goal(goals.secondRunCopiesNothing)}, ≤1.1× limit ${goal(goals.withinLimit)}, ≥400 msg/s at ${o.rttMs} ms ${goal(goals.rtt400)}, ` +
    `no-op <1 s ${goal(goals.noopUnderOneSecond)}, RSS <150 MB ${goal(goals.peakRssUnder150)}, ≤ mbsync loopback ${goal(goals.notSlowerThanMbsyncLoopback)}, < mbsync at ${o.rttMs} ms ${goal(goals.fasterThanMbsyncRtt)}`);
  say(`reproduce: ${command}`);

  if (o.json) {
    const result = {
      startedAt: startedAt.toISOString(),
      command,
      options: o,
      environment: { cli: CLI, node: process.version, dovecot: dovecotVersion, mbsync, cpus: os.cpus().length, loadAverageStart: loadAtStart, loadAverageEnd: loadAtEnd },
      corpus: { messages: expected, bytes: corpusBytes, folders: corpus.folders.length, largeMb: o.largeMb },
      load,
      limit: {
        mode: limitMode,
        seconds: r3(limitSeconds),
        ...Object.fromEntries(LIMIT_MODES.map((mode) => {
          const lr = medianRun(limitRuns[mode], (r) => r.seconds);
          return [mode, { seconds: r3(limitSecondsOf(mode)), msgsPerSec: r1(lr.appended / lr.seconds), mbPerSec: r2(lr.bytes / MiB / lr.seconds), runs: limitRuns[mode].map((r) => ({ seconds: r3(r.seconds), cpuSeconds: r.cpuSeconds, load1: r.load1 })) }];
        })),
      },
      mailferryLoopback: { ...loop, runs: loopRuns, exactness: loopCheck },
      noop: { copied: noop.copied, seconds: noop.seconds, wallSeconds: noop.wallSeconds, runs: noopRuns.map((r) => ({ copied: r.copied, seconds: r.seconds, wallSeconds: r.wallSeconds, load1: r.load1 })) },
      mailferryRtt: { rttMs: o.rttMs, ...rttRun, target: rttCheck },
      mbsync: mbsyncSkipReason
        ? { skipped: mbsyncSkipReason }
        : { version: mbsync, loopback: { ...mbLoop, runs: mbLoopRuns, exactness: mbLoopCheck }, rtt: { ...mbRttRun, target: mbRttCheck } },
      ratios,
      goals,
    };
    say(JSON.stringify(result));
  }
}

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    if (interrupted) return;
    interrupted = true;
    process.stderr.write(`\nbench: ${sig}, stopping servers…\n`);
    void releaseAll().finally(() => process.exit(130));
  });
}

try {
  await main();
} catch (err) {
  process.stderr.write(`bench: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exitCode = 1;
} finally {
  await releaseAll();
}
