/**
 * One user of a shared IMAP session at a time. imapflow queues commands, but a SELECT
 * followed by a FETCH is two commands: two folders scanned at once on one session would
 * interleave them and read the other folder (RFC 3501 §6.3.1: a SELECT replaces the
 * selected mailbox).
 */
export type OneAtATime = <T>(use: () => Promise<T>) => Promise<T>;

export function oneAtATime(): OneAtATime {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(use: () => Promise<T>): Promise<T> => {
    const run = tail.then(use, use);
    // The next user waits for this one to finish, whether it succeeded or not.
    tail = run.catch(() => undefined);
    return run;
  };
}
