/**
 * The statuses an admin sees (SPEC §4). A batch's status is derived — from what the admin
 * asked (BatchState, stored) and its mailboxes' statuses — each time it is shown, so it
 * can never disagree with them.
 */
import type { BatchState, MailboxStatus } from '../store/schema.js';

export type { BatchState, MailboxStatus, SyncKind } from '../store/schema.js';

/**
 * - `Created`: not started;
 * - `Syncing`: started, and some mailbox's initial sync is queued or running;
 * - `Synced`: every mailbox finished its initial sync; incremental syncs follow;
 * - `SyncedWithErrors`: as Synced, but some mailboxes failed (each retried after a backoff, or by `retry`);
 * - `Stopped`, `Removing`: as the admin asked.
 */
export type BatchStatus = 'Created' | 'Syncing' | 'Synced' | 'SyncedWithErrors' | 'Stopped' | 'Removing';

export const MAILBOX_STATUSES: readonly MailboxStatus[] = ['Queued', 'Syncing', 'Synced', 'IncrementalSyncing', 'Failed', 'Stopped'];

export type StatusCounts = Record<MailboxStatus, number>;

export function emptyCounts(): StatusCounts {
  return { Queued: 0, Syncing: 0, Synced: 0, IncrementalSyncing: 0, Failed: 0, Stopped: 0 };
}

/** Mailboxes whose initial sync is still to finish (for the first time). */
export const INITIAL_PENDING: readonly MailboxStatus[] = ['Queued', 'Syncing'];

export function deriveBatchStatus(state: BatchState, counts: Readonly<StatusCounts>): BatchStatus {
  switch (state) {
    case 'Created':
    case 'Stopped':
    case 'Removing':
      return state;
    case 'Running':
      if (INITIAL_PENDING.some((s) => counts[s] > 0)) return 'Syncing';
      return counts.Failed > 0 ? 'SyncedWithErrors' : 'Synced';
  }
}

/** Batches whose mailboxes workers may take. */
export const RUNNING_STATES: readonly BatchState[] = ['Running'];

/**
 * What a mailbox is when nothing runs for it: failed (last sync), waiting for its initial
 * sync, or synced. Used when a worker gives a mailbox back unfinished (shutdown).
 */
export function restingStatus(m: { initial_synced_at: number | null; last_error: string | null }): MailboxStatus {
  if (m.last_error !== null) return 'Failed';
  return m.initial_synced_at === null ? 'Queued' : 'Synced';
}

/** Batch names (SPEC §4): letters, digits, '-', '_'; at most 64. */
export function batchNameProblem(name: string): string | null {
  if (name.length === 0) return 'a batch name cannot be empty';
  if (name.length > 64) return `batch name "${name.slice(0, 70)}…" is longer than 64 characters`;
  if (!/^[A-Za-z0-9_-]+$/.test(name)) return `batch name "${name}" may hold only letters, digits, '-' and '_' (no spaces or other characters)`;
  return null;
}
