/**
 * SPEC §4 "only messages received after a date", against real Dovecot servers: with
 * `--received-after`, exactly the messages whose INTERNALDATE (RFC 3501 §2.3.3) is at or
 * after the cut-off arrive on the target (bytes, flags, dates), none older; `found` counts
 * only those; re-runs stay cheap and copy nothing; old mail appended later stays behind;
 * and `verify` with the same cut-off agrees.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import Database from 'better-sqlite3';
import { after, before, describe, test } from 'node:test';
import { parseReceivedAfter } from '../src/batch/time-input.js';
import { generateCorpus, loadCorpus } from '../src/lab/corpus.js';
import { env, runCli, syncArgs } from './helpers/cli.js';
import { expectedTargetPath, type LabPair, startPair } from './helpers/lab-pair.js';
import { compareMailboxes, connect, type MailboxSnapshot, snapshot } from './helpers/mailbox-snapshot.js';

/** Mid-2019 and not at midnight: a day-granular comparison (SEARCH SINCE) would get the boundary wrong. */
const CUTOFF_TEXT = '2019-06-15T12:34:56Z';
const CUTOFF = Date.parse(CUTOFF_TEXT);

function mail(tag: string, padding = 0): Buffer {
  return Buffer.from(`From: tester@example.org\r\nSubject: ${tag}\r\nMessage-ID: <${tag}@received-after.test>\r\n\r\n${tag}\r\n${'x'.repeat(padding)}\r\n`);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** The source as the migration should see it: only messages at or after the cut-off. */
function inScope(src: MailboxSnapshot): MailboxSnapshot {
  return new Map([...src].map(([path, msgs]) => [path, msgs.filter((m) => m.internalDate >= CUTOFF)]));
}

const count = (s: MailboxSnapshot, keep: (date: number) => boolean) => [...s.values()].reduce((n, msgs) => n + msgs.filter((m) => keep(m.internalDate)).length, 0);

/** Each folder's last_synced_at: a folder the LIST-STATUS fast path skipped keeps its value. */
function lastSynced(db: string): Map<string, number | null> {
  const d = new Database(db, { readonly: true, fileMustExist: true });
  try {
    const rows = d.prepare('select source_path, last_synced_at from folder').all() as { source_path: string; last_synced_at: number | null }[];
    return new Map(rows.map((r) => [r.source_path, r.last_synced_at]));
  } finally {
    d.close();
  }
}

describe('sync and verify --received-after', () => {
  let lab: LabPair;
  const boundary = {
    justBefore: mail('one second before the cut-off'),
    exactly: mail('exactly at the cut-off'),
    oldLate: mail('old mail appended after newer mail'),
    recent: mail('recent mail'),
  };
  let firstFound = 0;

  before(async () => {
    lab = await startPair({ extraTargetUsers: ['bob'] });
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await loadCorpus(c, generateCorpus({ seed: 23, messages: 150, averageSize: 6_000, maxSize: 200_000 }), { separator: '.' });
    // Dates interleave with UIDs: out, in, out, in.
    await c.append('INBOX', boundary.justBefore, ['\\Seen'], new Date(CUTOFF - 1000));
    await c.append('INBOX', boundary.exactly, ['\\Flagged'], new Date(CUTOFF));
    await c.append('INBOX', boundary.oldLate, [], new Date('2012-03-04T05:06:07Z'));
    await c.append('INBOX', boundary.recent, ['\\Seen', '$Forwarded'], new Date('2024-02-03T04:05:06Z'));
    await c.logout();
  });
  after(async () => lab?.stop());

  test('a bad date is a usage error', async () => {
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--received-after', 'last spring'])], env(lab));
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /--received-after/);
  });

  test('the first run copies exactly the messages received at or after the cut-off', async () => {
    const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    const wanted = count(src, (d) => d >= CUTOFF);
    const old = count(src, (d) => d < CUTOFF);
    assert.ok(wanted > 20 && old > 20, `the corpus straddles the cut-off (${wanted} in scope, ${old} older)`);

    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json', '--received-after', CUTOFF_TEXT])], env(lab));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, wanted);
    assert.equal(r.json?.found, wanted);
    assert.equal(r.json?.skipped, 0);
    assert.equal(r.json?.failed, 0);
    const folderList = r.json?.folderList as { source: string; found: number }[];
    for (const f of folderList) assert.equal(f.found, (src.get(f.source) ?? []).filter((m) => m.internalDate >= CUTOFF).length, `found in ${f.source}`);
    firstFound = wanted;

    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    // Both ways: every in-scope message once (bytes, flags, date), and nothing else.
    assert.deepEqual(compareMailboxes(inScope(src), tgt, (p) => expectedTargetPath(p)), []);
    const inbox = new Set(tgt.get('INBOX')!.map((m) => m.sha256));
    assert.ok(inbox.has(sha(boundary.exactly)) && inbox.has(sha(boundary.recent)), 'the in-scope boundary messages arrived');
    assert.ok(!inbox.has(sha(boundary.justBefore)) && !inbox.has(sha(boundary.oldLate)), 'no older message arrived');
    // A folder whose mail is all older still exists on the target, empty.
    assert.equal(tgt.get('Reisen + Urlaub 2018')?.length, 0);
  });

  test('a second run copies nothing, opens no folder, and reports the same found', async () => {
    const before = lastSynced(lab.db);
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json', '--received-after', CUTOFF_TEXT])], env(lab));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 0);
    assert.equal(r.json?.found, firstFound);
    assert.deepEqual(lastSynced(lab.db), before, 'every folder took the LIST-STATUS fast path');
  });

  test('later, old-dated mail stays behind while new mail is copied', async () => {
    const oldInbox = mail('old mail restored into INBOX');
    const oldSent = mail('old mail restored into Sent Items');
    const fresh = mail('new mail in Sent Items');
    const s = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await s.append('INBOX', oldInbox, ['\\Seen'], new Date('2016-07-08T09:10:11Z'));
    await s.append('Sent Items', oldSent, ['\\Seen'], new Date(CUTOFF - 60_000));
    await s.append('Sent Items', fresh, ['\\Seen'], new Date('2025-01-02T03:04:05Z'));
    await s.logout();

    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json', '--received-after', CUTOFF_TEXT])], env(lab));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 1);
    assert.equal(r.json?.found, firstFound + 1);

    const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.deepEqual(compareMailboxes(inScope(src), tgt, (p) => expectedTargetPath(p)), []);
    const onTarget = new Set([...tgt.values()].flat().map((m) => m.sha256));
    assert.ok(onTarget.has(sha(fresh)) && !onTarget.has(sha(oldInbox)) && !onTarget.has(sha(oldSent)));

    const again = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json', '--received-after', CUTOFF_TEXT])], env(lab));
    assert.equal(again.status, 0, again.stderr);
    assert.equal(again.json?.copied, 0);
    assert.equal(again.json?.found, firstFound + 1);
  });

  test('verify with the cut-off says in sync; without it, the older messages are missing', async () => {
    const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    const scoped = await runCli(['verify', ...syncArgs(lab, lab.db, ['--json', '--content', '--received-after', CUTOFF_TEXT])], env(lab));
    assert.equal(scoped.status, 0, scoped.stderr);
    assert.equal(scoped.json?.inSync, true);
    assert.equal(scoped.json?.sourceMessages, count(src, (d) => d >= CUTOFF));
    assert.equal(scoped.json?.missing, 0);

    const all = await runCli(['verify', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(all.status, 1, all.stderr);
    assert.equal(all.json?.inSync, false);
    assert.equal(all.json?.missing, count(src, (d) => d < CUTOFF));
  });

  test('a dry run with the cut-off counts only in-scope messages and changes nothing', async () => {
    const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    const bob = { ...lab, targetUser: 'bob' };
    const r = await runCli(['sync', ...syncArgs(bob, lab.db, ['--json', '--dry-run', '--received-after', CUTOFF_TEXT])], env(bob));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.toCopy, count(src, (d) => d >= CUTOFF));
    assert.equal(r.json?.found, count(src, (d) => d >= CUTOFF));
    assert.equal(r.json?.copied, 0);
    const tgt = await snapshot(lab.target.endpoint(), 'bob', lab.targetPass);
    assert.equal(count(tgt, () => true), 0);
  });

  test('an older message over the size limit is out of scope, not skipped', async () => {
    const oldBig = mail('old and large', 300_000);
    const newBig = mail('new and large', 300_000);
    const s = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await s.mailboxCreate('Big');
    await s.append('Big', oldBig, [], new Date('2014-01-01T00:00:00Z'));
    await s.append('Big', newBig, [], new Date('2023-01-01T00:00:00Z'));
    await s.logout();

    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json', '--received-after', CUTOFF_TEXT, '--max-message-size', '200000'])], env(lab));
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.json?.copied, 0);
    assert.equal(r.json?.skipped, 1);
    assert.equal(r.json?.failed, 0);
    assert.equal(r.json?.found, firstFound + 2);
    assert.deepEqual((r.json?.skippedItems as { subject: string }[]).map((i) => i.subject), ['new and large']);
  });

  test('a later run without the cut-off copies the older messages, once, and nothing twice', async () => {
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json', '--max-message-size', '1000000'])], env(lab));
    assert.equal(r.status, 0, r.stderr);
    const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    // Everything older than the cut-off, plus the in-scope large message skipped by the last run's size limit.
    assert.equal(r.json?.copied, count(src, (d) => d < CUTOFF) + 1);
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.deepEqual(compareMailboxes(src, tgt, (p) => expectedTargetPath(p)), [], 'source and target identical, no duplicate');
    const again = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(again.json?.copied, 0);
    // Back to a cut-off: nothing is removed or copied, the fast path holds.
    const before = lastSynced(lab.db);
    const scoped = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json', '--received-after', CUTOFF_TEXT])], env(lab));
    assert.equal(scoped.json?.copied, 0);
    assert.deepEqual(lastSynced(lab.db), before);
  });
});

test('--received-after: a date in the past or -DURATION; a future one is refused', () => {
  const now = Date.UTC(2026, 10, 28, 12, 0, 0);
  assert.equal(parseReceivedAfter('2025-03-01T00:00Z', '--received-after', now), Date.UTC(2025, 2, 1));
  assert.equal(parseReceivedAfter('-90d', '--received-after', now), now - 90 * 86_400_000);
  assert.throws(() => parseReceivedAfter('+2h', '--received-after', now), /would copy nothing/);
  assert.throws(() => parseReceivedAfter('2027-01-01', '--received-after', now), /in the future/);
  assert.throws(() => parseReceivedAfter('-soon', '--received-after', now), /-DURATION like -90d/);
  assert.throws(() => parseReceivedAfter('last march', '--received-after', now), (e: Error) => /a date like 2025-03-01/.test(e.message) && !e.message.includes('+DURATION'));
});
