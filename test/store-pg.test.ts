/**
 * The state database on PostgreSQL when the server closes its connections (a restart, a
 * failover, `pg_terminate_backend`): the process lives on and the next query works.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { freshDb, PG_BASE, postgresUnavailable } from './helpers/batch-lab.js';
import { isStoreFailure } from '../src/store/open.js';

const skip = await postgresUnavailable();
if (skip) process.stderr.write(`# skipping the PostgreSQL connection test: ${skip}\n`);

test('idle connections closed by the server: no crash, the next query opens a new one', { skip: skip ?? false }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mailferry-pg-'));
  const db = await freshDb('postgres', dir);
  const store = await db.open();
  const crashes: Error[] = [];
  const onCrash = (err: Error) => crashes.push(err);
  process.on('uncaughtException', onCrash);
  try {
    // A few idle connections in the pool.
    await Promise.all([1, 2, 3].map(() => store.db.selectFrom('batch').select('id').execute()));
    const { default: pg } = await import('pg');
    const admin = new pg.Client({ connectionString: PG_BASE });
    await admin.connect();
    const name = new URL(db.url).pathname.slice(1);
    const killed = await admin.query('select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [name]);
    await admin.end();
    assert.ok(killed.rowCount && killed.rowCount > 0, 'the pool had connections to close');
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(crashes.map((e) => e.message), []);
    assert.deepEqual(await store.db.selectFrom('batch').select('id').execute(), []);
  } finally {
    process.off('uncaughtException', onCrash);
    await store.close();
    await db.drop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a connection closed by the server while checked out (inside a transaction): no crash, the transaction fails as a database failure', { skip: skip ?? false }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mailferry-pg-'));
  const db = await freshDb('postgres', dir);
  const store = await db.open();
  const crashes: Error[] = [];
  const onCrash = (err: Error) => crashes.push(err);
  process.on('uncaughtException', onCrash);
  try {
    const { default: pg } = await import('pg');
    const name = new URL(db.url).pathname.slice(1);
    const failed = await store.db
      .transaction()
      .execute(async (tx) => {
        await tx.selectFrom('batch').select('id').execute();
        const admin = new pg.Client({ connectionString: PG_BASE });
        await admin.connect();
        await admin.query('select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [name]);
        await admin.end();
        await new Promise((r) => setTimeout(r, 300));
        await tx.selectFrom('batch').select('id').execute();
      })
      .then(
        () => null,
        (err: unknown) => err,
      );
    assert.ok(failed, 'the transaction on the closed connection failed');
    assert.equal(isStoreFailure(failed), true, String(failed));
    assert.deepEqual(crashes.map((e) => e.message), []);
    assert.deepEqual(await store.db.selectFrom('batch').select('id').execute(), [], 'the next query works');
  } finally {
    process.off('uncaughtException', onCrash);
    await store.close();
    await db.drop();
    rmSync(dir, { recursive: true, force: true });
  }
});
