/**
 * Into GNU Mailutils imap4d, an mbox server that changes what it stores: it serves its
 * bookkeeping header fields (`X-IMAPbase`, `X-UID`, `Status`) as part of each message,
 * writes an empty field back with a space, gives an empty folder a new UIDVALIDITY each
 * time it is opened, echoes folder names unquoted in STATUS, and has no UIDPLUS (src/lab/
 * mailutils.ts). Every message must still arrive exactly once: a second run copies
 * nothing, and a run killed with answers lost is recovered without a duplicate.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { ImapFlow } from 'imapflow';
import { type DovecotServer, startDovecot } from '../src/lab/dovecot.js';
import { type MailutilsServer, mailutilsUnavailableReason, startMailutils } from '../src/lab/mailutils.js';
import { CLI, type Logins, env, runCli, syncArgs } from './helpers/cli.js';
import { journalCounts } from './helpers/journal.js';
import { startRelay } from './helpers/relay.js';
import { connect } from './helpers/mailbox-snapshot.js';

const unavailable = mailutilsUnavailableReason();
if (unavailable) console.log(`# GNU Mailutils tests skipped: ${unavailable}`);

const FOLDERS = ['INBOX', 'Sent Items', 'Old Stuff (2010)', 'Ärger & Co'];

function message(folder: string, n: number): Buffer {
  // An empty header field (imap4d writes it back with a space) and no Message-ID on some.
  const id = n % 5 === 0 ? '' : `Message-ID: <m${n}.${folder.length}@example.org>\r\n`;
  return Buffer.from(`From: a${n}@example.org\r\nSubject: ${folder} ${n}\r\n${id}X-Empty:\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n${'line of text\r\n'.repeat(20 + (n % 7) * 40)}`);
}

/** Messages per folder on `c`'s server, and the multiset of their Subject lines. */
async function contents(c: ImapFlow): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (const f of FOLDERS) {
    const mb = await c.mailboxOpen(f, { readOnly: true }).catch(() => null);
    const subjects = mb && mb.exists > 0 ? (await c.fetchAll('1:*', { envelope: true })).map((m) => m.envelope?.subject ?? '') : [];
    out.set(f, subjects.sort());
  }
  return out;
}

