/**
 * mailferry against the other servers admins run, not only Dovecot: real Cyrus IMAP and
 * real Courier IMAP (unpacked by scripts/lab-servers.sh, started by src/lab/cyrus.ts and
 * src/lab/courier.ts), each migrated with the real CLI to or from a lab Dovecot and
 * checked message by message: bytes, flags, keywords, internal dates; a second run copies
 * nothing; `verify` says in sync.
 *
 * - Cyrus source: classic namespace (`INBOX.` prefix, '.' separator), special-use folders
 *   with their RFC 6154 flags, logged in as `alice*admin` (SASL PLAIN authzid=alice,
 *   authcid=admin: Cyrus proxy authorization by an `admins:` admin).
 * - Cyrus target: Cyrus 3's own defaults (altnamespace, '/' separator).
 * - Courier source: `INBOX.` prefix, '.' separator, authdaemond + userdb; the user's own
 *   login, and an admin reaching the user's folders through Courier's virtual shared
 *   folders (`#shared.alice`) with --user-root.
 *
 * When a server cannot run here (not unpacked, no root for Courier's mount namespace…)
 * its tests are skipped with the reason printed — never silently.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { resolveSourceLogin } from '../src/auth/resolve.js';
import { SourceLoginError } from '../src/auth/errors.js';
import type { ImapEndpoint } from '../src/imap/endpoint.js';
import { type Corpus, type CorpusFolder, type CorpusMessage, defaultFolders, generateCorpus } from '../src/lab/corpus.js';
import { type CourierServer, courierUnavailableReason, startCourier } from '../src/lab/courier.js';
import { type CyrusServer, cyrusUnavailableReason, startCyrus } from '../src/lab/cyrus.js';
import { type DovecotServer, dovecotBinary, startDovecot } from '../src/lab/dovecot.js';
import { type FastLoadCorpus, createCorpusFolders, loadCorpusFast } from '../src/lab/fast-load.js';
import { runCli, type CliResult } from './helpers/cli.js';
import { TARGET_SPECIAL_USE, expectedTargetPath } from './helpers/lab-pair.js';
import { compareMailboxes, connect, type MailboxSnapshot, snapshot } from './helpers/mailbox-snapshot.js';
import { startRelay } from './helpers/relay.js';

const ALICE_PW = 'alice-pw-1';
const ADMIN_PW = 'admin-Secret-77';
const TARGET_PW = 'target-pw-2';

function skipReason(what: string, reason: string | null): string | false {
  if (dovecotBinary() === null) reason ??= 'dovecot is not installed';
  if (reason === null) return false;
  // Printed as well as reported by node:test, so a skip is never silent in CI logs.
  console.log(`# ${what} tests skipped: ${reason}`);
  return `${what} unavailable: ${reason}`;
}

const cyrusSkip = skipReason('Cyrus IMAP', cyrusUnavailableReason());
const courierSkip = skipReason('Courier IMAP', courierUnavailableReason());

/** A realistic mailbox, small enough for a ~90 s test file on 2 cores. */
function corpus(seed: number): Corpus {
  return generateCorpus({ seed, messages: 220, averageSize: 9_000, maxSize: 600_000 });
}

/** The corpus as a server with a personal prefix (`INBOX.`) must hold it: every folder under INBOX. */
function underInbox(c: Corpus): FastLoadCorpus {
  const move = (p: readonly string[]) => (p[0]!.toUpperCase() === 'INBOX' ? [...p] : ['INBOX', ...p]);
  return {
    folders: c.folders.map((f): CorpusFolder => ({ ...f, path: move(f.path) })),
    *messages(): Iterable<CorpusMessage> {
      for (const m of c.messages()) yield { ...m, folder: move(m.folder) };
    },
  };
}

/** Creates the folders and APPENDs every message, one at a time, through imapflow. */
async function appendAll(endpoint: ImapEndpoint, user: string, pass: string, c: FastLoadCorpus): Promise<number> {
  const client = await connect(endpoint, user, pass);
  try {
    await createCorpusFolders(client, c.folders, '.');
    let n = 0;
    for (const m of c.messages()) {
      await client.append(m.folder.join('.'), m.raw, m.flags, m.internalDate);
      n++;
    }
    return n;
  } finally {
    await client.logout();
  }
}

