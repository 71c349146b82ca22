/**
 * Against real Dovecot servers and the real CLI: a changed UIDVALIDITY on either side
 * (RFC 3501 §2.3.1.1) is handled without duplicating or losing a message, and servers
 * without the extensions the fast paths use still give an exact, incremental sync: a
 * source without CONDSTORE/QRESYNC/LIST-STATUS, a target without LITERAL+, a target
 * without UIDPLUS (no APPENDUID answers).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { ImapFlow } from 'imapflow';
import { type CorpusFolder, generateCorpus, loadCorpus } from '../src/lab/corpus.js';
import type { DovecotServer } from '../src/lab/dovecot.js';
import { env, runCli, syncArgs } from './helpers/cli.js';
import { digestAlgorithmCounts } from './helpers/journal.js';
import { expectedTargetPath, type LabPair, startPair } from './helpers/lab-pair.js';
import { compareMailboxes, connect, type MailboxSnapshot, snapshot } from './helpers/mailbox-snapshot.js';
import { appendUidMessages, type Relay, startRelay } from './helpers/relay.js';

/** A small tree with a non-ASCII leaf (rebuilt below), '&' and nesting. */
const FOLDERS: CorpusFolder[] = [
  { path: ['INBOX'], weight: 4 },
  { path: ['Überweisungen'], weight: 3 },
  { path: ['Projects & Plans'], weight: 2 },
  { path: ['Projects & Plans', 'Q3 Review'], weight: 1 },
  { path: ['Sent Items'], specialUse: '\\Sent', weight: 2 },
];

function count(s: MailboxSnapshot): number {
  return [...s.values()].reduce((n, m) => n + m.length, 0);
}

async function loadSource(lab: LabPair, seed: number, messages: number): Promise<number> {
  const corpus = generateCorpus({ seed, messages, averageSize: 10_000, maxSize: 200_000, folders: FOLDERS });
  const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
  try {
    return (await loadCorpus(c, corpus, { separator: '.' })).appended;
  } finally {
    await c.logout();
  }
}

async function withClient<T>(server: DovecotServer, user: string, pass: string, fn: (c: ImapFlow) => Promise<T>): Promise<T> {
  const c = await connect(server.endpoint(), user, pass);
  try {
    return await fn(c);
  } finally {
    await c.logout().catch(() => c.close());
  }
}

/**
 * Recreates a folder with the same messages under a new UIDVALIDITY, as a server
 * restore or an admin's "repair" does: COPY its messages (in reverse order, so the new
 * UIDs are a permutation of the old ones, optionally leaving one out) into a new folder,
 * delete the original, rename the new one to the old name. Returns the UIDVALIDITYs.
 */
async function rebuildFolder(c: ImapFlow, path: string, opts: { leaveOut?: number } = {}): Promise<{ before: number; after: number; messages: number }> {
  const status = async () => {
    const st = await c.status(path, { uidValidity: true, messages: true });
    assert.ok(st, `STATUS ${path}`);
    return st;
  };
  const before = await status();
  const tmp = `${path} rebuilt`;
  await c.mailboxCreate(tmp);
  await c.mailboxOpen(path);
  const uids = (await c.fetchAll('1:*', { uid: true }, { uid: true })).map((m) => m.uid).reverse();
  const keep = opts.leaveOut === undefined ? uids : uids.filter((_, i) => i !== opts.leaveOut);
  for (const uid of keep) await c.messageCopy(String(uid), tmp, { uid: true });
  // Leave the folder without CLOSE (which would expunge): select another one.
  await c.mailboxOpen('INBOX', { readOnly: true });
  await c.mailboxDelete(path);
  await c.mailboxRename(tmp, path);
  const after = await status();
  assert.equal(after.messages, keep.length);
  return { before: Number(before.uidValidity), after: Number(after.uidValidity), messages: before.messages ?? 0 };
}

/** Number of messages whose flags differ between two snapshots of the same source. */
function flagChanges(a: MailboxSnapshot, b: MailboxSnapshot): number {
  let n = 0;
  for (const [path, msgs] of a) {
    const later = new Map((b.get(path) ?? []).map((m) => [m.uid, m]));
    for (const m of msgs) if (later.has(m.uid) && later.get(m.uid)!.flags.join(' ') !== m.flags.join(' ')) n++;
  }
  return n;
}

