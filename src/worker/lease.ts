/**
 * Leases: how workers on any number of machines share the mailboxes of all batches through
 * the database alone, in the manner of graphile-worker.
 *
 * - claim: in one write transaction, pick the first due mailbox nobody holds whose
 *   endpoints are under their concurrency limits, and take it: owner, start, expiry, kind.
 *   PostgreSQL: the endpoint rows are locked first (so two claimers for one endpoint count
 *   its live leases one after the other and the limit holds across machines), and the
 *   mailbox row is taken with FOR UPDATE SKIP LOCKED (claimers never wait for each other's
 *   mailboxes). SQLite: BEGIN IMMEDIATE serialises claims altogether.
 * - pulse: the holder extends the expiry (and writes its live progress) every few seconds;
 *   a worker that dies stops pulsing and its lease expires, which makes the mailbox
 *   claimable again — the sync journal lets the next worker resume where it died.
 * - release: the holder records the outcome and clears the lease, in one transaction.
 *
 * Every write after the claim is conditional on (owner, lease_started_at): a worker whose
 * lease was taken over changes nothing, and learns so from its next pulse.
 */
import { sql } from 'kysely';
import type { Store } from '../store/open.js';
import type { BatchState, MailboxStatus, RunOutcome, SyncKind } from '../store/schema.js';
import type { SyncProgress } from '../sync/progress.js';
import type { SyncSummary } from '../sync/options.js';
import { INITIAL_PENDING, restingStatus } from '../batch/status.js';
import { NO_LEASE } from '../batch/store.js';
import { type Tx, writeTx } from '../batch/tx.js';
import { backoffMs, type BackoffPolicy } from './backoff.js';

/** A mailbox held by one worker. (owner, startedAt) identify the lease. */
export interface Claim {
  mailboxId: number;
  batchId: number;
  owner: string;
  kind: SyncKind;
  startedAt: number;
  expiresAt: number;
  /** The sync_run row recording this run. */
  runId: number;
  /** Set when this claim took the mailbox over from a run whose lease expired (its worker died or was paused): when that lease ended. */
  tookOverAt?: number;
}

export interface ClaimOptions {
  owner: string;
  ttlMs: number;
  now?: number;
  /** How many due mailboxes one claim considers (when the first ones' endpoints are full). */
  lookahead?: number;
}

/** Live leases on an endpoint: of one kind, or of both (`kind` undefined). */
async function liveLeases(tx: Tx, side: 'endpoint_id' | 'target_id', endpointId: number, kind: SyncKind | undefined, now: number): Promise<number> {
  let q = tx
    .selectFrom('batch_mailbox as m')
    .innerJoin('batch as b', 'b.id', 'm.batch_id')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where(`b.${side}`, '=', endpointId)
    .where('m.lease_expires_at', '>=', now);
  q = kind === undefined ? q.where('m.lease_kind', 'is not', null) : q.where('m.lease_kind', '=', kind);
  const r = await q.executeTakeFirstOrThrow();
  return Number(r.n);
}

