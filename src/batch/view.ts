/**
 * What `batch status`, `batch list`, reports and the HTTP API show: plain JSON-ready
 * objects, derived from the rows at the moment of asking. Never a password.
 *
 * Throughput and time left (SPEC §6): a syncing mailbox's rate is what it copied since its
 * run started, over the time since; the batch's rate is the sum over its syncing mailboxes,
 * and its time left is what they still have to copy, plus an estimate for the mailboxes
 * still queued (the average size of those done so far), over that rate.
 */
import { type Kysely, sql } from 'kysely';
import type { BatchMailboxRow, BatchRow, Database, MailboxStatus, SyncKind } from '../store/schema.js';
import type { SkippedItem } from '../sync/options.js';
import { deleteWarning } from './lifecycle.js';
import { type BatchStatus, deriveBatchStatus, emptyCounts, type StatusCounts } from './status.js';
import { leaseIsLive } from './store.js';
import type { FolderCounts } from './verify.js';
import type { Verification } from './verification-words.js';

const MB = 1024 * 1024;
const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());
const round = (x: number, digits = 1): number => Math.round(x * 10 ** digits) / 10 ** digits;

export interface LiveSync {
  kind: SyncKind;
  worker: string;
  startedAt: string;
  phase: string | null;
  copied: number;
  /** Known once the mailbox has been scanned; 0 before. */
  toCopy: number;
  bytes: number;
  toCopyBytes: number;
  /** Messages found on the target already and linked, not copied (a mailbox migrated again). */
  alreadyOnTarget: number;
  messagesPerSecond: number;
  megabytesPerSecond: number;
  /** Null until the scan tells how much there is to copy. */
  etaSeconds: number | null;
  /** The worker stopped pulsing (crashed?): another one resumes the mailbox once the lease expires. */
  stale: boolean;
}

export interface MailboxView {
  line: number;
  emailAddress: string;
  userName: string;
  userRoot: string | null;
  status: MailboxStatus;
  folders: number;
  found: number;
  copied: number;
  skipped: number;
  failed: number;
  bytes: number;
  /** Time spent syncing, all runs. */
  syncSeconds: number;
  lastDurationSeconds: number | null;
  /** Averages over the time spent syncing. */
  messagesPerSecond: number;
  megabytesPerSecond: number;
  initialSyncedAt: string | null;
  lastSyncAt: string | null;
  nextSyncAt: string | null;
  syncRequested: boolean;
  lastError: string | null;
  attempts: number;
  syncing: LiveSync | null;
  /** The last `batch verify` (SPEC §6), or null if it was never verified. */
  verification: Verification | null;
}

export { type Verification, verdictWords } from './verification-words.js';

function verificationOf(m: BatchMailboxRow): Verification | null {
  if (m.verified_at === null) return null;
  const stored = m.verify_json ? (JSON.parse(m.verify_json) as unknown) : null;
  const error = stored && !Array.isArray(stored) && typeof stored === 'object' ? String((stored as { error?: unknown }).error ?? '') : null;
  const folders = Array.isArray(stored) ? (stored as FolderCounts[]) : [];
  const missingIn = folders.filter((f) => f.missing > 0).map((f) => ({ folder: f.sources.length ? f.sources.join(' + ') : f.target, missing: f.missing }));
  return { at: iso(m.verified_at)!, inSync: m.verify_in_sync === 1, missing: m.verify_missing ?? 0, error: error || null, stale: m.last_sync_at !== null && m.last_sync_at > m.verified_at, missingIn, duplicates: folders.reduce((n, f) => n + (f.duplicates ?? 0), 0) };
}

