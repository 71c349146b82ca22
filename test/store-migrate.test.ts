/**
 * Several processes opening one new SQLite file at once (`serve` and `worker` started
 * together, a shell loop of `sync … &`) all bring it up to date: Kysely does not lock
 * migrations on SQLite, and the losers of the race used to fail with "duplicate column".
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { runCli } from './helpers/cli.js';
import { databaseUrl, isStoreFailure, openStore, sqlitePathOf, StoreOpenError, withoutPassword } from '../src/store/open.js';
import { ImapConnectError } from '../src/imap/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'mailferry-migrate-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('processes started together on a new SQLite file all open it', async () => {
  for (let round = 0; round < 3; round++) {
    const db = `sqlite:${join(dir, `state-${round}.sqlite`)}`;
    const runs = await Promise.all(Array.from({ length: 4 }, () => runCli(['batch', 'list', '--db', db, '--json'], { ...process.env, MAILFERRY_HOME: dir })));
    for (const r of runs) assert.equal(r.status, 0, r.stderr);
  }
});

test('a database failure is told from an IMAP one that wraps the same system error', () => {
  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:993'), { code: 'ECONNREFUSED' });
  const imap = new ImapConnectError('cannot connect to 127.0.0.1:993: connection refused', { cause: refused });
  assert.equal(isStoreFailure(Object.assign(new Error('alice: cannot connect'), { cause: imap })), false);
  assert.equal(isStoreFailure(Object.assign(new Error('terminating connection due to administrator command'), { severity: 'FATAL', code: '57P01' })), true);
  assert.equal(isStoreFailure(Object.assign(new Error('could not extend file'), { severity: 'ERROR', code: '53100' })), false, 'a full disk repeats: a failure');
  assert.equal(isStoreFailure(Object.assign(new Error('database is locked'), { name: 'SqliteError', code: 'SQLITE_BUSY' })), true);
});

test('a --db value without a scheme is a SQLite file path; other schemes are kept or refused', async () => {
  const cwd = process.cwd();
  const dir = mkdtempSync(join(tmpdir(), 'mailferry-dburl-'));
  try {
    process.chdir(dir);
    assert.equal(databaseUrl('state.db'), `sqlite:${join(dir, 'state.db')}`);
    assert.equal(databaseUrl('/var/lib/mf.db'), 'sqlite:/var/lib/mf.db');
    assert.equal(sqlitePathOf('state.db'), join(dir, 'state.db'));
    assert.equal(databaseUrl('postgres://u@127.0.0.1/test'), 'postgres://u@127.0.0.1/test');
    const store = await openStore('state.db');
    await store.close();
    assert.ok(existsSync(join(dir, 'state.db')));
    await assert.rejects(openStore('mysql://127.0.0.1/x'), /unsupported database URL "mysql:.*a file path, sqlite:PATH or postgres/);
    // One that cannot be opened says it is the state database, and hides a password.
    await assert.rejects(openStore('postgres://u:Secret-Db-Pw@127.0.0.1:1/x'), (err: Error) => err instanceof StoreOpenError && /^cannot open the state database postgres:\/\/u:\*\*\*@127\.0\.0\.1:1\/x: /.test(err.message) && !err.message.includes('Secret-Db-Pw'));
    // A password with '@' or '/' in it, not percent-encoded, is hidden whole.
    for (const url of ['postgres://mf:p@ss@127.0.0.1:1/mf', 'postgres://mf:ab/cd@127.0.0.1:1/mf']) {
      await assert.rejects(openStore(url), (err: Error) => err instanceof StoreOpenError && err.message.startsWith('cannot open the state database postgres://mf:***@127.0.0.1:1/mf') && !/ss@|ab\/cd/.test(err.message));
    }
    assert.equal(withoutPassword('postgres://127.0.0.1/x'), 'postgres://127.0.0.1/x');
    assert.equal(withoutPassword('postgres://u@127.0.0.1/x'), 'postgres://u@127.0.0.1/x');
    await assert.rejects(openStore('/dev/null/state.db'), /^StoreOpenError: cannot open the state database sqlite:\/dev\/null\/state\.db: /);
  } finally {
    process.chdir(cwd);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('CLI usage errors: --json still ends stdout with the JSON object; an unknown --log-level is a usage error', async () => {
  const missing = await runCli(['sync', '--source', '127.0.0.1:1', '--source-user', 'a', '--json']);
  assert.equal(missing.status, 2);
  assert.match(missing.stdout.trim().split('\n').pop() ?? '', /^\{"error":"required option .*--target.*","exitStatus":2\}$/);
  const level = await runCli(['sync', '--source', '127.0.0.1:1', '--source-user', 'a', '--target', '127.0.0.1:1', '--target-user', 'b', '--log-level', 'loud'], { ...process.env, MAILFERRY_SOURCE_PASSWORD: 'x', MAILFERRY_TARGET_PASSWORD: 'y' });
  assert.equal(level.status, 2, level.stderr);
  assert.match(level.stderr, /--log-level must be one of fatal, error, warn, info, debug, trace, silent, not "loud"/);
});