export function claimNext(store: Store, opts: ClaimOptions): Promise<Claim | null> {
  return writeTx(store, async (tx) => {
    const now = opts.now ?? Date.now();
    const candidates = await tx
      .selectFrom('batch_mailbox as m')
      .innerJoin('batch as b', 'b.id', 'm.batch_id')
      .select(['m.id', 'm.batch_id', 'm.initial_synced_at', 'b.endpoint_id', 'b.target_id'])
      .where('b.state', '=', 'Running')
      .where('m.status', '!=', 'Stopped')
      .where((eb) => eb.or([eb('m.lease_owner', 'is', null), eb('m.lease_expires_at', '<', now)]))
      .where((eb) => eb.or([eb('m.next_sync_at', '<=', now), eb('m.sync_requested', '=', 1)]))
      .orderBy('m.sync_requested', 'desc')
      .orderBy('m.next_sync_at')
      .orderBy('m.id')
      .limit(opts.lookahead ?? 50)
      .execute();
    if (candidates.length === 0) return null;

    const endpointIds = [...new Set(candidates.flatMap((c) => [c.endpoint_id, c.target_id]))].sort((a, b) => a - b);
    let q = tx.selectFrom('endpoint').select(['id', 'max_concurrent_migrations', 'max_concurrent_incremental_syncs']).where('id', 'in', endpointIds).orderBy('id');
    // One lock order (by id) for every claimer, so that claimers sharing endpoints queue
    // instead of deadlocking; held to commit, which makes count-then-claim atomic.
    if (store.dialect === 'postgres') q = q.forUpdate();
    const endpoints = new Map((await q.execute()).map((e) => [e.id, e]));

    const live = new Map<string, number>();
    const count = async (side: 'endpoint_id' | 'target_id', id: number, kind: SyncKind | undefined): Promise<number> => {
      const key = `${side}:${id}:${kind ?? 'all'}`;
      let n = live.get(key);
      if (n === undefined) live.set(key, (n = await liveLeases(tx, side, id, kind, now)));
      return n;
    };
    // As Exchange's endpoints count them: incremental syncs are migrations too, so the
    // migrations limit caps every sync on the endpoint (it is what protects the server),
    // and incremental syncs have their own, lower limit within it.
    const underLimit = async (side: 'endpoint_id' | 'target_id', id: number, kind: SyncKind): Promise<boolean> => {
      const e = endpoints.get(id);
      if (e === undefined) return false;
      if ((await count(side, id, undefined)) >= e.max_concurrent_migrations) return false;
      return kind === 'initial' || (await count(side, id, 'incremental')) < e.max_concurrent_incremental_syncs;
    };

    for (const c of candidates) {
      const kind: SyncKind = c.initial_synced_at === null ? 'initial' : 'incremental';
      if (!(await underLimit('endpoint_id', c.endpoint_id, kind)) || !(await underLimit('target_id', c.target_id, kind))) continue;
      // Re-checked in full on the locked row: while this claimer waited for the endpoint
      // locks, another may have claimed, synced and released it (no longer due), or the
      // batch may have been stopped or deleted (READ COMMITTED re-evaluates the row).
      let take = tx
        .selectFrom('batch_mailbox')
        .select(['id', 'lease_expires_at', 'progress_copied', 'progress_bytes'])
        .where('id', '=', c.id)
        .where('status', '!=', 'Stopped')
        .where((eb) => eb.or([eb('lease_owner', 'is', null), eb('lease_expires_at', '<', now)]))
        .where((eb) => eb.or([eb('next_sync_at', '<=', now), eb('sync_requested', '=', 1)]))
        .where((eb) => eb.exists(eb.selectFrom('batch').select('batch.id').whereRef('batch.id', '=', 'batch_mailbox.batch_id').where('batch.state', '=', 'Running')));
      if (store.dialect === 'postgres') take = take.forUpdate().skipLocked();
      const row = await take.executeTakeFirst();
      if (!row) continue;

      // A run left open by a worker that vanished ended, at the latest, when its lease
      // expired, having copied what its last heartbeat said (the planning rate and the
      // reports' "copied since" count runs).
      const abandoned = await tx
        .updateTable('sync_run')
        .set({ ended_at: row.lease_expires_at ?? now, outcome: 'abandoned', copied: row.progress_copied, bytes: row.progress_bytes })
        .where('mailbox_id', '=', c.id)
        .where('ended_at', 'is', null)
        .executeTakeFirst();
      // Its copies are on the target and journaled, but the mailbox's counts are only
      // written when a run ends: without this the page went from "1077 of 12000 copied" to
      // "0 of 10923" when the run was taken over. The next release counts from the journal.
      const taken = Number(abandoned.numUpdatedRows) > 0 ? { copied: sql<number>`copied + ${row.progress_copied}`, bytes: sql<number>`bytes + ${row.progress_bytes}` } : {};
      // The lease starts now, not when the transaction began: on PostgreSQL this claimer may
      // have waited for the endpoint locks while another worker released a mailbox of the
      // same endpoint (and recorded its run's end). Stamping the earlier time would record
      // two runs as overlapping that never held leases at once.
      const startedAt = opts.now ?? Date.now();
      const expiresAt = startedAt + opts.ttlMs;
      const status: MailboxStatus = kind === 'initial' ? 'Syncing' : 'IncrementalSyncing';
      await tx
        .updateTable('batch_mailbox')
        .set({
          lease_owner: opts.owner,
          lease_kind: kind,
          lease_started_at: startedAt,
          lease_expires_at: expiresAt,
          status,
          sync_requested: 0,
          // Due from now on until the run is released (which sets the next time): a run
          // whose worker dies is taken again once its lease expires, even when it was asked
          // for by sync now, retry or update (the request is cleared above) before its time.
          next_sync_at: startedAt,
          progress_phase: 'connecting',
          progress_copied: 0,
          progress_to_copy: 0,
          progress_bytes: 0,
          progress_to_copy_bytes: 0,
          progress_already: 0,
          progress_at: startedAt,
          ...taken,
        })
        .where('id', '=', c.id)
        .execute();
      const run = await tx
        .insertInto('sync_run')
        .values({ batch_id: c.batch_id, mailbox_id: c.id, owner: opts.owner, kind, started_at: startedAt, ended_at: null, outcome: null, copied: 0, bytes: 0, error: null })
        .returning('id')
        .executeTakeFirstOrThrow();
      return { mailboxId: c.id, batchId: c.batch_id, owner: opts.owner, kind, startedAt, expiresAt, runId: Number(run.id), ...(Number(abandoned.numUpdatedRows) > 0 ? { tookOverAt: row.lease_expires_at ?? now } : {}) };
    }
    return null;
  });
}

