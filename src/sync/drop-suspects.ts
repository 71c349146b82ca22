/**
 * Messages the target may be refusing by dropping the connection.
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
    return `the target closed the connection each time this message was sent alone (${s.isolatedDrops} times; last: ${s.lastError})`;
  }
}

/** A message of the run: its journal folder and source UID. */
export function key(folderId: number, uid: number): string {
  return `${folderId}:${uid}`;
}