/** Adds/removes flags on some messages of a source folder: a user at work. */
async function touchFlags(c: ImapFlow, path: string, picks: { index: number; add?: string[]; remove?: string[] }[]): Promise<void> {
  await c.mailboxOpen(path);
  const uids = (await c.fetchAll('1:*', { uid: true }, { uid: true })).map((m) => m.uid);
  for (const p of picks) {
    const uid = String(uids[p.index]!);
    if (p.add) await c.messageFlagsAdd(uid, p.add, { uid: true });
    if (p.remove) await c.messageFlagsRemove(uid, p.remove, { uid: true });
  }
}

async function assertExact(lab: LabPair, expectedTotal: number): Promise<void> {
  const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
  const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
  assert.deepEqual(compareMailboxes(src, tgt, (p) => expectedTargetPath(p)), []);
  assert.equal(count(tgt), expectedTotal, 'no message lost or duplicated');
}

describe('sync: UIDVALIDITY changes', () => {
  let lab: LabPair;
  let total = 0;
  // The first copy hashes with SHA-256, as versions before GMAC digests did, and every later
  // run with GMAC (content-digest.ts): orphans and copied rows of an older journal must
  // still be matched by content.
  const run = (digest: 'sha256' | 'gmac' = 'gmac') => runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], { ...env(lab), ...(digest === 'sha256' ? { MAILFERRY_DIGEST: 'sha256' } : {}) });

  before(async () => {
    lab = await startPair();
    total = await loadSource(lab, 515, 150);
    const r = await run('sha256');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, total);
  });
  after(async () => lab?.stop());

  test('a source folder recreated with the same messages is not copied again; new mail in it is', async () => {
    const v = await withClient(lab.source, lab.sourceUser, lab.sourcePass, async (c) => {
      const v = await rebuildFolder(c, 'Überweisungen');
      // The user also flags a message in the recreated folder.
      await touchFlags(c, 'Überweisungen', [{ index: 0, add: ['\\Flagged', 'Rebuilt'] }]);
      return v;
    });
    assert.notEqual(v.after, v.before, 'Dovecot gave the recreated folder a new UIDVALIDITY');
    assert.ok(v.messages >= 5, `the folder holds enough messages to matter (${v.messages})`);

    const r = await run();
    assert.equal(r.status, 0, r.stderr);
    await assertExact(lab, total);
    assert.equal(r.json?.copied, 0, 'nothing copied again');
    assert.equal(r.json?.flagsUpdated, 1, 'the flag change on the adopted message is mirrored');
    assert.equal(digestAlgorithmCounts(lab.db).gmac, v.messages, 'the adopted rows now carry GMAC digests');

    await withClient(lab.source, lab.sourceUser, lab.sourcePass, (c) =>
      c.append('Überweisungen', Buffer.from('From: bank@example.org\r\nSubject: after the rebuild\r\nMessage-ID: <rebuilt-1@x>\r\n\r\nnew\r\n'), ['\\Seen'], new Date('2024-02-03T04:05:06Z')),
    );
    const r2 = await run();
    assert.equal(r2.status, 0, r2.stderr);
    assert.equal(r2.json?.copied, 1, 'the new message is copied');
    total += 1;
    await assertExact(lab, total);
  });

  test('a target folder recreated under a new UIDVALIDITY is re-mapped: no duplicates, nothing lost, flags still mirrored', async () => {
    const v = await withClient(lab.target, lab.targetUser, lab.targetPass, (c) => rebuildFolder(c, 'Überweisungen', { leaveOut: 2 }));
    assert.notEqual(v.after, v.before, 'Dovecot gave the recreated folder a new UIDVALIDITY');

    const r = await run();
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 1, 'only the message missing from the recreated folder is copied again');
    await assertExact(lab, total);

    // Flag changes on the source reach the right target messages: the target UIDs were
    // re-mapped (the recreated folder numbers the messages in reverse order).
    const before = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await withClient(lab.source, lab.sourceUser, lab.sourcePass, (c) =>
      touchFlags(c, 'Überweisungen', [
        { index: 0, add: ['\\Answered', '$Forwarded'] },
        { index: 1, remove: ['\\Seen'], add: ['\\Flagged'] },
        { index: 3, add: ['Remapped'] },
      ]),
    );
    const changed = flagChanges(before, await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass));
    assert.equal(changed, 3);
    const r2 = await run();
    assert.equal(r2.status, 0, r2.stderr);
    assert.equal(r2.json?.copied, 0);
    assert.equal(r2.json?.flagsUpdated, changed);
    await assertExact(lab, total);
  });
});