interface Side {
  endpoint: ImapEndpoint;
  /** The CLI's --…-user. */
  user: string;
  /** Its password. */
  password: string;
  /** For snapshots: the mailbox owner's own login. */
  owner: { user: string; pass: string };
}

function cliArgs(command: 'sync' | 'verify', source: Side, target: Side, db: string, extra: string[] = []): string[] {
  return [
    command,
    '--source', `127.0.0.1:${source.endpoint.port}`, '--source-user', source.user, '--source-tls', 'none',
    '--target', `127.0.0.1:${target.endpoint.port}`, '--target-user', target.user, '--target-tls', 'none',
    '--db', `sqlite:${db}`, '--json', ...extra,
  ];
}

function cli(command: 'sync' | 'verify', source: Side, target: Side, db: string, extra: string[] = []): Promise<CliResult> {
  return runCli(cliArgs(command, source, target, db, extra), { ...process.env, MAILFERRY_SOURCE_PASSWORD: source.password, MAILFERRY_TARGET_PASSWORD: target.password });
}

/** Source → target message by message (bytes, flags incl. keywords, internal date). */
async function assertExact(source: Side, target: Side, mapPath: (sourcePath: string) => string | null): Promise<number> {
  const src = await snapshot(source.endpoint, source.owner.user, source.owner.pass);
  const tgt = await snapshot(target.endpoint, target.owner.user, target.owner.pass);
  assert.deepEqual(compareMailboxes(src, tgt, mapPath), []);
  let n = 0;
  for (const [p, msgs] of src) if (mapPath(p) !== null) n += msgs.length;
  return n;
}

/** First run copies everything exactly, the second copies nothing, verify says in sync. */
async function migrateExactly(source: Side, target: Side, db: string, expected: number, mapPath: (p: string) => string | null, extra: string[] = []): Promise<void> {
  const first = await cli('sync', source, target, db, extra);
  assert.equal(first.status, 0, first.stderr);
  assert.equal(first.json?.copied, expected, first.stdout);
  assert.equal(first.json?.skipped, 0);
  assert.equal(await assertExact(source, target, mapPath), expected);

  const second = await cli('sync', source, target, db, extra);
  assert.equal(second.status, 0, second.stderr);
  assert.equal(second.json?.copied, 0, second.stdout);
  assert.equal(second.json?.flagsUpdated, 0, second.stdout);

  const verify = await cli('verify', source, target, db, ['--content', ...extra]);
  assert.equal(verify.status, 0, verify.stderr + verify.stdout);
  assert.equal(verify.json?.inSync, true, verify.stdout);
}

/** `INBOX.Sent Items` (personal prefix `INBOX.`) → where the default corpus's folder lands on a '/' target. */
function fromPrefixed(prefix: string, sep: string) {
  return (p: string): string => (p.toUpperCase() === 'INBOX' ? 'INBOX' : expectedTargetPath(p.startsWith(prefix) ? p.slice(prefix.length) : p, sep, '/'));
}

// ---------------------------------------------------------------------------------------
// Cyrus IMAP
// ---------------------------------------------------------------------------------------

