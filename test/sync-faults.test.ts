/**
 * Faults a real migration meets, against real Dovecot servers and the real CLI: connections
 * dropped mid-copy (reopened with backoff, still exact), a message over --max-message-size
 * (skipped and listed, copied once the limit allows), a message the target refuses (skipped
 * with the server's reason, retried each run, never duplicated), and login / connection
 * failures (exit 3 with a clear message and no password in the output; exit 2 without one).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import { basename, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { generateCorpus, loadCorpus } from '../src/lab/corpus.js';
import { TcpProxy } from '../src/lab/proxy.js';
import { looseDigest } from '../src/sync/changed-copies.js';
import { pairOfFailedRun, syncMailbox } from '../src/sync/mailbox-sync.js';
import { TargetFullError } from '../src/sync/target-full.js';
import { MailboxSyncError } from '../src/worker/mailbox-sides.js';
import { openStore } from '../src/store/open.js';
import { pino } from 'pino';
import { CLI, type CliResult, env, lastJson, runCli, syncArgs } from './helpers/cli.js';
import { journalCounts, journalKeys } from './helpers/journal.js';
import { appendUidMessages, type Relay, startRelay } from './helpers/relay.js';
import { expectedTargetPath, type LabPair, startPair } from './helpers/lab-pair.js';
import { compareMailboxes, connect, type MailboxSnapshot, multiset, snapshot } from './helpers/mailbox-snapshot.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function waitFor(what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

function count(s: MailboxSnapshot): number {
  return [...s.values()].reduce((n, m) => n + m.length, 0);
}

/** The CLI as a child whose stderr can be watched while it runs. */
function startCli(args: string[], environment: NodeJS.ProcessEnv): { stderr: () => string; done: () => boolean; kill: () => void; result: Promise<CliResult> } {
  const child = spawn(process.execPath, [CLI, ...args], { env: environment, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let finished = false;
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const result = new Promise<CliResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      finished = true;
      resolve({ status, stdout, stderr, json: lastJson(stdout) });
    });
  });
  return { stderr: () => stderr, done: () => finished, kill: () => void (finished || child.kill('SIGKILL')), result };
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** Source snapshot without the given messages (by folder and content), for comparisons. */
function without(src: MailboxSnapshot, folder: string, sha256s: readonly string[]): MailboxSnapshot {
  const out: MailboxSnapshot = new Map(src);
  out.set(folder, src.get(folder)!.filter((m) => !sha256s.includes(m.sha256)));
  return out;
}

describe('sync: dropped connections', () => {
  let lab: LabPair;
  let total = 0;
  const proxies: TcpProxy[] = [];
  let relay: Relay | undefined;

  before(async () => {
    lab = await startPair();
    // Enough mail that six drops, each waiting for the messages in flight at the earlier ones to
    // be settled, land before the run ends.
    const corpus = generateCorpus({ seed: 4242, messages: 700, averageSize: 16_000, maxSize: 400_000 });
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    total = (await loadCorpus(c, corpus, { separator: '.' })).appended;
    await c.logout();
  });
  after(async () => {
    await relay?.stop();
    await Promise.allSettled(proxies.map((p) => p.stop()));
    await lab?.stop();
  });

  test('connections dropped while copying are reopened and the run still ends exact', async () => {
    // A small delay keeps APPENDs in flight long enough for the drops to land mid-copy.
    const srcProxy = await TcpProxy.start({ targetHost: '127.0.0.1', targetPort: lab.source.port, delayMs: 3 });
    const tgtProxy = await TcpProxy.start({ targetHost: '127.0.0.1', targetPort: lab.target.port, delayMs: 3 });
    proxies.push(srcProxy, tgtProxy);
    // mailferry -> relay -> TcpProxy -> target: the relay can hold the target's answers back.
    relay = await startRelay(tgtProxy.port);
    const endpoints = { sourcePort: srcProxy.port, targetPort: relay.port };
    // A 1 MiB memory budget keeps the lanes reading the source only a chunk ahead of what
    // the target has acknowledged: with the default 16 MiB, all 400 messages can be read
    // before the source drop lands, and a drop of connections with nothing left to read is
    // rightly never noticed.
    const run = startCli(['sync', ...syncArgs(lab, lab.db, ['--json', '--connections', '3', '--memory-budget', '1', '--log-level', 'debug'], endpoints)], env(lab));

    // Drop the target's connections, then the source's, then both, twice over: each time
    // once the current attempt has copied something and has APPENDs in flight. Six drops are
    // more than the six attempts a run gets when it makes no progress at all.
    const resumed = () => (run.stderr().match(/connection lost; resuming/g) ?? []).length;
    const drops: { side: string; copied: number; pending: number }[] = [];
    let unanswered = 0;
    let copiedBefore = 0; // the journal's count when the run noticed the last drop
    // The messages in flight at a drop: the run sends each of them alone next
    // (drop-suspects.ts), and two drops while one is alone rightly skip it as a message the
    // server refuses by closing the connection. So no drop lands while a message that was
    // in flight at an earlier one is in flight again: the drops here are the network's.
    const inFlightAtDrops = new Set<string>();
    try {
      for (const side of ['target', 'source', 'both', 'target', 'source', 'both'] as const) {
        await waitFor(`copying after ${drops.length} drops`, () => {
          if (run.done()) return true;
          const j = journalCounts(lab.db);
          // Pending rows alone could be the last attempt's, waiting for recovery: the lanes
          // of this attempt must have sent a chunk (a debug line), or a source drop could
          // land while only the idle listing session is open, and nothing would notice it.
          const thisAttempt = run.stderr().split('connection lost; resuming').at(-1) ?? '';
          if (!(resumed() === drops.length && thisAttempt.includes('"chunk sent"') && j.pending > 0 && j.copied > copiedBefore)) return false;
          return ![...journalKeys(lab.db, 'pending')].some((k) => inFlightAtDrops.has(k));
        }, 30_000);
        if (run.done()) break;
        if (drops.length === 0) {
          // First let the target store a few APPENDs whose answers never reach mailferry:
          // after the drop, recovery must find those on the target rather than send them again.
          relay.hold(true);
          const stored = () => appendUidMessages(relay!.heldText());
          await waitFor('APPENDs stored on the target with their answers held back', () => run.done() || stored() >= 3, 30_000);
          unanswered = stored();
        }
        const j = journalCounts(lab.db);
        for (const k of journalKeys(lab.db, 'pending')) inFlightAtDrops.add(k);
        relay.discard(); // the held answers are lost with the connection
        if (side !== 'source') tgtProxy.dropAll();
        if (side !== 'target') srcProxy.dropAll();
        drops.push({ side, copied: j.copied, pending: j.pending });
        await waitFor(`the run to notice drop ${drops.length}`, () => run.done() || resumed() === drops.length, 30_000);
        copiedBefore = journalCounts(lab.db).copied;
      }
    } catch (err) {
      run.kill();
      throw err;
    }
    const r = await run.result;
    // What recovery did after the drops (the run's info log lines).
    const recovered = r.stderr
      .split('\n')
      .filter((l) => l.includes('journal reconciled with target'))
      .reduce((n, l) => n + (JSON.parse(l) as { recovered: number }).recovered, 0);
    assert.equal(drops.length, 6, `all six drops landed while copying (${JSON.stringify(drops)}), stderr: ${r.stderr}`);
    assert.ok(drops[0]!.copied < total, 'the first drop came before everything was copied');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.reconnects, drops.length, 'every drop cost exactly one reconnect');
    assert.equal(r.json?.skipped, 0);
    assert.equal(r.json?.failed, 0);
    assert.equal(journalCounts(lab.db).pending, 0, 'no APPEND left unresolved');

    const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.deepEqual(compareMailboxes(src, tgt, (p) => expectedTargetPath(p)), []);
    assert.equal(count(tgt), total, 'no message lost or duplicated');
    const log = r.stderr.split('\n').filter((l) => /reconciled|resuming/.test(l)).join('\n');
    assert.ok(unanswered >= 3 && recovered >= unanswered, `the ${unanswered} APPENDs stored without an answer were found on the target (recovered ${recovered}):\n${log}\n${relay.heldText()}`);
    assert.equal(r.json?.copied, total, 'copied counts every message this run put on the target, also those recovery found');

    // And the journal agrees with the target: a re-run has nothing left to do. (Through the
    // same addresses: the journal keys a mailbox pair by host:port.)
    const again = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'], endpoints)], env(lab));
    assert.equal(again.status, 0, again.stderr);
    assert.equal(again.json?.copied, 0);
    assert.equal(again.json?.reconnects, 0);
  });

  test('verify whose source connection drops tries again on fresh sessions and says in sync', async () => {
    // A delay keeps the verification busy folder after folder while the drop lands.
    const srcProxy = await TcpProxy.start({ targetHost: '127.0.0.1', targetPort: lab.source.port, delayMs: 25 });
    proxies.push(srcProxy);
    const run = startCli(['verify', ...syncArgs(lab, lab.db, ['--json', '--log-level', 'warn'], { sourcePort: srcProxy.port, targetPort: lab.target.port })], env(lab));
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok(!run.done(), 'the verification was still running when its connection dropped');
    srcProxy.dropAll();
    const r = await run.result;
    // Each folder whose reading was cut is compared again on a fresh pair (or, past that,
    // the whole verification is tried again).
    assert.match(r.stderr, /verification lost its connection; (comparing this folder again|trying again)/);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.inSync, true);
    assert.equal(r.json?.sourceMessages, total);
  });
});