describe('sync: a source without CONDSTORE, QRESYNC and LIST-STATUS', () => {
  let lab: LabPair;
  let total = 0;
  const run = () => runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));

  before(async () => {
    lab = await startPair({ source: { disableCapabilities: ['CONDSTORE', 'QRESYNC', 'LIST-STATUS'] } });
    total = await loadSource(lab, 616, 120);
  });
  after(async () => lab?.stop());

  test('copies exactly, then mirrors flag changes and copies new messages incrementally', async () => {
    const caps = await withClient(lab.source, lab.sourceUser, lab.sourcePass, async (c) => [...c.capabilities.keys()]);
    for (const cap of ['CONDSTORE', 'QRESYNC', 'LIST-STATUS']) assert.ok(!caps.includes(cap), `${cap} is not offered`);

    const r = await run();
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, total);
    await assertExact(lab, total);

    // Flag changes in folders that get no new mail (nothing but the flags tells them
    // apart from unchanged folders), and new messages elsewhere.
    const before = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await withClient(lab.source, lab.sourceUser, lab.sourcePass, async (c) => {
      await touchFlags(c, 'INBOX', [
        { index: 0, add: ['\\Flagged', '$Label1'] },
        { index: 1, remove: ['\\Seen'] },
        { index: 2, add: ['\\Seen', '\\Answered'], remove: ['\\Flagged'] },
      ]);
      await touchFlags(c, 'Projects & Plans.Q3 Review', [{ index: 0, add: ['Later'] }]);
      await c.append('Sent Items', Buffer.from('From: alice@example.org\r\nSubject: sent later\r\n\r\nhi\r\n'), ['\\Seen'], new Date('2024-06-01T12:00:00Z'));
      await c.append('Überweisungen', Buffer.from('From: bank@example.org\r\nSubject: statement\r\n\r\nhi\r\n'), [], new Date('2024-06-02T12:00:00Z'));
    });
    const changed = flagChanges(before, await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass));
    assert.ok(changed >= 3, `flags really changed on the source (${changed})`);

    const r2 = await run();
    assert.equal(r2.status, 0, r2.stderr);
    assert.equal(r2.json?.copied, 2);
    assert.equal(r2.json?.flagsUpdated, changed);
    total += 2;
    await assertExact(lab, total);

    const r3 = await run();
    assert.equal(r3.status, 0, r3.stderr);
    assert.equal(r3.json?.copied, 0);
    assert.equal(r3.json?.flagsUpdated, 0);
  });
});

describe('sync: a target without LITERAL+', () => {
  let lab: LabPair;
  let total = 0;

  before(async () => {
    lab = await startPair({ target: { disableCapabilities: ['LITERAL+'] } });
    total = await loadSource(lab, 717, 120);
  });
  after(async () => lab?.stop());

  test('copies exactly with synchronising literals', async () => {
    const caps = await withClient(lab.target, lab.targetUser, lab.targetPass, async (c) => [...c.capabilities.keys()]);
    assert.ok(!caps.includes('LITERAL+') && !caps.includes('LITERAL-'), 'no non-synchronising literals offered');
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json', '--connections', '2'])], env(lab));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, total);
    await assertExact(lab, total);
    const again = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json', '--connections', '2'])], env(lab));
    assert.equal(again.status, 0, again.stderr);
    assert.equal(again.json?.copied, 0);
  });
});

/**
 * Dovecot keeps sending APPENDUID when UIDPLUS is merely not advertised, so the relay in
 * front of the target also removes the code from tagged OK lines: the target then behaves
 * like a server without UIDPLUS at all. (No message in this corpus holds such a line.)
 */
function noAppendUid(counter: { stripped: number }): (text: string) => string {
  return (text) => text.replace(/^(\S+ OK )\[APPENDUID \d+ [\d:,]+\] /gm, (answer: string, ok: string) => ((counter.stripped += appendUidMessages(answer)), ok));
}

