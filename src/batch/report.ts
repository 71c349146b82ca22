/**
 * The batch report (SPEC §6): per mailbox, status, counts, durations, throughput, errors,
 * and the skipped items with folder, date, subject and reason. JSON, and CSV for
 * spreadsheets. Never a password (none is ever loaded into a view).
 */
import type { Kysely } from 'kysely';
import type { BatchRow, Database } from '../store/schema.js';
import type { SkippedItem } from '../sync/options.js';
import { type BatchView, loadBatchDetail, type MailboxView, skippedItemsOf } from './view.js';

export interface BatchReport {
  generatedAt: string;
  batch: BatchView;
  mailboxes: (MailboxView & { skippedItems: SkippedItem[] })[];
}

export async function buildReport(db: Kysely<Database>, b: BatchRow, now = Date.now()): Promise<BatchReport> {
  const detail = await loadBatchDetail(db, b, now);
  const items = new Map(
    (await db.selectFrom('batch_mailbox').select(['line', 'skipped_items_json']).where('batch_id', '=', b.id).execute()).map((r) => [r.line, skippedItemsOf(r)]),
  );
  return { generatedAt: new Date(now).toISOString(), batch: detail.batch, mailboxes: detail.mailboxes.map((m) => ({ ...m, skippedItems: items.get(m.line) ?? [] })) };
}

const COLUMNS = [
  'Type', 'EmailAddress', 'Status', 'Folders', 'Found', 'Copied', 'Skipped', 'Failed', 'Bytes', 'SyncSeconds', 'MessagesPerSecond', 'MBPerSecond',
  'LastSyncAt', 'NextSyncAt', 'LastError', 'Folder', 'Date', 'Subject', 'Size', 'Reason',
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
    });
    for (const s of m.skippedItems) row({ Type: 'skipped', EmailAddress: m.emailAddress, Folder: s.folder, Date: s.date, Subject: s.subject, Size: s.size, Reason: s.reason });
  }
  return lines.join('\r\n') + '\r\n';
}
