/**
 * `mailferry endpoint|target create|test|show|list|delete` against real Dovecot servers:
 * each failure gets its plain reason and stores nothing; passwords are stored encrypted.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type DovecotServer, startDovecot } from '../src/lab/dovecot.js';
import { runCli } from './helpers/cli.js';

const ADMIN_PASSWORD = 'Adm1n-Secret-Zq9';
const USER_PASSWORD = 'Us3r-Secret-Kx7';

describe('endpoint and target commands', () => {
  let server: DovecotServer;
  let dir: string;
  let db: string;
  let closedPort: number;
  const env = (extra: Record<string, string> = {}) => ({ ...process.env, MAILFERRY_HOME: dir, MAILFERRY_DB: `sqlite:${db}`, ...extra });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mailferry-endpoint-'));
    db = join(dir, 'state.sqlite');
    server = await startDovecot({ name: 'endpoints', separator: '/', users: [{ username: 'alice', password: USER_PASSWORD }], masterUsers: [{ username: 'admin', password: ADMIN_PASSWORD }], tls: 'selfsigned' });
    const probe: Server = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    closedPort = (probe.address() as { port: number }).port;
    await new Promise<void>((r) => probe.close(() => r()));
  });
  after(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a closed port fails with "refused" and stores nothing', async () => {
    const r = await runCli(['endpoint', 'create', 'closed', '--host', '127.0.0.1', '--port', String(closedPort), '--tls', 'none'], env());
    assert.equal(r.status, 3, r.stderr);
    assert.match(r.stderr, /refused/i);
    const list = await runCli(['endpoint', 'list', '--json'], env());
    assert.deepEqual(JSON.parse(list.stdout.trim()), []);
  });

  test('settings that contradict each other are refused before anything is tried', async () => {
    const target = (extra: string[]) => runCli(['target', 'create', 'x', '--host', '127.0.0.1', '--admin-user', 'admin', ...extra], env({ MAILFERRY_TARGET_PASSWORD: ADMIN_PASSWORD }));
    const sasl = await target(['--separator', '#']);
    assert.equal(sasl.status, 2, sasl.stderr);
    assert.match(sasl.stderr, /--separator is only for --impersonation separator/);
    const empty = await target(['--impersonation', 'separator', '--separator', '']);
    assert.equal(empty.status, 2, empty.stderr);
    assert.match(empty.stderr, /--separator must be one character, such as \*, not ""/);
    const serve = await runCli(['serve', '--no-listen', '--listen', '127.0.0.1:0'], env());
    assert.equal(serve.status, 2, serve.stderr);
    assert.match(serve.stderr, /--listen and --no-listen exclude each other/);
  });

  test('a self-signed certificate fails unless accepted (implicit TLS and STARTTLS)', async () => {
    const bad = await runCli(['endpoint', 'create', 'tls1', '--host', '127.0.0.1', '--port', String(server.sslPort), '--tls', 'implicit'], env());
    assert.equal(bad.status, 3, bad.stderr);
    assert.match(bad.stderr, /self-signed/i);
    const badStarttls = await runCli(['endpoint', 'create', 'tls2', '--host', '127.0.0.1', '--port', String(server.port), '--tls', 'starttls'], env());
    assert.equal(badStarttls.status, 3, badStarttls.stderr);
    assert.match(badStarttls.stderr, /self-signed|not (verified|trusted)|certificate/i);

    const ok = await runCli(['endpoint', 'create', 'tls1', '--host', '127.0.0.1', '--port', String(server.sslPort), '--tls', 'implicit', '--accept-untrusted-cert', '--json'], env());
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(ok.json?.maxConcurrentMigrations, 20);
    assert.equal(ok.json?.maxConcurrentIncrementalSyncs, 10);
    const ok2 = await runCli(['endpoint', 'create', 'tls2', '--host', '127.0.0.1', '--port', String(server.port), '--tls', 'starttls', '--accept-untrusted-cert'], env());
    assert.equal(ok2.status, 0, ok2.stderr);
  });

  test('a wrong test password fails with "authentication failed" and is never printed', async () => {
    const wrong = 'Wr0ng-Pass-Qq1';
    const r = await runCli(['endpoint', 'create', 'src', '--host', '127.0.0.1', '--port', String(server.port), '--tls', 'none', '--test-user', 'alice', '--json'], env({ MAILFERRY_TEST_PASSWORD: wrong }));
    assert.equal(r.status, 3, r.stderr);
    assert.match(r.stderr, /authentication failed/i);
    assert.ok(!(r.stdout + r.stderr).includes(wrong));
    // --json says so too: a script reading stdout learns it was not stored, and why.
    assert.equal(r.json?.stored, false);
    assert.equal((r.json?.test as { ok: boolean }).ok, false);
    const good = await runCli(['endpoint', 'create', 'src', '--host', '127.0.0.1', '--port', String(server.port), '--tls', 'none', '--test-user', 'alice', '--max-concurrent-migrations', '5'], env({ MAILFERRY_TEST_PASSWORD: USER_PASSWORD }));
    assert.equal(good.status, 0, good.stderr);
    const show = await runCli(['endpoint', 'show', 'src'], env());
    assert.equal(JSON.parse(show.stdout).maxConcurrentMigrations, 5);
    assert.equal(JSON.parse(show.stdout).port, server.port);
  });

  test('a target stores its admin password encrypted and tests impersonation', async () => {
    for (const [name, how] of [['t-sasl', ['--impersonation', 'sasl']], ['t-sep', ['--impersonation', 'separator', '--separator', '*']]] as const) {
      const r = await runCli(['target', 'create', name, '--host', '127.0.0.1', '--port', String(server.port), '--tls', 'none', '--admin-user', 'admin', ...how, '--test-user', 'alice'], env({ MAILFERRY_TARGET_PASSWORD: ADMIN_PASSWORD }));
      assert.equal(r.status, 0, r.stderr);
      assert.ok(!(r.stdout + r.stderr).includes(ADMIN_PASSWORD));
      const t = await runCli(['target', 'test', name, '--test-user', 'alice'], env());
      assert.equal(t.status, 0, t.stderr);
    }
    const bad = await runCli(['target', 'create', 't-bad', '--host', '127.0.0.1', '--port', String(server.port), '--tls', 'none', '--admin-user', 'admin', '--test-user', 'alice'], env({ MAILFERRY_TARGET_PASSWORD: 'not-the-password' }));
    assert.equal(bad.status, 3, bad.stderr);

    const show = await runCli(['target', 'show', 't-sasl'], env());
    assert.equal(JSON.parse(show.stdout).adminUser, 'admin');
    assert.ok(!show.stdout.includes(ADMIN_PASSWORD));
    // The database files (and WAL) hold the password only encrypted.
    for (const f of readdirSync(dir).filter((n) => n.startsWith('state.sqlite'))) {
      assert.ok(!readFileSync(join(dir, f)).includes(Buffer.from(ADMIN_PASSWORD)), `${f} holds the admin password in clear`);
    }
    const del = await runCli(['target', 'delete', 't-sep'], env());
    assert.equal(del.status, 0);
    const list = await runCli(['target', 'list', '--json'], env());
    assert.deepEqual(JSON.parse(list.stdout.trim()).map((t: { name: string }) => t.name), ['t-sasl']);
  });

  test('update: a new admin password or limit is tested first, stored only when it works', async () => {
    // A new password without a user to try it as: refused (stored untried, every mailbox would fail with it).
    const untried = await runCli(['target', 'update', 't-sasl'], env({ MAILFERRY_TARGET_PASSWORD: 'rotated-but-wrong' }));
    assert.equal(untried.status, 2, untried.stderr);
    assert.match(untried.stderr, /a changed admin login is tried before it is stored: give a test user/);
    // A wrong new password: refused, the stored one kept.
    const wrong = await runCli(['target', 'update', 't-sasl', '--test-user', 'alice'], env({ MAILFERRY_TARGET_PASSWORD: 'rotated-but-wrong' }));
    assert.equal(wrong.status, 3, wrong.stderr);
    assert.match(wrong.stderr, /was not changed/);
    assert.ok(!(wrong.stdout + wrong.stderr).includes('rotated-but-wrong'));
    const still = await runCli(['target', 'test', 't-sasl', '--test-user', 'alice'], env());
    assert.equal(still.status, 0, still.stderr);
    // The right one (as after a rotation on the server): stored, encrypted.
    const right = await runCli(['target', 'update', 't-sasl', '--test-user', 'alice', '--json'], env({ MAILFERRY_TARGET_PASSWORD: ADMIN_PASSWORD }));
    assert.equal(right.status, 0, right.stderr);
    assert.equal(right.json?.adminUser, 'admin');
    const src = await runCli(['endpoint', 'update', 'src', '--max-concurrent-migrations', '7', '--no-accept-untrusted-cert'], env());
    assert.equal(src.status, 0, src.stderr);
    const shown = JSON.parse((await runCli(['endpoint', 'show', 'src'], env())).stdout);
    assert.deepEqual([shown.maxConcurrentMigrations, shown.maxConcurrentIncrementalSyncs, shown.port], [7, 10, server.port]);
    const closed = await runCli(['endpoint', 'update', 'src', '--port', String(closedPort)], env());
    assert.equal(closed.status, 3, closed.stderr);
    assert.equal(JSON.parse((await runCli(['endpoint', 'show', 'src'], env())).stdout).port, server.port);
    const missing = await runCli(['endpoint', 'update', 'nope', '--port', '1'], env());
    assert.equal(missing.status, 2, missing.stderr);
  });
});