describe('sync: a message the target answers by dropping the connection', () => {
  // Like Cyrus with a non-synchronising literal over its size limit (when it does not
  // announce APPENDLIMIT): the connection closes, and no answer names the message. The
  // relay drops every connection that sends the marker, however often it is sent.
  const MARKER = 'X-Lab-Target: drop-the-connection';
  let lab: LabPair;
  let relay: Relay;
  let total = 0;
  let drops = 0;
  const poison = Buffer.from(`From: a@example.org\r\nTo: b@example.org\r\nSubject: the one the target will not take\r\nMessage-ID: <poison@example.org>\r\n${MARKER}\r\n\r\nbody\r\n`);
  const poisonSha = createHash('sha256').update(poison).digest('hex');
  const args = (extra: string[] = []) => ['sync', ...syncArgs(lab, lab.db, ['--json', ...extra], { targetPort: relay.port })];

  before(async () => {
    lab = await startPair();
    relay = await startRelay(lab.target.port, { dropWhenSent: MARKER, onDrop: () => drops++ });
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    total = (await loadCorpus(c, generateCorpus({ seed: 91, messages: 150, averageSize: 6_000, maxSize: 60_000 }), { separator: '.' })).appended;
    // In the middle of INBOX, so that it travels in a batch with messages on either side.
    await c.append('INBOX', poison, ['\\Seen'], new Date('2021-03-04T05:06:07Z'));
    total += 1;
    total += (await loadCorpus(c, generateCorpus({ seed: 92, messages: 40, averageSize: 6_000, maxSize: 60_000, folders: [{ path: ['INBOX'] }] }), { separator: '.' })).appended;
    await c.logout();
  });
  after(async () => {
    await relay?.stop();
    await lab?.stop();
  });

  test('is sent alone until it has dropped the connection twice, then skipped and named; the rest exact, in one run', async () => {
    const r = await runCli(args(), env(lab));
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.json?.copied, total - 1, r.stdout);
    assert.equal(r.json?.skipped, 1);
    assert.equal(r.json?.failed, 0);
    const items = r.json?.skippedItems as { folder: string; subject: string; reason: string }[];
    assert.equal(items.length, 1);
    assert.equal(items[0]!.folder, 'INBOX');
    assert.equal(items[0]!.subject, 'the one the target will not take');
    assert.match(items[0]!.reason, /the target closed the connection each time this message was sent alone \(2 times; last: .*lost/);
    // Once in flight with others, then twice alone: three drops, three reconnects.
    assert.equal(drops, 3);
    assert.equal(r.json?.reconnects, 3);
    assert.equal(journalCounts(lab.db).pending, 0);
    const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.deepEqual(compareMailboxes(without(src, 'INBOX', [poisonSha]), tgt, (p) => expectedTargetPath(p)), []);
  });

  test('the next run tries it again, skips it again, and duplicates nothing', async () => {
    const before = drops;
    const r = await runCli(args(), env(lab));
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.json?.copied, 0);
    assert.equal(r.json?.skipped, 1);
    assert.equal(drops - before, 3);
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.equal(count(tgt), total - 1);
  });
});

describe('sync: a large (streamed) message the target answers by dropping the connection', () => {
  const MARKER = 'X-Lab-Target: drop-the-connection';
  let lab: LabPair;
  let relay: Relay;

  before(async () => {
    lab = await startPair();
    relay = await startRelay(lab.target.port, { dropWhenSent: MARKER });
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    // Over the 2 MiB above which a message is streamed from source to target, not held.
    const body = 'abcdefghij'.repeat(7).concat('\r\n').repeat(40_000);
    const big = Buffer.from(`From: a@example.org\r\nSubject: a large one the target will not take\r\n${MARKER}\r\n\r\n${body}`);
    assert.ok(big.length > 2 * 1024 * 1024);
    await c.append('INBOX', Buffer.from('Subject: small\r\n\r\nhello\r\n'), [], new Date('2022-01-02T03:04:05Z'));
    await c.append('INBOX', big, [], new Date('2022-01-02T03:04:06Z'));
    await c.logout();
  });
  after(async () => {
    await relay?.stop();
    await lab?.stop();
  });

  test('is skipped and named with its subject, read from the source while it was drained', async () => {
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'], { targetPort: relay.port })], env(lab));
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.json?.copied, 1, r.stdout + r.stderr);
    const items = r.json?.skippedItems as { subject: string; reason: string }[];
    assert.equal(items.length, 1);
    assert.equal(items[0]!.subject, 'a large one the target will not take');
    assert.match(items[0]!.reason, /the target closed the connection each time this message was sent alone/);
  });
});