describe('GNU Mailutils imap4d as the target', { skip: unavailable ? `imap4d unavailable: ${unavailable}` : false }, () => {
  let source: DovecotServer;
  let target: MailutilsServer;
  let dir: string;
  const pair = (user: string): Logins => ({ source, target, sourceUser: 'alice', sourcePass: 'source-pw-1', targetUser: target.login(user), targetPass: 'target-pw-2' });
  let expected: Map<string, string[]>;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mailferry-mailutils-'));
    source = await startDovecot({ name: 'source', separator: '.', users: [{ username: 'alice', password: 'source-pw-1' }] });
    target = await startMailutils({ name: 'target', users: ['alice', 'bob'].map((username) => ({ username, password: 'target-pw-2' })) });
    const c = await connect(source.endpoint(), 'alice', 'source-pw-1');
    for (const f of FOLDERS) {
      if (f !== 'INBOX') await c.mailboxCreate(f);
      for (let n = 0; n < (f === 'INBOX' ? 60 : 8); n++) await c.append(f, message(f, n), n % 2 ? ['\\Seen'] : [], new Date(Date.UTC(2020, 0, 1 + n)));
    }
    expected = await contents(c);
    await c.logout();
  });
  after(async () => {
    await Promise.allSettled([source?.stop(), target?.stop()]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('every message once; a second run copies nothing', async () => {
    const db = join(dir, 'alice.sqlite');
    const first = await runCli(['sync', ...syncArgs(pair('alice'), db, ['--json'])], env(pair('alice')));
    assert.equal(first.status, 0, first.stderr);
    assert.equal(first.json?.copied, 84);
    const again = await runCli(['sync', ...syncArgs(pair('alice'), db, ['--json'])], env(pair('alice')));
    assert.equal(again.status, 0, again.stderr);
    assert.equal(again.json?.copied, 0, again.stderr);
    const t = await connect(target.endpoint(), target.login('alice'), 'target-pw-2');
    assert.deepEqual(await contents(t), expected);
    await t.logout();
    // Every copy has other bytes than its original; verify still finds each, also those
    // without a Message-ID, and says so.
    const v = await runCli(['verify', ...syncArgs(pair('alice'), db, ['--json'])], env(pair('alice')));
    assert.equal(v.status, 0, v.stderr);
    assert.equal(v.json?.inSync, true);
    assert.match(v.stderr, /INBOX -> INBOX: source 60, target 60, 60 stored with other bytes by the target's server/);
  });

  test('as the source (after the first test filled it): every folder counted, copied once, in sync', async () => {
    // STATUS names echoed unquoted: before, `found` and --dry-run counted 0 for them.
    const into = await startDovecot({ name: 'target2', separator: '/', users: [{ username: 'carol', password: 'carol-pw-3' }] });
    try {
      const logins: Logins = { source: target, target: into, sourceUser: target.login('alice'), sourcePass: 'target-pw-2', targetUser: 'carol', targetPass: 'carol-pw-3' };
      const db = join(dir, 'from-mailutils.sqlite');
      const dry = await runCli(['sync', ...syncArgs(logins, db, ['--json', '--dry-run'])], env(logins));
      assert.equal(dry.status, 0, dry.stderr);
      assert.equal(dry.json?.found, 84);
      assert.deepEqual((dry.json?.folderList as { source: string; found: number }[]).find((f) => f.source === 'Sent Items')?.found, 8);
      const first = await runCli(['sync', ...syncArgs(logins, db, ['--json'])], env(logins));
      assert.equal(first.status, 0, first.stderr);
      assert.deepEqual([first.json?.found, first.json?.copied], [84, 84]);
      const again = await runCli(['sync', ...syncArgs(logins, db, ['--json'])], env(logins));
      assert.deepEqual([again.status, again.json?.copied], [0, 0], again.stderr);
      const v = await runCli(['verify', ...syncArgs(logins, db, ['--json', '--content'])], env(logins));
      assert.equal(v.status, 0, v.stderr);
      const t = await connect(into.endpoint(), 'carol', 'carol-pw-3');
      assert.deepEqual(await contents(t), expected);
      await t.logout();

      // Mail delivered into the mbox file as an MTA does, then a client flags a message:
      // imap4d rewrites the folder under a new UIDVALIDITY, every message with other
      // bookkeeping fields. Its copies are linked by loose digest, not copied again.
      const c0 = await connect(target.endpoint(), target.login('alice'), 'target-pw-2');
      const before = (await c0.mailboxOpen('INBOX', { readOnly: true })).uidValidity;
      await c0.logout();
      appendFileSync(join(target.dir, 'home', 'alice', 'INBOX'), 'From mta@example.net Mon Jun  3 10:00:00 2024\nFrom: mta@example.net\nSubject: INBOX delivered\nMessage-ID: <delivered@example.net>\n\nhello\n\n');
      // imap4d's new UIDVALIDITY is the time in seconds.
      await new Promise((r) => setTimeout(r, 1100));
      const c = await connect(target.endpoint(), target.login('alice'), 'target-pw-2');
      await c.mailboxOpen('INBOX');
      await c.messageFlagsAdd('1', ['\\Flagged']);
      await c.logout();
      const c2 = await connect(target.endpoint(), target.login('alice'), 'target-pw-2');
      const now = (await c2.mailboxOpen('INBOX', { readOnly: true })).uidValidity;
      await c2.logout();
      assert.notEqual(now, before, 'imap4d gave INBOX a new UIDVALIDITY');
      const after = await runCli(['sync', ...syncArgs(logins, db, ['--json'])], env(logins));
      assert.equal(after.status, 0, after.stderr);
      assert.deepEqual([after.json?.copied, after.json?.alreadyOnTarget], [1, 60]);
      const t2 = await connect(into.endpoint(), 'carol', 'carol-pw-3');
      assert.deepEqual(await contents(t2), new Map([...expected, ['INBOX', [...expected.get('INBOX')!, 'INBOX delivered'].sort()]]));
      await t2.logout();
    } finally {
      await into.stop();
    }
  });

  test('killed while the server stored messages whose answers were lost: no duplicate', async () => {
    const db = join(dir, 'bob.sqlite');
    // Every run through the relay: the journal keys the target by host and port.
    const relay = await startRelay(target.port);
    const viaRelay = { ...pair('bob'), target: { port: relay.port } };
    try {
      const child = spawn(process.execPath, [CLI, 'sync', ...syncArgs(viaRelay, db)], { env: env(viaRelay), stdio: 'ignore' });
      const gone = new Promise((r) => child.on('close', r));
      // Once some messages are copied, the server's answers are held back: what it stores
      // from then on is never confirmed, and the run is killed with those rows pending.
      await new Promise<void>((resolve) => {
        const poll = setInterval(() => {
          if (journalCounts(db).copied < 10) return;
          clearInterval(poll);
          relay.hold(true);
          setTimeout(resolve, 700);
        }, 10);
      });
      child.kill('SIGKILL');
      await gone;
      relay.discard();
      const pending = journalCounts(db).pending;
      assert.ok(pending > 0, 'the kill left APPENDs whose answers were lost');
      const r = await runCli(['sync', ...syncArgs(viaRelay, db, ['--json'])], env(viaRelay));
      assert.equal(r.status, 0, r.stderr);
      assert.equal(journalCounts(db).pending, 0);
      const t = await connect(target.endpoint(), target.login('bob'), 'target-pw-2');
      assert.deepEqual(await contents(t), expected);
      await t.logout();
    } finally {
      await relay.stop();
    }
  });

  test('as the source, a folder renamed after a client touched it is renamed on the target, not copied again', async () => {
    // bob's mailbox, filled by the test before. A flag set rewrites every message of the
    // folder (its mbox fields), so neither sizes nor digests match the journal any more.
    const into = await startDovecot({ name: 'target3', separator: '/', users: [{ username: 'dave', password: 'dave-pw-4' }] });
    try {
      const logins: Logins = { source: target, target: into, sourceUser: target.login('bob'), sourcePass: 'target-pw-2', targetUser: 'dave', targetPass: 'dave-pw-4' };
      const db = join(dir, 'rename.sqlite');
      const first = await runCli(['sync', ...syncArgs(logins, db, ['--json'])], env(logins));
      assert.deepEqual([first.status, first.json?.copied], [0, 84], first.stderr);
      const c = await connect(target.endpoint(), target.login('bob'), 'target-pw-2');
      await c.mailboxOpen('Old Stuff (2010)');
      await c.messageFlagsAdd('1', ['\\Flagged']);
      await c.mailboxClose();
      await c.mailboxRename('Old Stuff (2010)', 'Old Stuff 2010');
      await c.logout();
      const after = await runCli(['sync', ...syncArgs(logins, db, ['--json'])], env(logins));
      assert.equal(after.status, 0, after.stderr);
      assert.equal(after.json?.copied, 0);
      const t = await connect(into.endpoint(), 'dave', 'dave-pw-4');
      const names = (await t.list()).map((f) => f.path);
      const moved = (await t.mailboxOpen('Old Stuff 2010', { readOnly: true })).exists;
      await t.logout();
      assert.ok(!names.includes('Old Stuff (2010)'), names.join(', '));
      assert.equal(moved, 8);
    } finally {
      await into.stop();
    }
  });
});
