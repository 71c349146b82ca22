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
import { isStoreFailure, type Store } from '../src/store/open.js';

const skip = await postgresUnavailable();
if (skip) process.stderr.write(`# skipping the PostgreSQL connection test: ${skip}\n`);

/**
 * Runs `fn` on a store of a fresh database of its own, with a way to close every server
 * connection to it as `pg_terminate_backend` does; fails if the process saw an uncaught
 * exception meanwhile (what an 'error' event without a listener is).
 */
async function onFreshStore(fn: (store: Store, terminate: () => Promise<number>) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'mailferry-pg-'));
  const db = await freshDb('postgres', dir);
  const store = await db.open();
  const crashes: Error[] = [];
  const onCrash = (err: Error) => crashes.push(err);
  process.on('uncaughtException', onCrash);
  const terminate = async () => {
    const { default: pg } = await import('pg');
    const admin = new pg.Client({ connectionString: PG_BASE });
    await admin.connect();
    try {
      const r = await admin.query('select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [new URL(db.url).pathname.slice(1)]);
      return r.rowCount ?? 0;
    } finally {
      await admin.end();
    }
  };
  try {
    await fn(store, terminate);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(crashes.map((e) => e.message), []);
    assert.deepEqual(await store.db.selectFrom('batch').select('id').execute(), [], 'the next query works');
  } finally {
    process.off('uncaughtException', onCrash);
    await store.close();
    await db.drop();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('idle connections closed by the server: no crash, the next query opens a new one', { skip: skip ?? false }, () =>
  onFreshStore(async (store, terminate) => {
    // A few idle connections in the pool.
    await Promise.all([1, 2, 3].map(() => store.db.selectFrom('batch').select('id').execute()));
    assert.ok((await terminate()) > 0, 'the pool had connections to close');
  }),
);

test('a connection closed by the server while checked out (inside a transaction): no crash, the transaction fails as a database failure', { skip: skip ?? false }, () =>
  onFreshStore(async (store, terminate) => {
    const failed = await store.db
      .transaction()
      .execute(async (tx) => {
        await tx.selectFrom('batch').select('id').execute();
        await terminate();
        await new Promise((r) => setTimeout(r, 300));
        await tx.selectFrom('batch').select('id').execute();
      })
      .then(
        () => null,
        (err: unknown) => err,
      );
    assert.ok(failed, 'the transaction on the closed connection failed');
    assert.equal(isStoreFailure(failed), true, String(failed));
  }),
);