describe('Cyrus IMAP', { skip: cyrusSkip }, () => {
  let cyrusSource: CyrusServer;
  let cyrusTarget: CyrusServer;
  let dovecotSource: DovecotServer;
  let dovecotTarget: DovecotServer;
  let dir: string;
  let cyrusTotal = 0;
  let dovecotTotal = 0;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mailferry-other-'));
    const users = [{ username: 'alice', password: ALICE_PW }];
    const admins = [{ username: 'admin', password: ADMIN_PW }];
    [cyrusSource, cyrusTarget, dovecotSource, dovecotTarget] = await Promise.all([
      // The corpus's special-use folders, created with their USE flag like a Cyrus user's client would.
      startCyrus({ name: 'source', users, admins, specialUse: { '\\Sent': 'Sent Items', '\\Drafts': 'Drafts', '\\Trash': 'Deleted Items', '\\Junk': 'Junk E-mail', '\\Archive': 'Archive' } }),
      startCyrus({ name: 'target', users: [{ username: 'alice', password: TARGET_PW }], admins, separator: '/', altNamespace: true, specialUse: { ...TARGET_SPECIAL_USE } }),
      startDovecot({ name: 'source', separator: '.', users }),
      startDovecot({ name: 'target', separator: '/', users: [{ username: 'alice', password: TARGET_PW }, { username: 'bob', password: TARGET_PW }], specialUse: { ...TARGET_SPECIAL_USE } }),
    ]);
    const login = { method: 'login' as const, username: 'alice', password: ALICE_PW };
    const [c, d] = await Promise.all([
      loadCorpusFast(cyrusSource.endpoint(), login, underInbox(corpus(11)), { separator: '.', connections: 2 }),
      loadCorpusFast(dovecotSource.endpoint(), login, corpus(12), { separator: '.', connections: 2, oneConnectionPerFolder: true }),
    ]);
    cyrusTotal = c.appended;
    dovecotTotal = d.appended;
  });
  after(async () => {
    await Promise.allSettled([cyrusSource?.stop(), cyrusTarget?.stop(), dovecotSource?.stop(), dovecotTarget?.stop()]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const cyrusSide = (user = 'alice*admin', password = ADMIN_PW): Side => ({ endpoint: cyrusSource.endpoint(), user, password, owner: { user: 'alice', pass: ALICE_PW } });
  const dovecotTargetSide = (user = 'alice'): Side => ({ endpoint: dovecotTarget.endpoint(), user, password: TARGET_PW, owner: { user, pass: TARGET_PW } });

  test('`alice*admin` logs in to Cyrus with SASL PLAIN authzid=alice, authcid=admin (proxy authorization), checked', async () => {
    const r = await resolveSourceLogin(cyrusSource.endpoint(), 'alice*admin', ADMIN_PW);
    assert.deepEqual(r.login, { method: 'plain', authcid: 'admin', authzid: 'alice', password: ADMIN_PW });
    assert.equal(r.method, 'AUTHENTICATE PLAIN with authorization identity');
    assert.equal(r.mailboxUser, 'alice');
    // A Cyrus admin has no mailbox of its own, and Cyrus lets it log in alone: the two differ.
    assert.equal(r.check, 'differs');
    // A user who is not an admin may not act as another: refused, not someone else's mail.
    await assert.rejects(resolveSourceLogin(cyrusSource.endpoint(), 'admin*alice', ALICE_PW), SourceLoginError);
  });

  test('Cyrus → Dovecot (`alice*admin`): exact, a second run copies nothing, verify in sync', async () => {
    await migrateExactly(cyrusSide(), dovecotTargetSide(), join(dir, 'cyrus-dovecot.sqlite'), cyrusTotal, fromPrefixed('INBOX.', '.'));
  });

  test('Cyrus → Dovecot incremental: new messages and flag changes on Cyrus (CONDSTORE) are mirrored', async () => {
    const s = await connect(cyrusSource.endpoint(), 'alice', ALICE_PW);
    try {
      await s.append('INBOX', Buffer.from('From: new@example.org\r\nSubject: later\r\nMessage-ID: <later1@x>\r\n\r\nhello\r\n'), ['\\Seen', '$Label1'], new Date('2024-05-01T10:00:00Z'));
      await s.mailboxOpen('INBOX.Archive.2019');
      await s.messageFlagsAdd('1:2', ['\\Flagged', '$Important']);
      await s.messageFlagsRemove('1', ['\\Seen']);
    } finally {
      await s.logout();
    }
    const r = await cli('sync', cyrusSide(), dovecotTargetSide(), join(dir, 'cyrus-dovecot.sqlite'));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 1, r.stdout);
    assert.equal(r.json?.flagsUpdated, 2, r.stdout);
    assert.equal(await assertExact(cyrusSide(), dovecotTargetSide(), fromPrefixed('INBOX.', '.')), cyrusTotal + 1);
  });

  // Cyrus keeps a renamed folder's UIDVALIDITY and UIDs, as Dovecot does: the rename is
  // recognised on the source (renamed-folders.ts) and done on the target the same way.
  test('Cyrus → Dovecot: a folder renamed on Cyrus is renamed on the target, nothing copied again', async () => {
    const s = await connect(cyrusSource.endpoint(), 'alice', ALICE_PW);
    try {
      await s.mailboxRename('INBOX.Archive.2019', 'INBOX.Archive.Year 2019');
    } finally {
      await s.logout();
    }
    const r = await cli('sync', cyrusSide(), dovecotTargetSide(), join(dir, 'cyrus-dovecot.sqlite'));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 0, r.stdout);
    assert.equal(await assertExact(cyrusSide(), dovecotTargetSide(), fromPrefixed('INBOX.', '.')), cyrusTotal + 1);
    const tgt = await snapshot(dovecotTarget.endpoint(), 'alice', TARGET_PW);
    assert.ok(!tgt.has('Archive/2019') && tgt.has('Archive/Year 2019'), [...tgt.keys()].join(', '));
  });

  // Two Cyrus folders made in one second share a UIDVALIDITY; fixed-format mail in them
  // has equal sizes. One of them deleted is not the other renamed: told apart by content.
  test('Cyrus → Dovecot: a deleted folder is not taken for a new one with its UIDVALIDITY and sizes', async () => {
    const alert = (box: string, n: number) => Buffer.from(`From: monitor@example.org\r\nSubject: alert ${box}${n}\r\nMessage-ID: <alert-${box}${n}@example.org>\r\n\r\ndisk ${box} at 9${n}%\r\n`);
    const s = await connect(cyrusSource.endpoint(), 'alice', ALICE_PW);
    try {
      await s.mailboxCreate('INBOX.AlertsA');
      await s.mailboxCreate('INBOX.AlertsB');
      for (const box of ['A', 'B']) for (let n = 1; n <= 4; n++) await s.append(`INBOX.Alerts${box}`, alert(box, n), [], new Date(Date.UTC(2024, 0, n)));
      const [a, b] = [await s.status('INBOX.AlertsA', { uidValidity: true }), await s.status('INBOX.AlertsB', { uidValidity: true })];
      assert.ok(a && b && a.uidValidity === b.uidValidity, 'the case under test: one UIDVALIDITY');
    } finally {
      await s.logout();
    }
    const db = join(dir, 'cyrus-alerts.sqlite');
    const bob = dovecotTargetSide('bob');
    const first = await cli('sync', cyrusSide(), bob, db, ['--exclude', 'AlertsB']);
    assert.equal(first.status, 0, first.stderr);
    const d = await connect(cyrusSource.endpoint(), 'alice', ALICE_PW);
    try {
      await d.mailboxDelete('INBOX.AlertsA');
    } finally {
      await d.logout();
    }
    // (Cyrus keeps the deleted folder as DELETED.user.alice.AlertsA.<id>, which the admin's
    // own view lists with messages it cannot open: the login check must not fail on it.)
    const r = await cli('sync', cyrusSide(), bob, db);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 4, 'AlertsB copied, not taken for AlertsA renamed');
    const tgt = await snapshot(dovecotTarget.endpoint(), 'bob', TARGET_PW);
    assert.equal(tgt.get('AlertsA')?.length, 4, 'the deleted folder\'s copy stays');
    assert.equal(tgt.get('AlertsB')?.length, 4);
    const verify = await cli('verify', cyrusSide(), bob, db);
    assert.equal(verify.json?.inSync, true, verify.stdout);
  });

  test('Dovecot → Cyrus (altnamespace, "/" separator): exact, a second run copies nothing, verify in sync', async () => {
    const source: Side = { endpoint: dovecotSource.endpoint(), user: 'alice', password: ALICE_PW, owner: { user: 'alice', pass: ALICE_PW } };
    const target: Side = { endpoint: cyrusTarget.endpoint(), user: 'alice', password: TARGET_PW, owner: { user: 'alice', pass: TARGET_PW } };
    await migrateExactly(source, target, join(dir, 'dovecot-cyrus.sqlite'), dovecotTotal, (p) => expectedTargetPath(p, '.', '/'));
  });

  test('Dovecot → Cyrus: a folder renamed on the source is renamed on Cyrus, nothing copied again', async () => {
    const source: Side = { endpoint: dovecotSource.endpoint(), user: 'alice', password: ALICE_PW, owner: { user: 'alice', pass: ALICE_PW } };
    const target: Side = { endpoint: cyrusTarget.endpoint(), user: 'alice', password: TARGET_PW, owner: { user: 'alice', pass: TARGET_PW } };
    const s = await connect(dovecotSource.endpoint(), 'alice', ALICE_PW);
    try {
      await s.mailboxRename('Archive.2019', 'Archive.Year 2019');
    } finally {
      await s.logout();
    }
    const r = await cli('sync', source, target, join(dir, 'dovecot-cyrus.sqlite'));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 0, r.stdout);
    assert.equal(await assertExact(source, target, (p) => expectedTargetPath(p, '.', '/')), dovecotTotal);
    const tgt = await snapshot(cyrusTarget.endpoint(), 'alice', TARGET_PW);
    assert.ok(!tgt.has('Archive/2019') && tgt.has('Archive/Year 2019'), [...tgt.keys()].join(', '));
  });

  // Cyrus answers a non-synchronising literal over its maxmessagesize with NO [TOOBIG]
  // and closes the connection (RFC 7888 §4 allows that); pipelined, the NO is usually lost
  // in the connection's reset, with the answers to everything in flight. Cyrus announces
  // the limit as APPENDLIMIT (RFC 7889), which the engine honours without sending the
  // message: the relay hides it, as a server without APPENDLIMIT would. Such a message is
  // sent alone until it is refused or has dropped the connection twice (drop-suspects.ts).
  test('Dovecot → Cyrus that drops the connection over a too-big message: it is skipped and named, the rest exact, in one run', async () => {
    const LIMIT = 300_000;
    const limited = await startCyrus({ name: 'target-limit', users: [{ username: 'alice', password: TARGET_PW }], separator: '/', altNamespace: true, specialUse: { ...TARGET_SPECIAL_USE }, extraConfig: `maxmessagesize: ${LIMIT}\n` });
    const relay = await startRelay(limited.port, { rewrite: (text) => text.replace(/ APPENDLIMIT=\d+/g, '') });
    try {
      const source: Side = { endpoint: dovecotSource.endpoint(), user: 'alice', password: ALICE_PW, owner: { user: 'alice', pass: ALICE_PW } };
      const target: Side = { endpoint: { ...limited.endpoint(), port: relay.port }, user: 'alice', password: TARGET_PW, owner: { user: 'alice', pass: TARGET_PW } };
      const src = await snapshot(source.endpoint, 'alice', ALICE_PW);
      const tooBig = [...src.values()].flat().filter((m) => m.size > LIMIT);
      assert.ok(tooBig.length >= 1, 'the corpus has a message over the limit');

      const r = await cli('sync', source, target, join(dir, 'dovecot-cyrus-limit.sqlite'));
      assert.equal(r.status, 1, r.stderr);
      assert.ok(Number(r.json?.reconnects) >= 1, r.stdout);
      assert.equal(r.json?.copied, dovecotTotal - tooBig.length, r.stdout);
      assert.equal(r.json?.skipped, tooBig.length, r.stdout);
      const skipped = r.json?.skippedItems as { reason: string; size: number }[];
      assert.deepEqual(skipped.map((x) => x.size).sort(), tooBig.map((m) => m.size).sort());
      // Cyrus's own NO when it reached us, else the dropped connections.
      for (const x of skipped) assert.match(x.reason, /\[TOOBIG\]|closed the connection each time this message was sent alone/, x.reason);

      const tgt = await snapshot(limited.endpoint(), 'alice', TARGET_PW);
      const rest: MailboxSnapshot = new Map([...src].map(([f, msgs]) => [f, msgs.filter((m) => m.size <= LIMIT)]));
      assert.deepEqual(compareMailboxes(rest, tgt, (p) => expectedTargetPath(p, '.', '/')), []);
    } finally {
      await relay.stop();
      await limited.stop();
    }
  });
});