describe('sync: a message over --max-message-size', () => {
  let lab: LabPair;
  let total = 0;
  const BIG = 300_000;
  let big: { sha256: string; subject: string; date: string };

  before(async () => {
    lab = await startPair();
    // Regular messages stay under 100 KB; one extra message of exactly BIG bytes in INBOX.
    const corpus = generateCorpus({ seed: 31, messages: 120, averageSize: 8_000, maxSize: 100_000, extraLarge: [BIG] });
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    total = (await loadCorpus(c, corpus, { separator: '.' })).appended;
    await c.mailboxOpen('INBOX', { readOnly: true });
    const [m, ...more] = (await c.fetchAll('1:*', { uid: true, size: true, envelope: true, internalDate: true, source: true })).filter((x) => (x.size ?? 0) > 200_000);
    assert.equal(more.length, 0, 'exactly one big message');
    big = { sha256: createHash('sha256').update(m!.source!).digest('hex'), subject: m!.envelope!.subject!, date: new Date(m!.internalDate!).toISOString() };
    assert.ok(big.subject.length > 0, 'the big message has a subject to report');
    await c.logout();
  });
  after(async () => lab?.stop());

  test('is skipped, counted and listed with folder, date, subject and reason; the rest is copied', async () => {
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json', '--max-message-size', '200000'])], env(lab));
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.json?.skipped, 1);
    assert.equal(r.json?.failed, 0);
    assert.equal(r.json?.copied, total - 1);
    const items = r.json?.skippedItems as { folder: string; date: string; subject: string; reason: string; size: number }[];
    assert.equal(items.length, 1);
    assert.equal(items[0]!.folder, 'INBOX');
    assert.equal(items[0]!.subject, big.subject);
    assert.equal(items[0]!.date, big.date);
    assert.equal(items[0]!.size, BIG);
    assert.match(items[0]!.reason, /over the .* limit/);
    assert.ok(r.stderr.includes(big.subject), 'the human summary lists it too');

    const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.deepEqual(compareMailboxes(without(src, 'INBOX', [big.sha256]), tgt, (p) => expectedTargetPath(p)), []);
    assert.equal(count(tgt), total - 1);
  });

  test('a re-run with the same limit does not copy it either and still exits 1', async () => {
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json', '--max-message-size', '200000'])], env(lab));
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.json?.copied, 0);
    assert.equal(r.json?.skipped, 1);
    assert.equal((r.json?.skippedItems as unknown[]).length, 1);
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.equal(count(tgt), total - 1);
    assert.ok(!tgt.get('INBOX')!.some((m) => m.sha256 === big.sha256));
  });

  test('a later run with a larger limit copies it', async () => {
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json', '--max-message-size', String(BIG)])], env(lab));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 1);
    assert.equal(r.json?.skipped, 0);
    assert.deepEqual(r.json?.skippedItems, []);
    const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.deepEqual(compareMailboxes(src, tgt, (p) => expectedTargetPath(p)), []);
    assert.equal(count(tgt), total);
  });
});

describe('sync: a target mailbox over its quota', () => {
  let lab: LabPair;
  let total = 0;
  // A small fetch budget and one lane keep little in flight, so the run visibly stops
  // instead of having offered the whole mailbox before the first refusal came back.
  const args = () => ['sync', ...syncArgs(lab, lab.db, ['--json', '--connections', '1', '--memory-budget', '1'])];
  let copiedFirst = 0;

  before(async () => {
    lab = await startPair({ target: { quotaKb: 300 } });
    const corpus = generateCorpus({ seed: 79, messages: 300, averageSize: 8_000, maxSize: 60_000 });
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    total = (await loadCorpus(c, corpus, { separator: '.' })).appended;
    await c.logout();
  });
  after(async () => {
    await lab?.stop();
  });

  test('stops the run with an error that names the mailbox and the quota, and lists no skipped messages', async () => {
    const r = await runCli(args(), env(lab));
    assert.equal(r.status, 1, r.stderr);
    const error = String(r.json?.error);
    // Dovecot's words: "[OVERQUOTA] Quota exceeded (mailbox for user is full)".
    assert.match(error, /target mailbox alice is over its quota/);
    assert.match(error, /\[OVERQUOTA\] Quota exceeded/);
    assert.match(error, /Raise the quota/);
    assert.equal(r.json?.exitStatus, 1);
    assert.ok(r.stderr.includes(error), r.stderr);
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    copiedFirst = count(tgt);
    const j = journalCounts(lab.db);
    assert.equal(j.copied, copiedFirst, 'every copy is journaled');
    // The --json line also says how far the run got.
    assert.equal(r.json?.copied, copiedFirst);
    // What its scan had found to copy when it stopped (folders scanned later are not in it yet).
    assert.ok(Number(r.json?.toCopy) > copiedFirst && Number(r.json?.toCopy) <= total, String(r.json?.toCopy));
    assert.ok(copiedFirst > 0 && copiedFirst < total / 2, `${copiedFirst} of ${total} copied`);
    // Stopped at the quota: the messages refused were those in flight then, not the rest of the mailbox.
    assert.ok(j.skipped < total / 2, `${j.skipped} refused of ${total}`);
    const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    const sourceKeys = multiset([...src.values()].flat());
    for (const [k, n] of multiset([...tgt.values()].flat())) assert.ok(n <= (sourceKeys.get(k) ?? 0), `target holds ${k.slice(0, 60)} ${n}×`);
  });

  test('once the quota is raised, the next run copies the rest exactly once', async () => {
    await lab.target.setQuotaKb(1_000_000);
    const r = await runCli(args(), env(lab));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, total - copiedFirst);
    assert.equal(r.json?.skipped, 0);
    const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.deepEqual(compareMailboxes(src, tgt, (p) => expectedTargetPath(p)), []);
  });
});

describe('a run that fails after copying part of a mailbox (over quota)', () => {
  let lab: LabPair;

  before(async () => {
    lab = await startPair({ target: { quotaKb: 200 } });
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await loadCorpus(c, generateCorpus({ seed: 81, messages: 100, averageSize: 8_000, maxSize: 40_000, folders: [{ path: ['INBOX'] }] }), { separator: '.' });
    await c.logout();
  });
  after(async () => {
    await lab?.stop();
  });

  test('names its journal pair, so a batch counts what it copied', async () => {
    const store = await openStore(`sqlite:${lab.db}`);
    try {
      const err = await syncMailbox(store, {
        source: { endpoint: lab.source.endpoint(), login: { method: 'login', username: lab.sourceUser, password: lab.sourcePass } },
        target: { endpoint: lab.target.endpoint(), login: { method: 'login', username: lab.targetUser, password: lab.targetPass } },
        logger: pino({ level: 'silent' }),
      }).then(
        () => assert.fail('the run should fail: the target is over its quota'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof TargetFullError, String(err));
      const pairId = pairOfFailedRun(err);
      assert.notEqual(pairId, null);
      const copied = await store.db.selectFrom('message').innerJoin('folder', 'folder.id', 'message.folder_id').select((eb) => eb.fn.countAll<number>().as('n')).where('folder.pair_id', '=', pairId!).where('message.state', '=', 'copied').executeTakeFirstOrThrow();
      const onTarget = (await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass)).get('INBOX')!.length;
      assert.ok(onTarget > 0);
      assert.equal(Number(copied.n), onTarget);
      assert.equal(pairOfFailedRun(new Error('another')), null);
      // As a batch's worker sees it: wrapped, secrets scrubbed (worker/mailbox-sides.ts).
      assert.equal(pairOfFailedRun(Object.assign(new MailboxSyncError('scrubbed'), { cause: err })), pairId);
    } finally {
      await store.close();
    }
  });
});