export interface PulseResult {
  /** False: the lease expired and another worker took the mailbox, or it was deleted. */
  owned: boolean;
  /** The batch's state now, or null when the batch is gone. */
  batchState: BatchState | null;
}

/** Extends the lease and records live progress. Two short statements, no transaction. */
export async function pulse(store: Store, claim: Claim, progress: Readonly<SyncProgress> | undefined, opts: { ttlMs: number; now?: number }): Promise<PulseResult> {
  const now = opts.now ?? Date.now();
  const r = await store.db
    .updateTable('batch_mailbox')
    .set({
      lease_expires_at: now + opts.ttlMs,
      // The heartbeat's time, with or without progress to report: the page tells a worker
      // that stopped pulsing by it (view.ts) long before its lease expires.
      progress_at: now,
      ...(progress
        ? { progress_phase: progress.phase, progress_copied: progress.copied, progress_to_copy: progress.toCopy, progress_bytes: progress.copiedBytes, progress_to_copy_bytes: progress.toCopyBytes, progress_already: progress.alreadyOnTarget }
        : {}),
    })
    .where('id', '=', claim.mailboxId)
    .where('lease_owner', '=', claim.owner)
    .where('lease_started_at', '=', claim.startedAt)
    .executeTakeFirst();
  const batch = await store.db.selectFrom('batch').select('state').where('id', '=', claim.batchId).executeTakeFirst();
  return { owned: Number(r.numUpdatedRows) === 1, batchState: batch?.state ?? null };
}

/** How a run ended, as the worker saw it. */
export type RunResult =
  | { kind: 'synced'; summary: SyncSummary; pairId: number | null }
  /** `summary` when the sync finished but too many bad items make it a failure. */
  /**
   * `loginRefused`: the source refused the mailbox's credentials. Not tried again by itself
   * (see release), only once the admin corrects the row (batch update), retries it, or
   * syncs or starts the batch.
   */
  | { kind: 'failed'; error: string; summary?: SyncSummary; pairId: number | null; loginRefused?: true; notBefore?: number }
  /** The worker gave up the run: shutting down, or its batch was stopped or is being deleted. */
  /** `database`: the state database failed under the run (a PostgreSQL restart): not the mailbox's failure. */
  | { kind: 'interrupted'; why: 'shutdown' | 'stopped' | 'removed' | 'lease-lost' | 'database'; pairId: number | null };

export interface ReleasePolicy {
  incrementalEveryMs: number;
  backoff: BackoffPolicy;
  now?: number;
}

/** How long a run the state database failed under waits before it is taken again. */
export const DATABASE_PAUSE_MS = 30_000;

