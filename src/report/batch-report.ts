/**
 * The batch report (SPEC §6): per mailbox, status, counts, durations, throughput, errors,
 * and the skipped items with folder, date, subject and reason. JSON, and CSV for
 * spreadsheets. Never a password (none is ever loaded into a view).
 */
import type { Kysely } from 'kysely';
import type { BatchRow, Database } from '../store/schema.js';
import type { SkippedItem } from '../sync/options.js';
import { cutOverState } from '../batch/lifecycle.js';
import { type BatchView, loadBatchDetail, type MailboxView, skippedItemsOf } from '../batch/view.js';

/** What one mailbox's syncs did within a report's period (a daily report covers the syncs since the last one). */
export interface PeriodActivity {
  /** Finished runs, by outcome. */
  synced: number;
  failed: number;
  copied: number;
  bytes: number;
}

export interface ReportMailbox extends MailboxView {
  skippedItems: SkippedItem[];
  /** Only in reports made for a period (e-mails); null when the report covers everything. */
  period: PeriodActivity | null;
}

export interface BatchReport {
  generatedAt: string;
  /** The syncs a periodic report covers: those that ended after `since` (null: since the start) up to `until`. */
  period: { since: string | null; until: string } | null;
  batch: BatchView;
  mailboxes: ReportMailbox[];
  /** Where the cut-over stands (SPEC §7): what deleting now would be warned about, and mail domains no MX check has recorded. */
  cutOver?: { deleteWarnings: string[]; uncheckedDomains: string[] };
}

// Mailboxes are keyed by address, unique in a batch: a line number is not (a mailbox added by
// `batch update` keeps its line in the update file, which another mailbox may share).
async function periodActivity(db: Kysely<Database>, batchId: number, since: number | null, until: number): Promise<Map<string, PeriodActivity>> {
  let q = db
    .selectFrom('sync_run')
    .innerJoin('batch_mailbox', 'batch_mailbox.id', 'sync_run.mailbox_id')
    .select(['batch_mailbox.email_address', 'sync_run.outcome', 'sync_run.copied', 'sync_run.bytes'])
    .where('sync_run.batch_id', '=', batchId)
    .where('sync_run.ended_at', '<=', until);
  if (since !== null) q = q.where('sync_run.ended_at', '>', since);
  const out = new Map<string, PeriodActivity>();
  for (const r of await q.execute()) {
    const a = out.get(r.email_address) ?? { synced: 0, failed: 0, copied: 0, bytes: 0 };
    if (r.outcome === 'synced') a.synced++;
    if (r.outcome === 'failed') a.failed++;
    a.copied += Number(r.copied);
    a.bytes += Number(r.bytes);
    out.set(r.email_address, a);
  }
  return out;
}

/** The whole batch; with `period`, also what each mailbox's syncs did in it. */
export async function buildReport(db: Kysely<Database>, b: BatchRow, now = Date.now(), period?: { since: number | null; until: number }): Promise<BatchReport> {
  const detail = await loadBatchDetail(db, b, now);
  const items = new Map(
    (await db.selectFrom('batch_mailbox').select(['email_address', 'skipped_items_json']).where('batch_id', '=', b.id).execute()).map((r) => [r.email_address, skippedItemsOf(r)]),
  );
  const activity = period ? await periodActivity(db, b.id, period.since, period.until) : null;
  const cutOver = await cutOverState(db, b, now);
  return {
    cutOver,
    generatedAt: new Date(now).toISOString(),
    period: period ? { since: period.since === null ? null : new Date(period.since).toISOString(), until: new Date(period.until).toISOString() } : null,
    batch: detail.batch,
    mailboxes: detail.mailboxes.map((m) => ({
      ...m,
      skippedItems: items.get(m.emailAddress) ?? [],
      period: activity ? (activity.get(m.emailAddress) ?? { synced: 0, failed: 0, copied: 0, bytes: 0 }) : null,
    })),
  };
}

const COLUMNS = [
  'Type', 'EmailAddress', 'Status', 'Folders', 'Found', 'Copied', 'Skipped', 'Failed', 'Bytes', 'SyncSeconds', 'MessagesPerSecond', 'MBPerSecond',
  'LastSyncAt', 'NextSyncAt', 'LastError', 'VerifiedAt', 'InSync', 'Missing', 'MissingIn', 'Duplicates', 'VerifiedBeforeLastSync', 'Folder', 'Date', 'Subject', 'Size', 'Reason',
] as const;

/**
 * RFC 4180 quoting. A cell starting with = + - @ (a subject is whatever the sender wrote)
 * gets a leading apostrophe so that a spreadsheet shows it instead of evaluating it.
 */
function cell(v: string | number | null | undefined): string {
  if (v === null || v === undefined) return '';
  let s = String(v);
  if (typeof v === 'string' && /^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/**
 * One table: a `mailbox` row per mailbox, then a `skipped` row per skipped item under it
 * (filter on Type in a spreadsheet).
 */
export function reportCsv(r: BatchReport): string {
  const lines = [COLUMNS.join(',')];
  const row = (values: Partial<Record<(typeof COLUMNS)[number], string | number | null>>) => lines.push(COLUMNS.map((c) => cell(values[c])).join(','));
  for (const m of r.mailboxes) {
    row({
      Type: 'mailbox', EmailAddress: m.emailAddress, Status: m.status, Folders: m.folders, Found: m.found, Copied: m.copied, Skipped: m.skipped, Failed: m.failed,
      Bytes: m.bytes, SyncSeconds: m.syncSeconds, MessagesPerSecond: m.messagesPerSecond, MBPerSecond: m.megabytesPerSecond,
      LastSyncAt: m.lastSyncAt, NextSyncAt: m.nextSyncAt, LastError: m.lastError,
      // A mailbox verify could not reach is neither in sync nor not: 'unknown', and its error.
      ...(m.verification ? { VerifiedAt: m.verification.at, VerifiedBeforeLastSync: m.verification.stale ? 'yes' : 'no', InSync: m.verification.inSync ? 'yes' : m.verification.error ? 'unknown' : 'no', Missing: m.verification.error ? null : m.verification.missing, MissingIn: m.verification.missingIn.map((f) => `${f.folder}: ${f.missing}`).join('; '), Duplicates: m.verification.error ? null : m.verification.duplicates, ...(m.verification.error ? { LastError: m.lastError ?? `verify could not check it: ${m.verification.error}` } : {}) } : {}),
    });
    for (const s of m.skippedItems) row({ Type: 'skipped', EmailAddress: m.emailAddress, Folder: s.folder, Date: s.date, Subject: s.subject, Size: s.size, Reason: s.reason });
  }
  return lines.join('\r\n') + '\r\n';
}
