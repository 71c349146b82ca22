/**
 * Crash safety of the streamed copy path: messages over 2 MiB go from the source FETCH
 * straight into the target APPEND (copy-lanes.ts readLarge), with their pending row
 * journaled without a digest, and the digest written after the last source byte was read
 * but before the last byte of the APPEND literal goes out. Recovery (recovery.ts) forgets
 * a pending row without a digest (it cannot be on the target) and looks a row with one up
 * by content. This test breaks a sync at exactly those moments, chosen from the journal:
 *
 * - `hashless`: SIGKILL while a large message's pending row has no digest (mid-stream);
 * - `hashed`: SIGKILL while a large pending row has its digest (last byte going out or
 *   the APPEND's answer on its way);
 * - `stored`: the target's answers are held back by a relay until the target has stored a
 *   large message whose row is pending with its digest, then SIGKILL: recovery must find
 *   that message on the target and must not send it again;
 * - `random`: SIGKILL at a pseudo-random moment of the copy (deterministic seed);
 *
 * with 2 lanes, then (into a second target mailbox) 4 lanes, re-running after each kill;
 * into a third mailbox, connections dropped mid-stream (source, target, and a target
 * connection dropped after it stored a large message whose answer was held back) within
 * one run; then a source folder recreated under a new UIDVALIDITY, so its large messages
 * are adopted by content or read twice (digest journaled before the APPEND), with kills.
 * Every case ends with the target holding exactly the source's messages (bytes, flags,
 * internal dates; none lost, none twice), `verify --content` in sync, and a re-run with
 * nothing to do. Each kill is checked to have landed in its state from the journal as the
 * killed process left it (a SIGKILLed process writes nothing more), and each recovery to
 * have resolved exactly the rows the kill left pending.
 *
 * The last cases kill while two identical messages with other dates or flags are in flight
 * on two lanes and only the second was stored: each must keep its own date and flags.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import Database from 'better-sqlite3';
import type { ImapFlow } from 'imapflow';
import { imapDateTime } from '../src/imap/append-pipeline.js';
import type { ImapEndpoint } from '../src/imap/endpoint.js';
import { type CorpusFolder, type CorpusMessage, generateCorpus } from '../src/lab/corpus.js';
import { loadCorpusFast } from '../src/lab/fast-load.js';
import { TcpProxy } from '../src/lab/proxy.js';
import { STREAM_THRESHOLD } from '../src/sync/copy-lanes.js';
import { algorithmOf, type Digest } from '../src/sync/content-digest.js';
import { CLI, env, lastJson, runCli, syncArgs } from './helpers/cli.js';
import { journalCounts, journalHasher } from './helpers/journal.js';
import { expectedTargetPath, type LabPair, startPair } from './helpers/lab-pair.js';
import { compareMailboxes, connect, type MailboxSnapshot, snapshot } from './helpers/mailbox-snapshot.js';
import { type Relay, startRelay } from './helpers/relay.js';

const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------
// Large messages, built in memory (deterministic, a few ms per MiB)
// ---------------------------------------------------------------------------------------

type Kind = 'text' | 'base64' | '8bit';

interface LargeSpec {
  folder: string[];
  size: number;
  kind: Kind;
  flags: string[];
  /** Appended twice, identical in bytes, flags and internal date. */
  twice?: boolean;
}

const FOLDERS: CorpusFolder[] = [
  { path: ['INBOX'], weight: 5 },
  { path: ['Sent Items'], specialUse: '\\Sent', weight: 3 },
  { path: ['Projects'], weight: 2 },
];

const LARGE: LargeSpec[] = [
  { folder: ['INBOX'], size: STREAM_THRESHOLD + 1, kind: 'text', flags: ['\\Seen'] }, // one byte over: streamed
  { folder: ['INBOX'], size: 12 * MiB - 4321, kind: 'base64', flags: ['\\Seen', '$Forwarded'] },
  { folder: ['INBOX'], size: STREAM_THRESHOLD, kind: 'base64', flags: [] }, // exactly the threshold: read whole
  { folder: ['Sent Items'], size: 5 * MiB + 777, kind: '8bit', flags: ['\\Seen', '\\Answered'] },
  { folder: ['Sent Items'], size: 3 * MiB + 99, kind: 'base64', flags: ['\\Seen'], twice: true },
  { folder: ['Projects'], size: 8 * MiB + 3, kind: 'text', flags: ['\\Flagged'] },
  { folder: ['Projects'], size: Math.round(2.5 * MiB), kind: '8bit', flags: [] },
  // Two more streamed ones, so the later kill modes of a scenario still find large messages
  // to copy (the engine got fast enough to run out of them after three kills).
  { folder: ['INBOX'], size: 4 * MiB + 11, kind: 'text', flags: [] },
  { folder: ['Projects'], size: 3 * MiB + 5, kind: 'base64', flags: ['\\Seen'] },
];

/** xorshift32: a fast deterministic byte source for the message bodies. */
function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

const B64 = Buffer.from('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/');
const WORDS = ['migration', 'mailbox', 'literal', 'exactly', 'once', 'journal', 'digest', 'stream', 'recovery', 'Dovecot', 'APPEND', 'FETCH', 'quarterly', 'report', 'attached', 'please', 'find'];
const LATIN1 = Buffer.from([...Array.from({ length: 95 }, (_, i) => 0x20 + i), ...Array.from({ length: 96 }, (_, i) => 0xa0 + i)]);

/**
 * A message of exactly `spec.size` bytes: headers, then CRLF lines of the body kind (no
 * NUL, no bare CR or LF, lines under 80 bytes), the last line cut to fit.
 */
