/**
 * What the admin does to a running batch (SPEC §4): start, stop, sync now, retry, delete.
 * Each is one write transaction on the database, so it works the same whether or not a
 * `serve` or `worker` runs; workers see the change at their next claim or heartbeat.
 *
 * Mailboxes a worker holds (a live lease) are left to that worker: it notices a stopped or
 * deleted batch at its next heartbeat, abandons the sync and gives the mailbox back in
 * the state the batch now asks for (src/worker/lease.ts `release`).
 */
import { addressKey } from '../csv/address.js';
import type { ExpressionBuilder } from 'kysely';
import type { Store } from '../store/open.js';
import type { BatchRow, Database } from '../store/schema.js';
import { batchMxReport, MX_GRACE_MS } from '../dns/mx-watch.js';
import { BatchError, DeleteTooEarlyError } from './errors.js';
import { roughDuration } from './duration.js';
import { type Tx, writeTx } from './tx.js';

/** SPEC §4/§7: let a batch run 72 hours after the MX change before deleting it. */
export const DELETE_GRACE_MS = MX_GRACE_MS;

/** Mailboxes no live worker holds: never leased, released, or the holder's lease expired. */
function leaseFree(now: number) {
  return (eb: ExpressionBuilder<Database, 'batch_mailbox'>) => eb.or([eb('lease_owner', 'is', null), eb('lease_expires_at', '<', now)]);
}

const NO_LEASE = { lease_owner: null, lease_kind: null, lease_started_at: null, lease_expires_at: null } as const;

/** The batch row, locked against concurrent changes (PostgreSQL; SQLite's write lock already covers it). */
async function lockBatch(tx: Tx, dialect: Store['dialect'], where: { name: string } | { id: number }): Promise<BatchRow | undefined> {
  let q = tx.selectFrom('batch').selectAll();
  q = 'name' in where ? q.where('name', '=', where.name) : q.where('id', '=', where.id);
  return (dialect === 'postgres' ? q.forUpdate() : q).executeTakeFirst();
}

async function mustLock(tx: Tx, dialect: Store['dialect'], name: string): Promise<BatchRow> {
  const b = await lockBatch(tx, dialect, { name });
  if (!b) throw new BatchError(`no batch named "${name}"`);
  return b;
}

export type StartResult = { started: true; mailboxes: number } | { started: false; reason: 'already-running' };

async function startLocked(tx: Tx, batch: BatchRow, now: number): Promise<StartResult> {
  if (batch.state === 'Removing') throw new BatchError(`batch "${batch.name}" is being deleted`);
  if (batch.state === 'Running') return { started: false, reason: 'already-running' };
  await tx
    .updateTable('batch')
    .set({ state: 'Running', started_at: batch.started_at ?? now, start_at: null, stopped_at: null })
    .where('id', '=', batch.id)
    .execute();
  // A restart continues where it stopped (the sync journal knows what was copied): what
  // never finished its initial sync is due at once, failures get a fresh attempt, and
  // synced mailboxes keep their incremental schedule.
  const base = tx.updateTable('batch_mailbox').where('batch_id', '=', batch.id).where(leaseFree(now));
  const queued = await base.set({ ...NO_LEASE, status: 'Queued', next_sync_at: now, attempts: 0 }).where('initial_synced_at', 'is', null).executeTakeFirst();
  const failed = await base.set({ ...NO_LEASE, status: 'Failed', next_sync_at: now, attempts: 0 }).where('initial_synced_at', 'is not', null).where('last_error', 'is not', null).executeTakeFirst();
  await base.set({ next_sync_at: now }).where('initial_synced_at', 'is not', null).where('last_error', 'is', null).where('next_sync_at', 'is', null).execute();
  const synced = await base.set({ ...NO_LEASE, status: 'Synced' }).where('initial_synced_at', 'is not', null).where('last_error', 'is', null).executeTakeFirst();
  if (batch.initial_synced_at === null) {
    // Stopped just as its last initial syncs finished: release() records the end of the
    // initial sync only for a running batch, so it is recorded here (reports, 72-hour clock).
    const pending = await tx.selectFrom('batch_mailbox').select((eb) => eb.fn.countAll<number>().as('n')).where('batch_id', '=', batch.id).where('initial_synced_at', 'is', null).executeTakeFirstOrThrow();
    if (Number(pending.n) === 0) await tx.updateTable('batch').set({ initial_synced_at: now }).where('id', '=', batch.id).execute();
  }
  return { started: true, mailboxes: Number(queued.numUpdatedRows) + Number(failed.numUpdatedRows) + Number(synced.numUpdatedRows) };
}

