/**
 * `mailferry endpoint …` (source servers, SPEC §3) and `mailferry target …` (where mailboxes
 * go, with the admin credential that acts as each user). Creating one tests it first and
 * stores nothing when the test fails; passwords are stored encrypted (src/secrets) and
 * never printed.
 */
import type { Command } from 'commander';
import { probeEndpoint, type ProbeResult } from '../endpoint/index.js';
import { targetLogin } from '../endpoint/target-login.js';
import { ImpersonationError } from '../auth/errors.js';
import { checkTargetSession } from '../auth/target-check.js';
import { imapEndpointOf, impersonationOf } from '../worker/mailbox-sides.js';
import { defaultPort, type ImapLogin, type TlsMode } from '../imap/endpoint.js';
import { decryptSecret, encryptSecret, loadSecretKey } from '../secrets/index.js';
import { deleteEndpoint, EndpointInUseError, findEndpoint, insertEndpoint, listEndpoints, updateEndpoint } from '../store/endpoints.js';
import { openStore } from '../store/open.js';
import type { EndpointRole, EndpointRow } from '../store/schema.js';
import { EXIT, UsageError } from './exit-codes.js';

type Run = (fn: () => Promise<number>) => Promise<void>;

interface CommonFlags {
  host: string;
  port?: string;
  tls: string;
  auth: string;
  acceptUntrustedCert?: boolean;
  db?: string;
  json?: boolean;
  testUser?: string;
}

function tls(v: string): TlsMode {
  if (v === 'implicit' || v === 'starttls' || v === 'none') return v;
  throw new UsageError(`--tls must be implicit, starttls or none, not "${v}"`);
}

function whole(v: string | undefined, flag: string, fallback: number, max = 65535): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new UsageError(`${flag} must be a whole number from 1 to ${max}, not "${v}"`);
  return n;
}

function checkName(name: string): string {
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(name)) throw new UsageError(`name "${name}" must be 1–64 letters, digits, '-' or '_'`);
  return name;
}

function envPassword(name: string, what: string): string {
  const v = process.env[name];
  if (v === undefined || v === '') throw new UsageError(`${what}: set ${name}`);
  return v;
}

/** What `show`/`list` print: every setting, never the password. */
function publicView(row: EndpointRow): Record<string, unknown> {
  return {
    name: row.name,
    host: row.host,
    port: row.port,
    tls: row.tls,
    auth: row.auth,
    acceptUntrustedCert: row.accept_untrusted_cert === 1,
    ...(row.role === 'source'
      ? { maxConcurrentMigrations: row.max_concurrent_migrations, maxConcurrentIncrementalSyncs: row.max_concurrent_incremental_syncs }
      : { adminUser: row.admin_user, impersonation: row.impersonation, ...(row.impersonation === 'separator' ? { separator: row.separator } : {}), passwordStored: row.password_enc !== null }),
    createdAt: new Date(row.created_at).toISOString(),
  };
}

/**
 * A target's admin acting as the test user must open the user's mailbox, not its own
 * (auth/target-check.ts); false, said on stderr, when it does not.
 */
async function targetSessionIsUsers(row: Pick<EndpointRow, 'role' | 'host' | 'port' | 'tls' | 'accept_untrusted_cert' | 'admin_user'>, login: ImapLogin | undefined, user: string | undefined): Promise<boolean> {
  if (row.role !== 'target' || !login || !user) return true;
  try {
    const verdict = await checkTargetSession(imapEndpointOf(row), login, user, row.admin_user!);
    if (verdict === 'both-empty') process.stderr.write(`note: ${user}'s mailbox and the admin's own are both empty, so mailferry cannot yet confirm the impersonation works; each mailbox is checked again before its initial sync\n`);
    return true;
  } catch (err) {
    if (!(err instanceof ImpersonationError)) throw err;
    process.stderr.write(`FAIL ${err.message}\n`);
    return false;
  }
}

function printProbe(what: string, r: ProbeResult): void {
  for (const s of r.steps) process.stderr.write(`${s.ok ? 'ok  ' : 'FAIL'} ${s.step.padEnd(12)} ${s.detail} (${s.ms} ms)\n`);
  for (const w of r.warnings) process.stderr.write(`note ${w}\n`);
  process.stderr.write(r.ok ? `${what}: test passed\n` : `${what}: test FAILED\n`);
}

async function probeRow(row: Pick<EndpointRow, 'host' | 'port' | 'tls' | 'accept_untrusted_cert'>, login: ImapLogin | undefined): Promise<ProbeResult> {
  return probeEndpoint({ host: row.host, port: row.port, tls: row.tls, acceptUntrustedCert: row.accept_untrusted_cert === 1, ...(login ? { login } : {}) });
}

