/**
 * Reads a folder whose reading loses the source connection every time, around the messages
 * that make it so.
 *
 * Dovecot closes the connection (`* BYE FETCH failed: Internal error`) whenever it reads a
 * Maildir file whose name states another size than the file has ("Cached message size
 * smaller than expected"), a common flaw of mailboxes copied or edited by hand; for a file
 * named with `S=` but no `W=` even RFC822.SIZE reads it. One such message would fail its
 * whole folder, and a verification of the whole mailbox (drop-suspects.ts does the same for
 * the copy's own fetches).
 *
 * So, for a folder that already lost the connection while read alone, the UIDs are listed
 * first (UIDs alone never read a message), then the messages are read a chunk at a time on
 * connections of this module's own: a chunk whose read loses the connection is split in
 * halves, each read on a new connection, and a message that loses it twice alone is
 * unreadable. One bad message among n costs about log2(n) reconnections; past MAX_DROPS
 * beyond what the messages found so far cost, the folder is given up (the caller names it).
 */
import { isRetryable } from '../imap/errors.js';

/** How a chunk of a folder's messages is read, on connections opened for it. */
export interface ChunkReader<C, T> {
  /** A connection with the folder open (read-only). */
  open(): Promise<C>;
  close(conn: C): Promise<void>;
  read(conn: C, uids: readonly number[]): Promise<T[]>;
}

/** What read-around gives: what could be read, and the UIDs that lost the connection alone. */
export interface ReadAround<T> {
  items: T[];
  unreadable: number[];
}

/** Messages per chunk at first: a folder of 150,000 is 300 reads, not 150,000. */
const FIRST_CHUNK = 500;
/** Lost connections after which the folder is given up, besides those each message found unreadable cost (isolating one among FIRST_CHUNK takes about log2(FIRST_CHUNK) + 2). */
export const MAX_DROPS = 40;
const DROPS_PER_FIND = 12;

/** The reason recorded for a message that lost the source connection each time it was read alone. */
export const UNREADABLE_REASON = 'the source closed the connection each time this message was read alone (Dovecot does so for a Maildir file whose size differs from the one in its name: see its log)';

export class FolderUnreadableError extends Error {
  override name = 'FolderUnreadableError';
}

export async function readAroundDrops<C, T>(uids: readonly number[], reader: ChunkReader<C, T>): Promise<ReadAround<T>> {
  const items: T[] = [];
  const unreadable: number[] = [];
  // Chunks to read, in UID order (a stack: the first chunk on top).
  const todo: (readonly number[])[] = [];
  for (let i = 0; i < uids.length; i += FIRST_CHUNK) todo.push(uids.slice(i, i + FIRST_CHUNK));
  todo.reverse();
  // Messages that lost the connection once alone: a second time makes them unreadable
  // (one coincidental drop of a flaky link is not enough).
  const droppedAlone = new Set<number>();
  let drops = 0;
  let conn: C | undefined;
  try {
    for (let chunk = todo.pop(); chunk; chunk = todo.pop()) {
      if (chunk.length === 0) continue;
      try {
        conn ??= await reader.open();
        items.push(...(await reader.read(conn, chunk)));
      } catch (err) {
        if (!isRetryable(err)) throw err;
        if (conn !== undefined) await reader.close(conn).catch(() => undefined);
        conn = undefined;
        if (++drops > MAX_DROPS + DROPS_PER_FIND * unreadable.length) throw new FolderUnreadableError(`the source closed the connection ${drops} times while this folder was read a few messages at a time`);
        if (chunk.length === 1) {
          const uid = chunk[0]!;
          if (droppedAlone.has(uid)) unreadable.push(uid);
          else {
            droppedAlone.add(uid);
            todo.push(chunk);
          }
          continue;
        }
        const half = Math.ceil(chunk.length / 2);
        todo.push(chunk.slice(half), chunk.slice(0, half));
      }
    }
  } finally {
    if (conn !== undefined) await reader.close(conn).catch(() => undefined);
  }
  return { items, unreadable };
}
