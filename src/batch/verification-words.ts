/**
 * What the last `batch verify` found for one mailbox, and its verdict in words: shared by
 * the server (CLI, reports) and the web page's script, so it imports nothing.
 */

/** What the last `batch verify` found for one mailbox. */
export interface Verification {
  at: string;
  /** Every source message is on the target. */
  inSync: boolean;
  /** Source messages not found on the target (0 when it could not be checked). */
  missing: number;
  /** Why the mailbox could not be checked (never a password), or null. */
  error: string | null;
  /** A sync finished after it: it says how the mailbox stood then, not now (verify again). */
  stale: boolean;
  /** The source folders that messages are missing from, with how many, so the admin knows where to look. */
  missingIn: { folder: string; missing: number }[];
  /**
   * Target messages that repeat a source message whose copy is there already (same size,
   * date and Message-ID; with --content the same bytes): copied twice, by an earlier tool
   * or a run that lost its state. Not "missing", so the mailbox can be in sync with some.
   */
  duplicates: number;
}

/** The verdict alone: "in sync", "could not check", "3 missing", "not in sync". */
export function verdictOf(v: Verification): string {
  return v.inSync ? 'in sync' : v.error ? 'could not check' : v.missing ? `${v.missing} missing` : 'not in sync';
}

/** The verdict in words, for the CLI and the reports alike. */
export function verdictWords(v: Verification): string {
  const verdict = verdictOf(v) + (v.inSync || v.error ? '' : missingWhere(v)) + duplicatesWords(v);
  return v.stale ? `${verdict} (before the last sync)` : verdict;
}

/** ", 3 duplicates": what the verdict leaves out. */
export function duplicatesWords(v: Verification): string {
  return v.duplicates ? `, ${v.duplicates} duplicate${v.duplicates === 1 ? '' : 's'}` : '';
}

/** " (INBOX 2, Sent 1)": where the missing messages are, the first five folders. */
export function missingWhere(v: Verification): string {
  if (v.missingIn.length === 0) return '';
  const shown = v.missingIn.slice(0, 5).map((f) => `${f.folder} ${f.missing}`);
  const more = v.missingIn.length - shown.length;
  return ` (${shown.join(', ')}${more > 0 ? `, ${more} more folders` : ''})`;
}