/** A source test login for `user`, its password from MAILFERRY_TEST_PASSWORD. */
function sourceTestLogin(auth: 'plain' | 'login', user: string): ImapLogin {
  const password = envPassword('MAILFERRY_TEST_PASSWORD', `the password of test user ${user}`);
  return auth === 'plain' ? { method: 'plain', authcid: user, password } : { method: 'login', username: user, password };
}

/** Probes `row` (and the login); says so and returns false when it is not to be stored. */
async function testedBeforeStoring(what: string, row: Parameters<typeof probeRow>[0] & Parameters<typeof targetSessionIsUsers>[0], login: ImapLogin | undefined, testUser: string | undefined, json: boolean | undefined, verb: string): Promise<ProbeResult | null> {
  const result = await probeRow(row, login);
  printProbe(`${what} (${row.host}:${row.port}, ${row.tls})`, result);
  if (result.ok && (await targetSessionIsUsers(row, login, testUser))) return result;
  process.stderr.write(`${what} was not ${verb}.\n`);
  if (json) process.stdout.write(JSON.stringify({ stored: false, test: result }) + '\n');
  return null;
}

function register(program: Command, role: EndpointRole, run: Run): void {
  const noun = role === 'source' ? 'migration endpoint' : 'migration target';
  const group = program.command(role === 'source' ? 'endpoint' : 'target').description(role === 'source' ? 'source IMAP servers batches migrate from (SPEC §3)' : 'target IMAP servers, with the admin login that acts as each user');
  const create = group
    .command('create <name>')
    .description(`test the connection, then store the ${noun}`)
    .requiredOption('--host <host>', 'IMAP server')
    .option('--port <n>', 'port (default 993 for implicit TLS, else 143)')
    .option('--tls <mode>', 'implicit | starttls | none', 'implicit')
    .option('--auth <method>', 'plain | login', role === 'source' ? 'login' : 'plain')
    .option('--accept-untrusted-cert', 'accept a self-signed or otherwise untrusted certificate')
    .option('--db <url>', 'state database (default MAILFERRY_DB or ~/.mailferry/mailferry.sqlite)')
    .option('--json', 'print the stored settings as JSON');
  if (role === 'source') {
    create
      .option('--max-concurrent-migrations <n>', 'mailboxes migrated at once from this server', '20')
      .option('--max-concurrent-incremental-syncs <n>', 'incremental syncs at once', '10')
      .option('--test-user <name>', 'also test a login (password: MAILFERRY_TEST_PASSWORD)');
  } else {
    create
      .requiredOption('--admin-user <name>', 'admin (master) login; password: MAILFERRY_TARGET_PASSWORD')
      .option('--impersonation <how>', 'sasl (SASL PLAIN authorization id) | separator (user<sep>admin LOGIN)', 'sasl')
      .option('--separator <c>', "master-user separator for --impersonation separator", '*')
      .option('--test-user <name>', 'test the admin login acting as this user');
  }
  create.action((name: string, f: CommonFlags & { maxConcurrentMigrations?: string; maxConcurrentIncrementalSyncs?: string; adminUser?: string; impersonation?: string; separator?: string }) =>
    run(async () => {
      checkName(name);
      const mode = tls(f.tls);
      if (f.auth !== 'plain' && f.auth !== 'login') throw new UsageError('--auth must be plain or login');
      if (role === 'target' && f.impersonation !== 'sasl' && f.impersonation !== 'separator') throw new UsageError('--impersonation must be sasl or separator');
      const row = {
        role,
        name,
        host: f.host,
        port: whole(f.port, '--port', defaultPort(mode)),
        tls: mode,
        auth: f.auth as 'plain' | 'login',
        accept_untrusted_cert: f.acceptUntrustedCert ? 1 : 0,
        max_concurrent_migrations: whole(f.maxConcurrentMigrations, '--max-concurrent-migrations', 20, 1000),
        max_concurrent_incremental_syncs: whole(f.maxConcurrentIncrementalSyncs, '--max-concurrent-incremental-syncs', 10, 1000),
        admin_user: role === 'target' ? f.adminUser! : null,
        impersonation: role === 'target' ? (f.impersonation as 'sasl' | 'separator') : null,
        separator: role === 'target' && f.impersonation === 'separator' ? (f.separator ?? '*') : null,
        password_enc: null as string | null,
        created_at: Date.now(),
      };
      let login: ImapLogin | undefined;
      let adminPassword: string | undefined;
      if (role === 'target') {
        adminPassword = envPassword('MAILFERRY_TARGET_PASSWORD', 'the target admin password');
        if (f.testUser) login = targetLogin(row.admin_user!, adminPassword, impersonationOf(row), f.testUser);
      } else if (f.testUser) {
        login = sourceTestLogin(f.auth as 'plain' | 'login', f.testUser);
      }
      const store = await openStore(f.db);
      try {
        if (await findEndpoint(store.db, role, name)) throw new UsageError(`a ${noun} named "${name}" already exists (delete it first)`);
        const result = await testedBeforeStoring(`${noun} ${name}`, row, login, f.testUser, f.json, 'stored');
        if (!result) return EXIT.connect;
        if (adminPassword !== undefined) row.password_enc = encryptSecret(loadSecretKey(), adminPassword);
        const stored = await insertEndpoint(store.db, row);
        if (f.json) process.stdout.write(JSON.stringify({ ...publicView(stored), test: result }) + '\n');
        else process.stderr.write(`${noun} ${name} stored.\n`);
        return EXIT.ok;
      } finally {
        await store.close();
      }
    }),
  );

  const update = group
    .command('update <name>')
    .description(`change a stored ${noun} (a new password, host, port or limits): tested first, stored only if the test passes; batches use it from their next run`)
    .option('--host <host>', 'IMAP server')
    .option('--port <n>', 'port')
    .option('--tls <mode>', 'implicit | starttls | none')
    .option('--auth <method>', 'plain | login')
    .option('--accept-untrusted-cert', 'accept a self-signed or otherwise untrusted certificate')
    .option('--no-accept-untrusted-cert', 'require a trusted certificate again')
    .option('--db <url>', 'state database')
    .option('--json', 'print the stored settings as JSON');
  if (role === 'source') {
    update
      .option('--max-concurrent-migrations <n>', 'mailboxes migrated at once from this server')
      .option('--max-concurrent-incremental-syncs <n>', 'incremental syncs at once')
      .option('--test-user <name>', 'also test a login (password: MAILFERRY_TEST_PASSWORD)');
  } else {
    update
      .option('--admin-user <name>', 'admin (master) login')
      .option('--impersonation <how>', 'sasl | separator')
      .option('--separator <c>', 'master-user separator for --impersonation separator')
      .option('--test-user <name>', 'test the admin login acting as this user')
      .addHelpText('after', '\nThe admin password is replaced by MAILFERRY_TARGET_PASSWORD when that is set, else kept.');
  }
  update.action((name: string, f: Partial<CommonFlags> & { acceptUntrustedCert?: boolean; maxConcurrentMigrations?: string; maxConcurrentIncrementalSyncs?: string; adminUser?: string; impersonation?: string; separator?: string }) =>
    run(async () => {
      const store = await openStore(f.db);
      try {
        const row = await findEndpoint(store.db, role, name);
        if (!row) throw new UsageError(`no ${noun} named "${name}"`);
        if (f.auth !== undefined && f.auth !== 'plain' && f.auth !== 'login') throw new UsageError('--auth must be plain or login');
        if (f.impersonation !== undefined && f.impersonation !== 'sasl' && f.impersonation !== 'separator') throw new UsageError('--impersonation must be sasl or separator');
        const mode = f.tls !== undefined ? tls(f.tls) : row.tls;
        const impersonation = (f.impersonation as 'sasl' | 'separator' | undefined) ?? row.impersonation;
        const next = {
          ...row,
          host: f.host ?? row.host,
          // A new TLS mode without a port moves a default port with it (993 <-> 143).
          port: f.port !== undefined ? whole(f.port, '--port', row.port) : f.tls !== undefined && row.port === defaultPort(row.tls) ? defaultPort(mode) : row.port,
          tls: mode,
          auth: (f.auth as 'plain' | 'login' | undefined) ?? row.auth,
          accept_untrusted_cert: f.acceptUntrustedCert === undefined ? row.accept_untrusted_cert : f.acceptUntrustedCert ? 1 : 0,
          max_concurrent_migrations: whole(f.maxConcurrentMigrations, '--max-concurrent-migrations', row.max_concurrent_migrations, 1000),
          max_concurrent_incremental_syncs: whole(f.maxConcurrentIncrementalSyncs, '--max-concurrent-incremental-syncs', row.max_concurrent_incremental_syncs, 1000),
          admin_user: role === 'target' ? (f.adminUser ?? row.admin_user) : null,
          impersonation: role === 'target' ? impersonation : null,
          separator: role === 'target' && impersonation === 'separator' ? (f.separator ?? row.separator ?? '*') : null,
        };
        let login: ImapLogin | undefined;
        let password_enc = row.password_enc;
        if (role === 'target') {
          const fresh = process.env.MAILFERRY_TARGET_PASSWORD;
          const adminPassword = fresh !== undefined && fresh !== '' ? fresh : row.password_enc ? decryptSecret(loadSecretKey({ create: false }), row.password_enc) : '';
          if (fresh) password_enc = encryptSecret(loadSecretKey(), fresh);
          if (f.testUser) login = targetLogin(next.admin_user!, adminPassword, impersonationOf(next), f.testUser);
        } else if (f.testUser) {
          login = sourceTestLogin(next.auth, f.testUser);
        }
        const result = await testedBeforeStoring(`${noun} ${name}`, next, login, f.testUser, f.json, 'changed');
        if (!result) return EXIT.connect;
        const { id: _id, role: _role, name: _name, created_at: _created, ...settings } = next;
        await updateEndpoint(store.db, row.id, { ...settings, password_enc });
        const stored = (await findEndpoint(store.db, role, name))!;
        if (f.json) process.stdout.write(JSON.stringify({ ...publicView(stored), test: result }) + '\n');
        else process.stderr.write(`${noun} ${name} updated.\n`);
        return EXIT.ok;
      } finally {
        await store.close();
      }
    }),
  );

  group
    .command('test <name>')
    .description(`test a stored ${noun} again`)
    .option('--test-user <name>', role === 'source' ? 'also test a login (password: MAILFERRY_TEST_PASSWORD)' : 'test the admin login acting as this user')
    .option('--db <url>', 'state database')
    .option('--json', 'print the test result as JSON')
    .action((name: string, f: { testUser?: string; db?: string; json?: boolean }) =>
      run(async () => {
        const store = await openStore(f.db);
        try {
          const row = await findEndpoint(store.db, role, name);
          if (!row) throw new UsageError(`no ${noun} named "${name}"`);
          let login: ImapLogin | undefined;
          if (f.testUser && role === 'source') {
            login = sourceTestLogin(row.auth, f.testUser);
          } else if (f.testUser && row.password_enc) {
            login = targetLogin(row.admin_user!, decryptSecret(loadSecretKey({ create: false }), row.password_enc), impersonationOf(row), f.testUser);
          }
          const result = await probeRow(row, login);
          printProbe(`${noun} ${name}`, result);
          if (f.json) process.stdout.write(JSON.stringify(result) + '\n');
          return result.ok && (await targetSessionIsUsers(row, login, f.testUser)) ? EXIT.ok : EXIT.connect;
        } finally {
          await store.close();
        }
      }),
    );

  group
    .command('show <name>')
    .description(`show a stored ${noun} (never its password)`)
    .option('--db <url>', 'state database')
    .action((name: string, f: { db?: string }) =>
      run(async () => {
        const store = await openStore(f.db);
        try {
          const row = await findEndpoint(store.db, role, name);
          if (!row) throw new UsageError(`no ${noun} named "${name}"`);
          process.stdout.write(JSON.stringify(publicView(row), null, 2) + '\n');
          return EXIT.ok;
        } finally {
          await store.close();
        }
      }),
    );

  group
    .command('list')
    .description(`list stored ${noun}s`)
    .option('--db <url>', 'state database')
    .option('--json', 'print JSON')
    .action((f: { db?: string; json?: boolean }) =>
      run(async () => {
        const store = await openStore(f.db);
        try {
          const rows = await listEndpoints(store.db, role);
          if (f.json) process.stdout.write(JSON.stringify(rows.map(publicView)) + '\n');
          else for (const r of rows) process.stdout.write(`${r.name}\t${r.host}:${r.port}\t${r.tls}\n`);
          return EXIT.ok;
        } finally {
          await store.close();
        }
      }),
    );

  group
    .command('delete <name>')
    .description(`delete a stored ${noun}`)
    .option('--db <url>', 'state database')
    .action((name: string, f: { db?: string }) =>
      run(async () => {
        const store = await openStore(f.db);
        try {
          try {
            if (!(await deleteEndpoint(store.db, role, name))) throw new UsageError(`no ${noun} named "${name}"`);
          } catch (err) {
            if (err instanceof EndpointInUseError) throw new UsageError(err.message);
            throw err;
          }
          process.stderr.write(`${noun} ${name} deleted.\n`);
          return EXIT.ok;
        } finally {
          await store.close();
        }
      }),
    );
}

export function registerEndpointCommands(program: Command, run: Run): void {
  register(program, 'source', run);
  register(program, 'target', run);
}
