/**
 * Write transactions that behave the same on SQLite and PostgreSQL.
 *
 * SQLite: `BEGIN IMMEDIATE` takes the database's write lock before the first read, so a
 * transaction that reads and then writes (every claim does) is serialised against all
 * other writers, in this process and in others, and never fails half-way with
 * SQLITE_BUSY on upgrading a stale read snapshot (busy_timeout cannot help there).
 *
 * PostgreSQL: READ COMMITTED, with explicit row locks taken by the callers in one order —
 * endpoint rows, then batch row, then mailbox rows — so that transactions do not deadlock;
 * should one still be chosen as a deadlock victim, or SQLite stay busy past its timeout,
 * the whole transaction is run again. `fn` must therefore touch nothing but the database.
 */
import { type Kysely, sql } from 'kysely';
import type { Store } from '../store/open.js';
import type { Database } from '../store/schema.js';

export type Tx = Kysely<Database>;

const ATTEMPTS = 5;

/** Deadlock (40P01), serialization failure (40001), or SQLite still locked after busy_timeout. */
export function isTransientDbError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === '40P01' || code === '40001' || code === 'SQLITE_BUSY' || code === 'SQLITE_BUSY_SNAPSHOT';
}

export async function writeTx<T>(store: Pick<Store, 'db' | 'dialect'>, fn: (tx: Tx) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      // One connection for the whole transaction. Inside `fn`, only `tx` may be used: on
      // SQLite, Kysely has a single connection and a query through `store.db` would wait
      // for this transaction to end.
      return await store.db.connection().execute(async (tx) => {
        await sql.raw(store.dialect === 'sqlite' ? 'begin immediate' : 'begin').execute(tx);
        try {
          const result = await fn(tx);
          await sql.raw('commit').execute(tx);
          return result;
        } catch (err) {
          await sql.raw('rollback').execute(tx).catch(() => undefined);
          throw err;
        }
      });
    } catch (err) {
      if (attempt >= ATTEMPTS || !isTransientDbError(err)) throw err;
      await new Promise((r) => setTimeout(r, 20 * attempt + Math.random() * 50));
    }
  }
}
