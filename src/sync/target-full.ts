/**
 * A target mailbox that is over its quota refuses every further APPEND, not one message
 * (imap/refusal.ts): copying on would send the rest of the mailbox only to have each
 * message refused, and list thousands of "skipped" messages that are not at fault. So the
 * first quota refusal stops the mailbox's run with an error that says what to do
 * (Exchange Online's IMAP migration, likewise, fails such a mailbox). What was copied stays
 * copied and journaled; the messages refused for quota are recorded as refused, and the
 * next run (once the quota is raised) sends them again like any refused message.
 */
import type { Refusal } from '../imap/refusal.js';

/** Not retryable within the run: the mailbox stays full until someone raises its quota. */
export class TargetFullError extends Error {
  override name = 'TargetFullError';
  constructor(targetUser: string, folder: string, r: Refusal) {
    super(
      `target mailbox ${targetUser} is over its quota: the target refused a message of folder ${folder} with ` +
        `"${r.code ? `[${r.code}] ` : ''}${r.text}". Copying stopped; what was copied is kept. ` +
        'Raise the quota on the target and run again to copy the rest.',
    );
  }
}
