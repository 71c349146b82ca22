/**
 * What the batch and worker tests share: a state database per test run (SQLite file, or a
 * fresh schema in the local PostgreSQL), and a source/target Dovecot pair with several
 * users, a stored endpoint and target, and a migration file.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type DovecotServer, startDovecot } from '../../src/lab/dovecot.js';
import { generateCorpus } from '../../src/lab/corpus.js';
import { loadCorpusFast } from '../../src/lab/fast-load.js';
import { openStore, type Store } from '../../src/store/open.js';
import { runCli } from './cli.js';
import { TARGET_SPECIAL_USE } from './lab-pair.js';

export type DialectName = 'sqlite' | 'postgres';

export interface TestDb {
  dialect: DialectName;
  url: string;
  open(): Promise<Store>;
  drop(): Promise<void>;
}

/** The local PostgreSQL the tests use (trust auth); override with MAILFERRY_TEST_PG. */
export const PG_BASE = process.env.MAILFERRY_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';

let pgProbe: Promise<string | null> | undefined;

/** Null when PostgreSQL is usable, else why not (the tests then skip, saying so). */
export function postgresUnavailable(): Promise<string | null> {
  pgProbe ??= (async () => {
    const { default: pg } = await import('pg');
    const c = new pg.Client({ connectionString: PG_BASE, connectionTimeoutMillis: 3000 });
    try {
      await c.connect();
      await c.query('select 1');
      return null;
    } catch (err) {
      return `PostgreSQL at ${PG_BASE.replace(/:[^:@/]*@/, ':***@')} is not reachable (${(err as Error).message})`;
    } finally {
      await c.end().catch(() => undefined);
    }
  })();
  return pgProbe;
}

/**
 * A fresh database: a SQLite file in `dir`, or a database of its own on the PostgreSQL
 * server (created through the `test` database, dropped afterwards). Not a schema in `test`:
 * Kysely's migrator looks for its bookkeeping tables in every schema, so a run would see
 * another concurrent run's tables and skip creating its own.
 */
export async function freshDb(dialect: DialectName, dir: string): Promise<TestDb> {
  if (dialect === 'sqlite') {
    const url = `sqlite:${join(dir, `state-${randomBytes(3).toString('hex')}.sqlite`)}`;
    return { dialect, url, open: () => openStore(url), drop: async () => undefined };
  }
  const name = `mf_test_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  const { default: pg } = await import('pg');
  const admin = async (statement: string) => {
    const c = new pg.Client({ connectionString: PG_BASE });
    await c.connect();
    try {
      await c.query(statement);
    } finally {
      await c.end();
    }
  };
  await admin(`create database ${name}`);
  const base = new URL(PG_BASE);
  base.pathname = `/${name}`;
  const url = base.toString();
  return {
    dialect,
    url,
    open: () => openStore(url),
    // WITH (FORCE): a killed service may have left connections behind.
    drop: () => admin(`drop database if exists ${name} with (force)`),
  };
}

export const ADMIN_PASSWORD = 'Adm1n-Target-Pw9';

export interface LabUser {
  /** Source login. */
  user: string;
  password: string;
  /** Target address (its login there, through the admin). */
  address: string;
}

export interface BatchLab {
  dir: string;
  source: DovecotServer;
  target: DovecotServer;
  users: LabUser[];
  env: NodeJS.ProcessEnv;
  db: TestDb;
  /** Writes a migration file; `wrongPassword` rows get a password the source refuses. */
  csv(rows: { user: LabUser; password?: string }[]): string;
  stop(): Promise<void>;
}

export async function startBatchLab(opts: { dialect: DialectName; users: number; maxConcurrentMigrations?: number }): Promise<BatchLab> {
  const dir = mkdtempSync(join(tmpdir(), 'mailferry-batch-'));
  const users: LabUser[] = Array.from({ length: opts.users }, (_, i) => ({ user: `user${i + 1}`, password: `Src-Pass-${i + 1}-x7`, address: `user${i + 1}@example.org` }));
  const source = await startDovecot({ name: 'bsource', separator: '.', users: users.map((u) => ({ username: u.user, password: u.password })) });
  const target = await startDovecot({
    name: 'btarget',
    separator: '/',
    users: users.map((u) => ({ username: u.address, password: 'unused-Target-Pw1' })),
    masterUsers: [{ username: 'admin', password: ADMIN_PASSWORD }],
    specialUse: { ...TARGET_SPECIAL_USE },
  });
  const db = await freshDb(opts.dialect, dir);
  const env: NodeJS.ProcessEnv = { ...process.env, MAILFERRY_HOME: dir, MAILFERRY_DB: db.url, MAILFERRY_TARGET_PASSWORD: ADMIN_PASSWORD };
  delete env.MAILFERRY_SECRET_KEY;
  const ep = await runCli(['endpoint', 'create', 'src', '--host', '127.0.0.1', '--port', String(source.port), '--tls', 'none', '--max-concurrent-migrations', String(opts.maxConcurrentMigrations ?? 20)], env);
  if (ep.status !== 0) throw new Error(`endpoint create failed: ${ep.stderr}`);
  const tg = await runCli(['target', 'create', 'tgt', '--host', '127.0.0.1', '--port', String(target.port), '--tls', 'none', '--admin-user', 'admin', '--impersonation', 'sasl'], env);
  if (tg.status !== 0) throw new Error(`target create failed: ${tg.stderr}`);
  let n = 0;
  return {
    dir,
    source,
    target,
    users,
    env,
    db,
    csv(rows) {
      const file = join(dir, `batch-${++n}.csv`);
      writeFileSync(file, ['EmailAddress,UserName,Password', ...rows.map((r) => `${r.user.address},${r.user.user},${r.password ?? r.user.password}`)].join('\r\n') + '\r\n');
      return file;
    },
    async stop() {
      await Promise.allSettled([source.stop(), target.stop(), db.drop()]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Loads `messages` generated messages (seeded per user) into a user's source mailbox. */
export async function loadMailbox(lab: BatchLab, user: LabUser, messages: number, seed: number): Promise<number> {
  const corpus = generateCorpus({ seed, messages, averageSize: 6_000, maxSize: 200_000 });
  const r = await loadCorpusFast(lab.source.endpoint(), { method: 'login', username: user.user, password: user.password }, corpus, { separator: '.', connections: 2, oneConnectionPerFolder: true });
  return r.appended;
}

export async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined | null | false>, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