function largeMessage(spec: LargeSpec, index: number): Buffer {
  const ctype = {
    text: 'Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit',
    base64: `Content-Type: application/octet-stream; name="blob-${index}.bin"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="blob-${index}.bin"`,
    '8bit': 'Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit',
  }[spec.kind];
  const head = Buffer.from(
    `From: "Large Sender ${index}" <large${index}@example.org>\r\nTo: alice@example.com\r\n` +
      `Subject: Large ${spec.kind} message #${index} (${spec.size} bytes)\r\nDate: Mon, 3 May 2021 10:${String(10 + index).padStart(2, '0')}:00 +0200\r\n` +
      `Message-ID: <large-${index}@mailferry.test>\r\nMIME-Version: 1.0\r\n${ctype}\r\n\r\n`,
    'latin1',
  );
  const out = Buffer.allocUnsafe(spec.size);
  let off = head.copy(out, 0);
  const next = xorshift(0x9e3779b9 ^ (index * 7919 + spec.size));
  let line = 0;
  while (off < out.length) {
    const remaining = out.length - off;
    let len = spec.kind === 'base64' ? 76 : 40 + (next() % 38);
    if (remaining <= len + 3) len = remaining - 2; // the last line fills the message exactly
    const end = off + len;
    if (spec.kind === 'base64') {
      while (off < end) {
        let r = next();
        for (let k = 0; k < 5 && off < end; k++, r >>>= 6) out[off++] = B64[r & 63]!;
      }
    } else if (spec.kind === '8bit') {
      while (off < end) {
        const r = next();
        out[off++] = LATIN1[r % LATIN1.length]!;
        if (off < end) out[off++] = LATIN1[(r >>> 16) % LATIN1.length]!;
      }
    } else {
      let s = `${String(line).padStart(6, '0')}:`;
      while (s.length < len) s += ` ${WORDS[next() % WORDS.length]}`;
      off += out.write(s.slice(0, len), off, 'latin1');
    }
    out[off++] = 13;
    out[off++] = 10;
    line++;
  }
  return out;
}

