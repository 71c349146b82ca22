/**
 * A target that already holds some of the mailbox, and a journal that does not know it: a
 * run with another state database (a test run on a laptop, a lost database, another
 * spelling of the server's name), or a target filled in part by another tool. The copies
 * already there are found by content and linked, never copied twice; everything else is
 * copied, and mail that is not the source's is left alone (src/sync/existing-copies.ts).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { generateCorpus, loadCorpus } from '../src/lab/corpus.js';
import { env, runCli, syncArgs } from './helpers/cli.js';
import { expectedTargetPath, type LabPair, startPair } from './helpers/lab-pair.js';
import { compareMailboxes, connect, multiset, snapshot } from './helpers/mailbox-snapshot.js';
import { startRelay } from './helpers/relay.js';
import Database from 'better-sqlite3';

function message(n: number, body = `Body of message ${n}.\r\n`): Buffer {
  return Buffer.from(`From: sender${n}@example.org\r\nTo: alice@example.org\r\nSubject: message ${n}\r\nMessage-ID: <m${n}@example.org>\r\nDate: Mon, 2 Mar 2020 10:00:00 +0000\r\n\r\n${body}`);
}

describe('sync: copies already on the target', () => {
  let lab: LabPair;
  let total = 0;

  before(async () => {
    lab = await startPair();
    const corpus = generateCorpus({ seed: 11, messages: 250, averageSize: 10_000, maxSize: 3_000_000 });
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    total = (await loadCorpus(c, corpus, { separator: '.' })).appended;
    await c.logout();
  });
  after(async () => lab?.stop());

  test('a run with another state database links every copy instead of copying it again', async () => {
    const first = await runCli(['sync', ...syncArgs(lab, join(lab.dir, 'laptop.sqlite'), ['--json'])], env(lab));
    assert.equal(first.status, 0, first.stderr);
    assert.equal(first.json?.copied, total);
    // Flags changed on the source since: the linked copies must follow them.
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await c.mailboxOpen('INBOX');
    await c.messageFlagsAdd('1:5', ['\\Flagged', '$Important']);
    await c.messageFlagsRemove('1:5', ['\\Seen']);
    await c.logout();

    const second = await runCli(['sync', ...syncArgs(lab, join(lab.dir, 'server.sqlite'), ['--json'])], env(lab));
    assert.equal(second.status, 0, second.stderr);
    assert.equal(second.json?.copied, 0, 'nothing is copied a second time');
    assert.equal(second.json?.alreadyOnTarget, total);
    assert.match(second.stderr, new RegExp(`${total} already on the target`));
    const problems = compareMailboxes(await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass), await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass), (p) => expectedTargetPath(p));
    assert.deepEqual(problems, []);

    // From then on the new journal is the one that knows: an incremental run as usual.
    const third = await runCli(['sync', ...syncArgs(lab, join(lab.dir, 'server.sqlite'), ['--json'])], env(lab));
    assert.equal(third.status, 0, third.stderr);
    assert.equal(third.json?.copied, 0);
    assert.equal(third.json?.alreadyOnTarget, 0);
  });
});

describe('sync: two journals of one mailbox (another database, another host spelling)', () => {
  let lab: LabPair;
  before(async () => {
    lab = await startPair();
  });
  after(async () => lab?.stop());

  test('new mail one of them copied is linked by the other, run after run, never copied twice', async () => {
    const a = join(lab.dir, 'batch.sqlite');
    const b = join(lab.dir, 'by-hand.sqlite');
    const sync = async (db: string, extra: string[] = []) => {
      const r = await runCli(['sync', ...syncArgs(lab, db, ['--json', ...extra])], env(lab));
      assert.equal(r.status, 0, r.stderr);
      return r.json!;
    };
    let n = 0;
    const mail = async (count: number, when: Date) => {
      const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
      for (let i = 0; i < count; i++, n++) await c.append(n % 2 ? 'INBOX' : 'Sent', message(1000 + n, `new mail ${n}\r\n`.repeat(1 + (n % 4))), [], when);
      await c.logout();
    };
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await c.mailboxCreate('Sent');
    await c.logout();
    await mail(6, new Date('2022-01-01T00:00:00Z'));
    assert.equal((await sync(a)).copied, 6);
    assert.equal((await sync(b)).alreadyOnTarget, 6);
    for (const [round, count] of [[1, 4], [2, 3]] as const) {
      await mail(count, new Date(Date.UTC(2022, 1, round)));
      // One journal copies the new mail; the other finds it there.
      const first = await sync(round === 1 ? a : b);
      assert.equal(first.copied, count);
      const second = await sync(round === 1 ? b : a);
      assert.equal(second.copied, 0, `round ${round}: nothing copied twice`);
      assert.equal(second.alreadyOnTarget, count);
    }
    // And with nothing new, both copy nothing.
    assert.equal((await sync(a)).copied, 0);
    assert.equal((await sync(b)).copied, 0);
    const problems = compareMailboxes(await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass), await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass), (p) => expectedTargetPath(p));
    assert.deepEqual(problems, []);
    const t = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.equal([...t.values()].reduce((k, m) => k + m.length, 0), n, 'each message once');
  });
});

describe('sync: a target folder filled in part by another tool', () => {
  let lab: LabPair;

  before(async () => {
    lab = await startPair();
  });
  after(async () => lab?.stop());

  test('only the messages not there yet are copied; identical ones count one each; others stay', async () => {
    const when = new Date('2021-06-01T08:00:00Z');
    const src = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await src.mailboxCreate('Projects');
    // 1..4 distinct, 5 and 6 byte-identical (two deliveries of one message).
    for (let n = 1; n <= 4; n++) await src.append('Projects', message(n), ['\\Seen'], when);
    await src.append('Projects', message(5), ['\\Seen', '\\Answered'], when);
    await src.append('Projects', message(5), [], when);
    await src.logout();

    const tgt = await connect(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    await tgt.mailboxCreate('Projects');
    await tgt.append('Projects', message(1), [], when); // same bytes, flags not (yet) the source's
    await tgt.append('Projects', message(2), ['\\Seen'], when);
    await tgt.append('Projects', message(5), ['\\Seen'], when); // one of the two identical ones
    await tgt.append('Projects', message(3, 'Body of message 3!\r\n'), [], when); // same size and headers, other bytes
    await tgt.append('Projects', message(99), ['\\Seen'], when); // not the source's at all
    await tgt.logout();
    const before = (await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass)).get('Projects')!;

    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.alreadyOnTarget, 3, 'messages 1, 2 and one 5 were there');
    assert.equal(r.json?.copied, 3, 'messages 3, 4 and the second 5 were not');

    const source = (await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass)).get('Projects')!;
    const target = (await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass)).get('Projects')!;
    assert.equal(target.length, 8, 'the six source messages, the edited 3 and the foreign 99');
    const have = multiset(target);
    for (const [key, n] of multiset(source)) assert.equal(have.get(key), n, `source message ${key.slice(0, 70)}: ${n}× wanted, ${have.get(key) ?? 0}× on the target`);
    // The two messages that are not the source's are untouched, flags included.
    for (const foreign of before.filter((m) => !source.some((s) => s.sha256 === m.sha256))) {
      assert.ok(target.some((t) => t.uid === foreign.uid && t.sha256 === foreign.sha256 && t.flags.join() === foreign.flags.join()), `target message ${foreign.uid} was left as it was`);
    }
  });

  test('verify tells duplicates of source messages from other extra mail', async () => {
    const tgt = await connect(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    await tgt.append('Projects', message(4), [], new Date('2021-06-01T08:00:00Z')); // a second copy of 4
    await tgt.logout();
    // Without --content the edited 3 (same size, date and Message-ID) looks like 3 too.
    for (const [mode, duplicates] of [[[], 2], [['--content'], 1]] as const) {
      const r = await runCli(['verify', ...syncArgs(lab, lab.db, ['--json', ...mode])], env(lab));
      assert.equal(r.status, 0, r.stderr);
      const projects = (r.json?.folders as { target: string; extra: number; duplicates: number }[]).find((f) => f.target === 'Projects')!;
      assert.deepEqual([projects.extra, projects.duplicates], [3, duplicates], `${mode.join(' ')}: the edited 3 and 99 are extra, the second 4 a duplicate`);
      assert.match(r.stderr, new RegExp(`Projects -> Projects: source 6, target 9, 3 extra on target \\(${duplicates} of them duplicates of source messages\\)`));
    }
  });
});

describe('sync: identical messages filed a second apart, one of them on the target already', () => {
  let lab: LabPair;
  before(async () => {
    lab = await startPair();
  });
  after(async () => lab?.stop());

  test('each keeps its own date: the copy there is linked to the message of its date', async () => {
    const at = (s: number) => new Date(Date.UTC(2022, 4, 1, 10, 0, s));
    const src = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    for (const s of [0, 1, 2]) await src.append('INBOX', message(7), [], at(s));
    await src.logout();
    const tgt = await connect(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    await tgt.append('INBOX', message(7), [], at(1));
    await tgt.logout();
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual([r.json?.alreadyOnTarget, r.json?.copied], [1, 2]);
    const dates = (await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass)).get('INBOX')!.map((m) => m.internalDate).sort();
    assert.deepEqual(dates, [0, 1, 2].map((s) => at(s).getTime()));
  });
});

describe('sync: copies already on a target without UIDPLUS', () => {
  let lab: LabPair;

  before(async () => {
    lab = await startPair();
  });
  after(async () => lab?.stop());

  test('the journal\'s own copies (no target UIDs) are told from the others by count, not a reason to copy everything again', async () => {
    const when = new Date('2022-02-02T10:00:00Z');
    const src = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await src.mailboxCreate('Notes');
    for (let n = 1; n <= 8; n++) await src.append('Notes', message(n), [], when);
    await src.append('Notes', message(1), [], when); // a second message 1
    await src.logout();
    const tgt = await connect(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    await tgt.mailboxCreate('Notes');
    for (let n = 1; n <= 6; n++) await tgt.append('Notes', message(n), [], when); // another tool's copies
    await tgt.logout();
    // The target as one without UIDPLUS (RFC 4315): no APPENDUID, no capability.
    const relay = await startRelay(lab.target.port, { rewrite: (t) => t.replace(/ \[APPENDUID [^\]]*\]/g, '').replace(/ UIDPLUS/g, '') });
    try {
      const run = () => runCli(['sync', ...syncArgs(lab, lab.db, ['--json'], { targetPort: relay.port })], env(lab));
      const first = await run();
      assert.equal(first.status, 0, first.stderr);
      assert.deepEqual([first.json?.alreadyOnTarget, first.json?.copied], [6, 3]);
      // As if that run had been killed before it linked anything: only its own copies
      // (without target UIDs) are journaled, and the folder is still in its first sync.
      const d = new Database(lab.db);
      d.prepare("delete from message where target_uid is not null").run();
      d.prepare('update folder set source_uidvalidity = null, synced_uidnext = 1, source_messages = null, source_highestmodseq = null').run();
      d.close();
      const second = await run();
      assert.equal(second.status, 0, second.stderr);
      assert.equal(second.json?.copied, 0, 'nothing copied twice');
      assert.equal(second.json?.alreadyOnTarget, 6);
    } finally {
      await relay.stop();
    }
    const notes = (await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass)).get('Notes')!;
    assert.equal(notes.length, 9);
  });
});