export interface BatchView {
  name: string;
  status: BatchStatus;
  endpoint: string;
  target: string;
  mailboxes: number;
  counts: StatusCounts;
  totals: { folders: number; found: number; copied: number; skipped: number; failed: number; bytes: number };
  /** Live, over the mailboxes syncing now. */
  messagesPerSecond: number;
  megabytesPerSecond: number;
  /** Estimated time until the mailboxes syncing or queued now are done; null when there is nothing to estimate from. */
  etaSeconds: number | null;
  /**
   * How long the initial sync took, start to the last mailbox done, and what it moved per
   * second over that time (every mailbox's copies, so incremental ones a little too): the
   * figure that tells a pilot batch how long the rest will take (SPEC §6). Null until then.
   */
  initialSync: { seconds: number; messagesPerSecond: number; megabytesPerSecond: number } | null;
  options: { exclude: string[]; include: string[] | null; notify: string[]; receivedAfter: string | null; badItemLimit: number | null };
  createdAt: string;
  startAt: string | null;
  startedAt: string | null;
  initialSyncedAt: string | null;
  lastIncrementalAt: string | null;
  stoppedAt: string | null;
  /** Why deleting it now would be early (SPEC §4: 72 hours after the initial sync), or null. */
  deleteWarning: string | null;
  /** Report e-mails (src/report): when the last went out, and why the last attempt failed, if it did. */
  reports: { initialSentAt: string | null; lastSentAt: string | null; error: string | null };
}

/** A running sync whose worker has not pulsed for this long shows as not responding. */
const SILENT_WORKER_MS = 30_000;

export function mailboxView(m: BatchMailboxRow, now: number): MailboxView {
  const syncSeconds = m.sync_ms / 1000;
  let syncing: LiveSync | null = null;
  if (m.lease_owner !== null && m.lease_started_at !== null && m.lease_kind !== null) {
    const at = m.progress_at ?? now;
    const elapsed = Math.max(0.001, (at - m.lease_started_at) / 1000);
    const rate = m.progress_copied / elapsed;
    const left = Math.max(0, m.progress_to_copy - m.progress_copied);
    syncing = {
      kind: m.lease_kind,
      worker: m.lease_owner,
      startedAt: iso(m.lease_started_at)!,
      phase: m.progress_phase,
      copied: m.progress_copied,
      toCopy: m.progress_to_copy,
      bytes: m.progress_bytes,
      toCopyBytes: m.progress_to_copy_bytes,
      alreadyOnTarget: m.progress_already,
      messagesPerSecond: round(rate),
      megabytesPerSecond: round(m.progress_bytes / MB / elapsed, 2),
      etaSeconds: m.progress_to_copy > 0 && (left === 0 || rate > 0) ? Math.round(left / Math.max(rate, 1e-9)) : null,
      // Workers pulse every 2 s (worker.ts): 30 s without one (a margin for a slow database
      // and clocks of several machines) is a worker gone, said well before its lease expires.
      stale: !leaseIsLive(m, now) || (m.progress_at !== null && now - m.progress_at > SILENT_WORKER_MS),
    };
  }
  return {
    line: m.line,
    emailAddress: m.email_address,
    userName: m.user_name,
    userRoot: m.user_root,
    status: m.status,
    folders: m.folders,
    found: m.found,
    copied: m.copied,
    skipped: m.skipped,
    failed: m.failed,
    bytes: m.bytes,
    syncSeconds: round(syncSeconds),
    lastDurationSeconds: m.last_duration_ms === null ? null : round(m.last_duration_ms / 1000),
    messagesPerSecond: syncSeconds > 0 ? round(m.copied / syncSeconds) : 0,
    megabytesPerSecond: syncSeconds > 0 ? round(m.bytes / MB / syncSeconds, 2) : 0,
    initialSyncedAt: iso(m.initial_synced_at),
    lastSyncAt: iso(m.last_sync_at),
    // A stopped mailbox has no next sync until its batch is started again; one syncing has
    // its next time set when the run ends.
    nextSyncAt: m.status === 'Stopped' || syncing ? null : iso(m.next_sync_at),
    syncRequested: m.sync_requested === 1,
    lastError: m.last_error,
    attempts: m.attempts,
    syncing,
    verification: verificationOf(m),
  };
}

function parseList(json: string | null): string[] | null {
  if (json === null) return null;
  const v = JSON.parse(json) as unknown;
  return Array.isArray(v) ? v.map(String) : null;
}

/** What the batch's runs themselves copied up to the end of the initial sync (from sync_run). */
export interface InitialCopies {
  copied: number;
  bytes: number;
}

/**
 * The planning figure counts what was copied, not what was found on the target already: a
 * mailbox migrated again (a new batch for the same users) would otherwise read thousands of
 * messages a second.
 */