/** The small corpus with the large messages spread between its messages, folder by folder. */
function buildMailbox(): CorpusMessage[] {
  const small = [...generateCorpus({ seed: 2718, messages: 240, averageSize: 12_000, maxSize: 600_000, folders: FOLDERS }).messages()];
  const out: CorpusMessage[] = [];
  for (const f of FOLDERS) {
    const key = f.path.join('/');
    const mine = small.filter((m) => m.folder.join('/') === key);
    const large: CorpusMessage[] = [];
    LARGE.forEach((spec, i) => {
      if (spec.folder.join('/') !== key) return;
      const m: CorpusMessage = { folder: spec.folder, raw: largeMessage(spec, i), flags: spec.flags, internalDate: new Date(Date.UTC(2021, 4, 3, 8, 10 + i, 17)) };
      large.push(m);
      if (spec.twice) large.push({ ...m });
    });
    // Large messages between small ones, so chunks and streams alternate in UID order.
    large.forEach((m, i) => mine.splice(Math.round(((i + 1) * mine.length) / (large.length + 1)) + i, 0, m));
    out.push(...mine);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// The journal, read while a sync runs in another process
// ---------------------------------------------------------------------------------------

interface PendingRow {
  folderId: number;
  targetPath: string;
  uid: number;
  size: number;
  digest: string | null;
  floor: number;
}

const PENDING_SQL = `select m.folder_id as folderId, f.target_path as targetPath, m.source_uid as uid, m.size as size, m.digest as digest, m.uid_floor as floor
  from message m join folder f on f.id = m.folder_id where m.state = 'pending' order by m.folder_id, m.source_uid`;

/** Pending rows; while polling (`strict` false) an absent or busy database reads as none. */
function pendingRows(db: string, strict = false): PendingRow[] {
  let d: Database.Database;
  try {
    d = new Database(db, { readonly: true, fileMustExist: true });
  } catch (err) {
    if (strict) throw err;
    return [];
  }
  try {
    return d.prepare(PENDING_SQL).all() as PendingRow[];
  } catch (err) {
    if (strict) throw err;
    return [];
  } finally {
    d.close();
  }
}

function messageRow(db: string, folderId: number, uid: number): { state: string; target_uid: number | null; digest: string | null } | undefined {
  const d = new Database(db, { readonly: true, fileMustExist: true });
  try {
    return d.prepare('select state, target_uid, digest from message where folder_id = ? and source_uid = ?').get(folderId, uid) as { state: string; target_uid: number | null; digest: string | null } | undefined;
  } finally {
    d.close();
  }
}

function copiedTargetUids(db: string, targetPath: string): Set<number> {
  const d = new Database(db, { readonly: true, fileMustExist: true });
  try {
    const rows = d.prepare("select m.target_uid as uid from message m join folder f on f.id = m.folder_id where f.target_path = ? and m.state = 'copied' and m.target_uid is not null").all(targetPath) as { uid: number }[];
    return new Set(rows.map((r) => r.uid));
  } finally {
    d.close();
  }
}

const isLarge = (r: PendingRow) => r.size > STREAM_THRESHOLD;
const hashlessLarge = (rows: PendingRow[]) => rows.filter((r) => isLarge(r) && r.digest === null);
const hashedLarge = (rows: PendingRow[]) => rows.filter((r) => isLarge(r) && r.digest !== null);

// ---------------------------------------------------------------------------------------
// The CLI as a child that can be watched, held up and killed
// ---------------------------------------------------------------------------------------

interface Reconciled {
  folder: string;
  recovered: number;
  requeued: number;
}

class SyncRun {
  private readonly child: ChildProcess;
  private out = '';
  private err = '';
  readonly ended: Promise<{ status: number | null; signal: NodeJS.Signals | null }>;
  done = false;

  constructor(args: string[], environment: NodeJS.ProcessEnv) {
    this.child = spawn(process.execPath, [CLI, ...args], { env: environment, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (d: Buffer) => (this.out += d.toString()));
    this.child.stderr!.on('data', (d: Buffer) => (this.err += d.toString()));
    const timer = setTimeout(() => this.kill(), 120_000);
    this.ended = new Promise((resolve, reject) => {
      this.child.on('error', reject);
      this.child.on('close', (status, signal) => {
        clearTimeout(timer);
        this.done = true;
        resolve({ status, signal });
      });
    });
  }

  get stderr(): string {
    return this.err;
  }

  json(): Record<string, unknown> | null {
    return lastJson(this.out);
  }

  kill(): void {
    if (!this.done) this.child.kill('SIGKILL');
  }

  /** The run's 'journal reconciled with target' log lines so far (complete lines only). */
  reconciled(): Reconciled[] {
    const lines = this.err.slice(0, this.err.lastIndexOf('\n') + 1).split('\n');
    return lines.filter((l) => l.includes('journal reconciled with target')).map((l) => JSON.parse(l) as Reconciled);
  }

  resumed(): number {
    return (this.err.match(/connection lost; resuming/g) ?? []).length;
  }

  tail(): string {
    return this.err.slice(-3000);
  }
}

/**
 * Recovery reconciles once per target folder with pending rows, before it scans or copies.
 * A pending row seen after that is this attempt's own, not one left by the last kill.
 */
function recoveryDone(run: SyncRun, before: number, rows: PendingRow[]): () => boolean {
  const folders = new Set(rows.map((r) => r.targetPath)).size;
  return () => run.reconciled().length >= before + folders;
}

/** Polls `cond` every 2 ms; false when the run ended first or `ms` passed. */
async function until(run: SyncRun, cond: () => boolean, ms = 30_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!run.done && Date.now() < deadline) {
    if (cond()) return true;
    await sleep(2);
  }
  return false;
}

/**
 * Holds the target's answers (relay) and waits until the target has stored the large
 * message of a pending row with a digest, unanswered. Returns that row and its target UID,
 * or null when no such row turned up (the answer got through first, or the run ended):
 * then the answers are released again.
 */
async function holdUntilStored(run: SyncRun, relay: Relay, target: ImapFlow, db: string, armed: () => boolean): Promise<{ row: PendingRow; targetUid: number; atDrop: PendingRow[] } | null> {
  for (;;) {
    if (!(await until(run, () => armed() && hashedLarge(pendingRows(db)).length > 0))) return null;
    relay.hold(true);
    const candidates = hashedLarge(pendingRows(db));
    const deadline = Date.now() + 10_000;
    while (candidates.length && !run.done && Date.now() < deadline) {
      const still = pendingRows(db);
      for (const row of candidates) {
        if (!still.some((r) => r.folderId === row.folderId && r.uid === row.uid)) continue;
        const uid = await storedUid(target, db, row);
        // Still pending once it is found stored: an answer the client had before the hold
        // (the row turns copied while the target is searched) is not a held one.
        const now = uid === null ? [] : pendingRows(db);
        if (uid !== null && now.some((r) => r.folderId === row.folderId && r.uid === row.uid && r.digest !== null)) return { row, targetUid: uid, atDrop: now };
      }
      // Rows that were answered before the hold are not pending any more: no use waiting.
      if (!candidates.some((row) => still.some((r) => r.folderId === row.folderId && r.uid === row.uid && r.digest !== null))) break;
      await sleep(10);
    }
    relay.hold(false);
    if (run.done) return null;
  }
}

/** The target UID of a message with this row's size and digest that no copied row maps, or null. */
async function storedUid(target: ImapFlow, db: string, row: PendingRow): Promise<number | null> {
  await target.mailboxOpen(row.targetPath, { readOnly: true });
  const mapped = copiedTargetUids(db, row.targetPath);
  const listed = await target.fetchAll(`${row.floor}:*`, { uid: true, size: true }, { uid: true });
  for (const m of listed) {
    if (m.uid < row.floor || m.size !== row.size || mapped.has(m.uid)) continue;
    const [full] = await target.fetchAll(String(m.uid), { uid: true, source: true }, { uid: true });
    if (full?.source && row.digest !== null && journalHasher(db).digestOf(full.source, algorithmOf(row.digest as Digest)) === row.digest) return m.uid;
  }
  return null;
}

/**
 * The invariant recovery relies on: a large message whose pending row has no digest is not
 * on the target. Counts, per size, the target messages at or above the rows' UID floor that
 * no copied row maps; pending rows with a digest of that size may account for some (stored,
 * answer lost); any more is a message stored while its row had no digest.
 */
async function hashlessOnTarget(target: ImapFlow, db: string, atKill: PendingRow[]): Promise<string[]> {
  const problems: string[] = [];
  for (const path of new Set(hashlessLarge(atKill).map((r) => r.targetPath))) {
    const rows = atKill.filter((r) => r.targetPath === path);
    const hashless = hashlessLarge(rows);
    const floor = Math.min(...hashless.map((r) => r.floor));
    await target.mailboxOpen(path, { readOnly: true });
    const mapped = copiedTargetUids(db, path);
    const listed = await target.fetchAll(`${floor}:*`, { uid: true, size: true }, { uid: true });
    for (const size of new Set(hashless.map((r) => r.size))) {
      const unmapped = listed.filter((m) => m.uid >= floor && m.size === size && !mapped.has(m.uid)).length;
      const withDigest = rows.filter((r) => r.size === size && r.digest !== null).length;
      if (unmapped > withDigest) problems.push(`${path}: ${unmapped} unmapped message(s) of ${size} bytes on the target, ${withDigest} pending with a digest`);
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------

/**
 * A relay to the target for the twin case. Armed, it stops passing on the upload of the
 * connection whose APPEND carries `marker` (the server never gets that message) and from
 * then on holds back every answer to the client; disarmed, it passes everything and drops
 * the connections it has.
 */
async function startTrap(targetPort: number, marker: string): Promise<{ port: number; arm(on: boolean): void; stop(): Promise<void> }> {
  let armed = false;
  let sprung = false;
  const conns = new Set<{ client: net.Socket; upstream: net.Socket }>();
  const srv = net.createServer((client) => {
    const upstream = net.connect({ host: '127.0.0.1', port: targetPort });
    const conn = { client, upstream };
    conns.add(conn);
    let blocked = false;
    let tail = '';
    client.on('data', (d: Buffer) => {
      if (blocked) return;
      const text = tail + d.toString('latin1');
      tail = text.slice(-marker.length);
      if (armed && text.includes(marker)) {
        blocked = sprung = true;
        return;
      }
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      if (!(armed && sprung)) client.write(d);
    });
    const end = () => {
      conns.delete(conn);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const dropAll = () => {
    for (const c of [...conns]) {
      c.client.destroy();
      c.upstream.destroy();
    }
  };
  return {
    port: (srv.address() as net.AddressInfo).port,
    arm(on) {
      armed = on;
      sprung = false;
      if (!on) dropAll();
    },
    stop: () =>
      new Promise<void>((r) => {
        dropAll();
        srv.close(() => r());
      }),
  };
}

type Mode = 'hashless' | 'hashed' | 'stored' | 'random';

interface KillRecord {
  mode: Mode;
  /** The run ended by itself (status 0) before the kill: nothing more to copy. */
  finished: boolean;
  /** The journal as the killed process left it. */
  atKill: PendingRow[];
  hit: boolean;
  /** `stored` kills: the row whose message the target had stored, and its target UID. */
  stored?: { row: PendingRow; targetUid: number };
  /** The next run's reconciliation of what this kill left. */
  reconciled?: Reconciled[];
  ms: number;
}

function count(s: MailboxSnapshot): number {
  return [...s.values()].reduce((n, m) => n + m.length, 0);
}

describe('sync: crash safety while messages over 2 MiB are streamed', () => {
  let lab: LabPair;
  let source: MailboxSnapshot;
  let total = 0;
  let streamed = 0;
  const relays: { stop(): Promise<void> }[] = [];
  const proxies: TcpProxy[] = [];
  const sourceLogin = () => ({ method: 'login' as const, username: lab.sourceUser, password: lab.sourcePass });

  before(async () => {
    assert.equal(STREAM_THRESHOLD, 2 * MiB, 'the sizes below assume the 2 MiB streaming threshold');
    lab = await startPair({ extraTargetUsers: ['bob', 'carol', 'dave'] });
    const messages = buildMailbox();
    const loaded = await loadCorpusFast(
      lab.source.endpoint(),
      sourceLogin(),
      { folders: FOLDERS, messages: () => messages },
      { separator: '.', connections: 1 },
    );
    total = loaded.appended;
    assert.equal(total, messages.length);
    source = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    assert.equal(count(source), total);
    const sizes = [...source.values()].flat().map((m) => m.size);
    streamed = sizes.filter((s) => s > STREAM_THRESHOLD).length;
    assert.equal(streamed, LARGE.filter((l) => l.size > STREAM_THRESHOLD).length + LARGE.filter((l) => l.twice).length);
    assert.equal(sizes.filter((s) => s === STREAM_THRESHOLD).length, 1, 'one message exactly at the threshold');
    const twin = source.get('Sent Items')!.filter((m) => m.size === 3 * MiB + 99);
    assert.equal(twin.length, 2);
    assert.equal(twin[0]!.sha256, twin[1]!.sha256, 'the twice-appended message is identical');
  });
  after(async () => {
    await Promise.allSettled([...relays.map((r) => r.stop()), ...proxies.map((p) => p.stop())]);
    await lab?.stop();
  });

  /**
   * One target mailbox per case, each with its own journal, always reached through the
   * same relay (mailferry -> relay -> target), which can hold the target's answers back
   * (`stored`); the journal keys a mailbox pair by host:port, so every run of a mailbox
   * must go the same way.
   */
  const boxes = new Map<string, { user: string; db: string; relay: Relay; endpoints: { targetPort: number } }>();
  async function mailbox(user: string) {
    let box = boxes.get(user);
    if (!box) {
      // A 2 ms delay each way behind the relay: a kill aimed at a digest written but not yet
      // answered has a few milliseconds to land in, and a run killed at random leaves work
      // for the modes after it (on plain loopback the whole mailbox copies in ~0.3 s).
      const proxy = await TcpProxy.start({ targetHost: '127.0.0.1', targetPort: lab.target.port, delayMs: 2 });
      proxies.push(proxy);
      const relay = await startRelay(proxy.port);
      relays.push(relay);
      box = { user, db: join(lab.dir, `${user}.sqlite`), relay, endpoints: { targetPort: relay.port } };
      boxes.set(user, box);
    }
    return box;
  }

  /** The end state every case must reach: exact, verified, and nothing left to do. */
  async function assertExact(user: string, db: string, args: string[], endpoints?: { sourcePort?: number; targetPort?: number }): Promise<void> {
    const pair = { ...lab, targetUser: user };
    assert.equal(journalCounts(db).pending, 0, 'no APPEND left unresolved');
    assert.equal(journalCounts(db).copied, total);
    const tgt = await snapshot(lab.target.endpoint(), user, lab.targetPass);
    assert.deepEqual(compareMailboxes(source, tgt, (p) => expectedTargetPath(p)), []);
    assert.equal(count(tgt), total, 'no message lost or duplicated');
    assert.equal([...tgt.values()].flat().filter((m) => m.size > STREAM_THRESHOLD).length, streamed, 'every large message exactly as often as on the source');
    const v = await runCli(['verify', ...syncArgs(pair, db, ['--json', '--content'], endpoints)], env(pair));
    assert.equal(v.status, 0, v.stderr);
    assert.equal(v.json?.inSync, true);
    assert.equal(v.json?.missing, 0);
    const again = await runCli([...args, '--json'], env(pair));
    assert.equal(again.status, 0, again.stderr);
    assert.equal(again.json?.copied, 0, 'a re-run has nothing left to copy');
  }

  /**
   * Runs the sync once per mode, each killed in that mode's state (unless it finishes
   * first), then once to the end; checks each kill's state and what recovery made of it,
   * and the end state. `hashlessSeen[i]`: whether run i showed a large pending row without
   * its digest in any poll of the journal or at its kill.
   */
  async function killScenario(t: TestContext, user: string, connections: number, seed: number, modes: Mode[]): Promise<{ records: KillRecord[]; hashlessSeen: boolean[] }> {
    const { db, relay, endpoints } = await mailbox(user);
    const pair = { ...lab, targetUser: user };
    const args = ['sync', ...syncArgs(pair, db, ['--connections', String(connections), '--log-level', 'info'], endpoints)];
    const target = await connect(lab.target.endpoint(), user, lab.targetPass);
    let rnd = seed;
    const next = () => ((rnd = (rnd * 1103515245 + 12345) % 2 ** 31), rnd / 2 ** 31);
    const records: KillRecord[] = [];
    const hashlessSeen: boolean[] = [];
    const poll = (): PendingRow[] => {
      const rows = pendingRows(db);
      if (hashlessLarge(rows).length) hashlessSeen[records.length] = true;
      return rows;
    };
    try {
      for (const mode of modes) {
        const left = existsSync(db) ? pendingRows(db, true) : [];
        const run = new SyncRun(args, env(pair));
        const armed = recoveryDone(run, 0, left);
        const t0 = Date.now();
        let stored: { row: PendingRow; targetUid: number } | null = null;
        if (mode === 'hashless') {
          // Mid-stream: once a row has been seen without its digest for 0–15 ms, at once.
          const age = Math.floor(next() * 16);
          const firstSeen = new Map<string, number>();
          await until(run, () => {
            if (!armed()) return false;
            const now = Date.now();
            return hashlessLarge(poll()).some((r) => {
              const key = `${r.folderId}:${r.uid}`;
              if (!firstSeen.has(key)) firstSeen.set(key, now);
              return now - firstSeen.get(key)! >= age;
            });
          });
        } else if (mode === 'hashed') {
          await until(run, () => armed() && hashedLarge(poll()).length > 0);
        } else if (mode === 'stored') {
          stored = await holdUntilStored(run, relay, target, db, armed);
        } else {
          // Anywhere in the copy: 0–200 ms after this run journaled its first message.
          if (await until(run, () => armed() && poll().length > 0)) {
            const at = Date.now() + Math.floor(next() * 200);
            await until(run, () => (poll(), Date.now() >= at));
          }
        }
        run.kill();
        const { status, signal } = await run.ended;
        relay.discard();
        if (records.length) records[records.length - 1]!.reconciled = run.reconciled();
        const finished = status === 0;
        assert.ok(finished || signal === 'SIGKILL', `run ${records.length + 1} (${mode}) failed by itself (exit ${status}): ${run.tail()}`);
        const atKill = finished ? [] : pendingRows(db, true);
        hashlessSeen[records.length] ||= hashlessLarge(atKill).length > 0;
        assert.deepEqual(await hashlessOnTarget(target, db, atKill), [], `kill ${records.length + 1} (${mode}): a large message without a digest in its pending row is not on the target`);
        const hit =
          !finished &&
          (mode === 'hashless' ? hashlessLarge(atKill).length > 0 : mode === 'hashed' ? hashedLarge(atKill).length > 0 : mode === 'stored' ? stored !== null && atKill.some((r) => r.folderId === stored!.row.folderId && r.uid === stored!.row.uid && r.digest !== null) : true);
        records.push({ mode, finished, atKill, hit, ...(stored ? { stored } : {}), ms: Date.now() - t0 });
        if (finished) break;
      }
      const r = await runCli([...args, '--json'], env(pair));
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.json?.failed, 0);
      assert.equal(r.json?.skipped, 0);
      if (records.length) records[records.length - 1]!.reconciled = r.stderr.split('\n').filter((l) => l.includes('journal reconciled with target')).map((l) => JSON.parse(l) as Reconciled);
    } finally {
      await target.logout().catch(() => target.close());
    }
    for (const k of records) {
      const rec = k.reconciled ?? [];
      t.diagnostic(
        `${k.mode}: ${k.finished ? 'finished first' : k.hit ? 'hit' : 'missed'} after ${k.ms} ms; pending at the kill ${k.atKill.length}, ` +
          `large ones ${hashlessLarge(k.atKill).length} without and ${hashedLarge(k.atKill).length} with digest; ` +
          `the next run recovered ${rec.reduce((n, x) => n + x.recovered, 0)}, requeued ${rec.reduce((n, x) => n + x.requeued, 0)}`,
      );
    }

    for (const [i, k] of records.entries()) {
      if (k.finished) continue;
      // Recovery accounted for every row the kill left pending: found on the target, or forgotten.
      const rec = k.reconciled ?? [];
      assert.equal(rec.reduce((n, x) => n + x.recovered + x.requeued, 0), k.atKill.length, `kill ${i + 1} (${k.mode}): recovery resolved each pending row`);
      // Rows without a digest cannot be on the target: all of them are requeued.
      assert.ok(rec.reduce((n, x) => n + x.requeued, 0) >= k.atKill.filter((r) => r.digest === null).length, `kill ${i + 1}: rows without digest requeued`);
      if (k.stored) {
        // Found by content, not sent again: its row maps the message the target had stored.
        const row = messageRow(db, k.stored.row.folderId, k.stored.row.uid);
        assert.equal(row?.state, 'copied');
        assert.equal(row?.target_uid, k.stored.targetUid, `kill ${i + 1}: the stored large message was adopted by recovery`);
        assert.ok(rec.reduce((n, x) => n + x.recovered, 0) >= 1);
      }
    }
    await assertExact(user, db, args, endpoints);
    return { records, hashlessSeen };
  }

  const hits = (records: KillRecord[], mode: Mode) => records.filter((k) => k.mode === mode && k.hit).length;
  const all: KillRecord[] = [];

  test('SIGKILLed mid-stream, with a digest pending, after the target stored one, and at random, 2 lanes: exact', async (t) => {
    // `hashed` before `random`: a kill at random may come when little is left to copy.
    const { records } = await killScenario(t, 'alice', 2, 4711, ['hashless', 'stored', 'hashed', 'hashless', 'random', 'hashed']);
    all.push(...records);
    assert.ok(hits(records, 'hashless') >= 2, 'killed at least twice while a streamed message had no digest');
    assert.ok(hits(records, 'stored') >= 1, 'killed once after the target stored a large message still pending with its digest');
    assert.ok(hits(records, 'random') >= 1, 'killed at a random moment');
  });

  test('the same with 4 lanes, into another mailbox: exact', async (t) => {
    // `hashless` first, while most large messages are still to copy: after a kill at random
    // a loaded machine's last run could finish before a streamed one was seen mid-way.
    const { records } = await killScenario(t, 'bob', 4, 90210, ['hashless', 'random', 'stored', 'hashed']);
    all.push(...records);
    assert.ok(hits(records, 'hashless') >= 1, 'killed while a streamed message had no digest');
    assert.ok(hits(records, 'stored') >= 1, 'killed once after the target stored a large message still pending with its digest');
    assert.ok(hits(records, 'random') >= 1, 'killed at a random moment');
    // The window between a large message's digest and its answer is a few milliseconds, so
    // a kill there is asserted over both scenarios' attempts (three), not for each one.
    assert.ok(hits(all, 'hashed') >= 1, `killed at least once while a large pending row had its digest (${all.filter((k) => k.mode === 'hashed').length} attempts)`);
  });

  test('connections dropped mid-stream are reopened, a stored but unanswered large APPEND is found, and the run ends exact', async (t) => {
    const user = 'carol';
    const pair = { ...lab, targetUser: user };
    const db = join(lab.dir, `${user}.sqlite`);
    const srcProxy = await TcpProxy.start({ targetHost: '127.0.0.1', targetPort: lab.source.port });
    const tgtProxy = await TcpProxy.start({ targetHost: '127.0.0.1', targetPort: lab.target.port });
    proxies.push(srcProxy, tgtProxy);
    // mailferry -> relay -> TcpProxy -> target: the relay holds answers back, the proxy drops.
    const relay = await startRelay(tgtProxy.port);
    relays.push(relay);
    const endpoints = { sourcePort: srcProxy.port, targetPort: relay.port };
    const args = ['sync', ...syncArgs(pair, db, ['--connections', '3', '--log-level', 'info'], endpoints)];
    const target = await connect(lab.target.endpoint(), user, lab.targetPass);
    const run = new SyncRun([...args, '--json'], env(pair));
    const plan: { side: 'source' | 'target' | 'both'; when: 'hashless' | 'stored' }[] = [
      { side: 'source', when: 'hashless' }, // the source FETCH of a streamed message cut
      { side: 'target', when: 'hashless' }, // the APPEND literal of a streamed message cut
      { side: 'target', when: 'stored' }, // the target stored it; its answer is lost
      { side: 'both', when: 'hashless' },
    ];
    const drops: { side: string; when: string; atDrop: PendingRow[] }[] = [];
    let stored: { row: PendingRow; targetUid: number; atDrop: PendingRow[] } | null = null;
    try {
      let armed = () => true; // a new journal: nothing to recover first
      // Each drop waits until the attempt before it has copied something: a run backs off
      // longer after attempts that copied nothing (mailbox-sync.ts), which only costs time.
      for (const step of plan) {
        let ok: boolean;
        // The journal as it was when the drop was decided: for a hashless drop, the very poll
        // that saw the digest missing (read again afterwards, a stream finishing in between
        // would show its digest, and the drop would be recorded as the wrong kind).
        let atDrop: PendingRow[] = [];
        if (step.when === 'stored') {
          stored = await holdUntilStored(run, relay, target, db, armed);
          ok = stored !== null;
          atDrop = stored?.atDrop ?? [];
        } else {
          ok = await until(run, () => armed() && hashlessLarge((atDrop = pendingRows(db))).length > 0);
        }
        if (!ok) break;
        relay.discard(); // answers held back are lost with the connection
        if (step.side !== 'source') tgtProxy.dropAll();
        if (step.side !== 'target') srcProxy.dropAll();
        drops.push({ ...step, atDrop });
        assert.ok(await until(run, () => run.resumed() === drops.length), `the run noticed drop ${drops.length}: ${run.tail()}`);
        // The failed attempt has settled its journal writes before it logs; the next
        // attempt's recovery resolves what it left pending.
        const recovered = recoveryDone(run, run.reconciled().length, pendingRows(db, true));
        const copied = journalCounts(db).copied;
        armed = () => recovered() && journalCounts(db).copied > copied;
      }
    } catch (err) {
      run.kill();
      throw err;
    } finally {
      await target.logout().catch(() => target.close());
    }
    const { status } = await run.ended;
    for (const d of drops) t.diagnostic(`${d.side} dropped (${d.when}): large pending ${hashlessLarge(d.atDrop).length} without, ${hashedLarge(d.atDrop).length} with digest`);
    t.diagnostic(`recovery: ${JSON.stringify(run.reconciled())}`);
    assert.equal(drops.length, plan.length, `every drop landed while a large message was in flight (${drops.length} of ${plan.length})`);
    for (const [i, d] of drops.entries()) {
      if (d.when === 'hashless') assert.ok(hashlessLarge(d.atDrop).length > 0, `drop ${i + 1} came while a streamed message had no digest yet`);
      else assert.ok(stored && d.atDrop.some((r) => r.folderId === stored!.row.folderId && r.uid === stored!.row.uid && r.digest !== null), `drop ${i + 1} came while the stored message was pending with its digest`);
    }
    assert.equal(status, 0, run.tail());
    const json = run.json();
    assert.equal(json?.reconnects, drops.length, 'every drop cost exactly one reconnect');
    assert.equal(json?.failed, 0);
    assert.equal(json?.skipped, 0);
    assert.equal(json?.copied, total, 'copied counts every message, also the one recovery found');
    assert.ok(stored);
    const row = messageRow(db, stored.row.folderId, stored.row.uid);
    assert.equal(row?.state, 'copied');
    assert.equal(row?.target_uid, stored.targetUid, 'the large message stored before the drop was found by recovery, not sent again');
    await assertExact(user, db, args, endpoints);
  });

  test('after a source folder is recreated (new UIDVALIDITY), large orphans are adopted and new large ones are read twice, digest first, through kills', async (t) => {
    // Sent Items again, under a new UIDVALIDITY: the same messages (bytes, flags, dates)
    // in the same order, plus a third copy of the twin and a new large message. What alice
    // has is adopted by content; those two must be read, hashed, and then streamed.
    assert.equal(journalCounts(join(lab.dir, 'alice.sqlite')).copied, total, 'runs after the 2-lane case, which leaves alice exact');
    const folder = 'Sent Items';
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    const msgs: CorpusMessage[] = [];
    let oldValidity: bigint | undefined;
    let newValidity: bigint | undefined;
    try {
      oldValidity = (await c.mailboxOpen(folder, { readOnly: true })).uidValidity;
      for await (const m of c.fetch('1:*', { uid: true, flags: true, internalDate: true, source: true }, { uid: true })) {
        msgs.push({ folder: [folder], raw: m.source!, flags: [...(m.flags ?? [])].filter((f) => f !== '\\Recent'), internalDate: new Date(m.internalDate!) });
      }
      await c.mailboxClose();
      await c.mailboxDelete(folder);
      const twin = msgs.find((m) => m.raw.length === 3 * MiB + 99)!;
      const fresh: CorpusMessage = { folder: [folder], raw: largeMessage({ folder: [folder], size: 4 * MiB + 17, kind: '8bit', flags: [] }, LARGE.length), flags: ['\\Seen'], internalDate: new Date(Date.UTC(2022, 0, 2, 3, 4, 5)) };
      msgs.splice(Math.floor(msgs.length / 3), 0, fresh, { ...twin });
      await loadCorpusFast(lab.source.endpoint(), sourceLogin(), { folders: [{ path: [folder] }], messages: () => msgs }, { separator: '.', connections: 1 });
      newValidity = (await c.status(folder, { uidValidity: true }) || undefined)?.uidValidity;
    } finally {
      await c.logout().catch(() => c.close());
    }
    assert.ok(oldValidity !== undefined && newValidity !== undefined && oldValidity !== newValidity, `UIDVALIDITY changed (${oldValidity} -> ${newValidity})`);
    source = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    total = count(source);
    streamed = [...source.values()].flat().filter((m) => m.size > STREAM_THRESHOLD).length;

    const { records, hashlessSeen } = await killScenario(t, 'alice', 2, 31337, ['hashed', 'hashed']);
    // The first run turned every copied row of the folder into an orphan, so each large
    // message of that run was read and hashed before its pending row was written.
    assert.ok(records[0]!.hit, 'the first run was killed while a large message (read twice) was pending with its digest');
    assert.equal(hashlessSeen[0] ?? false, false, 'with orphans in the folder, no large pending row was ever without its digest');
    const d = new Database(join(lab.dir, 'alice.sqlite'), { readonly: true });
    try {
      assert.equal((d.prepare("select count(*) as n from message where state = 'orphan'").get() as { n: number }).n, 0, 'every orphan was adopted');
    } finally {
      d.close();
    }
    // assertExact (in killScenario) found every old message once: adopted, not sent again.
  });

  // Two identical messages in one folder, both in flight on two lanes when killed, only the
  // second one stored: recovery must credit that copy to the second row, or the first takes
  // its date and flags and the second is sent again (the target then has one of them twice).
  // The mailbox above has its twin with equal dates and flags on purpose, so it is immune.
  const crossed = [
    { name: 'a year apart, one of them read', folder: 'Twins Dates', dates: [Date.UTC(2021, 0, 1, 10, 0, 0), Date.UTC(2022, 5, 6, 12, 0, 0)] },
    {
      name: 'filed the same second, one of them read',
      folder: 'Twins Flags',
      dates: [Date.UTC(2021, 0, 1, 10, 0, 0), Date.UTC(2021, 0, 1, 10, 0, 0)],
    },
  ];
  for (const [n, c] of crossed.entries()) {
    test(`identical large messages (${c.name}), killed in flight on two lanes, keep their own date and flags`, async (t) => {
      const raw = largeMessage({ folder: [c.folder], size: 3 * MiB + 5 + n, kind: 'base64', flags: [] }, 40 + n);
      const twins: CorpusMessage[] = [
        { folder: [c.folder], raw, flags: [], internalDate: new Date(c.dates[0]!) },
        { folder: [c.folder], raw, flags: ['\\Seen'], internalDate: new Date(c.dates[1]!) },
      ];
      await loadCorpusFast(lab.source.endpoint(), sourceLogin(), { folders: [{ path: [c.folder] }], messages: () => twins }, { separator: '.', connections: 1 });
      // mailferry -> trap -> target: the trap keeps the first twin's APPEND (no flags, so
      // the date follows the mailbox name) from the server and, from then on, every answer.
      const trap = await startTrap(lab.target.port, `"${c.folder}" "${imapDateTime(twins[0]!.internalDate)}"`);
      relays.push(trap);
      // Round trips to the source let the other lane take the second twin while the first
      // lane is still starting on the first (a lane takes its next job once it has sent one).
      const slowSource = await TcpProxy.start({ targetHost: '127.0.0.1', targetPort: lab.source.port, delayMs: 15 });
      proxies.push(slowSource);
      const user = 'dave';
      const pair = { ...lab, targetUser: user };
      const db = join(lab.dir, `${user}-${n}.sqlite`);
      const only = ['INBOX', 'Sent Items', 'Projects', ...crossed.map((x) => x.folder)].filter((f) => f !== c.folder).flatMap((f) => ['--exclude', f]);
      const args = ['sync', ...syncArgs(pair, db, ['--connections', '3', '--log-level', 'info', ...only], { sourcePort: slowSource.port, targetPort: trap.port })];
      const target = await connect(lab.target.endpoint(), user, lab.targetPass);
      const second = (m: { internalDate?: Date | string; flags?: Set<string> }) => new Date(m.internalDate!).getTime() === c.dates[1] && !!m.flags?.has('\\Seen');
      let reached = false;
      try {
        // The twins must be on two lanes; should one lane take both, start over (fresh journal and folder).
        for (let attempt = 0; attempt < 4 && !reached; attempt++) {
          if (attempt > 0) {
            for (const f of [db, `${db}-wal`, `${db}-shm`]) rmSync(f, { force: true });
            await target.mailboxClose().catch(() => undefined);
            // Not there when the last attempt never got as far as creating it (a busy machine).
            await target.mailboxDelete(c.folder).catch(() => undefined);
          }
          trap.arm(true);
          const run = new SyncRun(args, env(pair));
          // Seconds on a quiet machine; CI runs other test files beside this one.
          const deadline = Date.now() + 20_000;
          let last = '';
          while (!run.done && Date.now() < deadline && !reached) {
            await sleep(10);
            const rows = pendingRows(db).filter((r) => r.size === raw.length);
            last = JSON.stringify(rows.map((r) => [r.uid, !!r.digest]));
            if (rows.length !== 2 || rows.some((r) => r.digest === null)) continue;
            const box = await target.mailboxOpen(c.folder, { readOnly: true }).catch(() => null);
            if (!box || box.exists === 0) continue;
            const onTarget = await target.fetchAll('1:*', { uid: true, flags: true, internalDate: true });
            // Both twins pending with their digest; only the second is on the target.
            reached = onTarget.length === 1 && second(onTarget[0]!);
          }
          run.kill();
          await run.ended;
          trap.arm(false);
          t.diagnostic(`attempt ${attempt + 1}: ${reached ? 'reached' : `not reached (${last})`}`);
        }
      } finally {
        await target.logout().catch(() => target.close());
      }
      assert.ok(reached, 'killed while both twins were pending with their digest and only the second was on the target');
      const r = await runCli([...args, '--json'], env(pair));
      assert.equal(r.status, 0, r.stderr);
      const read = async (endpoint: ImapEndpoint, u: string, pass: string) => {
        const client = await connect(endpoint, u, pass);
        try {
          await client.mailboxOpen(c.folder, { readOnly: true });
          const all = await client.fetchAll('1:*', { flags: true, internalDate: true, size: true });
          return all.map((m) => `${m.size} ${new Date(m.internalDate!).toISOString()} [${[...(m.flags ?? [])].filter((f) => f !== '\\Recent').sort().join(' ')}]`).sort();
        } finally {
          await client.logout().catch(() => client.close());
        }
      };
      assert.deepEqual(await read(lab.target.endpoint(), user, lab.targetPass), await read(lab.source.endpoint(), lab.sourceUser, lab.sourcePass));
    });
  }
});
