/** Turns what the engine returned into the mailbox's outcome (SPEC §4 bad-item limit). */
import type { SyncSummary } from '../sync/options.js';
import type { RunResult } from './lease.js';

/**
 * A finished sync is a success unless the batch has a bad-item limit and more messages
 * than that were skipped or failed; by default no number does (they are listed instead).
 */
export function judge(summary: SyncSummary, pairId: number | null, badItemLimit: number | null): RunResult {
  const bad = summary.skipped + summary.failed;
  if (badItemLimit !== null && bad > badItemLimit) {
    return { kind: 'failed', error: `${bad} messages could not be copied (skipped or failed), more than the batch's bad-item limit of ${badItemLimit}`, summary, pairId };
  }
  return { kind: 'synced', summary, pairId };
}
