/**
 * Opens the state database named by a URL (`sqlite:PATH`, `postgres://…`) and brings its
 * schema up to date. SQLite is the embedded default; PostgreSQL is for several machines
 * sharing the work.
 */
import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { Kysely, Migrator, PostgresDialect } from 'kysely';
import { type Dialect, migrationProvider } from './migrations.js';
import { sqliteDialect } from './sqlite-handle.js';
import type { Database } from './schema.js';

export interface Store {
  db: Kysely<Database>;
  dialect: Dialect;
  /** The URL with any password removed, for messages. */
  displayUrl: string;
  close(): Promise<void>;
}

export function defaultDbUrl(): string {
  return `sqlite:${join(process.env.MAILFERRY_HOME ?? join(homedir(), '.mailferry'), 'mailferry.sqlite')}`;
}

export class StoreUrlError extends Error {}

/**
 * The URL a `--db`/MAILFERRY_DB value means: one without a scheme is a SQLite file's path
 * (`--db state.db`, `--db /var/lib/mailferry/state.db`), as an admin would type it.
 */
export function databaseUrl(value: string): string {
  return /^[a-z][a-z0-9+.-]*:/i.test(value) ? value : `sqlite:${resolve(value)}`;
}

/** The file a `sqlite:` URL (or a bare path) names (`sqlite:///abs` and `sqlite:/abs` alike); undefined for another URL. */
export function sqlitePathOf(value: string): string | undefined {
  const url = databaseUrl(value);
  return url.startsWith('sqlite:') ? url.slice('sqlite:'.length).replace(/^\/\/(?=\/)/, '') : undefined;
}

/**
 * A database URL as it may be shown: the password replaced by `***`. Everything between
 * `//` and the *last* `@` before the host is the user information, so a password pasted
 * with an `@` or `/` in it (not percent-encoded) is hidden whole.
 */
