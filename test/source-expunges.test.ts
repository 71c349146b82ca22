/**
 * The weeks between the first sync and the cut-over, when users go on working on the
 * source: a message deleted to Trash and restored, one moved away and back, a skipped
 * message deleted. Messages expunged from the source are handled by scan.ts
 * (handleExpunged): a message that comes back under a new UID is linked to the copy it
 * already has, and a skipped one that is gone is no longer reported.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { CLI, env, runCli, syncArgs } from './helpers/cli.js';
import { startRelay } from './helpers/relay.js';
import { type LabPair, startPair } from './helpers/lab-pair.js';
import { compareMailboxes, connect, snapshot } from './helpers/mailbox-snapshot.js';

function message(n: number, bodyBytes = 200): Buffer {
  return Buffer.from(`From: sender${n}@example.org\r\nTo: alice@example.org\r\nSubject: message ${n}\r\nMessage-ID: <x${n}@example.org>\r\nDate: Mon, 2 Mar 2020 10:00:00 +0000\r\n\r\n${'z'.repeat(bodyBytes)}\r\n`);
}

describe('sync: messages the source expunges between runs', () => {
  let lab: LabPair;
  const sync = (extra: string[] = []) => runCli(['sync', ...syncArgs(lab, lab.db, ['--json', ...extra])], env(lab));
  const targetCount = async (path: string) => (await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass)).get(path)?.length ?? 0;

  before(async () => {
    lab = await startPair();
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await c.mailboxCreate('Trash');
    await c.mailboxCreate('Projects');
    for (let n = 1; n <= 6; n++) await c.append('INBOX', message(n), n % 2 ? ['\\Seen'] : [], new Date(Date.UTC(2020, 2, n)));
    for (let n = 7; n <= 9; n++) await c.append('Projects', message(n), [], new Date(Date.UTC(2020, 3, n)));
    await c.append('Projects', message(10, 300_000), [], new Date(Date.UTC(2020, 4, 1)));
    await c.logout();
  });
  after(async () => lab?.stop());

  test('a message deleted to Trash and restored, or moved away and back, is not copied twice', async () => {
    const first = await sync(['--max-message-size', '100000']);
    assert.equal(first.status, 1, first.stderr);
    assert.equal(first.json?.copied, 9);
    assert.equal(first.json?.skipped, 1, 'message 10 is over the size limit');

    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await c.mailboxOpen('INBOX');
    await c.messageMove('2', 'Trash'); // message 2
    await c.mailboxOpen('Projects');
    await c.messageMove('1', 'INBOX'); // message 7, into the wrong folder
    await c.logout();
    const second = await sync(['--max-message-size', '100000']);
    assert.equal(second.json?.copied, 2, 'message 2 into Trash, message 7 into INBOX');

    const d = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await d.mailboxOpen('Trash');
    await d.messageMove('1:*', 'INBOX'); // restored
    await d.mailboxOpen('INBOX');
    const seven = (await d.search({ header: { 'message-id': '<x7@example.org>' } }, { uid: true })) as number[];
    assert.equal(seven.length, 1);
    await d.messageMove(String(seven[0]), 'Projects', { uid: true }); // and back
    // A new message identical to one still in the folder is new mail all the same.
    await d.append('INBOX', message(1), ['\\Seen'], new Date(Date.UTC(2020, 2, 1)));
    await d.logout();
    const third = await sync(['--max-message-size', '100000']);
    assert.equal(third.status, 1, third.stderr);
    assert.equal(third.json?.copied, 1, 'only the second message 1');
    assert.equal(third.json?.alreadyOnTarget, 2, 'messages 2 and 7 came back to folders that have their copies');
    assert.equal(await targetCount('INBOX'), 8, 'messages 1–6, 7 (left from its visit) and the second 1');
    assert.equal(await targetCount('Projects'), 3);
    // The target holds every source message of INBOX and Projects exactly once (plus what the source deleted).
    const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    for (const [path, msgs] of src) src.set(path, msgs.filter((m) => m.size < 100_000)); // message 10 is skipped
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    const extra = compareMailboxes(src, tgt, (p) => p).filter((p) => !/unexpected message/.test(p));
    assert.deepEqual(extra, []);
  });

  test('a skipped message deleted on the source is no longer reported', async () => {
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await c.mailboxOpen('Projects');
    const big = (await c.search({ larger: 100_000 }, { uid: true })) as number[];
    assert.equal(big.length, 1);
    await c.messageDelete(String(big[0]), { uid: true });
    await c.logout();
    const r = await sync(['--max-message-size', '100000']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.skipped, 0);
    assert.deepEqual(r.json?.skippedItems, []);
  });
});

describe('sync: a run stopped between a flag change on the target and its record', () => {
  let lab: LabPair;

  before(async () => {
    lab = await startPair();
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    for (let n = 1; n <= 10; n++) await c.append('INBOX', message(n), ['\\Seen'], new Date(Date.UTC(2021, 0, n)));
    await c.logout();
  });
  after(async () => lab?.stop());

  test('leaves the next run reading the target\u2019s flags, so a change undone on the source is undone there too', async () => {
    // Every run goes through the relay (the journal is keyed by the target's host:port).
    // Armed, it kills the sync once its STORE is carried out, before the sync hears so.
    let child: ChildProcess | undefined;
    let armed = false;
    const relay = await startRelay(lab.target.port, {
      rewrite: (text) => {
        if (armed && /^\S+ OK .*Store completed/im.test(text)) child?.kill('SIGKILL');
        return text;
      },
    });
    const sync = () => runCli(['sync', ...syncArgs(lab, lab.db, ['--json'], { targetPort: relay.port })], env(lab));
    const flagged = async () => (await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass)).get('INBOX')!.filter((m) => m.flags.includes('\\Flagged')).length;
    try {
      assert.equal((await sync()).status, 0);
      const src = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
      await src.mailboxOpen('INBOX');
      await src.messageFlagsAdd('1:3', ['\\Flagged']);
      // A flag the user set on the target's copy: no change of the source's is about it.
      const tgt = await connect(lab.target.endpoint(), lab.targetUser, lab.targetPass);
      await tgt.mailboxOpen('INBOX');
      await tgt.messageFlagsAdd('1', ['$Mine']);
      await tgt.logout();
      armed = true;
      child = spawn(process.execPath, [CLI, 'sync', ...syncArgs(lab, lab.db, ['--json'], { targetPort: relay.port })], { env: env(lab), stdio: 'ignore' });
      const [, signal] = await new Promise<[number | null, string | null]>((resolve) => child!.on('exit', (code, sig) => resolve([code, sig])));
      armed = false;
      assert.equal(signal, 'SIGKILL', 'the sync was killed after its STORE was carried out');
      assert.equal(await flagged(), 3, 'the target got the change');
      // The user takes it back on the source before the next run.
      await src.messageFlagsRemove('1:3', ['\\Flagged']);
      await src.logout();
      const r = await sync();
      assert.equal(r.status, 0, r.stderr);
      assert.equal(await flagged(), 0, 'the target follows the source again');
      const first = (await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass)).get('INBOX')!.find((m) => m.uid === 1)!;
      assert.deepEqual(first.flags, ['$Mine', '\\Seen'], 'the flag set on the target is kept');
      const v = await runCli(['verify', ...syncArgs(lab, lab.db, ['--json'], { targetPort: relay.port })], env(lab));
      // Only the copy with the user's own flag differs from its source.
      assert.deepEqual((v.json?.folders as { flagDifferences: number }[]).map((f) => f.flagDifferences), [1]);
    } finally {
      await relay.stop();
    }
  });
});

describe('sync: a message moved out and back after a run that could not record its end', () => {
  let lab: LabPair;

  before(async () => {
    lab = await startPair();
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await c.mailboxCreate('Trash');
    for (let n = 1; n <= 10; n++) await c.append('INBOX', message(n), [], new Date(Date.UTC(2021, 5, n)));
    await c.logout();
  });
  after(async () => lab?.stop());

  test('is linked to its copy even above the recorded watermark', async () => {
    const sync = () => runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal((await sync()).json?.copied, 10);
    // As if that run had been killed after copying everything, before recording the folder
    // (or as a wider --received-after lists it from UID 1 again): copies above the watermark.
    const d = new Database(lab.db);
    d.prepare('update folder set synced_uidnext = 5, source_messages = null').run();
    d.close();
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await c.mailboxOpen('INBOX');
    await c.messageMove('8', 'Trash'); // message 8
    await c.mailboxOpen('Trash');
    await c.messageMove('1:*', 'INBOX'); // and back, under a new UID
    await c.logout();
    const r = await sync();
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual([r.json?.copied, r.json?.alreadyOnTarget], [0, 1]);
    assert.equal((await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass)).get('INBOX')!.length, 10);
  });
});

describe('sync: messages the user deletes or moves on the source while the run copies', () => {
  let lab: LabPair;
  after(async () => lab?.stop());

  test('are neither failures nor lost: the run ends in sync, the moved one is copied from its new folder', async () => {
    lab = await startPair();
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await c.mailboxCreate('Work');
    for (let n = 1; n <= 6; n++) await c.append('INBOX', message(n), [], new Date(Date.UTC(2022, 0, n)));
    await c.logout();
    // Between the run's scan and its first FETCH of message bodies, the user deletes
    // message 3 and moves message 4 (Dovecot then answers BODY[] NIL for both).
    let armed = true;
    const relay = await startRelay(lab.source.port, {
      beforeCommand: async (line) => {
        if (!armed || !/BODY\.PEEK\[\]/.test(line)) return;
        armed = false;
        const u = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
        await u.mailboxOpen('INBOX');
        await u.messageDelete('3', { uid: true });
        await u.messageMove('4', 'Work', { uid: true });
        await u.logout();
      },
    });
    try {
      const raced = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'], { sourcePort: relay.port })], env(lab));
      assert.equal(armed, false, 'the user acted during the run');
      assert.equal(raced.status, 0, raced.stderr);
      assert.deepEqual([raced.json?.copied, raced.json?.failed, raced.json?.skipped], [4, 0, 0]);
      const next = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'], { sourcePort: relay.port })], env(lab));
      assert.equal(next.status, 0, next.stderr);
      assert.equal(next.json?.copied, 1, 'message 4, from Work');
      const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
      const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
      assert.deepEqual(compareMailboxes(src, tgt, (p) => p), []);
    } finally {
      await relay.stop();
    }
  });
});

describe('sync: a folder deleted and made again on the source, its mail moved back later', () => {
  let lab: LabPair;
  after(async () => lab?.stop());

  test('the mail that comes back is linked to the copies it has, also runs later and after a second re-creation', async () => {
    lab = await startPair();
    const sync = () => runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    const on = async (use: (c: Awaited<ReturnType<typeof connect>>) => Promise<unknown>) => {
      const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
      try {
        await use(c);
      } finally {
        await c.logout();
      }
    };
    await on(async (c) => {
      await c.mailboxCreate('Trash');
      await c.mailboxCreate('Projects');
      for (let n = 1; n <= 4; n++) await c.append('Projects', message(n), [], new Date(Date.UTC(2023, 0, n)));
    });
    assert.equal((await sync()).json?.copied, 4);
    // The user moves the mail to Trash, deletes the folder, makes it again with new mail.
    await on(async (c) => {
      await c.mailboxOpen('Projects');
      await c.messageMove('1:*', 'Trash');
      await c.mailboxDelete('Projects');
      await c.mailboxCreate('Projects');
      await c.append('Projects', message(9), [], new Date(Date.UTC(2023, 0, 9)));
    });
    const second = await sync();
    assert.equal(second.status, 0, second.stderr);
    assert.equal(second.json?.copied, 5, 'message 9, and messages 1–4 into Trash');
    // A run later, the user moves the four back.
    await on(async (c) => {
      await c.mailboxOpen('Trash');
      await c.messageMove('1:*', 'Projects');
    });
    const third = await sync();
    assert.equal(third.status, 0, third.stderr);
    assert.deepEqual([third.json?.copied, third.json?.alreadyOnTarget], [0, 4]);
    const projects = async () => (await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass)).get('Projects')!.length;
    assert.equal(await projects(), 5, 'messages 1–4 once, and 9');
    // Made again a second time: the orphans of both changes are kept side by side.
    await on(async (c) => {
      await c.mailboxOpen('Projects');
      await c.messageMove('1:*', 'Trash');
      await c.mailboxDelete('Projects');
      await c.mailboxCreate('Projects');
      await c.mailboxOpen('Trash');
      await c.messageMove('1:*', 'Projects');
    });
    const fourth = await sync();
    assert.equal(fourth.status, 0, fourth.stderr);
    assert.equal(fourth.json?.copied, 0);
    assert.equal(await projects(), 5);
    const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.deepEqual(compareMailboxes(src, tgt, (p) => p).filter((p) => !/unexpected message/.test(p)), []);
  });
});

describe('sync: mail moved between two source folders copied into one target folder', () => {
  let lab: LabPair;
  after(async () => lab?.stop());

  test('is not copied a second time into that folder (Sent and Sent Items, both the target\u2019s Sent)', async () => {
    lab = await startPair({ source: { specialUse: { '\\Sent': 'Sent Items' } } });
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await c.mailboxCreate('Sent');
    for (let n = 1; n <= 3; n++) await c.append('Sent', message(n), ['\\Seen'], new Date(Date.UTC(2024, 0, n)));
    for (let n = 4; n <= 5; n++) await c.append('Sent Items', message(n), ['\\Seen'], new Date(Date.UTC(2024, 0, n)));
    await c.logout();
    const sync = () => runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    const first = await sync();
    assert.equal(first.json?.copied, 5, first.stderr);
    const sent = async () => (await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass)).get('Sent')!.length;
    assert.equal(await sent(), 5);
    const d = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await d.mailboxOpen('Sent');
    await d.messageMove('1:2', 'Sent Items');
    await d.logout();
    const second = await sync();
    assert.equal(second.status, 0, second.stderr);
    assert.deepEqual([second.json?.copied, second.json?.alreadyOnTarget], [0, 2]);
    assert.equal(await sent(), 5, 'each message once in the target\u2019s Sent');
    const third = await sync();
    assert.deepEqual([third.json?.copied, third.json?.alreadyOnTarget], [0, 0]);
  });
});
