/**
 * Messages a server may be refusing by dropping the connection: the target as it is sent
 * one, the source as it is asked for one.
 *
 * Some servers answer a message they will not take by closing the connection instead of
 * refusing it with a tagged NO, or right after one (Cyrus does for a non-synchronising
 * literal over its size limit, which RFC 7888 §4 allows; its NO is then often lost with the
 * connection's reset). Pipelined, such a message cannot be told from the others in
 * flight: all of them are lost, the next attempt sends them again, and the run would end
 * after its retries without ever naming the message.
 *
 * So a run keeps, across its attempts, the messages whose APPEND was in flight when the
 * target connection was lost. Each is sent again *isolated* (alone on its connection, see
 * PipelinedAppender.append): an answer clears it, a drop while it is the only message in
 * flight counts against it, and after {@link ISOLATED_DROPS_TO_SKIP} such drops it is
 * skipped as refused, with the last error, like a message the target refused outright
 * (and, like those, tried again by the next run). One coincidental network drop is not
 * enough to skip a message.
 *
 * The source side is alike: Dovecot closes the connection whenever it reads a Maildir file
 * whose name states another size than the file has ("Cached message size smaller than
 * expected"), a common flaw of mailboxes copied by hand. The message the source was
 * sending when its connection went is fetched alone from then on (copy-lanes.ts), and after
 * two drops while alone it is recorded as unreadable, named, and the rest is copied.
 */

/** Drops with the message alone in flight after which it is skipped. */
export const ISOLATED_DROPS_TO_SKIP = 2;

interface Suspect {
  /** Drops while it was the only message in flight. */
  isolatedDrops: number;
  lastError: string;
}

export class DropSuspects {
  private readonly suspects = new Map<string, Suspect>();

  /** `what` says what happened, for the verdict: e.g. "the target closed the connection
   * each time this message was sent alone". */
  constructor(private readonly what: string) {}

  /** Whether the message must be sent isolated. */
  isSuspect(folderId: number, uid: number): boolean {
    return this.suspects.has(key(folderId, uid));
  }

  /** The connection was lost with the message's APPEND in flight, `isolated` or not. */
  lostInFlight(folderId: number, uid: number, isolated: boolean, error: string): void {
    const k = key(folderId, uid);
    const s = this.suspects.get(k) ?? { isolatedDrops: 0, lastError: error };
    if (isolated) s.isolatedDrops += 1;
    s.lastError = error;
    this.suspects.set(k, s);
  }

  /** The target answered the message (stored or refused it): not a suspect any more. */
  answered(folderId: number, uid: number): void {
    this.suspects.delete(key(folderId, uid));
  }

  /** Why the message is skipped instead of sent again, or null to send it. */
  verdict(folderId: number, uid: number): string | null {
    const s = this.suspects.get(key(folderId, uid));
    if (!s || s.isolatedDrops < ISOLATED_DROPS_TO_SKIP) return null;
    return `${this.what} (${s.isolatedDrops} times; last: ${s.lastError})`;
  }
}

/** A message of the run: its journal folder and source UID. */
export function key(folderId: number, uid: number): string {
  return `${folderId}:${uid}`;
}
