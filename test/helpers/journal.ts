/** Read-only peeks into the SQLite journal while a sync runs in another process. */
import Database from 'better-sqlite3';
import { ContentHasher } from '../../src/sync/content-digest.js';

export interface JournalCounts {
  pending: number;
  copied: number;
  skipped: number;
}

/** Message rows by state; zeros while the database does not exist yet or is busy. */
export function journalCounts(db: string): JournalCounts {
  let d: Database.Database;
  try {
    d = new Database(db, { readonly: true, fileMustExist: true });
  } catch {
    return { pending: 0, copied: 0, skipped: 0 };
  }
  try {
    const rows = d.prepare('select state, count(*) as n from message group by state').all() as { state: string; n: number }[];
    const get = (s: string) => rows.find((r) => r.state === s)?.n ?? 0;
    return { pending: get('pending'), copied: get('copied'), skipped: get('skipped') };
  } catch {
    return { pending: 0, copied: 0, skipped: 0 };
  } finally {
    d.close();
  }
}

/**
 * Digested message rows by algorithm (sync/content-digest.ts: GMAC digests start with
 * `g1:`, SHA-256 ones are bare hex), to show a test really mixed both.
 */
export function digestAlgorithmCounts(db: string, state?: 'pending' | 'copied'): { sha256: number; gmac: number } {
  const d = new Database(db, { readonly: true, fileMustExist: true });
  try {
    const where = state ? ' and state = ?' : '';
    const r = d.prepare(`select sum(digest like 'g1:%') as g, sum(digest not like 'g1:%') as s from message where digest is not null${where}`).get(...(state ? [state] : [])) as { g: number | null; s: number | null };
    return { sha256: r.s ?? 0, gmac: r.g ?? 0 };
  } finally {
    d.close();
  }
}

/** A hasher with the journal's own content key, to compute digests as the sync does. */
export function journalHasher(db: string): ContentHasher {
  const d = new Database(db, { readonly: true, fileMustExist: true });
  try {
    const r = d.prepare('select key from content_key where id = 1').get() as { key: string };
    return new ContentHasher(Buffer.from(r.key, 'base64'));
  } finally {
    d.close();
  }
}

/** The rows in a state, as `folder_id:source_uid` keys (empty while the database is busy or missing). */
export function journalKeys(db: string, state: 'pending' | 'copied'): Set<string> {
  let d: Database.Database;
  try {
    d = new Database(db, { readonly: true, fileMustExist: true });
  } catch {
    return new Set();
  }
  try {
    return new Set((d.prepare('select folder_id, source_uid from message where state = ?').all(state) as { folder_id: number; source_uid: number }[]).map((r) => `${r.folder_id}:${r.source_uid}`));
  } catch {
    return new Set();
  } finally {
    d.close();
  }
}