export function withoutPassword(url: string): string {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)([^?#]*)@/i.exec(url);
  if (!m) return url;
  const userinfo = m[2]!;
  const colon = userinfo.indexOf(':');
  return colon < 0 ? url : `${m[1]}${userinfo.slice(0, colon)}:***@${url.slice(m[0].length)}`;
}

/** The state database could not be opened (not there, refused, not writable): said as such, not as a bare system error. */
export class StoreOpenError extends Error {
  override name = 'StoreOpenError';
}

export async function openStore(value: string = process.env.MAILFERRY_DB ?? defaultDbUrl()): Promise<Store> {
  try {
    return await openStoreAt(databaseUrl(value));
  } catch (err) {
    if (err instanceof StoreUrlError) throw err;
    const shown = withoutPassword(databaseUrl(value));
    throw new StoreOpenError(`cannot open the state database ${shown}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
  }
}

async function openStoreAt(url: string): Promise<Store> {
  let db: Kysely<Database>;
  let dialect: Dialect;
  let displayUrl = url;
  let sqliteHandle: SqliteDatabase.Database | undefined;
  if (url.startsWith('sqlite:')) {
    const path = sqlitePathOf(url)!;
    if (!path) throw new StoreUrlError(`database URL ${url} names no file`);
    if (path !== ':memory:') {
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      // The journal names mailboxes, folders and subjects (passwords are encrypted): a new
      // file is the owner's alone. SQLite gives its -wal and -shm files the same mode.
      if (!existsSync(path)) closeSync(openSync(path, 'a', 0o600));
    }
    const sqlite = new SqliteDatabase(path);
    sqliteHandle = sqlite;
    // WAL lets readers (status, verify) work beside a running sync; NORMAL sync is
    // durable across process crashes (the journal's concern), only not across power loss.
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('synchronous = NORMAL');
    sqlite.pragma('busy_timeout = 10000');
    sqlite.pragma('foreign_keys = ON');
    // better-sqlite3 builds SQLite with a 16 MB page cache, which a journal of 60,000
    // messages fills (RSS past 150 MB for one mailbox). Its writes append to the end of the
    // tables and its reads are per-folder scans: 4 MiB holds what they touch, and the
    // operating system caches the file anyway.
    sqlite.pragma('cache_size = -4096');
    db = new Kysely<Database>({ dialect: sqliteDialect(sqlite) });
    dialect = 'sqlite';
  } else if (/^postgres(ql)?:\/\//.test(url)) {
    // Loaded only when used: most installations run on the embedded SQLite default.
    const { default: pg } = await import('pg');
    // int8 columns (UIDs, sizes, timestamps) fit in a JS number: parse them as numbers.
    pg.types.setTypeParser(20, (v) => Number(v));
    const pool = new pg.Pool({ connectionString: url, max: 10 });
    // An idle connection that PostgreSQL closes (a restart, a failover, an admin terminating
    // backends) makes the pool emit 'error'; without a listener Node ends the whole process —
    // `serve` and every sync with it. The pool has already dropped that client and opens a
    // new one when next needed; a query running on a closed connection fails on its own.
    pool.on('error', (err) => process.stderr.write(`mailferry: an idle PostgreSQL connection was closed (${err.message}); a new one is opened when needed\n`));
    // …and pg-pool takes that listener off a client while it is checked out (a transaction,
    // a query): a connection cut then was an unhandled 'error' event too. The query on it
    // fails with the error; the client is not given back to the pool.
    pool.on('connect', (client) => client.on('error', (err) => process.stderr.write(`mailferry: a PostgreSQL connection in use was closed (${err.message})\n`)));
    db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    dialect = 'postgres';
    displayUrl = withoutPassword(url);
  } else {
    throw new StoreUrlError(`unsupported database URL "${url}": use a file path, sqlite:PATH or postgres://…`);
  }
  // Names are zero-padded ASCII ("0001_sync_state"), so code-unit order is their order;
  // Kysely's default (localeCompare) builds an ICU collator on every start (~5 ms of a
  // no-op sync's 0.2 s).
  const nameComparator = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  const migrator = new Migrator({ db, provider: migrationProvider(dialect), nameComparator });
  // Kysely locks migrations on PostgreSQL (an advisory lock, and each batch is one
  // transaction) but not on SQLite, where it assumes one process and runs each statement on
  // its own: `serve` and `worker` started together on a new (or upgraded) file ran the same
  // ALTER TABLE twice ("duplicate column name"), and a process killed in a migration left
  // it half done. On SQLite pending migrations run in one IMMEDIATE transaction: the write
  // lock is taken first (another process waits for it, then finds nothing left to do), and
  // a kill rolls the whole batch back.
  const pending = sqliteHandle !== undefined && (await migrator.getMigrations()).some((m) => m.executedAt === undefined);
  if (pending) sqliteHandle!.exec('BEGIN IMMEDIATE');
  const { error } = await migrator.migrateToLatest();
  if (pending) sqliteHandle!.exec(error ? 'ROLLBACK' : 'COMMIT');
  if (error) {
    await db.destroy();
    throw error instanceof Error ? error : new Error(String(error));
  }
  return { db, dialect, displayUrl, close: () => db.destroy() };
}

/**
 * Whether an error is the state database failing for a while rather than the work: a
 * PostgreSQL connection lost or refused (SQLSTATE classes 08 and 57P: a restart, an admin
 * terminating backends), too many connections (53300), a deadlock or serialization
 * failure (40), SQLite busy, locked or I/O errors, the pg client's own words for a lost
 * connection. A run that meets one is interrupted, not failed. Other database errors (a
 * full disk, a constraint) would repeat: they stay failures. An error of the IMAP side is
 * never one, whatever it wraps (a source refusing connections says ECONNREFUSED too).
 */
export function isStoreFailure(err: unknown): boolean {
  for (let e = err as { severity?: unknown; code?: unknown; name?: unknown; message?: unknown; cause?: unknown } | null, depth = 0; e && depth < 3; e = e.cause as typeof e, depth++) {
    if (typeof e.name === 'string' && /^(Imap|SourceLogin|Impersonation|UserRoot|RawFetch)/.test(e.name)) return false;
    if (typeof e.severity === 'string' && typeof e.code === 'string' && /^(08|57P|53300|40)/.test(e.code)) return true;
    if (e.name === 'SqliteError' && typeof e.code === 'string' && /^SQLITE_(BUSY|LOCKED|IOERR)/.test(e.code)) return true;
    if (typeof e.message === 'string' && /^(Connection terminated|Client has encountered a connection error and is not queryable)/.test(e.message)) return true;
  }
  return false;
}
