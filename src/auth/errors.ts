/**
 * What can go wrong between a source `UserName` and a session in the user's mailbox.
 * Every message names the mailbox user (so a batch report says whose migration failed)
 * and never a password: texts that come from a server are scrubbed of it too, in case a
 * server echoes the command.
 */
import { ImapAuthError } from '../imap/errors.js';

/** The `UserName` (or its combination with a UserRoot) cannot be used: fix the migration file. */
export class CredentialFormatError extends Error {
  override name = 'CredentialFormatError';
}

/**
 * The source refused the login (or offers no usable mechanism). An {@link ImapAuthError},
 * so callers that already treat auth failures as permanent (no retry) keep doing so.
 */
export class SourceLoginError extends ImapAuthError {
  override name = 'SourceLoginError';
  constructor(
    message: string,
    /** Whose mailbox was to be opened. */
    readonly mailboxUser: string,
    /** How it was tried, e.g. 'AUTHENTICATE PLAIN with authorization identity'. */
    readonly method: string,
  ) {
    super(message);
  }
}

/**
 * The login worked, but the session is not the user's: the server put the admin into
 * the admin's own mailbox (it ignored the authorization identity or the admin string).
 * Permanent for this mailbox: migrating would copy the admin's mail into the user's.
 */
export class ImpersonationError extends Error {
  override name = 'ImpersonationError';
  readonly retryable = false;
  constructor(
    message: string,
    readonly mailboxUser: string,
    readonly admin: string,
  ) {
    super(message);
  }
}

/** The UserRoot has no folder in the admin's view: wrong path, or the admin lacks rights to it. */
export class UserRootError extends Error {
  override name = 'UserRootError';
  readonly retryable = false;
  constructor(
    message: string,
    readonly mailboxUser: string,
    readonly userRoot: string,
  ) {
    super(message);
  }
}

/** Base64 runs long enough to hide a secret (a SASL response, RFC 4616, is one). */
const BASE64_RUN = /[A-Za-z0-9+/]{8,}={0,2}/g;

/**
 * Replaces every occurrence of the secrets with `***`, in the forms a server may echo
 * them: as given; quoted and escaped as in an IMAP LOGIN (RFC 3501 §4.3); UTF-8 bytes read
 * as Latin-1; and inside any base64 run that decodes to text holding one (AUTHENTICATE
 * PLAIN's `authzid NUL authcid NUL password`, RFC 4616, whatever its alignment).
 */
export function scrubSecrets(text: string, secrets: readonly string[]): string {
  // Very short strings would mangle ordinary words, and reveal next to nothing.
  const wanted = secrets.filter((s) => s.length >= 3);
  if (wanted.length === 0) return text;
  let out = text.replace(BASE64_RUN, (run) => {
    const bytes = Buffer.from(run, 'base64');
    const decoded = [bytes.toString('utf8'), bytes.toString('latin1')];
    return wanted.some((s) => decoded.some((d) => d.includes(s))) ? '***' : run;
  });
  for (const s of wanted) {
    if (/^\p{L}+$/u.test(s)) {
      // A password that is a word ("name", "password") is in mailferry's own wording too:
      // blanking it there ("wrong user *** or password") would tell the reader what it is.
      // Only the forms a server echoes from a command are blanked: quoted, or the
      // password argument of a LOGIN (RFC 3501 §6.2.3) sent as an atom.
      out = out.split(`"${s}"`).join('"***"');
      out = out.replace(new RegExp(`(LOGIN\\s+\\S+\\s+)${s}(?!\\p{L})`, 'giu'), '$1***');
      continue;
    }
    const forms = new Set([s, s.replace(/[\\"]/g, '\\$&'), Buffer.from(s, 'utf8').toString('latin1'), Buffer.from(s, 'utf8').toString('base64').replace(/=+$/, '')]);
    for (const form of [...forms].sort((a, b) => b.length - a.length)) out = out.split(form).join('***');
  }
  return out;
}