async function initialCopies(db: Kysely<Database>, b: BatchRow): Promise<InitialCopies | undefined> {
  if (b.initial_synced_at === null) return undefined;
  const r = await db
    .selectFrom('sync_run')
    .select((eb) => [eb.fn.sum<number>('copied').as('copied'), eb.fn.sum<number>('bytes').as('bytes')])
    .where('batch_id', '=', b.id)
    .where('ended_at', '<=', b.initial_synced_at)
    .executeTakeFirst();
  return { copied: Number(r?.copied ?? 0), bytes: Number(r?.bytes ?? 0) };
}

function initialSyncRate(b: BatchRow, totals: { copied: number; bytes: number }): BatchView['initialSync'] {
  if (b.started_at === null || b.initial_synced_at === null || b.initial_synced_at <= b.started_at) return null;
  const seconds = (b.initial_synced_at - b.started_at) / 1000;
  return { seconds: round(seconds), messagesPerSecond: round(totals.copied / seconds), megabytesPerSecond: round(totals.bytes / MB / seconds, 2) };
}

/**
 * What a batch's view adds up over its mailboxes. Built one mailbox at a time (`addMailbox`:
 * the ones syncing now, whose live progress counts) or from the database's sums over the
 * others (`addIdle`), so a batch of 50,000 mailboxes is summed without loading them all.
 */
interface Tally {
  counts: StatusCounts;
  totals: BatchView['totals'];
  rate: number;
  byteRate: number;
  /** Messages still to copy by the mailboxes syncing now. */
  left: number;
  /** Mailboxes whose size is not known yet (queued, or syncing and not scanned). */
  unknown: number;
  doneFound: number;
  doneCount: number;
  scannedFound: number;
  scannedCount: number;
}

function emptyTally(): Tally {
  return { counts: emptyCounts(), totals: { folders: 0, found: 0, copied: 0, skipped: 0, failed: 0, bytes: 0 }, rate: 0, byteRate: 0, left: 0, unknown: 0, doneFound: 0, doneCount: 0, scannedFound: 0, scannedCount: 0 };
}

function addMailbox(t: Tally, m: MailboxView): void {
  const { totals } = t;
  t.counts[m.status]++;
  for (const k of Object.keys(totals) as (keyof typeof totals)[]) totals[k] += m[k];
  if (m.syncing) {
    // What a run copies reaches the mailbox's counts when it ends: until then (hours, for
    // a big initial sync) the batch's totals count it live (messages it found on the target
    // already count as there, as they will once it ends; its rate counts only copies).
    totals.copied += m.syncing.copied + m.syncing.alreadyOnTarget;
    totals.bytes += m.syncing.bytes;
    totals.found += Math.max(0, m.copied + m.syncing.toCopy + m.syncing.alreadyOnTarget - m.found);
  }
  if (m.syncing && !m.syncing.stale) {
    t.rate += m.syncing.messagesPerSecond;
    t.byteRate += m.syncing.megabytesPerSecond;
    if (m.syncing.toCopy > 0) {
      t.left += Math.max(0, m.syncing.toCopy - m.syncing.copied);
      if (m.syncing.kind === 'initial') {
        t.scannedFound += m.copied + m.syncing.toCopy;
        t.scannedCount++;
      }
    } else if (m.syncing.kind === 'initial') t.unknown++;
  } else if (m.status === 'Queued' || (m.status === 'Syncing' && m.syncing?.stale)) {
    t.unknown++;
  }
  if (m.initialSyncedAt !== null) {
    t.doneFound += m.found;
    t.doneCount++;
  }
}

/** The sums over mailboxes of one status that no worker holds (no live progress to add). */
export type IdleGroup = BatchView['totals'] & {
  status: MailboxStatus;
  n: number;
  doneFound: number;
  doneCount: number;
};

function addIdle(t: Tally, g: IdleGroup): void {
  t.counts[g.status] += g.n;
  for (const k of Object.keys(t.totals) as (keyof Tally['totals'])[]) t.totals[k] += g[k];
  if (g.status === 'Queued') t.unknown += g.n;
  t.doneFound += g.doneFound;
  t.doneCount += g.doneCount;
}

