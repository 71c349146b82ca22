/**
 * The embedded SQLite database as Kysely sees it, plus direct access for the copy path.
 *
 * Why: a profile of a 5,000-message migration spent more CPU in the journal than in
 * SQLite's own work: Kysely's SQLite driver prepares every statement anew (better-sqlite3
 * `prepare` alone was ~0.1 s), and each journal write goes through query building,
 * compiling and async plumbing. So:
 * - every statement Kysely runs is prepared once and reused (a bounded cache by SQL text;
 *   safe because Kysely's SQLite driver runs one statement at a time on its single
 *   connection, under its own mutex);
 * - the journal's per-message writes (journal.ts) use {@link withSqlite}: plain
 *   better-sqlite3 statements, run synchronously while Kysely's connection is held, so
 *   they are inside the caller's transaction when there is one and never inside anyone
 *   else's.
 */
import type BetterSqlite3 from 'better-sqlite3';
import { type Kysely, SqliteAdapter, SqliteDialect, type Transaction } from 'kysely';

type Statement = BetterSqlite3.Statement<unknown[]>;

const CACHE_LIMIT = 500;

/** A prepared-statement cache by SQL text, dropping the oldest entry when full. */
export class StatementCache {
  private readonly cache = new Map<string, Statement>();

  constructor(readonly raw: BetterSqlite3.Database) {}

  get(sql: string): Statement {
    let stmt = this.cache.get(sql);
    if (stmt) return stmt;
    stmt = this.raw.prepare(sql);
    if (this.cache.size >= CACHE_LIMIT) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(sql, stmt);
    return stmt;
  }
}

/** The adapter Kysely and all its transactions share: it carries the handle to journal.ts. */
class HandleAdapter extends SqliteAdapter {
  constructor(readonly statements: StatementCache) {
    super();
  }
}

export function sqliteDialect(raw: BetterSqlite3.Database): SqliteDialect {
  const statements = new StatementCache(raw);
  // What Kysely's driver needs of a database: prepare and close. Statements are
  // reusable (better-sqlite3 rebinds parameters on every run).
  const database = { prepare: (sql: string) => statements.get(sql), close: () => raw.close() };
  return new (class extends SqliteDialect {
    override createAdapter(): SqliteAdapter {
      return new HandleAdapter(statements);
    }
  })({ database: database as unknown as BetterSqlite3.Database });
}


/**
 * Runs `fn` with the SQLite statements, or returns undefined when `db` is not the embedded
 * SQLite (then the caller uses its portable Kysely form). Inside a Kysely transaction `fn`
 * runs as part of it; otherwise it runs as its own transaction, once Kysely's single
 * connection is free (a transaction of another lane may be open between its awaits).
 */
export function withSqlite<DB, T>(db: Kysely<DB> | Transaction<DB>, fn: (s: StatementCache) => T): Promise<T> | undefined {
  const adapter = db.getExecutor().adapter;
  if (!(adapter instanceof HandleAdapter)) return undefined;
  const s = adapter.statements;
  if (db.isTransaction) return Promise.resolve(fn(s));
  return db.connection().execute(async () => s.raw.transaction(() => fn(s))());
}
