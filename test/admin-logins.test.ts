/**
 * SPEC §2 admin credentials on the source, against real Dovecot servers: each admin form
 * migrates a user's mailbox exactly, and a session that is not the user's fails that
 * user instead of migrating the wrong mail.
 *
 * Servers (all loopback, all throwaway):
 * - `masters` ('.'): master users — `user*admin` with SASL PLAIN authzid (RFC 4616), and
 *   the LOGIN fallback through a proxy that hides AUTH=PLAIN.
 * - `courier` ('.'): a public namespace `#shared.` (RFC 2342's "shared namespace") for a
 *   Courier-style UserRoot.
 * - `emulated` ('/'): a checkpassword passdb that understands Exchange `Domain/Admin/User`
 *   and Mirapoint `#user@domain#admin#` strings.
 * - `shared` ('/'): a `users/<name>/` other-users namespace (ACL plugin) for UserRoot.
 * - `ignoring` ('.'): puts master-user sessions into the master's own mailbox, i.e. a
 *   server that ignores the requested user.
 * - `target` ('/'): one fresh mailbox per migration.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ImapFlow } from 'imapflow';
import { pino } from 'pino';
import { adminAloneLogin, loginPlan, parseSourceUserName } from '../src/auth/credentials.js';
import { CredentialFormatError, ImpersonationError, SourceLoginError, UserRootError, scrubSecrets } from '../src/auth/errors.js';
import { checkTargetSession } from '../src/auth/target-check.js';
import { compareFingerprints, type MailboxFingerprint } from '../src/auth/fingerprint.js';
import { resolveSourceLogin, SourceLoginCache, type ResolvedSourceLogin } from '../src/auth/resolve.js';
import type { ImapEndpoint } from '../src/imap/endpoint.js';
import { credentialAccepted, ImapAuthError, ImapConnectError } from '../src/imap/errors.js';
import { RawConnection, quoteString } from '../src/imap/raw-connection.js';
import { type CorpusFolder, generateCorpus, loadCorpus } from '../src/lab/corpus.js';
import { type DovecotServer, dovecotBinary, startDovecot } from '../src/lab/dovecot.js';
import { openStore, type Store } from '../src/store/open.js';
import { syncMailbox } from '../src/sync/mailbox-sync.js';
import { runCli } from './helpers/cli.js';
import { compareMailboxes, snapshot, type MailboxSnapshot } from './helpers/mailbox-snapshot.js';

const noDovecot = dovecotBinary() === null ? 'dovecot is not installed' : false;

const ADMIN_PW = 'admin-Secret-4711';
const ALICE_PW = 'alice-own-pw';
const TARGET_PW = 'target-pw';

// ---------------------------------------------------------------------------------------
// Recognising the forms and choosing the login: pure, no server
// ---------------------------------------------------------------------------------------

describe('admin logins: UserName forms', () => {
  test('each SPEC §2 form is recognised', () => {
    assert.deepEqual(parseSourceUserName('alice@example.org'), { kind: 'user', user: 'alice@example.org' });
    assert.deepEqual(parseSourceUserName('alice*admin'), { kind: 'sasl-admin', raw: 'alice*admin', user: 'alice', admin: 'admin' });
    assert.deepEqual(parseSourceUserName('CORP/admin/alice'), { kind: 'exchange', raw: 'CORP/admin/alice', domain: 'CORP', admin: 'admin', user: 'alice' });
    assert.deepEqual(parseSourceUserName('#alice@example.org#admin#'), { kind: 'mirapoint', raw: '#alice@example.org#admin#', user: 'alice@example.org', admin: 'admin' });
    assert.deepEqual(parseSourceUserName('admin', { userRoot: '/users/alberta' }), { kind: 'user-root', admin: 'admin', userRoot: '/users/alberta' });
  });

  test('near misses are plain user names, sent verbatim', () => {
    for (const name of ['CORP/admin', 'A/B/C/D', 'a*b*c', '*admin', 'alice*', '#alice#admin#', 'CORP//alice']) {
      assert.equal(parseSourceUserName(name).kind, 'user', name);
    }
  });

  test('unusable names and combinations are refused', () => {
    for (const name of ['', ' alice', 'alice\n']) assert.throws(() => parseSourceUserName(name), CredentialFormatError);
    assert.throws(() => parseSourceUserName('alice*admin', { userRoot: '/users/alice' }), /admin's own login/);
    assert.throws(() => parseSourceUserName('admin', { userRoot: '//' }), /names no folder/);
  });
});

describe('admin logins: choosing the mechanism', () => {
  const sasl = parseSourceUserName('alice*admin');
  test('user*admin: SASL PLAIN with authorization identity when AUTH=PLAIN is offered', () => {
    const [a, ...rest] = loginPlan(sasl, 'pw', ['IMAP4rev1', 'auth=plain', 'AUTH=LOGIN']);
    assert.equal(rest.length, 0, 'one attempt: a second one would double a wrong password’s failures');
    assert.deepEqual(a?.login, { method: 'plain', authcid: 'admin', authzid: 'alice', password: 'pw' });
  });
  test('user*admin: LOGIN with the string verbatim when PLAIN is not offered', () => {
    assert.deepEqual(loginPlan(sasl, 'pw', ['IMAP4rev1', 'AUTH=LOGIN'])[0]?.login, { method: 'login', username: 'alice*admin', password: 'pw' });
    assert.deepEqual(loginPlan(sasl, 'pw', ['IMAP4rev1'])[0]?.method, 'LOGIN with master-user separator');
  });
  test('user*admin: no way in when neither PLAIN nor LOGIN is allowed', () => {
    assert.deepEqual(loginPlan(sasl, 'pw', ['IMAP4rev1', 'LOGINDISABLED', 'AUTH=GSSAPI']), []);
  });
  test('an explicit preference overrides the capabilities', () => {
    assert.equal(loginPlan(sasl, 'pw', ['AUTH=PLAIN'], 'login')[0]?.login.method, 'login');
    assert.equal(loginPlan(sasl, 'pw', [], 'plain')[0]?.login.method, 'plain');
  });
  test('Exchange, Mirapoint, UserRoot and plain users: LOGIN, whatever the server offers', () => {
    for (const [name, root, expected] of [
      ['CORP/admin/alice', undefined, 'CORP/admin/alice'],
      ['#alice@example.org#admin#', undefined, '#alice@example.org#admin#'],
      ['admin', '/users/alberta', 'admin'],
      ['alice', undefined, 'alice'],
    ] as const) {
      const [a, ...rest] = loginPlan(parseSourceUserName(name, { userRoot: root }), 'pw', ['AUTH=PLAIN']);
      assert.equal(rest.length, 0);
      assert.deepEqual(a?.login, { method: 'login', username: expected, password: 'pw' });
    }
  });
  test('the admin alone logs in with the same mechanism, without the user', () => {
    assert.deepEqual(adminAloneLogin(sasl, { method: 'plain', authcid: 'admin', authzid: 'alice', password: 'pw' }), { method: 'plain', authcid: 'admin', password: 'pw' });
    assert.deepEqual(adminAloneLogin(parseSourceUserName('CORP/admin/alice'), { method: 'login', username: 'CORP/admin/alice', password: 'pw' }), { method: 'login', username: 'CORP/admin', password: 'pw' });
    assert.equal(adminAloneLogin(parseSourceUserName('alice'), { method: 'login', username: 'alice', password: 'pw' }), null);
  });
});

describe('admin logins: telling the user’s mailbox from the admin’s', () => {
  const fp = (folders: Record<string, string>, messages: number, items: string[] | null): MailboxFingerprint => ({
    folders: new Map(Object.entries(folders)),
    messages,
    sample: items ? { folder: 'INBOX', items } : null,
  });
  test('same folders, UIDVALIDITYs and first messages: the same mailbox', () => {
    assert.equal(compareFingerprints(fp({ INBOX: '1', Sent: '2' }, 5, ['1/10/100', '2/20/200']), fp({ INBOX: '1', Sent: '2' }, 7, ['1/10/100', '2/20/200'])), 'same');
  });
  test('UIDVALIDITYs created in the same second are not enough to call it the same', () => {
    assert.equal(compareFingerprints(fp({ INBOX: '1' }, 2, ['1/10/100', '2/20/200']), fp({ INBOX: '1' }, 2, ['1/10/101', '2/20/200'])), 'differs');
  });
  test('different folders: different mailboxes', () => {
    assert.equal(compareFingerprints(fp({ INBOX: '1' }, 1, ['1/1/1']), fp({ INBOX: '1', Sent: '3' }, 1, ['1/1/1'])), 'differs');
  });
  test('no admin session, or two empty mailboxes', () => {
    assert.equal(compareFingerprints(fp({ INBOX: '1' }, 1, ['1/1/1']), null), 'admin-cannot-log-in-alone');
    assert.equal(compareFingerprints(fp({ INBOX: '1' }, 0, null), fp({ INBOX: '1' }, 0, null)), 'both-empty');
  });
  test('secrets are scrubbed from server texts, also base64-encoded', () => {
    const b64 = Buffer.from(ADMIN_PW).toString('base64');
    assert.equal(scrubSecrets(`NO ${ADMIN_PW} and ${b64}`, [ADMIN_PW]), 'NO *** and ***');
  });
  test('secrets are scrubbed in the forms servers echo: IMAP-quoted, UTF-8 read as Latin-1, inside a SASL PLAIN response', () => {
    const pw = 'he said "hi" \\ pässwörd';
    const quoted = pw.replace(/[\\"]/g, '\\$&');
    assert.equal(scrubSecrets(`BAD 1 LOGIN "alice" "${quoted}"`, [pw]), 'BAD 1 LOGIN "alice" "***"');
    assert.equal(scrubSecrets(`NO ${Buffer.from(pw, 'utf8').toString('latin1')} refused`, [pw]), 'NO *** refused');
    // Every alignment of the password inside the PLAIN response's base64.
    for (const authzid of ['alice', 'al', 'a']) {
      const plain = Buffer.from(`${authzid}\0master2\0${pw}`).toString('base64');
      const out = scrubSecrets(`NO [AUTHENTICATIONFAILED] AUTHENTICATE PLAIN ${plain} failed`, [pw]);
      assert.equal(out, 'NO [AUTHENTICATIONFAILED] AUTHENTICATE PLAIN *** failed', authzid);
    }
    assert.equal(scrubSecrets('NO [AUTHENTICATIONFAILED] Authentication failed.', [pw]), 'NO [AUTHENTICATIONFAILED] Authentication failed.');
  });
  test('a password made of words, or equal to the user name, is not blanked where that would tell it', () => {
    const text = 'login failed for plain user "alice" via LOGIN: NO [AUTHENTICATIONFAILED] Authentication failed. (wrong user name or password)';
    for (const pw of ['user name', 'or password', 'Authentication failed', 'failed.', 'LOGIN:']) assert.equal(scrubSecrets(text, [pw]), text, pw);
    assert.equal(scrubSecrets(text, ['alice'], ['alice']), text);
    assert.equal(scrubSecrets('BAD "user name" echoed', ['user name']), 'BAD "***" echoed');
  });

  test('a password that is a word is not blanked in mailferry\'s own wording, which would tell what it is', () => {
    for (const pw of ['name', 'password', 'wrong']) {
      assert.equal(scrubSecrets('wrong user name or password (the server said: NO [AUTHENTICATIONFAILED] Authentication failed.)', [pw]), 'wrong user name or password (the server said: NO [AUTHENTICATIONFAILED] Authentication failed.)');
      assert.equal(scrubSecrets(`BAD 1 LOGIN "alice" "${pw}" and a2 LOGIN alice ${pw}`, [pw]), 'BAD 1 LOGIN "alice" "***" and a2 LOGIN alice ***');
      const plain = Buffer.from(`\0alice\0${pw}`).toString('base64');
      assert.equal(scrubSecrets(`NO AUTHENTICATE PLAIN ${plain}`, [pw]), 'NO AUTHENTICATE PLAIN ***');
    }
  });
});

// ---------------------------------------------------------------------------------------
// Against real Dovecot
// ---------------------------------------------------------------------------------------

/** A few folders with special use, nesting, non-ASCII and an empty one. */
const FOLDERS: CorpusFolder[] = [
  { path: ['INBOX'], weight: 10 },
  { path: ['INBOX', 'Receipts'], weight: 2 },
  { path: ['Sent Items'], specialUse: '\\Sent', weight: 5 },
  { path: ['Archive'], weight: 1 },
  { path: ['Archive', '2019'], weight: 2 },
  { path: ['Ärger & Co'], weight: 1 },
  { path: ['Empty'], weight: 0 },
];

