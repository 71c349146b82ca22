/**
 * `mailferry endpoint …` (source servers, SPEC §3) and `mailferry target …` (where mailboxes
 * go, with the admin credential that acts as each user). Creating one tests it first and
 * stores nothing when the test fails; passwords are stored encrypted (src/secrets) and
 * never printed.
 */
import type { Command } from 'commander';
import { changeEndpoint, createEndpoint, EndpointMissingError, EndpointNameTakenError, testLogin } from '../endpoint/manage.js';
import { checkEndpointName, EndpointSettingError, newEndpointSettings, publicEndpointView } from '../endpoint/settings.js';
import { type EndpointTest, testEndpointSettings } from '../endpoint/test-settings.js';
import { decryptSecret, loadSecretKey } from '../secrets/index.js';
import { deleteEndpoint, EndpointInUseError, findEndpoint, listEndpoints } from '../store/endpoints.js';
import { openStore } from '../store/open.js';
import type { EndpointRole } from '../store/schema.js';
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

function envPassword(name: string, what: string): string {
  const v = process.env[name];
  if (v === undefined || v === '') throw new UsageError(`${what}: set ${name}`);
  return v;
}

function usageOf(err: unknown): unknown {
  return err instanceof EndpointSettingError || err instanceof EndpointNameTakenError || err instanceof EndpointMissingError ? new UsageError(err.message) : err;
}

/** Setting errors are usage errors (exit 2), thrown at once or by the promise `fn` returns. */
function settingsOrUsage<T>(fn: () => T): T {
  try {
    const r = fn();
    return (r instanceof Promise ? r.catch((err: unknown) => Promise.reject(usageOf(err))) : r) as T;
  } catch (err) {
    throw usageOf(err);
  }
}

function printTest(what: string, t: EndpointTest): void {
  const r = t.probe;
  for (const s of r.steps) process.stderr.write(`${s.ok ? 'ok  ' : 'FAIL'} ${s.step.padEnd(12)} ${s.detail} (${s.ms} ms)\n`);
  for (const w of r.warnings) process.stderr.write(`note ${w}\n`);
  process.stderr.write(r.ok ? `${what}: test passed\n` : `${what}: test FAILED\n`);
  if (t.session.kind === 'both-empty') process.stderr.write(`note: ${t.session.note}\n`);
  if (t.session.kind === 'admins') process.stderr.write(`FAIL ${t.session.error}\n`);
}

/** The test as JSON: the probe's fields (as before), `ok` also covering the session check. */
const testJson = (t: EndpointTest) => ({ ...t.probe, ok: t.ok, session: t.session });

/** The source test user's password, from MAILFERRY_TEST_PASSWORD. */
const testPassword = (user: string | undefined) => (user ? envPassword('MAILFERRY_TEST_PASSWORD', `the password of test user ${user}`) : undefined);

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
    .option('--db <url>', 'state database: a SQLite file (PATH or sqlite:PATH) or postgres://… (default MAILFERRY_DB or ~/.mailferry/mailferry.sqlite)')
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
      .option('--separator <c>', 'master-user separator for --impersonation separator (default: *)')
      .option('--test-user <name>', 'test the admin login acting as this user');
  }
  create.action((name: string, f: CommonFlags & { maxConcurrentMigrations?: string; maxConcurrentIncrementalSyncs?: string; adminUser?: string; impersonation?: string; separator?: string }) =>
    run(async () => {
      // Settings first: a wrong flag is said before a missing password.
      settingsOrUsage(() => {
        checkEndpointName(name);
        newEndpointSettings(role, f);
      });
      const adminPassword = role === 'target' ? envPassword('MAILFERRY_TARGET_PASSWORD', 'the target admin password') : undefined;
      const store = await openStore(f.db);
      try {
        const r = await settingsOrUsage(() => createEndpoint(store, () => loadSecretKey(), { role, name, settings: f, adminPassword, testUser: f.testUser, testPassword: role === 'source' ? testPassword(f.testUser) : undefined }));
        printTest(`${noun} ${name}`, r.test);
        if (!r.stored) {
          process.stderr.write(`${noun} ${name} was not stored.\n`);
          if (f.json) process.stdout.write(JSON.stringify({ stored: false, test: testJson(r.test) }) + '\n');
          return EXIT.connect;
        }
        if (f.json) process.stdout.write(JSON.stringify({ ...publicEndpointView(r.row), test: testJson(r.test) }) + '\n');
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
        const fresh = process.env.MAILFERRY_TARGET_PASSWORD;
        const r = await settingsOrUsage(() =>
          changeEndpoint(store, (create) => loadSecretKey({ create: !!create }), {
            role,
            name,
            changes: f,
            newAdminPassword: role === 'target' && fresh ? fresh : undefined,
            testUser: f.testUser,
            testPassword: role === 'source' ? testPassword(f.testUser) : undefined,
          }),
        );
        const shown = r.stored ? r.row : ((await findEndpoint(store.db, role, name)) ?? { host: '?', port: 0, tls: '?' });
        printTest(`${noun} ${name}${r.stored ? ` (${shown.host}:${shown.port}, ${shown.tls})` : ''}`, r.test);
        if (!r.stored) {
          process.stderr.write(`${noun} ${name} was not changed.\n`);
          if (f.json) process.stdout.write(JSON.stringify({ stored: false, test: testJson(r.test) }) + '\n');
          return EXIT.connect;
        }
        if (f.json) process.stdout.write(JSON.stringify({ ...publicEndpointView(r.row), test: testJson(r.test) }) + '\n');
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
          const password = role === 'source' ? testPassword(f.testUser) : row.password_enc ? decryptSecret(loadSecretKey({ create: false }), row.password_enc) : undefined;
          const t = await testEndpointSettings(row, settingsOrUsage(() => testLogin(role, row, f.testUser, password)), f.testUser);
          printTest(`${noun} ${name}`, t);
          if (f.json) process.stdout.write(JSON.stringify(testJson(t)) + '\n');
          return t.ok ? EXIT.ok : EXIT.connect;
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
          process.stdout.write(JSON.stringify(publicEndpointView(row), null, 2) + '\n');
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
          if (f.json) process.stdout.write(JSON.stringify(rows.map(publicEndpointView)) + '\n');
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
