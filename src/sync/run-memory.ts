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

  /** Folders whose scan lost the source connection: scanned first and alone next attempt. */
  private readonly scanSuspects = new Set<number>();
  /** Folders whose scan lost it again while alone: failed for the rest of the run. */
  private readonly scanFailures = new Set<number>();

  /**
   * The scan of this folder lost the source connection. Connections drop for many
   * reasons (a flaky link drops whatever is in flight), so once is suspicion only; the
   * folder is then scanned alone, and a second loss there is the folder's doing (a server
   * that drops the connection whenever it is opened).
   */
  noteScanDrop(folderId: number, alone: boolean): void {
    const known = alone ? this.scanFailures : this.scanSuspects;
    if (!known.has(folderId)) this.scanLessons++;
    known.add(folderId);
  }

  /**
   * Folders newly suspected or failed so far: an attempt that learnt one made progress
   * (mailbox-sync.ts), so a mailbox with several such folders is not given up on for the
   * attempts it spends finding them one by one.
   */
  scanLessons = 0;

  scanSuspect(folderId: number): boolean {
    return this.scanSuspects.has(folderId);
  }

  clearScanSuspect(folderId: number): void {
    this.scanSuspects.delete(folderId);
  }

  scanFailed(folderId: number): boolean {
    return this.scanFailures.has(folderId);
  }
}
