/** Turns what the engine returned into the mailbox's outcome (SPEC §4 bad-item limit). */
import type { SyncSummary } from '../sync/options.js';
import type { RunResult } from './lease.js';

/**
 * A finished sync is a success unless the batch has a bad-item limit and more messages
 * than that were skipped or failed; by default no number does (they are listed instead).
 */
export function judge(summary: SyncSummary, pairId: number | null, badItemLimit: number | null): RunResult {
  if (summary.failedFolders.length > 0) {
    // A whole folder left behind is not a bad item: the admin must look (and retry).
    const list = summary.failedFolders.map((f) => `${f.folder} (${f.reason})`).join('; ');
    return { kind: 'failed', error: `${summary.failedFolders.length === 1 ? 'a folder' : `${summary.failedFolders.length} folders`} could not be migrated: ${list}`, summary, pairId };
  }
  const bad = summary.skipped + summary.failed;
  if (badItemLimit !== null && bad > badItemLimit) {
    return { kind: 'failed', error: `${bad} messages could not be copied (skipped or failed), more than the batch's bad-item limit of ${badItemLimit}`, summary, pairId };
  }
  return { kind: 'synced', summary, pairId };
}
