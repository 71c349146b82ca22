/**
 * `verify` compares folders on several connection pairs at once (verify.ts): the verdicts
 * are the ones one pair gives, in the same order, a missing message is found wherever it
 * is, and a server that allows fewer connections than asked for leaves fewer lanes, not
 * a failed verification.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { env, runCli, syncArgs } from './helpers/cli.js';
import { type LabPair, startPair } from './helpers/lab-pair.js';
import { connect } from './helpers/mailbox-snapshot.js';

const FOLDERS = 14;

describe('verify on several connections', () => {
  let lab: LabPair;
  const verify = (extra: string[]) => runCli(['verify', ...syncArgs(lab, lab.db, ['--json', ...extra])], env(lab));

  before(async () => {
    // Three sessions per user and address on the target.
    lab = await startPair({ target: { extraConfig: 'mail_max_userip_connections = 3' } });
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    for (let f = 0; f < FOLDERS; f++) {
      await c.mailboxCreate(`F${f}`);
      for (let n = 0; n <= f % 3; n++) {
        await c.append(`F${f}`, Buffer.from(`Subject: ${f}/${n}\r\nMessage-ID: <v${f}.${n}@example.org>\r\n\r\nbody ${f} ${n}\r\n`), n ? ['\\Seen'] : [], new Date(Date.UTC(2021, f % 12, n + 1)));
      }
    }
    await c.logout();
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json', '--connections', '1'])], env(lab));
    assert.equal(r.status, 0, r.stderr);
  });
  after(async () => lab?.stop());

  test('in sync, with the verdicts of one connection pair', async () => {
    const one = await verify(['--connections', '1']);
    const four = await verify(['--connections', '4']);
    assert.equal(four.status, 0, four.stderr);
    assert.equal(four.json?.inSync, true);
    assert.equal(four.json?.sourceMessages, 27);
    assert.deepEqual(four.json?.folders, one.json?.folders);
  });

  test('a target that refuses more sessions leaves fewer connection pairs, not a failure', async () => {
    // Two sessions held elsewhere (a user's mail client): verify's first pair takes the
    // third, the others are refused. (Logins racing each other can slip past Dovecot's
    // count, so they are not what this test relies on.)
    const held = [await connect(lab.target.endpoint(), lab.targetUser, lab.targetPass), await connect(lab.target.endpoint(), lab.targetUser, lab.targetPass)];
    try {
      const r = await verify(['--connections', '4', '--log-level', 'debug']);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /one connection pair fewer/, 'the target refused a session');
      assert.equal(r.json?.inSync, true);
      assert.equal(r.json?.sourceMessages, 27);
    } finally {
      await Promise.all(held.map((c) => c.logout()));
    }
  });

  test('a message missing in a late folder is found and named', async () => {
    const t = await connect(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    await t.mailboxOpen('F11');
    await t.messageDelete('1:*');
    await t.logout();
    const r = await verify(['--connections', '4']);
    assert.equal(r.status, 1);
    assert.equal(r.json?.inSync, false);
    assert.equal(r.json?.missing, 3);
    const folders = r.json?.folders as { target: string; missing: number }[];
    assert.deepEqual(folders.filter((f) => f.missing > 0).map((f) => f.target), ['F11']);
    assert.match(r.stderr, /MISSING F11 -> F11: source 3, target 0, 3 missing/);
  });
});

describe('verify: copies whose size and date the target changed', () => {
  let lab: LabPair;
  after(async () => lab?.stop());

  test('are found (Message-ID alone, or From/Subject/Date alone), not missing', async () => {
    lab = await startPair();
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await c.append('INBOX', Buffer.from('From: a@example.org\r\nSubject: with id\r\nMessage-ID: <d1@example.org>\r\nDate: Mon, 2 Mar 2020 10:00:00 +0000\r\n\r\nbody one\r\n'), [], new Date(Date.UTC(1970, 0, 1)));
    await c.append('INBOX', Buffer.from('From: b@example.org\r\nSubject: no id\r\nDate: Tue, 3 Mar 2020 10:00:00 +0000\r\n\r\nbody two\r\n'), [], new Date(Date.UTC(1970, 0, 1)));
    await c.logout();
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(r.status, 0, r.stderr);
    // A target that stores 1970 as "now" and rewrites line ends (Courier, Cyrus): every
    // copy's INTERNALDATE and RFC822.SIZE read through this relay differ from the source's.
    const { startRelay } = await import('./helpers/relay.js');
    const relay = await startRelay(lab.target.port, {
      rewrite: (text) => text.replace(/INTERNALDATE "[^"]*"/g, 'INTERNALDATE "28-Nov-2026 10:00:00 +0000"').replace(/RFC822\.SIZE (\d+)/g, (_, n: string) => `RFC822.SIZE ${Number(n) + 2}`),
    });
    try {
      const v = await runCli(['verify', ...syncArgs(lab, lab.db, ['--json'], { targetPort: relay.port })], env(lab));
      assert.equal(v.status, 0, v.stdout + v.stderr);
      const inbox = (v.json?.folders as { target: string; missing: number; dateDifferences: number; changedCopies: number }[]).find((f) => f.target === 'INBOX')!;
      // Read, their bytes are those of the source, only listed otherwise: not changed copies
      // (sync-faults.test.ts has copies whose bytes a server did change).
      assert.deepEqual([inbox.missing, inbox.dateDifferences, inbox.changedCopies], [0, 2, 0]);
    } finally {
      await relay.stop();
    }
  });
});

describe('verify: a copy cut short or edited on the target', () => {
  let lab: LabPair;
  after(async () => lab?.stop());

  test('is missing, named with its subject and the copy that is not it; --content also sees an edit of the same size', async () => {
    lab = await startPair();
    const when = new Date(Date.UTC(2021, 4, 1));
    const full = (id: string, text: string) => Buffer.from(`From: a@example.org\r\nSubject: report ${id}\r\nMessage-ID: <${id}@example.org>\r\nDate: Mon, 3 May 2021 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n${text}\r\n`);
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await c.append('INBOX', full('cut', 'line of the report\r\n'.repeat(40)), [], when);
    await c.append('INBOX', full('edited', 'Grüße von Jürgen Müller'), [], when);
    await c.append('INBOX', full('kept', 'nothing changes here'), [], when);
    await c.logout();
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(r.status, 0, r.stderr);
    // The target's copies replaced: one cut short (same headers and date), one edited to the same size.
    const t = await connect(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    await t.mailboxOpen('INBOX');
    const uids = (await t.fetchAll('1:*', { uid: true, envelope: true })).filter((m) => /cut|edited/.test(m.envelope?.subject ?? '')).map((m) => m.uid);
    await t.messageDelete(uids.join(','), { uid: true });
    await t.append('INBOX', full('cut', 'line of the report\r\n'.repeat(3)), [], when);
    await t.append('INBOX', full('edited', 'Grüße von Jörgen Möller'), [], when);
    await t.logout();

    const plain = await runCli(['verify', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(plain.status, 1, plain.stdout + plain.stderr);
    assert.match(plain.stderr, /missing: INBOX uid 1 "report cut", <cut@example\.org>, \d+ bytes, .*other content: cut short or changed/);
    const inbox = (plain.json?.folders as { target: string; missing: number; extra: number; changedCopies: number }[]).find((f) => f.target === 'INBOX')!;
    assert.deepEqual([inbox.missing, inbox.extra, inbox.changedCopies], [1, 1, 0]);

    const content = await runCli(['verify', ...syncArgs(lab, lab.db, ['--json', '--content'])], env(lab));
    assert.equal(content.status, 1, content.stdout + content.stderr);
    assert.equal(content.json?.missing, 2, content.stderr);
    assert.match(content.stderr, /"report edited"/);
  });
});

describe('verify: two messages with one Message-ID whose sizes the target changed', () => {
  let lab: LabPair;
  after(async () => lab?.stop());

  test('are paired with their own copies by content, whatever order the target holds them in', async () => {
    lab = await startPair();
    const when = new Date(Date.UTC(2021, 5, 1));
    // A mailing list's copy (with its footer) and the CC copy of one message.
    const base = 'From: a@example.org\r\nSubject: minutes\r\nMessage-ID: <same@example.org>\r\nDate: Tue, 1 Jun 2021 10:00:00 +0000\r\n\r\nThe minutes.\r\n';
    const list = `${base}-- \r\nlist footer\r\n`;
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    await c.mailboxCreate('Minutes');
    await c.append('Minutes', Buffer.from(list), [], when);
    await c.append('Minutes', Buffer.from(base), [], when);
    await c.logout();
    // The target holds them in the other order, each with line ends added (as Courier does): other sizes.
    const t = await connect(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    await t.mailboxCreate('Minutes');
    await t.append('Minutes', Buffer.from(`${base}\r\n\r\n`), [], when);
    await t.append('Minutes', Buffer.from(`${list}\r\n`), [], when);
    await t.logout();
    const v = await runCli(['verify', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    const f = (v.json?.folders as { target: string; missing: number; changedCopies: number }[]).find((x) => x.target === 'Minutes')!;
    assert.deepEqual([f.missing, f.changedCopies], [0, 2], v.stderr);
    assert.equal(v.status, 0, v.stderr);
  });
});