/** `copies`: what the runs copied by the end of the initial sync (default: the mailboxes' totals). */
export function batchView(b: BatchRow, names: { endpoint: string; target: string }, mailboxes: readonly MailboxView[], now: number, copies?: InitialCopies): BatchView {
  const t = emptyTally();
  for (const m of mailboxes) addMailbox(t, m);
  return viewOf(b, names, t, now, copies);
}

function viewOf(b: BatchRow, names: { endpoint: string; target: string }, t: Tally, now: number, copies?: InitialCopies): BatchView {
  const { counts, totals, rate, byteRate } = t;
  let { left, unknown } = t;
  // Mailboxes not scanned yet are guessed at the average size of those done, or, early in a
  // first batch when none is done, of those whose scan has said how much they hold.
  // (An average of 0 — empty mailboxes finished first — tells nothing: still unknown.)
  const average = t.doneFound > 0 ? t.doneFound / t.doneCount : t.scannedFound > 0 ? t.scannedFound / t.scannedCount : 0;
  if (unknown > 0 && average > 0) {
    left += average * unknown;
    unknown = 0;
  }
  const running = b.state === 'Running';
  return {
    name: b.name,
    status: deriveBatchStatus(b.state, counts),
    endpoint: names.endpoint,
    target: names.target,
    mailboxes: Object.values(counts).reduce((n, c) => n + c, 0),
    counts,
    totals,
    messagesPerSecond: round(rate),
    megabytesPerSecond: round(byteRate, 2),
    etaSeconds: !running || unknown > 0 ? null : left === 0 ? 0 : rate > 0 ? Math.round(left / rate) : null,
    initialSync: initialSyncRate(b, copies ?? totals),
    options: {
      exclude: parseList(b.exclude_json) ?? [],
      include: parseList(b.include_json),
      notify: parseList(b.notify_json) ?? [],
      receivedAfter: iso(b.received_after),
      badItemLimit: b.bad_item_limit,
    },
    createdAt: iso(b.created_at)!,
    startAt: iso(b.start_at),
    startedAt: iso(b.started_at),
    initialSyncedAt: iso(b.initial_synced_at),
    lastIncrementalAt: iso(b.last_incremental_at),
    stoppedAt: iso(b.stopped_at),
    deleteWarning: deleteWarning(b, now),
    reports: { initialSentAt: iso(b.initial_report_at), lastSentAt: iso(b.last_report_at), error: b.report_error },
  };
}

export interface BatchDetail {
  batch: BatchView;
  mailboxes: MailboxView[];
}

async function endpointNames(db: Kysely<Database>): Promise<Map<number, string>> {
  return new Map((await db.selectFrom('endpoint').select(['id', 'name']).execute()).map((e) => [e.id, e.name]));
}

export async function loadBatchDetail(db: Kysely<Database>, given: BatchRow, now = Date.now()): Promise<BatchDetail> {
  const rows = await db.selectFrom('batch_mailbox').selectAll().where('batch_id', '=', given.id).orderBy('line').execute();
  // The batch row again, read after its mailboxes: a worker stamps `initial_synced_at` in
  // the same transaction as the last mailbox's outcome, so a batch row read before the
  // mailboxes could show a finished initial sync (derived from them) without its time.
  const b = (await db.selectFrom('batch').selectAll().where('id', '=', given.id).executeTakeFirst()) ?? given;
  const names = await endpointNames(db);
  const mailboxes = rows.map((r) => mailboxView(r, now));
  return { batch: batchView(b, { endpoint: names.get(b.endpoint_id) ?? '?', target: names.get(b.target_id) ?? '?' }, mailboxes, now, await initialCopies(db, b)), mailboxes };
}

/**
 * The batch's view without loading every mailbox: the database sums the mailboxes no worker
 * holds (by status), and only those held (a few dozen, with live progress) are read whole.
 * Loading 50,000 mailbox rows took ~0.9 s of `serve`'s one thread, and the dashboard asks
 * every two seconds; this takes a few milliseconds. Same figures as batchView over all of them.
 */
