/** What a running sync reports, for the CLI progress bar and later the service's status. */

export type SyncPhase = 'connecting' | 'listing' | 'creating' | 'recovering' | 'scanning' | 'copying' | 'flags' | 'done';

export interface SyncProgress {
  phase: SyncPhase;
  foldersTotal: number;
  foldersScanned: number;
  /** Messages and bytes this run has to copy (known after scanning). */
  toCopy: number;
  toCopyBytes: number;
  copied: number;
  copiedBytes: number;
  skipped: number;
  failed: number;
  /** Messages found on the target already (same bytes) and linked instead of copied. */
  alreadyOnTarget: number;
  /** Connection problems recovered from so far. */
  reconnects: number;
  /**
   * Messages copied, or whose flags were mirrored, without some of their keywords: the
   * target refused them, or no IMAP command can carry them (flags.ts). The log names each.
   */
  withoutSomeKeywords: number;
}

export function emptyProgress(): SyncProgress {
  return { phase: 'connecting', foldersTotal: 0, foldersScanned: 0, toCopy: 0, toCopyBytes: 0, copied: 0, copiedBytes: 0, skipped: 0, failed: 0, alreadyOnTarget: 0, reconnects: 0, withoutSomeKeywords: 0 };
}
