/**
 * The report e-mail (SPEC §6): what an admin reads on their phone the morning after — the
 * batch's status, what needs them (failed mailboxes with their errors, skipped messages),
 * then every mailbox — in plain text and HTML, with the full report attached as CSV (for
 * a spreadsheet) and JSON. Built from a BatchReport, which never holds a password.
 */
import { formatDuration } from '../batch/duration.js';
import { verdictWords } from '../batch/view.js';
import type { BatchReport, ReportMailbox } from './batch-report.js';
import { reportCsv } from './batch-report.js';

/** The initial sync finished (every mailbox synced or failed), or a later round of incremental syncs did. */
export type ReportKind = 'initial' | 'daily';

export interface ReportEmail {
  subject: string;
  text: string;
  html: string;
  attachments: { filename: string; content: string; contentType: string }[];
  headers: Record<string, string>;
}

/** Mailboxes listed in the body's table; the attachments have them all. */
const MAILBOXES_IN_BODY = 200;

/** Skipped messages listed in the body; the attachments have them all. */
const SKIPPED_IN_BODY = 50;

const MB = 1024 * 1024;
const mb = (bytes: number) => `${(bytes / MB).toFixed(1)} MB`;
const when = (iso: string | null) => (iso ? iso.replace('T', ' ').replace(/:\d\d\.\d+Z$/, 'Z') : '-');
const plural = (n: number, one: string, many = `${one}s`) => `${n.toLocaleString('en')} ${n === 1 ? one : many}`;

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** One subject line that says the outcome, so the inbox list alone tells whether to look. */
function subjectOf(r: BatchReport, kind: ReportKind): string {
  const b = r.batch;
  const failed = b.counts.Failed;
  const what = kind === 'initial' ? 'initial sync finished' : 'incremental syncs';
  // "In sync" is verify's word (every message checked on the target): the subject says
  // only what the syncs did, and what was left behind.
  const left = b.totals.skipped + b.totals.failed;
  const parts = [
    failed > 0 ? `${plural(failed, 'mailbox', 'mailboxes')} failed` : `${plural(b.counts.Synced + b.counts.IncrementalSyncing, 'mailbox', 'mailboxes')} synced`,
    left > 0 ? `${plural(left, 'message')} skipped or failed` : null,
  ].filter(Boolean);
  const tail = parts.join(', ');
  return `[mailferry] batch ${b.name}: ${what}, ${b.status} (${tail})`;
}

interface Section {
  title: string;
  lines: string[];
  table?: { head: string[]; rows: (string | number)[][] };
}

function sections(r: BatchReport, kind: ReportKind): Section[] {
  const b = r.batch;
  const out: Section[] = [];
  const counts = Object.entries(b.counts)
    .filter(([, n]) => n > 0)
    .map(([s, n]) => `${s} ${n}`)
    .join(', ');
  const summary = [
    `Batch ${b.name}: ${b.status}, from ${b.endpoint} to ${b.target}.`,
    `Mailboxes: ${b.mailboxes}${counts ? ` (${counts})` : ''}.`,
    `Messages: ${b.totals.found.toLocaleString('en')} found, ${b.totals.copied.toLocaleString('en')} copied (${mb(b.totals.bytes)}), ${b.totals.skipped} skipped, ${b.totals.failed} failed.`,
  ];
  if (b.startedAt) summary.push(`Started ${when(b.startedAt)}${b.initialSyncedAt ? `; initial sync finished ${when(b.initialSyncedAt)}` : ''}${b.initialSync ? ` (${formatDuration(b.initialSync.seconds * 1000)}: ${b.initialSync.messagesPerSecond} msg/s, ${b.initialSync.megabytesPerSecond} MB/s)` : ''}.`);
  if (kind === 'daily' && r.period) {
    const p = r.mailboxes.reduce((a, m) => ({ copied: a.copied + (m.period?.copied ?? 0), bytes: a.bytes + (m.period?.bytes ?? 0) }), { copied: 0, bytes: 0 });
    summary.push(`Since the last report (${when(r.period.since)}): ${plural(p.copied, 'new message')} copied (${mb(p.bytes)}).`);
  }
  const c = r.cutOver;
  if (c && c.deleteWarnings.length) summary.push(`Before deleting the batch: ${c.deleteWarnings.map((w) => w.replace(/^Batch "[^"]*": /, '').replace(/\.$/, '')).join('; ')}.`);
  else if (!c && b.deleteWarning) summary.push(`Before deleting the batch: ${b.deleteWarning.replace(/\.$/, '')}.`);
  else if (c && c.uncheckedDomains.length && b.initialSyncedAt) {
    summary.push(
      `No MX check is recorded for ${c.uncheckedDomains.join(', ')}: mailferry cannot tell whether MX points at the new system. Run mailferry dns check DOMAIN --target-mx HOST, so the 72 hours after the switch are tracked (and checked again every hour).`,
    );
  } else if (c && b.initialSyncedAt) summary.push('The 72 hours after the MX switch are over and every mailbox synced since: the batch can be deleted.');
  else if (b.initialSyncedAt) summary.push('The batch has run 72 hours since its initial sync: once MX points at the target and a sync ran since, it can be deleted.');
  out.push({ title: 'Summary', lines: summary });

  const failed = r.mailboxes.filter((m) => m.status === 'Failed' || m.lastError);
  if (failed.length) {
    out.push({
      title: `Failed mailboxes (${failed.length})`,
      lines: ['Each is retried automatically after a backoff, except a mailbox whose source password was refused (retrying could lock the account: correct it with `mailferry batch update`); `mailferry batch retry` retries any of them now.'],
      table: { head: ['Mailbox', 'Error'], rows: failed.map((m) => [m.emailAddress, m.lastError ?? '']) },
    });
  }

  const skipped = r.mailboxes.flatMap((m) => m.skippedItems.map((s) => ({ m, s })));
  const skippedTotal = r.mailboxes.reduce((n, m) => n + m.skipped + m.failed, 0);
  if (skippedTotal > 0) {
    const anyFailed = r.mailboxes.some((m) => m.failed > 0);
    // Messages of a folder that could not be migrated are failed but not items of their
    // own (the folder is named in its mailbox's error), nor are those past the list a
    // mailbox keeps: the count says so rather than heading a shorter (or empty) table.
    const unlisted = skippedTotal - skipped.length;
    out.push({
      title: `${anyFailed ? 'Skipped or failed' : 'Skipped'} messages (${skippedTotal})`,
      lines: [
        ...(skipped.length > SKIPPED_IN_BODY ? [`The first ${SKIPPED_IN_BODY}; the attached CSV lists them all.`] : []),
        ...(unlisted > 0 ? [`${unlisted} of them are not listed one by one: messages of folders that could not be migrated (named in the mailbox's error), or past the ones kept per mailbox.`] : []),
      ],
      table: {
        head: ['Mailbox', 'Folder', 'Date', 'Subject', 'Size', 'Reason'],
        rows: skipped.slice(0, SKIPPED_IN_BODY).map(({ m, s }) => [m.emailAddress, s.folder, s.date.slice(0, 10), s.subject, mb(s.size), s.reason]),
      },
    });
  }

  const perMailbox = (m: ReportMailbox): (string | number)[] => [
    m.emailAddress,
    m.status,
    m.found,
    m.copied,
    m.skipped + m.failed,
    mb(m.bytes),
    ...(kind === 'daily' ? [m.period?.copied ?? 0] : []),
    m.syncSeconds > 0 ? formatDuration(m.syncSeconds * 1000) : '-',
    m.messagesPerSecond,
    when(m.lastSyncAt),
    m.verification ? `${verdictWords(m.verification)}, ${when(m.verification.at)}` : '-',
  ];
  // A big batch's table would make the mail too big to read (Gmail cuts an HTML body at
  // ~100 KB, a thousand rows were 190 KB): the first MAILBOXES_IN_BODY, the CSV has all.
  out.push({
    title: 'Mailboxes',
    lines: r.mailboxes.length > MAILBOXES_IN_BODY ? [`The first ${MAILBOXES_IN_BODY} of ${r.mailboxes.length}; the attached CSV lists them all.`] : [],
    table: {
      head: ['Mailbox', 'Status', 'Found', 'Copied', 'Skipped', 'Size', ...(kind === 'daily' ? ['New'] : []), 'Time syncing', 'msg/s', 'Last sync', 'Verified'],
      rows: r.mailboxes.slice(0, MAILBOXES_IN_BODY).map(perMailbox),
    },
  });
  return out;
}