async function connect(endpoint: ImapEndpoint, user: string, pass: string): Promise<ImapFlow> {
  const c = new ImapFlow({ host: endpoint.host, port: endpoint.port, secure: false, doSTARTTLS: false, auth: { user, pass, loginMethod: 'LOGIN' }, logger: false, disableAutoIdle: true });
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

async function load(server: DovecotServer, user: string, pass: string, seed: number, messages: number, folders = FOLDERS): Promise<number> {
  const c = await connect(server.endpoint(), user, pass);
  try {
    const corpus = generateCorpus({ seed, messages, averageSize: 3000, maxSize: 40_000, folders });
    return (await loadCorpus(c, corpus, { separator: server.separator })).appended;
  } finally {
    await c.logout();
  }
}

/** Owner grants `who` lookup+read on each of their folders (RFC 4314 SETACL); returns the folders. */
async function share(server: DovecotServer, owner: string, pass: string, who: string): Promise<string[]> {
  const c = await connect(server.endpoint(), owner, pass);
  const folders = (await c.list()).filter((f) => !f.flags.has('\\Noselect') && !f.flags.has('\\NonExistent')).map((f) => f.path);
  await c.logout();
  const raw = await RawConnection.connect(server.endpoint());
  try {
    await raw.login({ method: 'login', username: owner, password: pass });
    for (const f of folders) {
      const r = await raw.send([`SETACL ${quoteString(f)} ${quoteString(who)} lr`]).done;
      assert.equal(r.status, 'OK', `SETACL ${f}: ${r.text}`);
    }
  } finally {
    await raw.logout().catch(() => raw.destroy());
  }
  return folders;
}

/**
 * A loopback proxy that removes SASL mechanisms (e.g. AUTH=PLAIN) from the capabilities a
 * client sees before logging in — a server that does not offer them (Dovecot cannot be
 * configured so: its LOGIN command runs through the PLAIN mechanism). After the login's
 * tagged answer it passes bytes through untouched.
 */
async function hideMechanisms(port: number, hidden: string[]): Promise<{ port: number; close(): Promise<void> }> {
  const pattern = new RegExp(` (?:${hidden.map((h) => h.replace(/[^A-Za-z0-9]/g, '\\$&')).join('|')})(?=[\\s\\]])`, 'gi');
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    sockets.add(client).add(upstream);
    let loginTag: string | null = null;
    let passThrough = false;
    let pending = '';
    client.on('data', (d: Buffer) => {
      const m = /^(\S+) (LOGIN|AUTHENTICATE) /i.exec(d.toString('latin1'));
      if (m && !loginTag) loginTag = m[1]!;
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      if (passThrough) return void client.write(d);
      pending += d.toString('latin1');
      let nl: number;
      while (!passThrough && (nl = pending.indexOf('\r\n')) >= 0) {
        let line = pending.slice(0, nl + 2);
        pending = pending.slice(nl + 2);
        if (/CAPABILITY/i.test(line)) line = line.replace(pattern, '');
        client.write(Buffer.from(line, 'latin1'));
        if (loginTag && line.startsWith(`${loginTag} `)) passThrough = true;
      }
      if (passThrough && pending) {
        client.write(Buffer.from(pending, 'latin1'));
        pending = '';
      }
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address() as net.AddressInfo;
  return {
    port: addr.port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/**
 * The checkpassword passdb of the `emulated` server: Exchange and Mirapoint admin strings
 * with the admin's password open alice's mailbox; `admin` and `CORP/admin` open the
 * admin's own. Dovecot lower-cases names before the passdb (auth_username_format %Lu).
 */
const CHECKPASSWORD = `#!/bin/sh
# checkpassword protocol: fd 3 carries "user NUL password NUL timestamp NUL".
input=$(tr '\\0' '\\n' <&3)
user=$(printf '%s\\n' "$input" | sed -n 1p)
pass=$(printf '%s\\n' "$input" | sed -n 2p)
case "$user" in
  'corp/admin/alice'|'#alice@example.org#admin#') who=alice ;;
  'admin'|'corp/admin') who=admin ;;
  *) exit 1 ;;
esac
[ "$pass" = '${ADMIN_PW}' ] || exit 1
# checkpassword-reply turns USER into the passdb's user field: the session's user.
USER=$who
export USER
exec "$1"
`;

describe('admin logins against Dovecot', { skip: noDovecot }, () => {
  let masters: DovecotServer;
  let emulated: DovecotServer;
  let shared: DovecotServer;
  let ignoring: DovecotServer;
  let courier: DovecotServer;
  let target: DovecotServer;
  let store: Store;
  let dir: string;
  const counts = { mastersAlice: 0, emulatedAlice: 0, alberta: 0, courier: 0 };
  const logger = pino({ level: 'silent' });
  const targets = ['t-master', 't-fallback', 't-courier', 't-exchange', 't-mirapoint', 't-root', 't-cli', 't-cli-ignoring'];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mailferry-admin-logins-'));
    [masters, emulated, shared, ignoring, courier, target] = await Promise.all([
      startDovecot({
        name: 'masters',
        separator: '.',
        users: [
          { username: 'alice', password: ALICE_PW },
          // The admin is also a normal user with mail of its own, so the impersonation check
          // really compares two mailboxes; master2 exists only as a master.
          { username: 'admin', password: ADMIN_PW },
        ],
        masterUsers: [
          { username: 'admin', password: ADMIN_PW },
          { username: 'master2', password: ADMIN_PW },
        ],
      }),
      startDovecot({ name: 'emulated', separator: '/', users: [{ username: 'alice', password: ALICE_PW }], checkpassword: { script: CHECKPASSWORD } }),
      startDovecot({
        name: 'shared',
        separator: '/',
        users: ['admin', 'alberta', 'bob'].map((u) => ({ username: u, password: u === 'admin' ? ADMIN_PW : `${u}-pw` })),
        sharedNamespace: { prefix: 'users/' },
      }),
      startDovecot({
        name: 'ignoring',
        separator: '.',
        users: [
          { username: 'alice', password: ALICE_PW },
          { username: 'admin', password: ADMIN_PW },
        ],
        masterUsers: [{ username: 'admin', password: ADMIN_PW }],
        homeTemplate: '%{if;%{master_user};eq;;%u;%{master_user}}',
      }),
      startDovecot({ name: 'courier', separator: '.', users: [{ username: 'admin', password: ADMIN_PW }], publicNamespace: { prefix: '#shared.' } }),
      startDovecot({ name: 'target', separator: '/', users: targets.map((username) => ({ username, password: TARGET_PW })) }),
    ]);
    store = await openStore(`sqlite:${join(dir, 'state.sqlite')}`);

    const adminsOwn: CorpusFolder[] = [{ path: ['INBOX'], weight: 1 }, { path: ['Admin Stuff'], weight: 1 }];
    const albertas: CorpusFolder[] = [{ path: ['INBOX'], weight: 5 }, { path: ['Sent'], weight: 2 }, { path: ['Projects', 'Q3 Review'], weight: 2 }];
    [counts.mastersAlice, counts.emulatedAlice, counts.alberta] = await Promise.all([
      load(masters, 'alice', ALICE_PW, 11, 40),
      load(emulated, 'alice', ALICE_PW, 12, 30),
      load(shared, 'alberta', 'alberta-pw', 13, 20, albertas),
      load(masters, 'admin', ADMIN_PW, 21, 4, adminsOwn),
      load(emulated, 'admin', ADMIN_PW, 22, 4, adminsOwn),
      load(shared, 'admin', ADMIN_PW, 23, 3, adminsOwn),
      load(shared, 'bob', 'bob-pw', 24, 3, [{ path: ['INBOX'], weight: 1 }, { path: ['Bob Only'], weight: 1 }]),
      load(ignoring, 'alice', ALICE_PW, 25, 10),
      load(ignoring, 'admin', ADMIN_PW, 26, 4, adminsOwn),
    ]);
    await share(shared, 'alberta', 'alberta-pw', 'admin');
    await share(shared, 'bob', 'bob-pw', 'admin');
    // Courier-style shared folders: `#shared.alberta` (her INBOX) and below, plus someone else's.
    counts.courier = await load(courier, 'admin', ADMIN_PW, 27, 12, [
      { path: ['#shared', 'alberta'], weight: 3 },
      { path: ['#shared', 'alberta', 'Sent'], weight: 2 },
      { path: ['#shared', 'alberta', 'Old', '2018'], weight: 1 },
      { path: ['#shared', 'zoe', 'Private'], weight: 1 },
    ]);
  });

  after(async () => {
    await store?.close();
    await Promise.allSettled([masters, emulated, shared, ignoring, courier, target].map((s) => s?.stop()));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /**
   * Migrates with the resolved login, then compares source (as `view` sees it, folders
   * mapped by `mapPath`, null: not this user's) and target exactly. Returns what was expected.
   */
  async function migrateAndCompare(
    source: DovecotServer,
    resolved: ResolvedSourceLogin,
    targetUser: string,
    view: { user: string; pass: string },
    mapPath: (p: string) => string | null,
    endpoint: ImapEndpoint = source.endpoint(),
  ): Promise<{ src: MailboxSnapshot; tgt: MailboxSnapshot; expected: number }> {
    const before = await snapshot(source.endpoint(), view.user, view.pass);
    const expected = [...before].filter(([p]) => mapPath(p) !== null).reduce((n, [, msgs]) => n + msgs.length, 0);
    assert.ok(expected > 0);
    const summary = await syncMailbox(store, {
      source: { endpoint, login: resolved.login, ...(resolved.userRoot ? { userRoot: resolved.userRoot } : {}) },
      target: { endpoint: target.endpoint(), login: { method: 'login', username: targetUser, password: TARGET_PW } },
      logger,
    });
    assert.equal(summary.copied, expected, JSON.stringify(summary.folderList));
    assert.equal(summary.failed, 0);
    const src = before;
    const tgt = await snapshot(target.endpoint(), targetUser, TARGET_PW);
    assert.deepEqual(compareMailboxes(src, tgt, mapPath), []);
    // Nothing else arrived: every target folder holding mail is an expected one.
    const wanted = new Set([...src.keys()].map(mapPath).filter((p): p is string => p !== null));
    for (const [path, msgs] of tgt) if (msgs.length) assert.ok(wanted.has(path), `unexpected target folder ${path}`);
    // A second run finds nothing to copy: the login is stable across runs.
    const again = await syncMailbox(store, {
      source: { endpoint, login: resolved.login, ...(resolved.userRoot ? { userRoot: resolved.userRoot } : {}) },
      target: { endpoint: target.endpoint(), login: { method: 'login', username: targetUser, password: TARGET_PW } },
      logger,
    });
    assert.equal(again.copied, 0);
    return { src, tgt, expected };
  }

  const dotToSlash = (p: string) => p.split('.').join('/');

  test('Dovecot master user `alice*admin`: SASL PLAIN with authzid, checked against the admin’s own mailbox, migrates exactly', async () => {
    const r = await resolveSourceLogin(masters.endpoint(), 'alice*admin', ADMIN_PW, { logger });
    assert.deepEqual(r.login, { method: 'plain', authcid: 'admin', authzid: 'alice', password: ADMIN_PW });
    assert.equal(r.method, 'AUTHENTICATE PLAIN with authorization identity');
    assert.equal(r.mailboxUser, 'alice');
    assert.equal(r.check, 'differs');
    const { expected } = await migrateAndCompare(masters, r, 't-master', { user: 'alice', pass: ALICE_PW }, dotToSlash);
    assert.equal(expected, counts.mastersAlice);
  });

  test('a master that cannot log in alone cannot have been fallen back to', async () => {
    const r = await resolveSourceLogin(masters.endpoint(), 'alice*master2', ADMIN_PW, { logger });
    assert.equal(r.check, 'admin-cannot-log-in-alone');
    assert.equal(r.login.method, 'plain');
  });

  test('`alice*admin` on a server without AUTH=PLAIN: LOGIN with the string verbatim, migrates exactly', async () => {
    const proxy = await hideMechanisms(masters.port, ['AUTH=PLAIN']);
    try {
      const endpoint: ImapEndpoint = { ...masters.endpoint(), port: proxy.port };
      const r = await resolveSourceLogin(endpoint, 'alice*admin', ADMIN_PW, { logger });
      assert.deepEqual(r.login, { method: 'login', username: 'alice*admin', password: ADMIN_PW });
      assert.equal(r.method, 'LOGIN with master-user separator');
      assert.equal(r.check, 'differs');
      const { expected } = await migrateAndCompare(masters, r, 't-fallback', { user: 'alice', pass: ALICE_PW }, dotToSlash, endpoint);
      assert.equal(expected, counts.mastersAlice);
    } finally {
      await proxy.close();
    }
  });

  test('a client that drops the authorization identity lands in the admin’s mailbox, and the check catches it', async () => {
    // imapflow sends a plain LOGIN with the authentication identity when the server
    // advertises no SASL mechanism at all, silently dropping the authzid. Forcing PLAIN
    // there reproduces exactly the fallback the check exists for.
    const proxy = await hideMechanisms(masters.port, ['AUTH=PLAIN', 'AUTH=LOGIN']);
    try {
      const endpoint: ImapEndpoint = { ...masters.endpoint(), port: proxy.port };
      await assert.rejects(resolveSourceLogin(endpoint, 'alice*admin', ADMIN_PW, { auth: 'plain' }), ImpersonationError);
      // Left to choose, the resolver sees no AUTH=PLAIN and uses the `*` form, which works.
      assert.equal((await resolveSourceLogin(endpoint, 'alice*admin', ADMIN_PW)).check, 'differs');
    } finally {
      await proxy.close();
    }
  });

  test('Exchange `CORP/admin/alice`: LOGIN verbatim, migrates exactly', async () => {
    const r = await resolveSourceLogin(emulated.endpoint(), 'CORP/admin/alice', ADMIN_PW, { logger });
    assert.deepEqual(r.login, { method: 'login', username: 'CORP/admin/alice', password: ADMIN_PW });
    assert.equal(r.mailboxUser, 'alice');
    assert.equal(r.check, 'differs', 'the admin logs in alone as CORP/admin, a different mailbox');
    const { expected } = await migrateAndCompare(emulated, r, 't-exchange', { user: 'alice', pass: ALICE_PW }, (p) => p);
    assert.equal(expected, counts.emulatedAlice);
  });

  test('Mirapoint `#alice@example.org#admin#`: LOGIN verbatim, migrates exactly', async () => {
    const r = await resolveSourceLogin(emulated.endpoint(), '#alice@example.org#admin#', ADMIN_PW, { logger });
    assert.deepEqual(r.login, { method: 'login', username: '#alice@example.org#admin#', password: ADMIN_PW });
    assert.equal(r.mailboxUser, 'alice@example.org');
    assert.equal(r.check, 'differs');
    const { expected } = await migrateAndCompare(emulated, r, 't-mirapoint', { user: 'alice', pass: ALICE_PW }, (p) => p);
    assert.equal(expected, counts.emulatedAlice);
  });

  test('UserRoot `/users/alberta` in a shared namespace: only alberta’s folders arrive, at the top, INBOX included', async () => {
    const r = await resolveSourceLogin(shared.endpoint(), 'admin', ADMIN_PW, { userRoot: '/users/alberta', logger });
    assert.equal(r.login.method, 'login');
    assert.equal(r.mailboxUser, 'alberta');
    assert.equal(r.check, 'user-root-found');
    assert.ok(r.userRootFolders?.includes('users/alberta'), String(r.userRootFolders));
    const map = (p: string) => (p === 'users/alberta' ? 'INBOX' : p.startsWith('users/alberta/') ? p.slice('users/alberta/'.length) : null);
    const { tgt, expected } = await migrateAndCompare(shared, r, 't-root', { user: 'admin', pass: ADMIN_PW }, map);
    assert.equal(expected, counts.alberta);
    assert.ok((tgt.get('INBOX')?.length ?? 0) > 0, 'alberta’s INBOX arrived in INBOX');
    assert.ok(tgt.has('Projects/Q3 Review') && tgt.has('Sent'));
    assert.ok(![...tgt.keys()].some((p) => /Bob Only|Admin Stuff|users/.test(p)), [...tgt.keys()].join(', '));
  });

  test('Courier-style UserRoot `#shared.alberta` in a public namespace', async () => {
    const r = await resolveSourceLogin(courier.endpoint(), 'admin', ADMIN_PW, { userRoot: '#shared.alberta', logger });
    assert.equal(r.mailboxUser, 'alberta');
    const map = (p: string) => (p === '#shared.alberta' ? 'INBOX' : p.startsWith('#shared.alberta.') ? p.slice('#shared.alberta.'.length).split('.').join('/') : null);
    const { tgt, expected } = await migrateAndCompare(courier, r, 't-courier', { user: 'admin', pass: ADMIN_PW }, map);
    assert.ok(expected < counts.courier, 'zoe’s folder is not alberta’s');
    assert.ok(tgt.has('Old/2018') && tgt.has('Sent') && !tgt.has('Private'), [...tgt.keys()].join(', '));
  });

  test('a UserRoot the admin cannot see fails clearly, naming the namespaces', async () => {
    await assert.rejects(resolveSourceLogin(shared.endpoint(), 'admin', ADMIN_PW, { userRoot: '/users/zed' }), (err: unknown) => {
      assert.ok(err instanceof UserRootError);
      assert.equal(err.mailboxUser, 'zed');
      assert.match(err.message, /UserRoot "\/users\/zed" holds no folder in the view of "admin"/);
      assert.match(err.message, /other users "users\/"/);
      assert.ok(!err.message.includes(ADMIN_PW));
      return true;
    });
  });

  test('a server that ignores the requested user and opens the admin’s own mailbox fails that user', async () => {
    for (const auth of ['auto', 'login'] as const) {
      await assert.rejects(resolveSourceLogin(ignoring.endpoint(), 'alice*admin', ADMIN_PW, { auth, logger }), (err: unknown) => {
        assert.ok(err instanceof ImpersonationError, String(err));
        assert.equal(err.mailboxUser, 'alice');
        assert.match(err.message, /source session for alice is the admin's own mailbox/);
        assert.ok(!err.message.includes(ADMIN_PW));
        return true;
      });
    }
  });

  test('a target that ignores the requested user is refused before anything is copied into the admin’s mailbox', async () => {
    const asAlice = [
      { method: 'plain' as const, authcid: 'admin', authzid: 'alice', password: ADMIN_PW },
      { method: 'login' as const, username: 'alice*admin', password: ADMIN_PW },
    ];
    for (const login of asAlice) {
      await assert.rejects(checkTargetSession(ignoring.endpoint(), login, 'alice', 'admin'), (err: unknown) => {
        assert.ok(err instanceof ImpersonationError, String(err));
        assert.match(err.message, /target session for alice .* is the admin's own mailbox/);
        assert.ok(!err.message.includes(ADMIN_PW));
        return true;
      });
      assert.equal(await checkTargetSession(masters.endpoint(), login, 'alice', 'admin'), 'differs', 'a server that honours it passes');
    }
    // `target create --test-user` stores nothing then.
    const home = join(dir, 'target-create');
    const environment = { ...process.env, MAILFERRY_HOME: home, MAILFERRY_TARGET_PASSWORD: ADMIN_PW, MAILFERRY_DB: `sqlite:${join(dir, 'target-create.sqlite')}` };
    const r = await runCli(['target', 'create', 'ign', '--host', '127.0.0.1', '--port', String(ignoring.port), '--tls', 'none', '--admin-user', 'admin', '--test-user', 'alice'], environment);
    assert.equal(r.status, 3, r.stderr);
    assert.match(r.stderr, /FAIL the target session for alice .*admin's own mailbox[\s\S]*was not stored/);
    const ok = await runCli(['target', 'create', 'good', '--host', '127.0.0.1', '--port', String(masters.port), '--tls', 'none', '--admin-user', 'admin', '--test-user', 'alice'], environment);
    assert.equal(ok.status, 0, ok.stderr);
  });

  test('the admin’s fingerprint is cached across mailboxes, and the check still holds', async () => {
    const cache = new SourceLoginCache();
    const ok = await resolveSourceLogin(masters.endpoint(), 'alice*admin', ADMIN_PW, { cache });
    const again = await resolveSourceLogin(masters.endpoint(), 'alice*admin', ADMIN_PW, { cache });
    assert.equal(ok.check, 'differs');
    assert.equal(again.check, 'differs');
    await assert.rejects(resolveSourceLogin(ignoring.endpoint(), 'alice*admin', ADMIN_PW, { cache }), ImpersonationError);
  });

  test('a missing user with the right admin password is told from a wrong admin password (RFC 5530 codes)', async () => {
    await assert.rejects(resolveSourceLogin(masters.endpoint(), 'nobody-here*admin', ADMIN_PW), (err: unknown) => {
      assert.ok(err instanceof SourceLoginError, String(err));
      assert.equal(err.code, 'AUTHORIZATIONFAILED');
      assert.ok(credentialAccepted(err), 'the admin credential itself was accepted');
      return true;
    });
    await assert.rejects(resolveSourceLogin(masters.endpoint(), 'alice*admin', 'wrong-Secret-0815'), (err: unknown) => {
      assert.ok(err instanceof SourceLoginError, String(err));
      assert.ok(!credentialAccepted(err), 'a wrong admin password is refused');
      return true;
    });
  });

  test('a wrong admin password is an ImapAuthError naming the user, never the password', async () => {
    const wrong = 'wrong-Secret-0815';
    for (const [server, name] of [[masters, 'alice*admin'], [emulated, 'CORP/admin/alice'], [emulated, '#alice@example.org#admin#'], [shared, 'admin']] as const) {
      await assert.rejects(resolveSourceLogin(server.endpoint(), name, wrong, name === 'admin' ? { userRoot: '/users/alberta' } : {}), (err: unknown) => {
        assert.ok(err instanceof ImapAuthError && err instanceof SourceLoginError, String(err));
        assert.match(err.message, name === 'admin' ? /alberta's mailbox/ : /alice(@example\.org)?'s mailbox/);
        assert.ok(!err.message.includes(wrong) && !err.message.includes(Buffer.from(wrong).toString('base64')), err.message);
        return true;
      });
    }
  });

  /** `mailferry sync` from a source with an admin form of `--source-user`. */
  function cliSync(source: DovecotServer, sourceUser: string, targetUser: string, db: string) {
    return runCli(
      ['sync', '--source', `127.0.0.1:${source.port}`, '--source-user', sourceUser, '--source-tls', 'none', '--target', `127.0.0.1:${target.port}`, '--target-user', targetUser, '--target-tls', 'none', '--db', `sqlite:${join(dir, db)}`, '--json'],
      { ...process.env, MAILFERRY_SOURCE_PASSWORD: ADMIN_PW, MAILFERRY_TARGET_PASSWORD: TARGET_PW },
    );
  }

  test('CLI: `sync --source-user alice*admin` migrates alice exactly', async () => {
    const r = await cliSync(masters, 'alice*admin', 't-cli', 'cli.sqlite');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, counts.mastersAlice);
    const problems = compareMailboxes(await snapshot(masters.endpoint(), 'alice', ALICE_PW), await snapshot(target.endpoint(), 't-cli', TARGET_PW), dotToSlash);
    assert.deepEqual(problems, []);
  });

  test('CLI: `sync` refuses a session that is the admin’s own mailbox', async () => {
    const r = await cliSync(ignoring, 'alice*admin', 't-cli-ignoring', 'cli-ignoring.sqlite');
    assert.equal(r.status, 3, r.stderr);
    assert.match(r.stderr, /admin's own mailbox/);
    assert.ok(!r.stderr.includes(ADMIN_PW));
  });

  test('an unreachable source is a connection error, not a login error', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    await assert.rejects(resolveSourceLogin({ ...masters.endpoint(), port }, 'alice*admin', ADMIN_PW), ImapConnectError);
  });
});