export async function loadBatchView(db: Kysely<Database>, given: BatchRow, now = Date.now()): Promise<BatchView> {
  const idle = await db
    .selectFrom('batch_mailbox')
    .select((eb) => [
      'status',
      eb.fn.countAll<number>().as('n'),
      eb.fn.sum<number>('folders').as('folders'),
      eb.fn.sum<number>('found').as('found'),
      eb.fn.sum<number>('copied').as('copied'),
      eb.fn.sum<number>('skipped').as('skipped'),
      eb.fn.sum<number>('failed').as('failed'),
      eb.fn.sum<number>('bytes').as('bytes'),
      eb.fn.sum<number>(eb.case().when('initial_synced_at', 'is not', null).then(eb.ref('found')).else(0).end()).as('doneFound'),
      eb.fn.count<number>('initial_synced_at').as('doneCount'),
    ])
    .where('batch_id', '=', given.id)
    .where('lease_owner', 'is', null)
    .groupBy('status')
    .execute();
  const held = await db.selectFrom('batch_mailbox').selectAll().where('batch_id', '=', given.id).where('lease_owner', 'is not', null).execute();
  // Read after its mailboxes, as in loadBatchDetail.
  const b = (await db.selectFrom('batch').selectAll().where('id', '=', given.id).executeTakeFirst()) ?? given;
  const names = await endpointNames(db);
  const t = emptyTally();
  // PostgreSQL sums bigint columns as numeric, which pg returns as strings.
  for (const g of idle) {
    addIdle(t, {
      status: g.status,
      n: Number(g.n),
      folders: Number(g.folders ?? 0),
      found: Number(g.found ?? 0),
      copied: Number(g.copied ?? 0),
      skipped: Number(g.skipped ?? 0),
      failed: Number(g.failed ?? 0),
      bytes: Number(g.bytes ?? 0),
      doneFound: Number(g.doneFound ?? 0),
      doneCount: Number(g.doneCount),
    });
  }
  for (const r of held) addMailbox(t, mailboxView(r, now));
  return viewOf(b, { endpoint: names.get(b.endpoint_id) ?? '?', target: names.get(b.target_id) ?? '?' }, t, now, await initialCopies(db, b));
}

/** Which mailboxes of a batch to list: one status (or `problems`: failed or with a last error), part of the address, a page. */
export interface MailboxQuery {
  status?: MailboxStatus | 'problems' | undefined;
  /** Part of the address, any case. */
  addressContains?: string | undefined;
  offset?: number | undefined;
  limit?: number | undefined;
}

/** One page of a batch's mailboxes (by line), and how many match in all. */
export async function loadMailboxPage(db: Kysely<Database>, batchId: number, q: MailboxQuery, now = Date.now()): Promise<{ mailboxes: MailboxView[]; matching: number }> {
  let base = db.selectFrom('batch_mailbox').where('batch_id', '=', batchId);
  if (q.status === 'problems') base = base.where((eb) => eb.or([eb('status', '=', 'Failed'), eb('last_error', 'is not', null)]));
  else if (q.status) base = base.where('status', '=', q.status);
  const needle = q.addressContains?.trim().toLowerCase();
  // LIKE's own wildcards in what the admin typed are taken literally.
  if (needle) {
    const pattern = `%${needle.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
    base = base.where(sql<boolean>`lower(email_address) like ${pattern} escape '\\'`);
  }
  const count = await base.select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
  let page = base.selectAll().orderBy('line');
  if (q.limit !== undefined) page = page.limit(q.limit).offset(q.offset ?? 0);
  else if (q.offset) page = page.limit(Number.MAX_SAFE_INTEGER).offset(q.offset);
  const rows = await page.execute();
  return { mailboxes: rows.map((r) => mailboxView(r, now)), matching: Number(count.n) };
}

export async function loadBatchList(db: Kysely<Database>, now = Date.now()): Promise<BatchView[]> {
  const out: BatchView[] = [];
  for (const b of await db.selectFrom('batch').selectAll().orderBy('name').execute()) out.push(await loadBatchView(db, b, now));
  return out;
}

/** A mailbox's skipped items as the last sync listed them (capped; see lease.ts). */
export function skippedItemsOf(m: Pick<BatchMailboxRow, 'skipped_items_json'>): SkippedItem[] {
  if (!m.skipped_items_json) return [];
  const v = JSON.parse(m.skipped_items_json) as unknown;
  return Array.isArray(v) ? (v as SkippedItem[]) : [];
}