describe('sync: a folder the source cannot open, and one the target cannot create', () => {
  // Source with '/' and the target with '.', so a path of three 100-character levels is
  // one 300-character directory name in the target's Maildir++, which it refuses.
  const LONG = ['A', 'B', 'C'].map((c) => c.repeat(100)).join('/');
  let lab: LabPair;
  let brokenDir = '';
  const args = () => ['sync', ...syncArgs(lab, lab.db, ['--json'])];

  before(async () => {
    lab = await startPair({ source: { separator: '/' }, target: { separator: '.', specialUse: {} } });
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    for (const f of ['Work', 'Broken', LONG]) {
      await c.mailboxCreate(f);
      await c.append(f, Buffer.from(`Subject: in ${f.slice(0, 20)}\r\n\r\nx\r\n`));
    }
    for (let i = 0; i < 3; i++) await c.append('INBOX', Buffer.from(`Subject: inbox ${i}\r\n\r\nx\r\n`));
    await c.logout();
    // Its messages unreadable for the server's mail user: LIST still shows the folder,
    // EXAMINE gets NO [SERVERBUG].
    const folderDir = findDir(join(lab.source.dir, 'home'), 'Broken');
    brokenDir = join(folderDir, readdirSync(folderDir).includes('dbox-Mails') ? 'dbox-Mails' : 'cur');
    chmodSync(brokenDir, 0o000);
  });
  after(async () => {
    if (brokenDir) chmodSync(brokenDir, 0o700);
    await lab?.stop();
  });

  test('each is named as a failed folder with the server’s reason; every other folder is copied; exit 1', async () => {
    const r = await runCli(args(), env(lab));
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.json?.copied, 4, r.stdout);
    assert.ok(Number(r.json?.failed) >= 1, 'the message of the folder the target refused is failed');
    const failed = r.json?.failedFolders as { folder: string; reason: string }[];
    assert.deepEqual(failed.map((f) => f.folder).sort(), ['Broken', LONG].sort());
    assert.match(failed.find((f) => f.folder === 'Broken')!.reason, /^the source could not read it: EXAMINE Broken failed: NO /);
    assert.match(failed.find((f) => f.folder === LONG)!.reason, /^the target refused to create A{100}\.B{100}\.C{100}: NO /);
    assert.doesNotMatch(r.stdout, /secs\)/, 'Dovecot’s command timing is not part of a reason');
    assert.match(r.stderr, /FAILED folder Broken: /);
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.equal(tgt.get('INBOX')?.length, 3);
    assert.equal(tgt.get('Work')?.length, 1);
  });

  test('verify names the folder it could not read and says not in sync', async () => {
    const r = await runCli(['verify', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /FAILED {2}Broken -> Broken: could not be read: NO /);
    assert.equal(r.json?.inSync, false);
  });

  test('once the folder is readable again, the next run copies it', async () => {
    chmodSync(brokenDir, 0o700);
    const r = await runCli(args(), env(lab));
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.json?.copied, 1);
    assert.deepEqual((r.json?.failedFolders as { folder: string }[]).map((f) => f.folder), [LONG]);
  });
});

/** A lab Maildir's message files (cur and new), in the order of their names (of delivery). */
function maildirFiles(md: string): string[] {
  return ['cur', 'new'].flatMap((d) => readdirSync(join(md, d)).map((f) => join(md, d, f))).sort((a, b) => basename(a).localeCompare(basename(b)));
}

/** Makes Dovecot read a Maildir edited behind its back anew: its indexes and UID list go. */
function forgetIndexes(md: string): void {
  for (const f of readdirSync(md)) if (f.startsWith('dovecot.index') || f === 'dovecot-uidlist') rmSync(join(md, f));
}

/** The directory called `name` under `root` (searched depth-first). */
function findDir(root: string, name: string): string {
  for (const entry of readdirSync(root, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    const p = join(root, entry.name);
    if (entry.name === name) return p;
    try {
      return findDir(p, name);
    } catch {
      // not under this one
    }
  }
  throw new Error(`no directory ${name} under ${root}`);
}

describe('sync: keywords that are not IMAP atoms on the source', () => {
  // Dovecot lists whatever another program wrote into a Maildir's keywords file, also
  // names no IMAP command can carry (RFC 3501 §9 ATOM-CHAR: no `]`, `%`, 8-bit…).
  const BAD = ['bad]kw', 'café'];
  let lab: LabPair;

  before(async () => {
    lab = await startPair();
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    for (let i = 0; i < 3; i++) await c.append('INBOX', Buffer.from(`Subject: m${i}\r\n\r\nx\r\n`), ['\\Seen']);
    await c.logout();
    const md = findDir(join(lab.source.dir, 'home'), 'Maildir');
    writeFileSync(join(md, 'dovecot-keywords'), BAD.map((k, i) => `${i} ${k}\n`).join(''));
    const files = maildirFiles(md);
    // Keyword i is the letter a+i in a Maildir file name's flags.
    BAD.forEach((_, i) => renameSync(files[i]!, join(md, 'cur', `${basename(files[i]!).replace(/:2,.*$/, '')}:2,S${String.fromCharCode(97 + i)}`)));
    forgetIndexes(md);
  });
  after(async () => {
    await lab?.stop();
  });

  test('the message is copied without them, with a warning that names it; the next run has nothing to do', async () => {
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 3);
    for (const k of BAD) assert.ok(r.stderr.includes(JSON.stringify([k])), `warns about ${k}: ${r.stderr}`);
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.deepEqual(tgt.get('INBOX')!.map((m) => m.flags), [['\\Seen'], ['\\Seen'], ['\\Seen']]);
    const again = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(again.status, 0, again.stderr);
    assert.equal(again.json?.copied, 0);
    assert.equal(again.json?.flagsUpdated, 0);
  });
});

