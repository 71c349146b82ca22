/** Batch and batch-mailbox queries that several modules share. Queries only; lifecycle.ts decides. */
import type { Kysely } from 'kysely';
import { addressKey } from '../csv/address.js';
import type { BatchRow, Database } from '../store/schema.js';
import { BatchError } from './errors.js';
import { emptyCounts, MAILBOX_STATUSES, type StatusCounts } from './status.js';

type Db = Kysely<Database>;

export function findBatch(db: Db, name: string): Promise<BatchRow | undefined> {
  return db.selectFrom('batch').selectAll().where('name', '=', name).executeTakeFirst();
}

export async function requireBatch(db: Db, name: string): Promise<BatchRow> {
  const b = await findBatch(db, name);
  if (!b) throw new BatchError(`no batch named "${name}"`);
  return b;
}

export function listBatches(db: Db): Promise<BatchRow[]> {
  return db.selectFrom('batch').selectAll().orderBy('name').execute();
}

export async function statusCounts(db: Db, batchId: number): Promise<StatusCounts> {
  const rows = await db.selectFrom('batch_mailbox').select(['status', db.fn.countAll<number>().as('n')]).where('batch_id', '=', batchId).groupBy('status').execute();
  const counts = emptyCounts();
  for (const r of rows) if (MAILBOX_STATUSES.includes(r.status)) counts[r.status] = Number(r.n);
  return counts;
}

/** Chunks keep each IN list under SQLite's bound-parameter limit. */
const CHUNK = 500;

/** Of these addresses, those already in some batch other than `exceptBatchId` (every batch that exists is active until deleted). */
export async function addressesInBatches(db: Db, addresses: readonly string[], exceptBatchId?: number): Promise<Map<string, string>> {
  /** Address (as given) → the name of the batch that holds it. */
  const found = new Map<string, string>();
  // Keys are addressKey (csv/address.ts); rows stored before it was used hold the plain
  // lower case, which differs only for non-ASCII addresses: both are looked for.
  const byKey = new Map(addresses.flatMap((a) => [[a.toLowerCase(), a] as const, [addressKey(a), a] as const]));
  const keys = [...byKey.keys()];
  for (let i = 0; i < keys.length; i += CHUNK) {
    let q = db.selectFrom('batch_mailbox').innerJoin('batch', 'batch.id', 'batch_mailbox.batch_id').select(['batch_mailbox.email_key', 'batch.name']).where('batch_mailbox.email_key', 'in', keys.slice(i, i + CHUNK));
    if (exceptBatchId !== undefined) q = q.where('batch_mailbox.batch_id', '!=', exceptBatchId);
    const rows = await q.execute();
    for (const r of rows) found.set(byKey.get(r.email_key)!, r.name);
  }
  return found;
}

/** A lease is live while unexpired; an expired one belongs to a worker that stopped heart-beating. */
export function leaseIsLive(m: { lease_owner: string | null; lease_expires_at: number | null }, now: number): boolean {
  return m.lease_owner !== null && m.lease_expires_at !== null && m.lease_expires_at >= now;
}

/** A mailbox row with no lease and no live progress: how it is created and left after a run. */
export const NO_LEASE = {
  lease_owner: null,
  lease_kind: null,
  lease_started_at: null,
  lease_expires_at: null,
  progress_phase: null,
  progress_copied: 0,
  progress_to_copy: 0,
  progress_bytes: 0,
  progress_to_copy_bytes: 0,
  progress_already: 0,
  progress_at: null,
} as const;
