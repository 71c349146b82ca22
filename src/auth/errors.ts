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

export { scrubSecrets } from '../secrets/scrub.js';