describe('sync: a keyword the target refuses', () => {
  // Dovecot's default keyword limit is 50 characters; this source allows 200.
  const LONG = `Project${'x'.repeat(60)}`;
  let lab: LabPair;

  before(async () => {
    lab = await startPair({ source: { extraConfig: 'mail_max_keyword_length = 200' } });
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await c.append('INBOX', Buffer.from('Subject: tagged\r\n\r\nx\r\n'), ['\\Seen', '$Forwarded', LONG], new Date('2020-02-03T04:05:06Z'));
    await c.append('INBOX', Buffer.from('Subject: plain\r\n\r\ny\r\n'), ['\\Flagged', '$Forwarded']);
    await c.logout();
  });
  after(async () => {
    await lab?.stop();
  });

  test('the message is copied without the keyword, with its other flags and date, and a warning', async () => {
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 2);
    assert.equal(r.json?.skipped, 0);
    assert.match(r.stderr, /Keyword length too long.*copied without them|copied without them.*Keyword length too long/);
    assert.equal(r.json?.withoutSomeKeywords, 1, 'counted in the summary, not only logged');
    const inbox = (await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass)).get('INBOX')!;
    // The one sent again comes second, with the keyword every server takes.
    assert.deepEqual(inbox.map((m) => m.flags), [['$Forwarded', '\\Flagged'], ['$Forwarded', '\\Seen']]);
    assert.match(r.stderr, new RegExp(`"keywords":\\["${LONG}"\\]`));
    assert.equal(inbox[1]!.internalDate, Date.parse('2020-02-03T04:05:06Z'));
    const again = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(again.json?.copied, 0, again.stderr);
  });

  test('a flag change the target refuses is logged, not counted; its other flags and keywords are set', async () => {
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await c.mailboxOpen('INBOX');
    await c.messageFlagsAdd({ uid: '2' }, ['\\Seen', '$Label1', LONG], { uid: true });
    await c.logout();
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.flagsUpdated, 0);
    assert.match(r.stderr, new RegExp(`the target refused to set these flags.*${LONG}|${LONG}.*the target refused to set these flags`));
    assert.equal(r.json?.withoutSomeKeywords, 1);
    const inbox = (await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass)).get('INBOX')!;
    assert.deepEqual(inbox[0]!.flags, ['$Forwarded', '$Label1', '\\Flagged', '\\Seen']);
  });

  test('flags cleared on the source are cleared on the target, though the keyword among them is one it refuses', async () => {
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await c.mailboxOpen('INBOX');
    await c.messageFlagsSet({ uid: '1:2' }, [], { uid: true });
    await c.logout();
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(r.status, 0, r.stderr);
    const inbox = (await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass)).get('INBOX')!;
    assert.deepEqual(inbox.map((m) => m.flags), [[], []], 'no flag is left set: the user would see mail as read that is not');
    const again = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(again.json?.flagsUpdated, 0, again.stderr);
  });
});

describe('sync: recovery finds copies the target server changed as it stored them', () => {
  // Courier (line ends) and Cyrus (`munge8bit`) store some messages with other bytes than
  // were sent, so after a crash the journal's digest does not find them. Here the journal
  // is made to disagree instead (its digest of five messages replaced, as if the server
  // had changed those copies), after a crash that left them pending.
  let lab: LabPair;
  let total = 0;

  before(async () => {
    lab = await startPair();
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    total = (await loadCorpus(c, generateCorpus({ seed: 93, messages: 60, averageSize: 5_000, maxSize: 40_000, folders: [{ path: ['INBOX'] }] }), { separator: '.' })).appended;
    await c.logout();
  });
  after(async () => {
    await lab?.stop();
  });

  test('a pending message whose copy no longer has its digest is found by its loose digest, not copied again', async () => {
    const first = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(first.status, 0, first.stderr);
    const d = new Database(lab.db);
    const changed = d.prepare("update message set state = 'pending', target_uid = null, uid_floor = 1, digest = ? where source_uid in (3, 9, 17, 30, 41)").run('0'.repeat(64)).changes;
    d.close();
    assert.equal(changed, 5);
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /"messages":5,"msg":"found on the target as its server changed them/);
    assert.equal(journalCounts(lab.db).pending, 0);
    const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.equal(count(tgt), total);
    assert.deepEqual(compareMailboxes(src, tgt, (p) => expectedTargetPath(p)), []);
  });

  test('after a target UIDVALIDITY change, copies the server changed are found the same way', async () => {
    // The target folder re-created with every copy in it (a restore), five of them stored
    // changed: the journal's digests find the others, the loose digests these five.
    const d = new Database(lab.db);
    d.prepare('update folder set target_uidvalidity = target_uidvalidity + 1').run();
    assert.equal(d.prepare('update message set digest = ? where source_uid in (4, 10, 18, 31, 42)').run('1'.repeat(64)).changes, 5);
    d.close();
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 0);
    // These five, and the five of the test before (their rows keep the digest the copies lack).
    assert.match(r.stderr, /"messages":10,"msg":"found on the target as its server changed them/);
    assert.equal(count(await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass)), total);
  });

  test('the loose digest ignores what those servers change, and nothing else', () => {
    const sent = Buffer.from('Subject: Gr\xc3\xbc\xc3\x9fe\r\nX: a\rb\n\r\nline one\nline two', 'latin1');
    const courier = Buffer.from('Subject: Gr\xc3\xbc\xc3\x9fe\r\nX: ab\r\n\r\nline one\r\nline two\r\n', 'latin1');
    const cyrus = Buffer.from('Subject: GrXXXXe\r\nX: a\rb\n\r\nline one\nline two', 'latin1');
    assert.equal(looseDigest(courier), looseDigest(sent));
    assert.equal(looseDigest(cyrus), looseDigest(sent));
    assert.notEqual(looseDigest(Buffer.from('Subject: Grusse\r\n\r\nline one\nline two')), looseDigest(sent));
    assert.notEqual(looseDigest(Buffer.from('Subject: Gr\xc3\xbc\xc3\x9fe\r\nX: ab\r\n\r\nline one\r\nline tw0\r\n', 'latin1')), looseDigest(sent));
    // UW-IMAP's mbox quoting of lines that start with "From ", and only of those.
    const body = Buffer.from('Subject: s\r\n\r\nFrom the start\r\n>From quoted\r\nnot From here\r\n>not quoted\r\n');
    const uw = Buffer.from('Subject: s\r\n\r\n>From the start\r\n>>From quoted\r\nnot From here\r\n>not quoted\r\n');
    assert.equal(looseDigest(uw), looseDigest(body));
    assert.notEqual(looseDigest(Buffer.from('Subject: s\r\n\r\nFrom the start\r\n>From quoted\r\nnot From here\r\nnot quoted\r\n')), looseDigest(body));
    // GNU Mailutils' imap4d serves its mbox bookkeeping fields as part of the message, and
    // changes them with the flags; the same lines in the body count.
    const stored = Buffer.from('X-IMAPbase: 1795845001 0000000113\nSubject: s\nStatus: RO\nX-UID: 7\nX-Keywords: a\n b\n\nbody\n');
    const original = Buffer.from('Subject: s\r\n\r\nbody\r\n');
    assert.equal(looseDigest(stored), looseDigest(original));
    assert.equal(looseDigest(Buffer.from('Subject: s\r\nStatus: O\r\n\r\nbody\r\n')), looseDigest(original));
    assert.notEqual(looseDigest(Buffer.from('Subject: s\r\n\r\nStatus: RO\r\nbody\r\n')), looseDigest(original));
    assert.notEqual(looseDigest(Buffer.from('Subject: t\nStatus: RO\n\nbody\n')), looseDigest(original));
    // It also writes an empty field back with a space after its colon.
    assert.equal(looseDigest(Buffer.from('Subject: s\nX-Empty: \nStatus: RO\n\nbody\n')), looseDigest(Buffer.from('Subject: s\r\nX-Empty:\r\n\r\nbody\r\n')));
  });
});