export function startBatch(store: Store, name: string, now = Date.now()): Promise<StartResult> {
  return writeTx(store, async (tx) => startLocked(tx, await mustLock(tx, store.dialect, name), now));
}

/** Starts the batches whose `--start-at` time has come; returns their names. */
export async function startScheduledBatches(store: Store, now = Date.now()): Promise<string[]> {
  const due = await store.db.selectFrom('batch').select(['id', 'name']).where('state', '=', 'Created').where('start_at', '<=', now).execute();
  const started: string[] = [];
  for (const { id, name } of due) {
    const r = await writeTx(store, async (tx) => {
      const b = await lockBatch(tx, store.dialect, { id });
      // Re-checked under the lock: another process may have started or deleted it meanwhile.
      if (!b || b.state !== 'Created' || b.start_at === null || b.start_at > now) return false;
      return (await startLocked(tx, b, now)).started;
    });
    if (r) started.push(name);
  }
  return started;
}

export type StopResult = { stopped: true; stillSyncing: number } | { stopped: false; reason: 'already-stopped' };

export function stopBatch(store: Store, name: string, now = Date.now()): Promise<StopResult> {
  return writeTx(store, async (tx) => {
    const b = await mustLock(tx, store.dialect, name);
    if (b.state === 'Removing') throw new BatchError(`batch "${name}" is being deleted`);
    if (b.state === 'Created') throw new BatchError(`batch "${name}" was never started`);
    if (b.state === 'Stopped') return { stopped: false, reason: 'already-stopped' };
    await tx.updateTable('batch').set({ state: 'Stopped', stopped_at: now }).where('id', '=', b.id).execute();
    // A failed mailbox stays Failed: its error is what the admin must act on before the
    // cut-over (the delete warning counts failed mailboxes), stopped or not.
    await tx.updateTable('batch_mailbox').set(NO_LEASE).where('batch_id', '=', b.id).where(leaseFree(now)).where('status', '=', 'Failed').execute();
    await tx.updateTable('batch_mailbox').set({ ...NO_LEASE, status: 'Stopped' }).where('batch_id', '=', b.id).where(leaseFree(now)).where('status', '!=', 'Failed').execute();
    const held = await tx.selectFrom('batch_mailbox').select((eb) => eb.fn.countAll<number>().as('n')).where('batch_id', '=', b.id).where('lease_owner', 'is not', null).executeTakeFirstOrThrow();
    return { stopped: true, stillSyncing: Number(held.n) };
  });
}

function mustBeRunning(b: BatchRow, what: string): void {
  if (b.state === 'Running') return;
  const why = b.state === 'Created' ? 'it was never started' : b.state === 'Stopped' ? 'it is stopped' : 'it is being deleted';
  throw new BatchError(`cannot ${what} batch "${b.name}": ${why}${b.state === 'Removing' ? '' : ` (use: mailferry batch start ${b.name})`}`);
}

/**
 * Every mailbox of the batch syncs as soon as a worker is free, e.g. right after the MX
 * switch. The request survives a sync that is running now: that one may have scanned a
 * folder before the newest mail arrived, so another sync follows it.
 */