/** At most this many skipped items are kept per mailbox for status and reports (the journal has all). */
export const SKIPPED_ITEMS_KEPT = 1000;

/** Folders past which the totals are not limited to a run's folders (one SQL parameter each). */
const SCOPED_FOLDERS_MAX = 5000;

/**
 * What the journal holds as copied for the mailbox pair: only in `sourcePaths`, the folders
 * the run took, when known. The journal keeps the copies of folders an earlier batch or a
 * wider `--include` took, which `found` (this run's scope) does not count: counted, a
 * mailbox read "1500/1048 copied".
 */
async function journalTotals(tx: Tx, pairId: number, sourcePaths?: readonly string[], receivedAfter?: number | null): Promise<{ copied: number; bytes: number }> {
  let q = tx
    .selectFrom('message')
    .innerJoin('folder', 'folder.id', 'message.folder_id')
    .select([(eb) => eb.fn.countAll<number>().as('n'), sql<number>`cast(coalesce(sum(message.size), 0) as bigint)`.as('b')])
    .where('folder.pair_id', '=', pairId)
    .where('message.state', '=', 'copied');
  if (sourcePaths && sourcePaths.length > 0 && sourcePaths.length <= SCOPED_FOLDERS_MAX) q = q.where('folder.source_path', 'in', [...sourcePaths]);
  // The batch's "received after" scope, as `found` counts: copies an earlier, wider run made are not in it.
  // (A date the source did not give, 0, is in scope, as the scan counts it: mailbox-sync.ts inScopeCounts.)
  if (receivedAfter !== undefined && receivedAfter !== null) q = q.where((eb) => eb.or([eb('message.internal_date', '>=', receivedAfter), eb('message.internal_date', '=', 0)]));
  const r = await q.executeTakeFirstOrThrow();
  return { copied: Number(r.n), bytes: Number(r.b) };
}

/**
 * Records the outcome and clears the lease. Returns false when the lease was no longer this
 * worker's (nothing is written then). Lock order as everywhere: batch row, then mailbox row.
 */