describe('sync: a message the source answers by dropping the connection', () => {
  // A Maildir file whose name states a smaller size than the file has (`,S=10`), as after
  // mailboxes copied by hand: Dovecot closes the connection each time it reads it.
  let lab: LabPair;

  before(async () => {
    lab = await startPair();
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    for (const s of ['good one', 'the unreadable one', 'good two']) await c.append('INBOX', Buffer.from(`Subject: ${s}\r\n\r\n${'text\r\n'.repeat(30)}`));
    await c.logout();
    const md = findDir(join(lab.source.dir, 'home'), 'Maildir');
    const files = maildirFiles(md);
    assert.match(basename(files[1]!), /,S=\d+/, 'Dovecot writes the size into the name');
    renameSync(files[1]!, join(md, 'cur', `${basename(files[1]!).replace(/:2,.*$/, '').replace(/,S=\d+/, ',S=10').replace(/,W=\d+/, ',W=12')}:2,`));
    forgetIndexes(md);
  });
  after(async () => {
    await lab?.stop();
  });

  test('is fetched alone until it has dropped the connection twice, then recorded as failed and named; the rest is copied', async () => {
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.json?.copied, 2, r.stdout);
    assert.equal(r.json?.failed, 1);
    const items = r.json?.skippedItems as { folder: string; uid: number; reason: string }[];
    assert.equal(items.length, 1);
    assert.equal(items[0]!.folder, 'INBOX');
    assert.match(items[0]!.reason, /^the source closed the connection each time this message was read alone \(2 times; last: connection to .* lost/);
    const inbox = (await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass)).get('INBOX')!;
    assert.equal(inbox.length, 2);
  });
});