export function syncNow(store: Store, name: string): Promise<number> {
  return writeTx(store, async (tx) => {
    const b = await mustLock(tx, store.dialect, name);
    mustBeRunning(b, 'sync');
    const r = await tx.updateTable('batch_mailbox').set({ sync_requested: 1 }).where('batch_id', '=', b.id).where('status', '!=', 'Stopped').executeTakeFirst();
    return Number(r.numUpdatedRows);
  });
}

/** Failed mailboxes (or the one of `user`, whatever its status) become due now, with the backoff reset. */
export function retryMailboxes(store: Store, name: string, user?: string): Promise<{ emailAddress: string; status: string }[]> {
  return writeTx(store, async (tx) => {
    const b = await mustLock(tx, store.dialect, name);
    mustBeRunning(b, 'retry mailboxes of');
    let q = tx.selectFrom('batch_mailbox').select(['id', 'email_address', 'status']).where('batch_id', '=', b.id);
    q = user !== undefined ? q.where('email_key', 'in', [user.trim().toLowerCase(), addressKey(user.trim())]) : q.where('status', '=', 'Failed');
    const rows = await q.execute();
    if (user !== undefined && rows.length === 0) throw new BatchError(`batch "${name}" has no mailbox ${user}`);
    if (rows.length > 0) {
      await tx.updateTable('batch_mailbox').set({ sync_requested: 1, attempts: 0 }).where('id', 'in', rows.map((r) => r.id)).execute();
    }
    return rows.map((r) => ({ emailAddress: r.email_address, status: r.status }));
  });
}

/** Why deleting now is early, or null. A batch never started has migrated nothing and may go at once. */
export function deleteWarning(b: Pick<BatchRow, 'name' | 'started_at' | 'initial_synced_at'>, now: number): string | null {
  if (b.started_at === null) return null;
  if (b.initial_synced_at === null) {
    return `batch "${b.name}" has not finished its initial sync. Delete it only after the MX record points at the target and the batch has run 72 hours since (so every mailbox synced at least once after the change).`;
  }
  const age = now - b.initial_synced_at;
  if (age >= DELETE_GRACE_MS) return null;
  return (
    `batch "${b.name}" finished its initial sync ${roughDuration(age)} ago, less than 72 hours: without MX checks of its mail domains ` +
    `(mailferry dns check DOMAIN --target-mx HOST) the 72 hours count from there (${roughDuration(DELETE_GRACE_MS - age)} to go).`
  );
}

export interface DeleteProgress {
  /** Mailbox rows still held by a worker; they go when the worker gives them back. */
  remaining: number;
  /** The batch row itself is gone. */
  removed: boolean;
}

/** Deletes what no live worker holds, and the batch once it has no mailbox left. */
async function removeStep(tx: Tx, batchId: number, now: number): Promise<DeleteProgress> {
  await tx.deleteFrom('batch_mailbox').where('batch_id', '=', batchId).where(leaseFree(now)).execute();
  const left = await tx.selectFrom('batch_mailbox').select((eb) => eb.fn.countAll<number>().as('n')).where('batch_id', '=', batchId).executeTakeFirstOrThrow();
  if (Number(left.n) > 0) return { remaining: Number(left.n), removed: false };
  await tx.deleteFrom('batch').where('id', '=', batchId).execute();
  return { remaining: 0, removed: true };
}

/**
 * Every reason not to delete the batch now: deleteWarning()'s, and what the recorded MX
 * checks of its mailboxes' domains say (src/dns/mx-watch.ts: not switched, switched less
 * than 72 hours ago, mailboxes not synced since the switch). A batch never started has
 * migrated nothing, so the MX does not matter to it.
 */
export async function deleteWarnings(db: Tx, b: BatchRow, now: number): Promise<string[]> {
  return (await cutOverState(db, b, now)).deleteWarnings;
}