// ---------------------------------------------------------------------------------------
// Courier IMAP
// ---------------------------------------------------------------------------------------

describe('Courier IMAP', { skip: courierSkip }, () => {
  let courier: CourierServer;
  let target: DovecotServer;
  let dir: string;
  let total = 0;
  const aliceOwn = (): Side => ({ endpoint: courier.endpoint(), user: 'alice', password: ALICE_PW, owner: { user: 'alice', pass: ALICE_PW } });
  const targetSide = (user: string): Side => ({ endpoint: target.endpoint(), user, password: TARGET_PW, owner: { user, pass: TARGET_PW } });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mailferry-other-'));
    [courier, target] = await Promise.all([
      startCourier({ name: 'source', users: [{ username: 'alice', password: ALICE_PW }], admins: [{ username: 'admin', password: ADMIN_PW }] }),
      startDovecot({ name: 'target', separator: '/', users: ['alice', 'alberta', 'astrid'].map((username) => ({ username, password: TARGET_PW })), specialUse: { ...TARGET_SPECIAL_USE } }),
    ]);
    // Without `Rechnungen 🧾`: see the astral-plane test below.
    const folders = defaultFolders().filter((f) => !/\p{Extended_Pictographic}/u.test(f.path.join('')));
    // imapflow rather than the pipelined loader, which (like the engine) sends modified UTF-7.
    total = await appendAll(courier.endpoint(), 'alice', ALICE_PW, underInbox(generateCorpus({ seed: 13, messages: 200, averageSize: 9_000, maxSize: 600_000, folders })));
  });
  after(async () => {
    await Promise.allSettled([courier?.stop(), target?.stop()]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  // Courier sends no UIDNEXT when a folder is opened (RFC 3501 §7.3.1 asks for it): the
  // engine takes it from the listing's STATUS (scan.ts).
  test('Courier → Dovecot (own login): exact, a second run copies nothing, verify in sync', async () => {
    await migrateExactly(aliceOwn(), targetSide('alice'), join(dir, 'courier-own.sqlite'), total, fromPrefixed('INBOX.', '.'));
  });

  // Courier gives a renamed folder a new UIDVALIDITY: recognised by content instead
  // (renamed-folders.ts), and every message linked to its copy, none copied again.
  test('Courier → Dovecot: a folder renamed on Courier (new UIDVALIDITY) is renamed on the target, nothing copied again', async () => {
    const s = await connect(courier.endpoint(), 'alice', ALICE_PW);
    try {
      await s.mailboxRename('INBOX.Archive.2019', 'INBOX.Archive.Year 2019');
    } finally {
      await s.logout();
    }
    const r = await cli('sync', aliceOwn(), targetSide('alice'), join(dir, 'courier-own.sqlite'));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 0, r.stdout);
    assert.equal(await assertExact(aliceOwn(), targetSide('alice'), fromPrefixed('INBOX.', '.')), total);
    const tgt = await snapshot(target.endpoint(), 'alice', TARGET_PW);
    assert.ok(!tgt.has('Archive/2019') && tgt.has('Archive/Year 2019') && tgt.has('Archive/Year 2019/Ärger & Co'), [...tgt.keys()].join(', '));
  });

  test('a Courier admin finds the user\'s folders under UserRoot `#shared.alice` (virtual shared folders, not listed by LIST "" "*")', async () => {
    const r = await resolveSourceLogin(courier.endpoint(), 'admin', ADMIN_PW, { userRoot: '#shared.alice' });
    assert.equal(r.method, 'LOGIN as admin with UserRoot');
    assert.equal(r.check, 'user-root-found');
    assert.equal(r.mailboxUser, 'alice');
    assert.ok(r.userRootFolders?.includes('#shared.alice'), `alice's INBOX is #shared.alice: ${r.userRootFolders?.join(', ')}`);
    assert.ok(r.userRootFolders?.includes('#shared.alice.Sent Items'), r.userRootFolders?.join(', '));
  });

  test(
    'Courier admin view → Dovecot (`admin` + --user-root "#shared.alice"): exact, a second run copies nothing, verify in sync',
    async () => {
      const admin: Side = { endpoint: courier.endpoint(), user: 'admin', password: ADMIN_PW, owner: { user: 'alice', pass: ALICE_PW } };
      await migrateExactly(admin, targetSide('alberta'), join(dir, 'courier-admin.sqlite'), total, fromPrefixed('INBOX.', '.'), ['--user-root', '#shared.alice']);
    },
  );

  test(
    'a folder name outside the BMP (`Rechnungen 🧾`) on Courier is migrated',
    async () => {
      const c = await connect(courier.endpoint(), 'alice', ALICE_PW);
      try {
        await c.mailboxCreate('INBOX.Rechnungen 🧾');
        await c.append('INBOX.Rechnungen 🧾', Buffer.from('From: shop@example.org\r\nSubject: Rechnung 🧾\r\n\r\nDanke\r\n'), ['\\Seen'], new Date('2023-03-01T09:00:00Z'));
      } finally {
        await c.logout();
      }
      const r = await cli('sync', aliceOwn(), targetSide('astrid'), join(dir, 'courier-astral.sqlite'));
      assert.equal(r.status, 0, r.stderr);
      assert.equal(await assertExact(aliceOwn(), targetSide('astrid'), fromPrefixed('INBOX.', '.')), total + 1);
    },
  );
});