describe('sync and verify: a folder whose listing loses the connection on one message', () => {
  // The same flaw in a file named without `,W=`: then even RFC822.SIZE reads the file, so
  // every listing of the folder loses the connection, not only the fetch of that message.
  let lab: LabPair;
  const subjects = Array.from({ length: 12 }, (_, i) => `message ${i}`);
  let badSubject = '';
  let badUid = 0;

  before(async () => {
    lab = await startPair();
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await c.mailboxCreate('Broken');
    for (const s of subjects) await c.append('Broken', Buffer.from(`Subject: ${s}\r\nMessage-ID: <${s.replace(' ', '.')}@example.org>\r\n\r\n${'text\r\n'.repeat(30)}`), ['\\Seen']);
    await c.append('INBOX', Buffer.from('Subject: fine\r\n\r\nfine\r\n'));
    await c.logout();
    const md = findDir(join(lab.source.dir, 'home'), 'Maildir');
    const files = maildirFiles(join(md, '.Broken'));
    assert.equal(files.length, subjects.length);
    const bad = files[7]!;
    badSubject = /^Subject: (.*?)\r?$/m.exec(readFileSync(bad, 'latin1'))![1]!;
    renameSync(bad, join(md, '.Broken', 'cur', `${basename(bad).replace(/:2,.*$/, '').replace(/,S=\d+/, ',S=10').replace(/,W=\d+/, '')}:2,S`));
    forgetIndexes(join(md, '.Broken'));
  });
  after(async () => {
    await lab?.stop();
  });

  test('sync copies the folder but that message, and names it', async () => {
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(r.status, 1, r.stderr);
    assert.deepEqual(r.json?.failedFolders, []);
    assert.equal(r.json?.copied, subjects.length);
    const items = r.json?.skippedItems as { folder: string; uid: number; reason: string }[];
    assert.deepEqual(items.map((i) => i.folder), ['Broken']);
    assert.match(items[0]!.reason, /^the source closed the connection each time this message was read alone/);
    badUid = items[0]!.uid;
    // Counted as failed, and listed so.
    assert.equal((items[0] as { failed?: boolean }).failed, true);
    assert.match(r.stderr, new RegExp(`FAILED: Broken uid ${badUid} `));
    const t = await connect(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    await t.mailboxOpen('Broken');
    const copied = (await t.fetchAll('1:*', { envelope: true })).map((m) => m.envelope?.subject).sort();
    await t.logout();
    assert.deepEqual(copied, subjects.filter((s) => s !== badSubject).sort());
  });

  test('verify compares the rest and names the message it could not read', async () => {
    const r = await runCli(['verify', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(r.status, 1, r.stderr);
    const folders = r.json?.folders as { target: string; sourceCount: number; targetCount: number; missing: number; error?: string; missingItems: { uid: number; unreadable?: boolean }[] }[];
    const broken = folders.find((f) => f.target === 'Broken')!;
    assert.equal(broken.error, undefined);
    assert.deepEqual([broken.sourceCount, broken.targetCount, broken.missing], [subjects.length, subjects.length - 1, 1]);
    assert.deepEqual(broken.missingItems, [{ folder: 'Broken', uid: badUid, size: 0, date: '', subject: '', messageId: '', unreadable: true }]);
    assert.equal(folders.find((f) => f.target === 'INBOX')?.missing, 0);
    assert.match(r.stderr, new RegExp(`missing: Broken uid ${badUid} \\(the source would not give it\\)`));
  });
});

describe('sync and verify: several folders each losing the connection on one message', () => {
  // Each such folder costs the sync attempts to find out (scanned with the rest, then
  // alone); before, three of them used up a run's attempts and failed the mailbox, and
  // verify failed it at the third.
  let lab: LabPair;
  const folders = ['A', 'B', 'C'];

  before(async () => {
    lab = await startPair();
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    for (const f of folders) {
      await c.mailboxCreate(f);
      for (let n = 0; n < 4; n++) await c.append(f, Buffer.from(`Subject: ${f} ${n}\r\n\r\n${'text\r\n'.repeat(20)}`));
    }
    await c.logout();
    const md = findDir(join(lab.source.dir, 'home'), 'Maildir');
    for (const f of folders) {
      const bad = maildirFiles(join(md, `.${f}`))[2]!;
      renameSync(bad, join(md, `.${f}`, 'cur', `${basename(bad).replace(/:2,.*$/, '').replace(/,S=\d+/, ',S=10').replace(/,W=\d+/, '')}:2,`));
      forgetIndexes(join(md, `.${f}`));
    }
  });
  after(async () => {
    await lab?.stop();
  });

  test('sync names one message per folder and copies the rest, this run and the next', async () => {
    for (const run of [1, 2]) {
      const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
      assert.equal(r.status, 1, `run ${run}: ${r.stderr}`);
      assert.deepEqual(r.json?.failedFolders, []);
      assert.equal(r.json?.copied, run === 1 ? 9 : 0);
      assert.deepEqual((r.json?.skippedItems as { folder: string }[]).map((i) => i.folder).sort(), folders);
    }
  });

  test('verify names them and compares the rest', async () => {
    const r = await runCli(['verify', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(r.status, 1, r.stderr);
    const verdicts = r.json?.folders as { target: string; missing: number; error?: string }[];
    for (const f of folders) assert.deepEqual(verdicts.filter((v) => v.target === f).map((v) => [v.missing, v.error]), [[1, undefined]], f);
  });
});

describe('verify: copies whose internal date or bytes the target changed', () => {
  // Cyrus and Courier store dates they cannot hold (1970, 2040) as "now".
  let lab: LabPair;

  before(async () => {
    lab = await startPair();
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    for (const n of [1, 2, 3]) await c.append('INBOX', Buffer.from(`Message-ID: <m${n}@example.org>\r\nSubject: m${n}\r\n\r\nbody ${n}\r\n`), ['\\Seen'], new Date(`2021-0${n}-01T00:00:00Z`));
    await c.logout();
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(r.status, 0, r.stderr);
    // Replace the target's copy of m2 by the same bytes under another date.
    const t = await connect(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    await t.mailboxOpen('INBOX');
    const [m2] = (await t.fetchAll('1:*', { uid: true, source: true })).filter((m) => m.source!.includes('m2@'));
    await t.append('INBOX', m2!.source!, ['\\Seen'], new Date('2026-11-27T12:00:00Z'));
    await t.messageDelete({ uid: String(m2!.uid) }, { uid: true });
    // And m3 by its bytes with one more line end, as Courier stores some messages.
    const [m3] = (await t.fetchAll('1:*', { uid: true, source: true, internalDate: true })).filter((m) => m.source!.includes('m3@'));
    await t.append('INBOX', Buffer.concat([m3!.source!, Buffer.from('\r\n')]), ['\\Seen'], new Date(m3!.internalDate!));
    await t.messageDelete({ uid: String(m3!.uid) }, { uid: true });
    await t.logout();
  });
  after(async () => {
    await lab?.stop();
  });

  for (const mode of [[], ['--content']]) {
    test(`says the messages are there, with another date or other bytes, and in sync (${mode.join(' ') || 'default'})`, async () => {
      const r = await runCli(['verify', ...syncArgs(lab, lab.db, ['--json', ...mode])], env(lab));
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /INBOX -> INBOX: source 3, target 3, 1 with another internal date, 1 stored with other bytes by the target's server/);
    });
  }
});

describe('sync: a message the target refuses, and login failures', () => {
  let lab: LabPair;
  let total = 0;
  const LIMIT = 200_000;
  let big: { sha256: string; subject: string };
  // Every run goes through this relay (the journal keys a mailbox pair by host:port).
  let relay: Relay;
  const args = (extra: string[] = []) => ['sync', ...syncArgs(lab, lab.db, ['--json', ...extra], { targetPort: relay.port })];

  before(async () => {
    lab = await startPair({ target: { maxMailSize: LIMIT } });
    relay = await startRelay(lab.target.port);
    const corpus = generateCorpus({ seed: 77, messages: 120, averageSize: 8_000, maxSize: 100_000, extraLarge: [250_000] });
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    total = (await loadCorpus(c, corpus, { separator: '.' })).appended;
    await c.mailboxOpen('INBOX', { readOnly: true });
    const [m] = (await c.fetchAll('1:*', { uid: true, size: true, envelope: true, source: true })).filter((x) => (x.size ?? 0) > LIMIT);
    big = { sha256: createHash('sha256').update(m!.source!).digest('hex'), subject: m!.envelope!.subject! };
    await c.logout();
  });
  after(async () => {
    await relay?.stop();
    await lab?.stop();
  });

  test('is skipped with the server’s reason; everything else is exact', async () => {
    const r = await runCli(args(), env(lab));
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.json?.skipped, 1);
    assert.equal(r.json?.failed, 0);
    assert.equal(r.json?.copied, total - 1);
    const items = r.json?.skippedItems as { folder: string; subject: string; reason: string; date: string }[];
    assert.equal(items.length, 1);
    assert.equal(items[0]!.folder, 'INBOX');
    assert.equal(items[0]!.subject, big.subject);
    assert.ok(items[0]!.date, 'the date is listed');
    // Dovecot's own words: "NO [LIMIT] Mail size is larger than the maximum size allowed…".
    assert.match(items[0]!.reason, /target refused it: \[LIMIT\] Mail size is larger than the maximum size/);

    const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.deepEqual(compareMailboxes(without(src, 'INBOX', [big.sha256]), tgt, (p) => expectedTargetPath(p)), []);
    assert.equal(count(tgt), total - 1);
  });

  test('the next run sends it again: still refused, still one skipped item, no duplicates', async () => {
    const sentBefore = relay.bytesUp();
    const r = await runCli(args(), env(lab));
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.json?.copied, 0);
    assert.equal(r.json?.skipped, 1);
    const items = r.json?.skippedItems as { reason: string }[];
    assert.equal(items.length, 1);
    assert.match(items[0]!.reason, /\[LIMIT\]/);
    const sent = relay.bytesUp() - sentBefore;
    assert.ok(sent > 250_000 && sent < 400_000, `the refused message, and only it, was sent to the target again (${sent} bytes sent)`);
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.equal(count(tgt), total - 1);
    assert.equal(journalCounts(lab.db).pending, 0);
  });

  test('a wrong source or target password exits 3, names server and user, never prints the password', async () => {
    for (const side of ['source', 'target'] as const) {
      const wrong = `Wr0ng-${side}-pw-7c1e`;
      const environment = { ...env(lab), [side === 'source' ? 'MAILFERRY_SOURCE_PASSWORD' : 'MAILFERRY_TARGET_PASSWORD']: wrong };
      const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], environment);
      assert.equal(r.status, 3, `${side}: ${r.stderr}`);
      const port = side === 'source' ? lab.source.port : lab.target.port;
      // Clear: says it is a login problem, and names the user and the server.
      assert.match(r.stderr, /log ?in|authenticat/i, `${side}: ${r.stderr}`);
      assert.match(r.stderr, /wrong user name or password/, `${side}: the RFC 5530 code in words: ${r.stderr}`);
      assert.match(r.stderr, /\balice\b/, `${side}: ${r.stderr}`);
      assert.ok(r.stderr.includes(`127.0.0.1:${port}`), `${side}: ${r.stderr}`);
      for (const secret of [wrong, lab.sourcePass, lab.targetPass]) {
        assert.ok(!r.stdout.includes(secret) && !r.stderr.includes(secret), `${side}: a password appears in the output`);
      }
    }
  });

  test('a closed port exits 3 quickly; a missing password exits 2', async () => {
    const port = await closedPort();
    for (const side of ['source', 'target'] as const) {
      const started = Date.now();
      const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'], side === 'source' ? { sourcePort: port } : { targetPort: port })], env(lab));
      const seconds = (Date.now() - started) / 1000;
      assert.equal(r.status, 3, `${side}: ${r.stderr}`);
      assert.ok(r.stderr.includes(`127.0.0.1:${port}`), `${side}: names the server: ${r.stderr}`);
      assert.match(r.stderr, /ECONNREFUSED|refused/i, `${side}: ${r.stderr}`);
      assert.ok(seconds < 5, `${side}: gave up after ${seconds} s`);
    }
    for (const name of ['MAILFERRY_SOURCE_PASSWORD', 'MAILFERRY_TARGET_PASSWORD']) {
      const environment = env(lab);
      delete environment[name];
      const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], environment);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, new RegExp(name));
    }
  });
});