/** Where the batch's cut-over stands: deleteWarnings(), and the mail domains no MX check has recorded (whose 72 hours cannot be tracked). */
export async function cutOverState(db: Tx, b: BatchRow, now: number): Promise<{ deleteWarnings: string[]; uncheckedDomains: string[] }> {
  const own = deleteWarning(b, now);
  if (b.started_at === null) return { deleteWarnings: own ? [own] : [], uncheckedDomains: [] };
  const mx = await batchMxReport(db, b.id, now);
  const warnings: string[] = [];
  // The 72 hours count from the MX change. Without MX checks for every domain of the batch
  // they are counted from the initial sync (the change cannot come before it in a plan that
  // switches after migrating); with them, a switch made before the migration is not waited
  // for twice. A batch still in its initial sync waits in any case.
  const mxDecides = mx.unwatched.length === 0 && b.initial_synced_at !== null;
  if (own && !(mxDecides && mx.warnings.length === 0)) warnings.push(own);
  warnings.push(...mx.warnings.map((w) => `Batch "${b.name}": ${w}`));
  // Mailboxes whose mail is not (all) on the target: deleting gives them up.
  const unfinished = await db
    .selectFrom('batch_mailbox')
    .select(['email_address', 'status'])
    .where('batch_id', '=', b.id)
    .where((eb) => eb.or([eb('status', '=', 'Failed'), eb('last_sync_at', 'is', null)]))
    .orderBy('line')
    .limit(1000)
    .execute();
  const failed = unfinished.filter((m) => m.status === 'Failed');
  const never = unfinished.filter((m) => m.status !== 'Failed');
  const some = (list: typeof unfinished) => `${list.length >= 1000 ? '1000 or more' : list.length} mailbox${list.length === 1 ? '' : 'es'} (e.g. ${list.slice(0, 3).map((m) => m.email_address).join(', ')}${list.length > 3 ? ', …' : ''})`;
  if (failed.length) warnings.push(`Batch "${b.name}": ${some(failed)} failed their last sync: what they hold may not all be on the target (retry them; delete anyway only to give them up).`);
  if (never.length) warnings.push(`Batch "${b.name}": ${some(never)} never finished a sync.`);
  return { deleteWarnings: warnings, uncheckedDomains: mx.unwatched };
}

/**
 * Marks the batch Removing (workers abandon its syncs at their next heartbeat) and removes
 * what it can at once. Throws DeleteTooEarlyError unless `force` when deleteWarnings() has
 * something to say. The sync journal is kept: re-migrating the same mailboxes later (in a
 * new batch) then copies nothing twice.
 */
export function deleteBatch(store: Store, name: string, opts: { force?: boolean; now?: number } = {}): Promise<DeleteProgress & { batchId: number }> {
  const now = opts.now ?? Date.now();
  return writeTx(store, async (tx) => {
    const b = await mustLock(tx, store.dialect, name);
    if (b.state !== 'Removing' && !opts.force) {
      const warnings = await deleteWarnings(tx, b, now);
      if (warnings.length > 0) throw new DeleteTooEarlyError(`${warnings.join(' ')} Use --force to delete it anyway.`, warnings);
    }
    if (b.state !== 'Removing') await tx.updateTable('batch').set({ state: 'Removing' }).where('id', '=', b.id).execute();
    return { batchId: b.id, ...(await removeStep(tx, b.id, now)) };
  });
}

/** One more removal pass over a Removing batch (the CLI while it waits, the scheduler for the rest). */
export function continueRemoval(store: Store, batchId: number, now = Date.now()): Promise<DeleteProgress> {
  return writeTx(store, async (tx) => {
    const b = await lockBatch(tx, store.dialect, { id: batchId });
    if (!b) return { remaining: 0, removed: true };
    if (b.state !== 'Removing') throw new BatchError(`batch "${b.name}" is not being deleted`);
    return removeStep(tx, b.id, now);
  });
}

/** Finishes removals whose mailboxes' workers vanished (their leases expired). */
export async function finishRemovals(store: Store, now = Date.now()): Promise<number> {
  const removing = await store.db.selectFrom('batch').select('id').where('state', '=', 'Removing').execute();
  let removed = 0;
  for (const { id } of removing) if ((await continueRemoval(store, id, now)).removed) removed++;
  return removed;
}
