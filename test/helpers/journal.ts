/** Read-only peeks into the SQLite journal while a sync runs in another process. */
import Database from 'better-sqlite3';

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