function textOf(secs: Section[], r: BatchReport): string {
  const out: string[] = [];
  for (const s of secs) {
    out.push(s.title, '-'.repeat(s.title.length), ...s.lines);
    if (s.table) {
      const rows = [s.table.head, ...s.table.rows].map((row) => row.map(String));
      const widths = s.table.head.map((_, i) => Math.min(60, Math.max(...rows.map((row) => row[i]!.length))));
      for (const row of rows) out.push(row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd());
    }
    out.push('');
  }
  out.push(`Report generated ${when(r.generatedAt)} by mailferry. The attached CSV and JSON files hold the full report.`);
  return out.join('\n') + '\n';
}

function htmlOf(secs: Section[], r: BatchReport): string {
  const parts = ['<!doctype html><html><body style="font-family: sans-serif; font-size: 14px">'];
  for (const s of secs) {
    parts.push(`<h3>${escapeHtml(s.title)}</h3>`);
    for (const l of s.lines) parts.push(`<p>${escapeHtml(l)}</p>`);
    if (s.table) {
      parts.push('<table cellpadding="4" style="border-collapse: collapse" border="1">');
      parts.push(`<tr>${s.table.head.map((h) => `<th align="left">${escapeHtml(h)}</th>`).join('')}</tr>`);
      for (const row of s.table.rows) parts.push(`<tr>${row.map((c) => `<td>${escapeHtml(String(c))}</td>`).join('')}</tr>`);
      parts.push('</table>');
    }
  }
  parts.push(`<p style="color: #666">Report generated ${escapeHtml(when(r.generatedAt))} by mailferry. The attached CSV and JSON files hold the full report.</p></body></html>`);
  return parts.join('\n');
}

export function composeReportEmail(r: BatchReport, kind: ReportKind): ReportEmail {
  const secs = sections(r, kind);
  // The time in the name is UTC, and says so.
  const stamp = r.generatedAt.slice(0, 16).replace(/[-:]/g, '');
  const base = `mailferry-${r.batch.name}-${stamp}Z`;
  return {
    subject: subjectOf(r, kind),
    text: textOf(secs, r),
    html: htmlOf(secs, r),
    attachments: [
      // A byte order mark, so that Excel opens the file as UTF-8 (names and subjects are
      // not ASCII); the JSON is compact: pretty-printed it doubled the size of a big batch's mail.
      { filename: `${base}.csv`, content: `\ufeff${reportCsv(r)}`, contentType: 'text/csv; charset=utf-8' },
      { filename: `${base}.json`, content: JSON.stringify(r), contentType: 'application/json' },
    ],
    // RFC 3834 §5: a machine's message, which auto-responders (out of office) must not answer.
    headers: { 'Auto-Submitted': 'auto-generated' },
  };
}
