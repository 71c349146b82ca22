/** What a DNS check refuses or cannot do, in words for the admin; the CLI maps them to SPEC §8 exit statuses. */

/** A domain, host or server address that is not one (the CLI exits 2: bad usage). */
export class DnsUsageError extends Error {
  override name = 'DnsUsageError';
}

/**
 * The question could not be answered: every server timed out, refused the connection,
 * answered SERVFAIL or REFUSED, or sent garbage (the CLI exits 3: could not reach or
 * resolve). The message names the domain and each server tried, with what it did.
 */
export class DnsLookupError extends Error {
  override name = 'DnsLookupError';
  constructor(
    message: string,
    /** `host:port` of each server tried, in order, with what went wrong there. */
    readonly failures: readonly { server: string; reason: string }[],
  ) {
    super(message);
  }
}
