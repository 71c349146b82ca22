/**
 * Errors the IMAP layer raises, by what the admin must do about them. Messages name the
 * server and the login, never a password.
 */

/** The server could not be reached, or TLS failed: check host, port, security settings. */
export class ImapConnectError extends Error {
  override name = 'ImapConnectError';
}

/** The server refused the credentials (or the impersonation). */
export class ImapAuthError extends Error {
  override name = 'ImapAuthError';
  /** Which side of a migration refused, when the caller said (SessionOptions.side). */
  side?: 'source' | 'target';
  /** The server's response code (RFC 5530), e.g. AUTHENTICATIONFAILED, AUTHORIZATIONFAILED. */
  code?: string;
}

/**
 * Whether a refusal still proves the credential right: AUTHORIZATIONFAILED (RFC 5530 §3)
 * says the authentication succeeded and only acting as that user was refused (a user that
 * does not exist, an admin without rights to that mailbox). Counting it against an admin's
 * password would block a good admin over a few missing users.
 */
export function credentialAccepted(err: unknown): boolean {
  return err instanceof ImapAuthError && err.code === 'AUTHORIZATIONFAILED';
}

/**
 * Whether a refusal counts against the credential (a lockout breaker's business): not when
 * it proves the credential right (above), nor when the server turns the login away for a
 * state of its own (RFC 5530 §3: LIMIT, too many sessions for the user; UNAVAILABLE;
 * SERVERBUG, INUSE). A user whose mail client holds many sessions must not lock an admin
 * credential out of every mailbox.
 */
export function credentialRefused(err: unknown): boolean {
  return err instanceof ImapAuthError && !credentialAccepted(err) && !SERVER_STATE_CODES.has(err.code?.toUpperCase() ?? '');
}

const SERVER_STATE_CODES = new Set(['LIMIT', 'UNAVAILABLE', 'SERVERBUG', 'INUSE']);

/** An established session broke (dropped connection, watchdog timeout): retryable. */
export class ImapConnectionLostError extends Error {
  override name = 'ImapConnectionLostError';
}

/** Errors after which a retry with a fresh connection may succeed. */
export function isRetryable(err: unknown): boolean {
  if (err instanceof ImapConnectionLostError) return true;
  if (err instanceof ImapAuthError) return false;
  const e = err as { code?: string; name?: string; message?: string } | null;
  if (!e) return false;
  if ((err as { retryable?: boolean }).retryable === true) return true;
  // Said outright: the message below may hold words of its own (a folder named "Time Out").
  if ((err as { retryable?: boolean }).retryable === false) return false;
  if (e.name === 'ImapConnectionLostError') return true;
  const codes = ['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNREFUSED', 'NoConnection', 'ClosedAfterConnectTLS', 'EConnectionClosed', 'ERR_STREAM_DESTROYED', 'ETIMEOUT', 'CONNECT_TIMEOUT', 'GREETING_TIMEOUT'];
  if (e.code && codes.includes(e.code)) return true;
  return /connection (not available|closed|lost)|socket|timed? ?out|unexpected close/i.test(e.message ?? '');
}

/**
 * imapflow's error for a tagged NO or BAD (RFC 3501 §7.1.2, §7.1.3): the server refused
 * this command; the connection is fine.
 */
export function isImapRefusal(err: unknown): err is Error & { responseStatus: 'NO' | 'BAD'; responseText?: string } {
  const status = (err as { responseStatus?: unknown } | null)?.responseStatus;
  return err instanceof Error && (status === 'NO' || status === 'BAD');
}

/**
 * Whether a NO says the mailbox is not there: RFC 5530's NONEXISTENT, or the words of
 * servers that send no code ("Mailbox doesn't exist", "No such mailbox").
 */
export function saysNonexistent(code: string | undefined, text: string): boolean {
  return code?.toUpperCase() === 'NONEXISTENT' || /doesn'?t exist|does not exist|no such (mailbox|folder)|unknown mailbox/i.test(text);
}