export function release(store: Store, claim: Claim, result: RunResult, progress: Readonly<SyncProgress> | undefined, policy: ReleasePolicy): Promise<boolean> {
  return writeTx(store, async (tx) => {
    const now = policy.now ?? Date.now();
    let bq = tx.selectFrom('batch').select(['id', 'state', 'initial_synced_at', 'received_after']).where('id', '=', claim.batchId);
    if (store.dialect === 'postgres') bq = bq.forUpdate();
    const batch = await bq.executeTakeFirst();
    let mq = tx.selectFrom('batch_mailbox').selectAll().where('id', '=', claim.mailboxId).where('lease_owner', '=', claim.owner).where('lease_started_at', '=', claim.startedAt);
    // Locked before the run row: a claimer taking over an expired lease locks the mailbox
    // row first too (and skips it while locked), so the two never wait on each other.
    if (store.dialect === 'postgres') mq = mq.forUpdate();
    const m = await mq.executeTakeFirst();
    if (!batch || !m) return false;

    const durationMs = now - claim.startedAt;
    const summary = result.kind === 'interrupted' ? undefined : result.summary;
    const outcome: RunOutcome =
      result.kind === 'synced' ? 'synced' : result.kind === 'failed' ? 'failed' : result.why === 'shutdown' || result.why === 'lease-lost' || result.why === 'database' ? 'interrupted' : 'stopped';
    const runCopied = summary?.copied ?? progress?.copied ?? 0;
    const runBytes = summary?.bytes ?? progress?.copiedBytes ?? 0;
    await tx
      .updateTable('sync_run')
      .set({ ended_at: now, outcome, copied: runCopied, bytes: runBytes, error: result.kind === 'failed' ? result.error : null })
      .where('id', '=', claim.runId)
      .execute();

    if (batch.state === 'Removing') {
      await tx.deleteFrom('batch_mailbox').where('id', '=', m.id).execute();
      const left = await tx.selectFrom('batch_mailbox').select((eb) => eb.fn.countAll<number>().as('n')).where('batch_id', '=', batch.id).executeTakeFirstOrThrow();
      if (Number(left.n) === 0) await tx.deleteFrom('batch').where('id', '=', batch.id).execute();
      return true;
    }

    const pairId = result.pairId ?? m.pair_id;
    const totals = pairId !== null ? await journalTotals(tx, pairId, summary?.folderList.map((f) => f.source), batch.received_after) : { copied: m.copied, bytes: m.bytes };
    const common = {
      ...NO_LEASE,
      pair_id: pairId,
      // Of the messages found, at most those not skipped or failed: the journal also keeps
      // copies of messages since deleted on the source (they stay on the target), which
      // `found` no longer counts, so "305 of 302 copied" read as more copied than there is.
      copied: summary ? Math.min(totals.copied, Math.max(0, summary.found - summary.skipped - summary.failed)) : totals.copied,
      bytes: totals.bytes,
      sync_ms: m.sync_ms + durationMs,
      ...(summary
        ? {
            folders: summary.folders,
            found: summary.found,
            skipped: summary.skipped,
            failed: summary.failed,
            last_duration_ms: durationMs,
            skipped_items_json: JSON.stringify(summary.skippedItems.slice(0, SKIPPED_ITEMS_KEPT)),
          }
        : {
            // A run that failed or was stopped has no summary: what its progress knew, so a
            // first run that failed does not read "404/0 messages copied", and one stopped
            // half-way does not read "1573/1573" (what its scan found still to copy counts).
            folders: Math.max(m.folders, progress?.foldersTotal ?? 0),
            found: Math.max(m.found, totals.copied + Math.max(0, (progress?.toCopy ?? 0) - (progress?.copied ?? 0))),
          }),
    };
    const stopped = batch.state === 'Stopped';
    let patch;
    if (result.kind === 'synced') {
      patch = {
        ...common,
        status: 'Synced' as MailboxStatus,
        initial_synced_at: m.initial_synced_at ?? now,
        last_sync_at: now,
        next_sync_at: now + policy.incrementalEveryMs,
        last_error: null,
        attempts: 0,
      };
    } else if (result.kind === 'failed') {
      const attempts = m.attempts + 1;
      // A refused password is not tried again on a timer: lockout policies count failures
      // (often 5 in 30 minutes), and a backoff that starts at a minute would lock the user's
      // live account out of the old server within the hour. It waits for the admin.
      // `notBefore`: an admin credential the breaker holds back until then (credential-breaker.ts):
      // a backoff of a minute would show a next sync the error text contradicts.
      const next = result.loginRefused ? null : Math.max(now + backoffMs(attempts, policy.backoff), result.notBefore ?? 0);
      const error = result.loginRefused ? `${result.error} (not retried automatically, so the account is not locked: correct the password with batch update, or retry the mailbox)` : result.error;
      patch = { ...common, status: 'Failed' as MailboxStatus, last_error: error, attempts, next_sync_at: next };
    } else {
      // Given back unfinished: due at once, for whichever worker is free; after a database
      // failure, once the database has had a moment (not a loop of failing runs).
      patch = { ...common, status: restingStatus(m), next_sync_at: result.kind === 'interrupted' && result.why === 'database' ? now + DATABASE_PAUSE_MS : now };
    }
    if (stopped && patch.status !== 'Failed') patch.status = 'Stopped';
    await tx.updateTable('batch_mailbox').set(patch).where('id', '=', m.id).execute();

    if (batch.state === 'Running') {
      if (result.kind === 'synced' && claim.kind === 'incremental') await tx.updateTable('batch').set({ last_incremental_at: now }).where('id', '=', batch.id).execute();
      if (batch.initial_synced_at === null) {
        const pending = await tx
          .selectFrom('batch_mailbox')
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .where('batch_id', '=', batch.id)
          .where('status', 'in', [...INITIAL_PENDING])
          .executeTakeFirstOrThrow();
        // The batch's initial sync is over (every mailbox synced or failed): the moment
        // reports go out and the 72-hour clock before deletion starts.
        if (Number(pending.n) === 0) await tx.updateTable('batch').set({ initial_synced_at: now }).where('id', '=', batch.id).where('initial_synced_at', 'is', null).execute();
      }
    }
    return true;
  });
}
