/**
 * `batch create`: a migration file, checked exactly as `csv check` does plus "no address
 * already in another batch", stored with every password encrypted, in one transaction.
 */
import { addressKey } from '../csv/address.js';
import { validateMigrationFile, type ValidationResult } from '../csv/index.js';
import { encryptSecret, type SecretKey } from '../secrets/index.js';
import { findEndpoint } from '../store/endpoints.js';
import type { Store } from '../store/open.js';
import type { BatchRow, NewBatchMailboxRow } from '../store/schema.js';
import { folderPatternProblem } from '../sync/folder-map.js';
import { BatchError } from './errors.js';
import { batchNameProblem } from './status.js';
import { addressesInBatches, findBatch, NO_LEASE } from './store.js';
import { writeTx } from './tx.js';

/** When the batch starts: later by hand (`batch start`), at once, or at a set time. */
export type StartPlan = { kind: 'manual' } | { kind: 'now' } | { kind: 'at'; at: number };

export interface NewBatch {
  name: string;
  /** The migration file's bytes. */
  csv: Buffer;
  /** Source endpoint and target, by name. */
  endpoint: string;
  target: string;
  exclude: readonly string[];
  /** Only these folders (aliases like #Inbox# allowed); empty: all but the excluded. */
  include: readonly string[];
  notify: readonly string[];
  receivedAfter: number | null;
  badItemLimit: number | null;
  start: StartPlan;
}

export type CreateResult = { created: true; batch: BatchRow; mailboxes: number } | { created: false; validation: Extract<ValidationResult, { valid: false }> };

const INSERT_CHUNK = 200;

export async function createBatch(store: Store, input: NewBatch, key: SecretKey, now = Date.now()): Promise<CreateResult> {
  const nameProblem = batchNameProblem(input.name);
  if (nameProblem) throw new BatchError(nameProblem);
  const patternProblem = folderPatternProblem(input.include, input.exclude);
  if (patternProblem) throw new BatchError(patternProblem);
  if (await findBatch(store.db, input.name)) throw new BatchError(`a batch named "${input.name}" already exists`);
  const source = await findEndpoint(store.db, 'source', input.endpoint);
  if (!source) throw new BatchError(`no migration endpoint named "${input.endpoint}" (see: mailferry endpoint list)`);
  const target = await findEndpoint(store.db, 'target', input.target);
  if (!target) throw new BatchError(`no migration target named "${input.target}" (see: mailferry target list)`);

  const validation = await validateMigrationFile(input.csv, { alreadyInActiveBatch: (addresses) => addressesInBatches(store.db, addresses) });
  if (!validation.valid) return { created: false, validation };

  // Encrypted before the transaction: AES-GCM over 50,000 rows should not hold the write lock.
  const rows = validation.rows.map((r) => ({
    line: r.line,
    email_address: r.emailAddress,
    email_key: addressKey(r.emailAddress),
    user_name: r.userName,
    password_enc: encryptSecret(key, r.password),
    user_root: r.userRoot ?? null,
  }));
  const running = input.start.kind === 'now';
  try {
    const batch = await writeTx(store, async (tx) => {
      const inserted = await tx
        .insertInto('batch')
        .values({
          name: input.name,
          endpoint_id: source.id,
          target_id: target.id,
          state: running ? 'Running' : 'Created',
          exclude_json: JSON.stringify(input.exclude),
          include_json: input.include.length ? JSON.stringify(input.include) : null,
          notify_json: JSON.stringify(input.notify),
          received_after: input.receivedAfter,
          bad_item_limit: input.badItemLimit,
          start_at: input.start.kind === 'at' ? input.start.at : null,
          created_at: now,
          started_at: running ? now : null,
          initial_synced_at: null,
          last_incremental_at: null,
          stopped_at: null,
          initial_report_at: null,
          last_report_at: null,
          report_claim_until: null,
          report_error: null,
          report_failures: 0,
        })
        .returning('id')
        .executeTakeFirstOrThrow();
      const batchId = Number(inserted.id);
      for (let i = 0; i < rows.length; i += INSERT_CHUNK) {
        const values: NewBatchMailboxRow[] = rows.slice(i, i + INSERT_CHUNK).map((r) => ({ ...r, ...freshMailbox(running ? now : null), batch_id: batchId }));
        await tx.insertInto('batch_mailbox').values(values).execute();
      }
      return tx.selectFrom('batch').selectAll().where('id', '=', batchId).executeTakeFirstOrThrow();
    });
    return { created: true, batch, mailboxes: rows.length };
  } catch (err) {
    if (isAddressTaken(err)) throw new BatchError('an address of this file was added to another batch meanwhile; check the file again');
    if (/unique|duplicate key/i.test((err as Error).message) && /name/i.test((err as Error).message)) {
      throw new BatchError(`a batch named "${input.name}" already exists`);
    }
    throw err;
  }
}

/** The unique index on email_key: another batch took an address between the check and the insert. */
export function isAddressTaken(err: unknown): boolean {
  const message = (err as Error).message;
  return /unique|duplicate key/i.test(message) && /email_key/i.test(message);
}

/** A mailbox that has never synced: queued, due at `due` (null until its batch starts). Also batch update's added rows. */
export function freshMailbox(due: number | null): Omit<NewBatchMailboxRow, 'batch_id' | 'line' | 'email_address' | 'email_key' | 'user_name' | 'password_enc' | 'user_root'> {
  return {
    status: 'Queued',
    pair_id: null,
    folders: 0,
    found: 0,
    copied: 0,
    skipped: 0,
    failed: 0,
    bytes: 0,
    sync_ms: 0,
    last_duration_ms: null,
    skipped_items_json: null,
    initial_synced_at: null,
    last_sync_at: null,
    next_sync_at: due,
    sync_requested: 0,
    last_error: null,
    attempts: 0,
    verified_at: null,
    verify_in_sync: null,
    verify_missing: null,
    verify_json: null,
    ...NO_LEASE,
  };
}
