/**
 * The HTTP API without a browser (fastify's inject, a real SQLite store): the admin token
 * guard, the answers' status codes and shapes, refusals in the CLI's words, and no password
 * in any answer. The browser test (web-page.test.ts) drives the same routes end to end.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import type { FastifyInstance } from 'fastify';
import { ADMIN_TOKEN_ENV, AdminTokenError, loadAdminToken } from '../src/http/admin-token.js';
import { claimTask } from '../src/batch/background-task.js';
import { buildHttpApp } from '../src/http/app.js';
import { startDnsServer } from '../src/lab/dns-server.js';
import { encryptSecret, loadSecretKey, type SecretKey } from '../src/secrets/index.js';
import { insertEndpoint } from '../src/store/endpoints.js';
import type { Store } from '../src/store/open.js';
import { type DialectName, freshDb, postgresUnavailable, type TestDb } from './helpers/batch-lab.js';

const TOKEN = 'test-admin-token-0123456789';
const SECRET = 'Pw-Never-Shown-42';

for (const dialect of ['sqlite', 'postgres'] as DialectName[]) describe(`HTTP API (${dialect})`, async () => {
  const skip = dialect === 'postgres' ? await postgresUnavailable() : null;
  if (skip) process.stderr.write(`# skipping the PostgreSQL HTTP API tests: ${skip}\n`);
  let dir: string;
  let db: TestDb;
  let store: Store;
  let key: SecretKey;
  let app: FastifyInstance;
  const call = (method: 'GET' | 'POST' | 'DELETE', url: string, body?: unknown, headers: Record<string, string> = { authorization: `Bearer ${TOKEN}` }) =>
    app.inject({ method, url, headers, ...(body === undefined ? {} : typeof body === 'string' ? { payload: body, headers: { ...headers, 'content-type': 'text/csv' } } : { payload: body as Record<string, unknown> }) });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mailferry-http-'));
    if (skip) return;
    db = await freshDb(dialect, dir);
    store = await db.open();
    key = loadSecretKey({ keyFile: join(dir, 'secret.key') });
    const common = { port: 1, tls: 'none' as const, auth: 'plain' as const, accept_untrusted_cert: 0, max_concurrent_migrations: 20, max_concurrent_incremental_syncs: 10, created_at: Date.now() };
    await insertEndpoint(store.db, { ...common, role: 'source', name: 'src', host: '127.0.0.1', admin_user: null, impersonation: null, separator: null, password_enc: null });
    await insertEndpoint(store.db, { ...common, role: 'target', name: 'tgt', host: '127.0.0.1', admin_user: 'admin', impersonation: 'sasl', separator: null, password_enc: encryptSecret(key, SECRET) });
    app = await buildHttpApp({ store, key: () => key, token: loadAdminToken({ [ADMIN_TOKEN_ENV]: TOKEN }), logger: pino({ level: 'silent' }), webDir: join(dir, 'no-web') });
  });

  after(async () => {
    await app?.close();
    await store?.close();
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('every /api/ request needs the admin token; a wrong one is refused the same way', { skip: skip ?? false }, async () => {
    for (const headers of [{}, { authorization: 'Bearer wrong-token-wrong-token' }, { authorization: TOKEN }] as Record<string, string>[]) {
      const r = await call('GET', '/api/batches', undefined, headers);
      assert.equal(r.statusCode, 401, JSON.stringify(headers));
      assert.match(r.headers['www-authenticate'] as string, /^Bearer/);
    }
    // Other spellings of the same path reach the same routes: never without the token.
    for (const url of ['/%61pi/batches', '/%61pi/health', '/api/%62atches', '/api%2Fbatches', '//api/batches', '/api/batches/', '/api/./batches']) {
      const r = await call('GET', url, undefined, {});
      assert.ok(r.statusCode === 401 || r.statusCode === 404, `${url}: ${r.statusCode} ${r.body.slice(0, 100)}`);
    }
    const stop = await call('POST', '/%61pi/batches/nope/stop', undefined, {});
    assert.equal(stop.statusCode, 401);
    const ok = await call('GET', '/api/batches');
    assert.equal(ok.statusCode, 200);
    assert.deepEqual(ok.json(), []);
    assert.equal(ok.headers['cache-control'], 'no-store');
  });

  test('the page itself needs no token (it holds no data) and says when it is not built', { skip: skip ?? false }, async () => {
    const r = await call('GET', '/', undefined, {});
    assert.equal(r.statusCode, 404);
    assert.match(r.body, /not built/);
  });

  test('csv check: raw text/csv and base64 JSON give the CLI\'s problems, by line, never the password', { skip: skip ?? false }, async () => {
    const text = `EmailAddress,UserName,Password\r\na@example.org,alice,${SECRET}\r\nnot-an-address,bob,${SECRET}\r\n`;
    const raw = await call('POST', '/api/csv/check', text);
    assert.equal(raw.statusCode, 200);
    const v = raw.json() as { valid: boolean; errors: { line: number; message: string }[] };
    assert.equal(v.valid, false);
    assert.equal(v.errors[0]!.line, 3);
    assert.ok(!raw.body.includes(SECRET));
    // Latin-1 bytes: only the base64 form keeps them, and they are named as not UTF-8.
    const latin1 = Buffer.concat([Buffer.from('EmailAddress,UserName,Password\r\na@example.org,J'), Buffer.from([0xfc]), Buffer.from('rgen,pw-123\r\n')]);
    const b64 = await call('POST', '/api/csv/check', { csvBase64: latin1.toString('base64') });
    assert.match(JSON.stringify(b64.json()), /UTF-8/);
    const good = (await call('POST', '/api/csv/check', `EmailAddress,UserName,Password,UserRoot\r\na@example.org,alice,${SECRET},/users/alice\r\n`)).json();
    assert.deepEqual(good.preview, [{ line: 2, emailAddress: 'a@example.org', userName: 'alice', userRoot: '/users/alice' }]);
    const none = await call('POST', '/api/csv/check', {});
    assert.equal(none.statusCode, 400);
  });

  test('batch create: an invalid file is 422 with its problems; unknown endpoint 404; bad dates 400; then 201', { skip: skip ?? false }, async () => {
    const csv = (rows: string) => Buffer.from(`EmailAddress,UserName,Password\r\n${rows}`).toString('base64');
    const invalid = await call('POST', '/api/batches', { name: 'b1', endpoint: 'src', target: 'tgt', csvBase64: csv(`a@example.org,alice,${SECRET}\r\na@example.org,alice2,${SECRET}\r\n`) });
    assert.equal(invalid.statusCode, 422);
    assert.match(invalid.body, /line 3|"line":3/);
    assert.ok(!invalid.body.includes(SECRET));
    const noEndpoint = await call('POST', '/api/batches', { name: 'b1', endpoint: 'nope', target: 'tgt', csvBase64: csv(`a@example.org,alice,${SECRET}\r\n`) });
    assert.equal(noEndpoint.statusCode, 404);
    assert.match(noEndpoint.json().error, /no migration endpoint named "nope"/);
    const future = await call('POST', '/api/batches', { name: 'b1', endpoint: 'src', target: 'tgt', receivedAfter: '+2h', csvBase64: csv(`a@example.org,alice,${SECRET}\r\n`) });
    assert.equal(future.statusCode, 400);
    assert.match(future.json().error, /would copy nothing/);
    const badName = await call('POST', '/api/batches', { name: 'bad name', endpoint: 'src', target: 'tgt', csvBase64: csv(`a@example.org,alice,${SECRET}\r\n`) });
    assert.equal(badName.statusCode, 400);
    assert.match(badName.json().error, /letters, digits/);
    assert.equal((await call('POST', '/api/batches', { name: 'b9', endpoint: 'src', target: 'tgt', csvBase64: 123 })).statusCode, 400);
    const typo = await call('POST', '/api/batches', { name: 'b9', endpoint: 'src', target: 'tgt', exlude: ['Junk'], csv: 'EmailAddress,UserName,Password\r\n' });
    assert.equal(typo.statusCode, 400, 'a misspelt option is refused, not dropped');
    const created = await call('POST', '/api/batches', { name: 'b1', endpoint: 'src', target: 'tgt', exclude: ['Junk'], csvBase64: csv(`a@example.org,alice,${SECRET}\r\nb@example.org,bob,${SECRET}\r\n`) });
    assert.equal(created.statusCode, 201, created.body);
    const d = created.json() as { batch: { name: string; status: string; options: { exclude: string[] } }; mailboxes: unknown[] };
    assert.equal(d.batch.status, 'Created');
    assert.deepEqual(d.batch.options.exclude, ['Junk']);
    assert.equal(d.mailboxes.length, 2);
    assert.ok(!created.body.includes(SECRET));
    const again = await call('POST', '/api/batches', { name: 'b2', endpoint: 'src', target: 'tgt', csvBase64: csv(`a@example.org,alice,${SECRET}\r\n`) });
    assert.equal(again.statusCode, 422);
    assert.match(again.body, /b1/, 'names the batch that holds the address');
    // Start at a set time (the page sends its local time as ISO 8601 with the zone).
    const at = new Date(Date.now() + 3_600_000);
    const noTime = await call('POST', '/api/batches', { name: 'later', endpoint: 'src', target: 'tgt', start: 'at', csvBase64: csv(`l@example.org,l,${SECRET}\r\n`) });
    assert.equal(noTime.statusCode, 400);
    // A time without start "at" is not dropped (the batch would wait for good), nor is a time in the past taken as "now".
    const dropped = await call('POST', '/api/batches', { name: 'later', endpoint: 'src', target: 'tgt', startAt: at.toISOString(), csvBase64: csv(`l@example.org,l,${SECRET}\r\n`) });
    assert.equal(dropped.statusCode, 400);
    assert.match(dropped.json().error, /startAt is only for start "at"/);
    const past = await call('POST', '/api/batches', { name: 'later', endpoint: 'src', target: 'tgt', start: 'at', startAt: '2001-01-01T00:00:00Z', csvBase64: csv(`l@example.org,l,${SECRET}\r\n`) });
    assert.equal(past.statusCode, 400);
    assert.match(past.json().error, /startAt 2001-01-01T00:00:00Z is in the past; to start at once use start "now"/);
    const later = await call('POST', '/api/batches', { name: 'later', endpoint: 'src', target: 'tgt', start: 'at', startAt: at.toISOString(), csvBase64: csv(`l@example.org,l,${SECRET}\r\n`) });
    assert.equal(later.statusCode, 201, later.body);
    assert.equal(later.json().batch.status, 'Created');
    assert.equal(later.json().batch.startAt, new Date(Math.floor(at.getTime())).toISOString());
    assert.equal((await call('DELETE', '/api/batches/later')).statusCode, 200, 'a batch never started goes at once');
  });

  test('lifecycle: start, stop, sync-now, retry, status, report as CSV and JSON, delete (409 with the warning, then force)', { skip: skip ?? false }, async () => {
    assert.equal((await call('POST', '/api/batches/b1/sync-now')).statusCode, 409, 'a batch never started cannot sync now');
    assert.equal((await call('POST', '/api/batches/b1/start')).json().started, true);
    assert.equal((await call('POST', '/api/batches/b1/start')).json().started, false);
    assert.equal((await call('POST', '/api/batches/b1/sync-now')).json().mailboxes, 2);
    assert.deepEqual((await call('POST', '/api/batches/b1/retry')).json(), { retrying: [] });
    assert.equal((await call('POST', '/api/batches/b1/retry', { user: 'zz@example.org' })).statusCode, 404);
    // Bodies of the wrong shape are refused as such, not a 500 from deep inside.
    assert.equal((await call('POST', '/api/batches/b1/retry', { user: 5 })).statusCode, 400);
    assert.equal((await call('POST', '/api/batches/b1/verify', { user: { a: 1 } })).statusCode, 400);
    assert.equal((await call('POST', '/api/csv/check', { csvBase64: 123 })).statusCode, 400);
    assert.equal((await call('POST', '/api/endpoints/src/test', { testUser: ['x'] })).statusCode, 400);
    const nobody = await call('POST', '/api/batches/b1/verify', { user: 'nobody@example.org' });
    assert.equal(nobody.statusCode, 404);
    assert.match(nobody.json().error, /has no mailbox nobody@example\.org/);
    const some = (await call('GET', '/api/batches/b1?q=B@EXAMPLE&limit=5')).json() as { mailboxes: { emailAddress: string }[]; mailboxesMatching: number; batch: { mailboxes: number } };
    assert.deepEqual(some.mailboxes.map((m) => m.emailAddress), ['b@example.org']);
    assert.equal(some.mailboxesMatching, 1);
    assert.equal(some.batch.mailboxes, 2, 'the batch itself counts every mailbox');
    const paged = (await call('GET', '/api/batches/b1?offset=1&limit=1')).json() as { mailboxes: { emailAddress: string }[]; mailboxesMatching: number };
    assert.deepEqual(paged.mailboxes.map((m) => m.emailAddress), ['b@example.org']);
    assert.equal(paged.mailboxesMatching, 2);
    assert.equal((await call('GET', '/api/batches/b1?status=problems')).json().mailboxesMatching, 0);
    // Query parameters: one value each, whole numbers, known names.
    for (const q of ['q=a&q=b', 'limit=-5', 'offset=abc', 'status=Nope', 'stauts=Failed']) assert.equal((await call('GET', `/api/batches/b1?${q}`)).statusCode, 400, q);
    assert.equal((await call('GET', '/api/dns/example.org?targetMx=a&targetMx=b')).statusCode, 400);
    const dry = await call('POST', '/api/batches/b1/update', { csv: 'EmailAddress,UserName,Password\r\na@example.org,alice,other-pw-1\r\n', dryRun: true });
    assert.equal(dry.statusCode, 400, 'an unknown field (a "dry run" it does not have) is refused, not ignored');
    assert.match(dry.json().error, /unknown field "dryRun" \(body\)/, 'and named');
    const both = await call('POST', '/api/batches/b1/update', { csv: 'x', csvBase64: 'eA==' });
    assert.equal(both.statusCode, 400);
    assert.match(both.json().error, /csvBase64 or csv, not both/);
    assert.equal((await call('POST', '/api/csv/check', { csv: 'x', foo: 1 })).statusCode, 400);
    const detail = await call('GET', '/api/batches/b1');
    assert.equal(detail.json().batch.status, 'Syncing');
    assert.equal(detail.json().verifying, false);
    assert.equal((await call('GET', '/api/batches/nope')).statusCode, 404);
    const csv = await call('GET', '/api/batches/b1/report?format=csv');
    assert.match(csv.headers['content-type'] as string, /text\/csv/);
    assert.match(csv.body, /a@example\.org/);
    assert.ok(!csv.body.includes(SECRET));
    assert.equal((await call('GET', '/api/batches/b1/report')).json().batch.name, 'b1');
    const stop = await call('POST', '/api/batches/b1/stop');
    assert.equal(stop.json().stopped, true);
    const early = await call('DELETE', '/api/batches/b1');
    assert.equal(early.statusCode, 409);
    assert.equal(early.json().kind, 'delete-too-early');
    assert.match(early.json().error, /initial sync.*Add \?force=true/);
    const forced = await call('DELETE', '/api/batches/b1?force=true');
    assert.deepEqual(forced.json(), { removed: true, remaining: 0 });
    assert.equal((await call('GET', '/api/batches/b1')).statusCode, 404);
  });

  test('check logins and verify are claimed in the database: a second serve refuses to start them again and shows their state', { skip: skip ?? false }, async () => {
    // A second `serve` on the same database.
    const other = await buildHttpApp({ store, key: () => key, token: loadAdminToken({ [ADMIN_TOKEN_ENV]: TOKEN }), logger: pino({ level: 'silent' }), webDir: join(dir, 'no-web') });
    try {
      await call('POST', '/api/batches', { name: 'claims', endpoint: 'src', target: 'tgt', csv: 'EmailAddress,UserName,Password\r\nk1@example.org,k1,pw-k-123\r\n', start: 'now' });
      const id = (await store.db.selectFrom('batch').select('id').where('name', '=', 'claims').executeTakeFirstOrThrow()).id;
      // A run held by some serve: neither serve starts another.
      assert.equal(await claimTask(store, id, 'login_check'), true);
      for (const app2 of [app, other]) {
        const again = await app2.inject({ method: 'POST', url: '/api/batches/claims/check-logins', headers: { authorization: `Bearer ${TOKEN}` } });
        assert.equal(again.statusCode, 409, 'every password would be tried twice');
      }
      assert.equal((await call('GET', '/api/batches/claims')).json().loginCheck.running, true);
      await store.db.updateTable('batch').set({ login_check_until: null }).where('id', '=', id).execute();
      const first = await call('POST', '/api/batches/claims/check-logins');
      assert.equal(first.statusCode, 202);
      // The source is unreachable here: the check ends quickly, every login failed; the other serve shows it.
      const state = async () => (await other.inject({ method: 'GET', url: '/api/batches/claims', headers: { authorization: `Bearer ${TOKEN}` } })).json().loginCheck as { running: boolean; ok: boolean | null; mailboxes: { source: { ok: boolean } }[] };
      for (const end = Date.now() + 15_000; (await state()).running; await new Promise((r) => setTimeout(r, 50))) assert.ok(Date.now() < end, 'check logins finished');
      const done = await state();
      assert.equal(done.ok, false);
      assert.equal(done.mailboxes[0]!.source.ok, false);
      assert.equal((await call('POST', '/api/batches/claims/check-logins')).statusCode, 202, 'free again once finished');
      for (const end = Date.now() + 15_000; (await state()).running; await new Promise((r) => setTimeout(r, 50))) assert.ok(Date.now() < end);
      // A run whose serve died: its claim expires and the page says it was interrupted.
      const row = (await store.db.selectFrom('batch').select(['id', 'login_check_json']).where('name', '=', 'claims').executeTakeFirstOrThrow());
      await store.db.updateTable('batch').set({ login_check_until: Date.now() - 1, login_check_json: JSON.stringify({ ...JSON.parse(row.login_check_json!), running: true }) }).where('id', '=', row.id).execute();
      assert.match((await call('GET', '/api/batches/claims')).json().loginCheck.error, /interrupted/);
      // Verify, the same way.
      await store.db.updateTable('batch').set({ verify_until: Date.now() + 60_000 }).where('id', '=', row.id).execute();
      assert.equal((await other.inject({ method: 'GET', url: '/api/batches/claims', headers: { authorization: `Bearer ${TOKEN}` } })).json().verifying, true);
      assert.equal((await call('POST', '/api/batches/claims/verify')).statusCode, 409);
      await store.db.updateTable('batch').set({ verify_until: null }).where('id', '=', row.id).execute();
      await call('POST', '/api/batches/claims/stop');
      await call('DELETE', '/api/batches/claims?force=true');
    } finally {
      await other.close();
    }
  });

  test('endpoints: listed without passwords; a failed test is 422 with its steps and stores nothing; bad settings 400; in use 409', { skip: skip ?? false }, async () => {
    const targets = await call('GET', '/api/targets');
    assert.equal(targets.json()[0].passwordStored, true);
    assert.ok(!targets.body.includes(SECRET) && !targets.body.includes('password_enc'));
    const failed = await call('POST', '/api/endpoints', { name: 'nowhere', host: '127.0.0.1', port: 9, tls: 'none', testUser: 'u', testPassword: SECRET });
    assert.equal(failed.statusCode, 422);
    const t = failed.json().test as { ok: boolean; probe: { steps: { step: string; ok: boolean }[] } };
    assert.equal(t.ok, false);
    assert.equal(t.probe.steps[0]!.step, 'connect');
    assert.ok(!failed.body.includes(SECRET));
    assert.equal((await call('GET', '/api/endpoints/nowhere')).statusCode, 404);
    const badTls = await call('POST', '/api/endpoints', { name: 'x', host: '127.0.0.1', tls: 'ssl' });
    assert.equal(badTls.statusCode, 400);
    assert.match(badTls.json().error, /^tls must be implicit, starttls or none/, 'the field is named as the API spells it');
    const badLimit = await call('POST', '/api/endpoints', { name: 'x', host: '127.0.0.1', maxConcurrentMigrations: 0 });
    assert.match(badLimit.json().error, /^maxConcurrentMigrations must be a whole number/);
    const noPassword = await call('POST', '/api/targets', { name: 't2', host: '127.0.0.1', adminUser: 'admin' });
    assert.equal(noPassword.statusCode, 400);
    // A change is tested first: this endpoint's server is unreachable, so nothing changes.
    const changed = await app.inject({ method: 'PATCH', url: '/api/endpoints/src', headers: { authorization: `Bearer ${TOKEN}` }, payload: { maxConcurrentMigrations: 7 } });
    assert.equal(changed.statusCode, 422);
    assert.equal((await call('GET', '/api/endpoints/src')).json().maxConcurrentMigrations, 20);
    const untried = await app.inject({ method: 'PATCH', url: '/api/targets/tgt', headers: { authorization: `Bearer ${TOKEN}` }, payload: { adminPassword: 'New-Admin-Pw-77' } });
    assert.equal(untried.statusCode, 400, 'a new admin password is tried acting as a user before it is stored');
    assert.match(untried.json().error, /give a test user/);
    const rotated = await app.inject({ method: 'PATCH', url: '/api/targets/tgt', headers: { authorization: `Bearer ${TOKEN}` }, payload: { adminPassword: 'New-Admin-Pw-77', testUser: 'a@example.org' } });
    assert.equal(rotated.statusCode, 422);
    assert.ok(!rotated.body.includes('New-Admin-Pw-77'));
    assert.equal((await app.inject({ method: 'PATCH', url: '/api/endpoints/nope', headers: { authorization: `Bearer ${TOKEN}` }, payload: {} })).statusCode, 404);
    const taken = await call('POST', '/api/endpoints', { name: 'src', host: '127.0.0.1' });
    assert.equal(taken.statusCode, 409);
    await call('POST', '/api/batches', { name: 'holder', endpoint: 'src', target: 'tgt', csv: 'EmailAddress,UserName,Password\r\nc@example.org,c,pw-c-123\r\n' });
    const inUse = await call('DELETE', '/api/endpoints/src');
    assert.equal(inUse.statusCode, 409);
    assert.match(inUse.json().error, /holder/);
  });

  test('dns: the MX check as dns check --json gives it; a bad domain is 400, a resolver that cannot answer 502', { skip: skip ?? false }, async () => {
    const dns = await startDnsServer([{ type: 'MX', name: 'example.org', ttl: 7200, class: 'IN', data: { preference: 10, exchange: 'mx.old.example' } }]);
    try {
      const r = await call('GET', `/api/dns/example.org?targetMx=mx.new.example&server=${dns.address}`);
      assert.equal(r.statusCode, 200, r.body);
      const j = r.json() as { ttl: number; ttlOk: boolean; switched: string; tracked: boolean };
      assert.equal(j.ttl, 7200);
      assert.equal(j.ttlOk, false);
      assert.equal(j.switched, 'none');
      assert.equal(j.tracked, true);
      assert.equal((await call('GET', `/api/dns/not_a..domain?server=${dns.address}`)).statusCode, 400);
      dns.behaviour.rcode = 'SERVFAIL';
      const failed = await call('GET', `/api/dns/example.org?server=${dns.address}`);
      assert.equal(failed.statusCode, 502);
      assert.match(failed.json().error, /example\.org/);
    } finally {
      await dns.stop();
    }
  });

  test('the admin token: from MAILFERRY_ADMIN_TOKEN, else a 0600 file made once; too short is refused', { skip: skip ?? false }, () => {
    const home = join(dir, 'home');
    const first = loadAdminToken({ MAILFERRY_HOME: home });
    const file = join(home, 'admin-token');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const again = loadAdminToken({ MAILFERRY_HOME: home });
    assert.equal(first.where, file);
    const saved = readFileSync(file, 'utf8').trim();
    assert.ok(again.matches(saved) && first.matches(saved));
    assert.ok(!first.matches(saved + 'x'));
    assert.throws(() => loadAdminToken({ [ADMIN_TOKEN_ENV]: 'short' }), AdminTokenError);
    // A bearer token is one word (RFC 6750 §2.1): one with blanks could never sign in.
    assert.throws(() => loadAdminToken({ [ADMIN_TOKEN_ENV]: 'correct horse battery staple' }), /blank/);
    const emptyHome = join(dir, 'empty-home');
    mkdirSync(emptyHome);
    writeFileSync(join(emptyHome, 'admin-token'), '', { mode: 0o600 });
    assert.throws(() => loadAdminToken({ MAILFERRY_HOME: emptyHome }), /empty.*delete it/);
  });
});

