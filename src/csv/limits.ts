/** The limits SPEC §1 sets on a migration file, and the ones we add to keep validation cheap. */

/** At most this many data rows (the header and trailing empty lines do not count). */
export const MAX_DATA_ROWS = 50_000;

/** At most this many bytes. "10 MB" is read as 10 MiB: the stricter reading would reject files Excel calls 10 MB. */
export const MAX_FILE_BYTES = 10 * 1024 * 1024;

/**
 * csv-parse's `max_record_size`, in characters. A real row (address, login, password, root) is a few
 * hundred characters; the limit is there so a quote left open cannot swallow the rest of the file
 * into one field before we notice.
 */
export const MAX_RECORD_CHARS = 8_192;

/** Row-level problems listed before the rest is summed up in one "… and N more" entry. */
export const DEFAULT_MAX_PROBLEMS = 100;

/** Longest value quoted in a message; longer ones are cut, so one bad field cannot flood the report. */
export const MAX_QUOTED_CHARS = 80;
