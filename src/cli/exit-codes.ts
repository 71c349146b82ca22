/** Exit statuses, as SPEC §8 defines them. */
export const EXIT = {
  /** Done and in sync (or valid). */
  ok: 0,
  /** Finished, but some messages were skipped or failed (or not in sync). */
  incomplete: 1,
  /** Bad usage or invalid input. */
  usage: 2,
  /** Could not connect or log in. */
  connect: 3,
} as const;

export class UsageError extends Error {
  override name = 'UsageError';
}
