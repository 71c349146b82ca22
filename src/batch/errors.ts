/** What batch operations refuse, in words for the admin; the CLI exits 2 (bad usage or input) on these. */
export class BatchError extends Error {
  override name = 'BatchError';
}

/** Deleting a batch before its 72 hours after the initial sync are over needs `--force` (SPEC §4, §7). */
export class DeleteTooEarlyError extends BatchError {
  override name = 'DeleteTooEarlyError';
  constructor(
    message: string,
    /** Each reason on its own, for a page to list. */
    readonly warnings: readonly string[] = [message],
  ) {
    super(message);
  }
}
