/**
 * Reading the selected target folder's messages back: what crash recovery, changed-copy
 * detection, flag sync without UIDPLUS and the search for copies already on the target
 * share. Bodies are read a few MiB at a time, so a folder's worth is never held at once.
 */
import type { ImapFlow } from 'imapflow';
import { withWatchdog } from '../imap/imapflow-session.js';
import { flagsKey } from './flags.js';
import { internalDateMs } from './scan.js';
import { chunkBySize } from './size-chunks.js';
import { uidSet } from './uid-set.js';

const READ_CHUNK_BYTES = 8 * 1024 * 1024;

/** A message of the selected target folder as listed: internalDate in ms (-1 when unreadable), flags as flagsKey. */
export interface TargetListed {
  uid: number;
  size: number;
  internalDate: number;
  flags: string;
}

/** The selected target folder's messages with UID >= fromUid, in UID order. */
export async function listTargetMessages(target: ImapFlow, fromUid: number, stallMs: number): Promise<TargetListed[]> {
  const listed = await withWatchdog(target, stallMs, 'listing target messages', () => target.fetchAll(`${fromUid}:*`, { uid: true, size: true, internalDate: true, flags: true }, { uid: true }));
  // `n:*` includes the highest message even below n (RFC 3501 §6.4.8).
  return listed
    .filter((m) => m.uid >= fromUid)
    .map((m) => ({ uid: m.uid, size: m.size ?? -1, internalDate: internalDateMs(m.internalDate) ?? -1, flags: flagsKey(m.flags) }))
    .sort((a, b) => a.uid - b.uid);
}

/** Reads these messages of the selected target folder and hands each body to `each`. */
export async function readTargetBodies(target: ImapFlow, messages: readonly { uid: number; size: number }[], stallMs: number, each: (uid: number, source: Buffer) => void): Promise<void> {
  for (const batch of chunkBySize(messages, (m) => m.size, READ_CHUNK_BYTES)) {
    const bodies = await withWatchdog(target, stallMs, 'reading target messages', () => target.fetchAll(uidSet(batch.map((m) => m.uid)), { uid: true, source: true }, { uid: true }));
    for (const m of bodies) if (m.source) each(m.uid, m.source);
  }
}
