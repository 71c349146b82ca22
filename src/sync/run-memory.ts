/**
 * What one attempt of a run learns that holds for the run's later attempts (a run retries
 * after a lost connection, see mailbox-sync.ts), and only for them: the next run starts
 * afresh.
 */
import { DropSuspects, key } from './drop-suspects.js';

export class RunMemory {
  /** Messages in flight when the target connection was lost (drop-suspects.ts). */
  readonly suspects = new DropSuspects('the target closed the connection each time this message was sent alone');
  /** Messages being read when the source connection was lost (drop-suspects.ts). */
  readonly sourceSuspects = new DropSuspects('the source closed the connection each time this message was read alone');
  private readonly skipped = new Set<string>();

  /**
   * The message was skipped in this run (the target refused it, the source could not
   * deliver it). A later attempt of the run leaves it alone; the next run tries it again.
   * Sending it again at once would only repeat the refusal, or, where the target drops
   * the connection after refusing (Cyrus), cost the attempt.
   */
  noteSkipped(folderId: number, uid: number): void {
    this.skipped.add(key(folderId, uid));
  }

  skippedInThisRun(folderId: number, uid: number): boolean {
    return this.skipped.has(key(folderId, uid));
  }

  private readonly drops = new Map<number, number>();

  /** The scan of this folder lost the source connection (a server that drops it on one folder every time). */
  noteScanDrop(folderId: number): void {
    this.drops.set(folderId, (this.drops.get(folderId) ?? 0) + 1);
  }

  scanDrops(folderId: number): number {
    return this.drops.get(folderId) ?? 0;
  }
}
