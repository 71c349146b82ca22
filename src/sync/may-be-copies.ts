/**
 * Which messages may be copies of one another, before their contents are read and compared
 * (content-digest.ts decides): those of the same size, or of the same internal date.
 *
 * Size alone is not enough. RFC 3501 §6.4.5 asks RFC822.SIZE to be the message's exact
 * size, but Microsoft Exchange lists an estimate that differs from the bytes it then sends,
 * so one server's listed size need not equal another's, nor the length the journal
 * recorded when it read the message. The internal date is the second chance: APPEND sets
 * it (RFC 3501 §6.3.11), COPY and MOVE keep it, and mailferry copies it, so a copy has its
 * original's to the second (INTERNALDATE has whole seconds, §9 date-time). What is read
 * besides on honest servers is mail of another size that arrived in the same second: little.
 */

/** A message's internal date in ms; 0, -1 and NaN mean unknown (no real date is 1970-01-01T00:00:00.000 or -1 ms). */
type DateMs = number;

const second = (ms: DateMs): number | null => (Number.isFinite(ms) && ms !== 0 && ms !== -1 ? Math.floor(ms / 1000) : null);

export class MayBeCopies {
  private readonly sizes = new Set<number>();
  private readonly seconds = new Set<number>();

  constructor(messages: Iterable<{ size: number; internalDate: DateMs }> = []) {
    for (const m of messages) this.add(m.size, m.internalDate);
  }

  add(size: number, internalDate: DateMs): void {
    this.sizes.add(size);
    const s = second(internalDate);
    if (s !== null) this.seconds.add(s);
  }

  /** Whether a message of this size and internal date may be a copy of one of those added. */
  has(size: number, internalDate: DateMs): boolean {
    if (this.sizes.has(size)) return true;
    const s = second(internalDate);
    return s !== null && this.seconds.has(s);
  }
}

/** Whether two messages may be the same one: the same size or the same internal date. */
export function mayBeSame(a: { size: number; internalDate: DateMs }, b: { size: number; internalDate: DateMs }): boolean {
  if (a.size === b.size) return true;
  const s = second(a.internalDate);
  return s !== null && s === second(b.internalDate);
}
