/**
 * How to reach one IMAP server and log in to it. Shared by the source side (imapflow),
 * the target side (imapflow for metadata, the pipelined appender for APPEND) and the lab.
 */

/** Transport security. `implicit` is TLS from the first byte (port 993); `starttls`
 * upgrades a plain connection (RFC 3501 §6.2.1, port 143); `none` is plaintext. */
export type TlsMode = 'implicit' | 'starttls' | 'none';

export interface ImapEndpoint {
  host: string;
  port: number;
  tls: TlsMode;
  /** Accept a certificate that does not verify (self-signed, wrong name). Off by default. */
  acceptUntrustedCert: boolean;
}

/**
 * How a session authenticates. Invalid combinations are unrepresentable:
 * - `login`: IMAP LOGIN with the user name verbatim (RFC 3501 §6.2.3). Also carries the
 *   Exchange `Domain/Admin/User` and Mirapoint `#user@domain#admin#` strings, and
 *   Dovecot's `user*master` separator form.
 * - `plain`: AUTHENTICATE PLAIN (RFC 4616); `authzid`, when set, asks the server to act
 *   as that user after authenticating `authcid` (a master/admin login).
 */
export type ImapLogin =
  | { method: 'login'; username: string; password: string }
  | { method: 'plain'; authcid: string; authzid?: string; password: string };

export function defaultPort(tls: TlsMode): number {
  return tls === 'implicit' ? 993 : 143;
}

/** The user name to show in messages and logs (never the password). */
export function loginDisplayName(login: ImapLogin): string {
  if (login.method === 'login') return login.username;
  return login.authzid ? `${login.authzid} (as ${login.authcid})` : login.authcid;
}