describe('sync: a target without UIDPLUS', () => {
  let lab: LabPair;
  let total = 0;
  let relay: Relay;
  const appendUid = { stripped: 0 };
  // Every run through the relay: the journal keys a mailbox pair by host:port.
  const run = () => runCli(['sync', ...syncArgs(lab, lab.db, ['--json'], { targetPort: relay.port })], env(lab));

  before(async () => {
    lab = await startPair({ target: { disableCapabilities: ['UIDPLUS'] } });
    relay = await startRelay(lab.target.port, { rewrite: noAppendUid(appendUid) });
    total = await loadSource(lab, 818, 120);
  });
  after(async () => {
    await relay?.stop();
    await lab?.stop();
  });

  test('copies exactly, re-runs copy nothing, and later flag changes are mirrored', async () => {
    const caps = await withClient(lab.target, lab.targetUser, lab.targetPass, async (c) => [...c.capabilities.keys()]);
    assert.ok(!caps.includes('UIDPLUS'), 'UIDPLUS is not offered');

    const r = await run();
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, total);
    assert.ok(appendUid.stripped >= total, `the target sent no APPENDUID (${appendUid.stripped} removed)`);
    await assertExact(lab, total);

    const before = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await withClient(lab.source, lab.sourceUser, lab.sourcePass, async (c) => {
      await touchFlags(c, 'INBOX', [
        { index: 0, add: ['\\Flagged', '$Label2'] },
        { index: 1, remove: ['\\Seen'], add: ['\\Answered'] },
      ]);
      await c.append('INBOX', Buffer.from('From: x@example.org\r\nSubject: later\r\n\r\nhi\r\n'), [], new Date('2024-07-01T12:00:00Z'));
    });
    const changed = flagChanges(before, await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass));
    assert.equal(changed, 2);

    const r2 = await run();
    assert.equal(r2.status, 0, r2.stderr);
    assert.equal(r2.json?.copied, 1);
    assert.equal(r2.json?.flagsUpdated, changed);
    total += 1;
    await assertExact(lab, total);

    const r3 = await run();
    assert.equal(r3.status, 0, r3.stderr);
    assert.equal(r3.json?.copied, 0);
    assert.equal(r3.json?.flagsUpdated, 0);
  });
});

describe('sync: a source that sends an unreadable INTERNALDATE', () => {
  let lab: LabPair;
  let relay: Relay;
  // A localised month name, as some servers send: not an RFC 3501 §9 date-time.
  const rewrite = (text: string) => text.replace(/INTERNALDATE "(\d\d)-Oct-2019 /g, 'INTERNALDATE "$1-Okt-2019 ');
  const run = () => runCli(['sync', ...syncArgs(lab, lab.db, ['--json'], { sourcePort: relay.port })], env(lab));

  before(async () => {
    lab = await startPair();
    relay = await startRelay(lab.source.port, { rewrite });
    await withClient(lab.source, lab.sourceUser, lab.sourcePass, async (c) => {
      await c.append('INBOX', Buffer.from('From: a@example.org\r\nSubject: dated\r\nMessage-ID: <d1@example.org>\r\n\r\none\r\n'), ['\\Seen'], new Date('2019-09-30T10:00:00Z'));
      await c.append('INBOX', Buffer.from('From: a@example.org\r\nSubject: undatable\r\nMessage-ID: <d2@example.org>\r\n\r\ntwo\r\n'), ['\\Flagged'], new Date('2019-10-01T10:00:00Z'));
      await c.append('INBOX', Buffer.from('From: a@example.org\r\nSubject: dated too\r\nMessage-ID: <d3@example.org>\r\n\r\nthree\r\n'), [], new Date('2019-11-01T10:00:00Z'));
    });
  });
  after(async () => {
    await relay?.stop();
    await lab?.stop();
  });

  test('the message is copied with the target\'s date, the others exactly; a re-run copies nothing', async () => {
    const r = await run();
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 3);
    assert.match(r.stderr, /no readable INTERNALDATE: the copy takes the target's date/);
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    // Copied in source UID order: dated, undatable, dated too.
    const inbox = [...(tgt.get('INBOX') ?? [])].sort((a, b) => a.uid - b.uid);
    assert.equal(inbox.length, 3);
    assert.equal(inbox[0]!.internalDate, Date.parse('2019-09-30T10:00:00Z'));
    assert.equal(inbox[2]!.internalDate, Date.parse('2019-11-01T10:00:00Z'));
    assert.ok(inbox[1]!.internalDate > Date.parse('2025-01-01T00:00:00Z'), 'dated by the target on arrival');
    assert.deepEqual(inbox[1]!.flags, ['\\Flagged']);
    const again = await run();
    assert.equal(again.status, 0, again.stderr);
    assert.equal(again.json?.copied, 0);
  });
});
