/**
 * The engine's central promise against real Dovecot servers: every source message arrives
 * exactly once, byte for byte, with flags and internal date; re-runs copy nothing;
 * incremental runs copy only what is new and mirror flag changes.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { generateCorpus, loadCorpus } from '../src/lab/corpus.js';
import { env, runCli, syncArgs } from './helpers/cli.js';
import { expectedTargetPath, type LabPair, startPair } from './helpers/lab-pair.js';
import { compareMailboxes, connect, snapshot } from './helpers/mailbox-snapshot.js';

describe('sync: exactness', () => {
  let lab: LabPair;
  let total = 0;

  before(async () => {
    lab = await startPair({ extraTargetUsers: ['bob'] });
    const corpus = generateCorpus({ seed: 7, messages: 400, averageSize: 12_000, maxSize: 1_500_000 });
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    total = (await loadCorpus(c, corpus, { separator: '.' })).appended;
    await c.logout();
  });
  after(async () => lab?.stop());

  test('the first run copies every message exactly once with flags and internal dates', async () => {
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, total);
    assert.equal(r.json?.found, total);
    assert.equal(r.json?.skipped, 0);
    const problems = compareMailboxes(await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass), await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass), (p) => expectedTargetPath(p));
    assert.deepEqual(problems, []);
  });

  test('identical messages in one folder stay separate messages', async () => {
    const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    let duplicatesSeen = 0;
    for (const [path, msgs] of src) {
      const seen = new Map<string, number>();
      for (const m of msgs) seen.set(m.sha256, (seen.get(m.sha256) ?? 0) + 1);
      for (const [sha, n] of seen) {
        if (n < 2) continue;
        duplicatesSeen++;
        const onTarget = tgt.get(expectedTargetPath(path))!.filter((m) => m.sha256 === sha).length;
        assert.equal(onTarget, n, `${path}: ${n} identical messages on the source, ${onTarget} on the target`);
      }
    }
    assert.ok(duplicatesSeen > 0, 'the corpus must contain identical messages');
  });

  test('a second run copies nothing, and even its debug log holds no password', async () => {
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json', '--log-level', 'debug'])], env(lab));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 0);
    assert.equal(r.json?.flagsUpdated, 0);
    assert.match(r.stderr, /"level":20/, 'debug lines were logged');
    for (const secret of [lab.sourcePass, lab.targetPass]) {
      assert.ok(!r.stdout.includes(secret) && !r.stderr.includes(secret), 'a password appears in the output or log');
      assert.ok(!readFileSync(lab.db).includes(Buffer.from(secret)), 'a password appears in the state database');
    }
  });

  test('an incremental run copies only new messages and mirrors flag changes, keeping target-side flags', async () => {
    const s = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await s.append('INBOX', Buffer.from('From: new@example.org\r\nSubject: new one\r\nMessage-ID: <new1@x>\r\n\r\nhello\r\n'), ['\\Seen'], new Date('2024-05-01T10:00:00Z'));
    await s.append('Archive.2019', Buffer.from('From: new@example.org\r\nSubject: new two\r\n\r\nhello again\r\n'), [], new Date('2019-05-01T10:00:00Z'));
    await s.mailboxOpen('INBOX');
    const inbox = await s.fetchAll('1:3', { uid: true, flags: true });
    await s.messageFlagsAdd(inbox.map((m) => m.uid).join(','), ['\\Flagged', '$Important'], { uid: true });
    await s.messageFlagsRemove(String(inbox[0]!.uid), ['\\Seen'], { uid: true });
    await s.logout();

    // A user marks a message on the target: the sync must not undo that.
    const t = await connect(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    await t.mailboxOpen('INBOX');
    const last = (await t.fetchAll('*', { uid: true })).at(-1)!;
    await t.messageFlagsAdd(String(last.uid), ['TargetOnly'], { uid: true });
    await t.logout();

    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 2);
    assert.equal(r.json?.flagsUpdated, 3);

    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.ok(tgt.get('INBOX')!.some((m) => m.flags.includes('TargetOnly')), 'the target-only flag survived');
    for (const msgs of tgt.values()) for (const m of msgs) m.flags = m.flags.filter((f) => f !== 'TargetOnly');
    assert.deepEqual(compareMailboxes(await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass), tgt, (p) => expectedTargetPath(p)), []);
  });

  test('--exclude skips a folder with its subfolders; --dry-run changes nothing', async () => {
    const bob = { ...lab, targetUser: 'bob' };
    const dry = await runCli(['sync', ...syncArgs(bob, lab.db, ['--json', '--dry-run', '--exclude', 'Archive'])], env(bob));
    assert.equal(dry.status, 0, dry.stderr);
    assert.equal((await snapshot(lab.target.endpoint(), 'bob', lab.targetPass)).get('INBOX')?.length ?? 0, 0);
    // It says what a run would do: how many to copy, and each folder where it would go.
    assert.match(dry.stderr, new RegExp(`^dry run \\(nothing copied\\): \\d+ folders, \\d+ messages found, ${Number(dry.json?.toCopy)} to copy$`, 'm'));
    assert.ok(Number(dry.json?.toCopy) > 0);
    assert.match(dry.stderr, /^ {2}INBOX -> INBOX: \d+ messages$/m);
    assert.doesNotMatch(dry.stderr, /^ {2}Archive -> /m);

    const r = await runCli(['sync', ...syncArgs(bob, lab.db, ['--json', '--exclude', 'Archive', '--exclude', 'Junk E-mail'])], env(bob));
    assert.equal(r.status, 0, r.stderr);
    const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    const tgt = await snapshot(lab.target.endpoint(), 'bob', lab.targetPass);
    const excluded = (p: string) => p === 'Archive' || p.startsWith('Archive.') || p === 'Junk E-mail';
    assert.deepEqual(compareMailboxes(src, tgt, (p) => (excluded(p) ? null : expectedTargetPath(p))), []);
    assert.equal(tgt.get('Archive')?.length ?? 0, 0, 'nothing copied into Archive');
    assert.ok(![...tgt.keys()].some((k) => k.startsWith('Archive/')), 'no Archive subfolders created');
    const expectedCount = [...src].filter(([p]) => !excluded(p)).reduce((n, [, m]) => n + m.length, 0);
    assert.equal(r.json?.copied, expectedCount);
  });

  test('verify says in sync, and notices a message missing on the target', async () => {
    const ok = await runCli(['verify', ...syncArgs(lab, lab.db, ['--json', '--content'])], env(lab));
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(ok.json?.inSync, true);

    const t = await connect(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    await t.mailboxOpen('Sent');
    await t.messageDelete('1:1');
    await t.logout();
    const bad = await runCli(['verify', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(bad.status, 1, bad.stderr);
    assert.equal(bad.json?.inSync, false);
    assert.equal(bad.json?.missing, 1);
    assert.match(bad.stderr, /Sent Items -> Sent: .*1 missing/);
  });
});