describe('sync: TLS settings that do not fit the server', () => {
  let lab: LabPair;

  before(async () => {
    lab = await startPair({ source: { tls: 'selfsigned' } });
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await c.append('INBOX', Buffer.from('From: a@example.org\r\nSubject: over TLS\r\n\r\nhello\r\n'));
    await c.logout();
  });
  after(async () => lab?.stop());

  const run = (port: number, tls: string, extra: string[] = []) => {
    const args = syncArgs(lab, lab.db, ['--json', ...extra], { sourcePort: port });
    args[args.indexOf('--source-tls') + 1] = tls;
    return runCli(['sync', ...args], env(lab));
  };

  test('a self-signed certificate is refused in plain words, naming the option that trusts it', async () => {
    const r = await run(lab.source.sslPort!, 'implicit');
    assert.equal(r.status, 3, r.stderr);
    assert.match(r.stderr, new RegExp(`127\\.0\\.0\\.1:${lab.source.sslPort} \\(implicit TLS\\): the certificate was rejected: the certificate is self-signed.*--insecure`));
    const trusted = await run(lab.source.sslPort!, 'implicit', ['--insecure']);
    assert.equal(trusted.status, 0, trusted.stderr);
    assert.equal(trusted.json?.copied, 1);
  });

  test('implicit TLS asked of a plain port says the server expects plain IMAP', async () => {
    const r = await run(lab.source.port, 'implicit');
    assert.equal(r.status, 3, r.stderr);
    assert.match(r.stderr, /does not speak TLS from the start: it probably expects plain IMAP \(choose STARTTLS or no encryption/);
    assert.doesNotMatch(r.stderr, /ssl3_record|routines/, 'no OpenSSL internals');
  });
});

/** A scripted IMAP server on a loopback port: `greeting`, then `answer(command)`'s untagged lines before each tagged OK (or its own tagged line). */
async function scriptedServer(greeting: string, answer: (command: string) => { untagged?: string[]; tagged?: string }): Promise<{ port: number; close: () => void }> {
  const server = net.createServer((c) => {
    c.on('error', () => undefined);
    c.write(`${greeting}\r\n`);
    let buf = '';
    c.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (let i = buf.indexOf('\r\n'); i >= 0; i = buf.indexOf('\r\n')) {
        const [tag, command] = buf.slice(0, i).split(' ');
        buf = buf.slice(i + 2);
        const a = answer((command ?? '').toUpperCase());
        for (const line of a.untagged ?? []) c.write(`${line}\r\n`);
        c.write(`${tag} ${a.tagged ?? 'OK done'}\r\n`);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}

/** `mailferry sync` with both sides on `port`, through a throwaway database. */
async function syncAgainst(port: number, tls: 'none' | 'starttls'): Promise<CliResult> {
  const dir = mkdtempSync(join(tmpdir(), 'mailferry-scripted-'));
  try {
    const args = ['sync', '--source', `127.0.0.1:${port}`, '--source-user', 'bob', '--source-tls', tls, '--target', `127.0.0.1:${port}`, '--target-user', 'bob', '--target-tls', tls, '--db', `sqlite:${join(dir, 'db.sqlite')}`, '--json'];
    return await runCli(args, { ...process.env, MAILFERRY_SOURCE_PASSWORD: 'pw', MAILFERRY_TARGET_PASSWORD: 'pw' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('sync: servers that do not let the session start as asked', () => {
  test('a PREAUTH greeting is refused with exit 3 and a reason, whatever --source-user says (UW imapd run under a user account)', async () => {
    const server = await scriptedServer('* PREAUTH IMAP4rev1 Pre-authenticated user alice', (command) => (command === 'CAPABILITY' ? { untagged: ['* CAPABILITY IMAP4rev1'] } : command === 'LOGOUT' ? { untagged: ['* BYE bye'] } : {}));
    try {
      const r = await syncAgainst(server.port, 'none');
      assert.equal(r.status, 3, r.stderr);
      assert.match(r.stderr, /PREAUTH greeting: the server logged the connection in by itself instead of asking for .*bob/);
    } finally {
      server.close();
    }
  });

  test('a BYE greeting and LOGINDISABLED on a plain connection are said in the server\'s words and what to change (exit 3)', async () => {
    const full = await scriptedServer('* BYE Too many connections from your IP', () => ({}));
    const noLogin = await scriptedServer('* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] ready', (command) => (command === 'CAPABILITY' ? { untagged: ['* CAPABILITY IMAP4rev1 LOGINDISABLED'] } : {}));
    try {
      const bye = await syncAgainst(full.port, 'none');
      assert.equal(bye.status, 3, bye.stderr);
      assert.match(bye.stderr, /closed the connection before greeting: “Too many connections from your IP”/);
      const disabled = await syncAgainst(noLogin.port, 'none');
      assert.equal(disabled.status, 3, disabled.stderr);
      assert.match(disabled.stderr, /refuses LOGIN on this connection \(LOGINDISABLED\): it wants an encrypted connection first; use STARTTLS or implicit TLS/);
    } finally {
      full.close();
      noLogin.close();
    }
  });

  test('a STARTTLS the server offers but refuses is said to be refused, not missing', async () => {
    const server = await scriptedServer('* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready', (command) =>
      command === 'CAPABILITY' ? { untagged: ['* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED'] } : command === 'STARTTLS' ? { tagged: 'NO Server certificate not installed' } : {},
    );
    try {
      const r = await syncAgainst(server.port, 'starttls');
      assert.equal(r.status, 3, r.stderr);
      assert.match(r.stderr, /offers STARTTLS but refused to start TLS/);
    } finally {
      server.close();
    }
  });
});

describe('sync: a port that is not an IMAP server', () => {
  const servers: net.Server[] = [];
  after(() => servers.forEach((s) => s.close()));
  const listen = (onConnection: (socket: net.Socket) => void): Promise<number> =>
    new Promise((resolve) => {
      const s = net.createServer(onConnection);
      servers.push(s);
      s.listen(0, '127.0.0.1', () => resolve((s.address() as net.AddressInfo).port));
    });
  const syncTo = (port: number, tls: string) =>
    runCli(['sync', '--source', `127.0.0.1:${port}`, '--source-tls', tls, '--source-user', 'a', '--target', `127.0.0.1:${port}`, '--target-tls', tls, '--target-user', 'b', '--json'], {
      ...process.env,
      MAILFERRY_SOURCE_PASSWORD: 'x',
      MAILFERRY_TARGET_PASSWORD: 'y',
    });

  test('says what answered instead (an SSH server), or that nobody answered the TLS handshake, in the endpoint test’s words', async () => {
    const ssh = await listen((socket) => {
      socket.on('error', () => undefined);
      socket.write('SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n');
    });
    const r = await syncTo(ssh, 'none');
    assert.equal(r.status, 3, r.stderr);
    assert.match(String(r.json?.error), /cannot connect to 127\.0\.0\.1:\d+ \(no TLS\): not an IMAP server: it answered “SSH-2\.0-OpenSSH_9\.2p1 Debian-2”, which looks like an SSH server/);
    const silent = await listen((socket) => socket.on('error', () => undefined));
    const t = Date.now();
    const s = await syncTo(silent, 'implicit');
    assert.equal(s.status, 3, s.stderr);
    assert.match(String(s.json?.error), /implicit TLS\): .*did not answer the TLS handshake/);
    assert.ok(Date.now() - t < 28_000, `said after ${Date.now() - t} ms, not after imapflow's 30 s`);
  });
});
