/**
 * Reconciles the journal with a target folder after a crash, a dropped connection or a
 * target UIDVALIDITY change, so that nothing is copied twice and nothing is lost.
 *
 * Pending rows are messages whose APPEND may or may not have happened. Each carries a UID
 * floor: if the APPEND happened, the target gave it a UID >= floor (UIDs ascend, RFC 3501
 * §2.3.1.1). So only target messages with UID >= the smallest floor, and not already
 * mapped to a journal row, can be ours. Those whose size or internal date matches
 * (may-be-copies.ts) are downloaded and hashed,
 * and matched to the pending rows as a multiset of content digests (content-digest.ts,
 * each in the algorithm its row was journaled with): two identical source
 * messages need two identical target messages, and mail others delivered meanwhile
 * (different bytes) is left alone. Matched rows become `copied`; the rest are forgotten,
 * so the next scan copies them again.
 *
 * When the target folder's UIDVALIDITY changed, every mapped target UID is stale: the whole
 * folder is matched the same way against every copied row.
 */
import type { ImapFlow } from 'imapflow';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import { deleteMessages, markCopied, setTargetUids, targetUidsOfTargetFolder } from '../store/journal.js';
import type { Database, FolderRow, MessageRow } from '../store/schema.js';
import { contentHasher } from '../store/content-key.js';
import { type ChangedCopyWanted, findChangedCopies } from './changed-copies.js';
import { type ContentHasher, type Digest, algorithmOf } from './content-digest.js';
import { listTargetMessages, readTargetBodies } from './target-messages.js';
import { MayBeCopies } from './may-be-copies.js';

export interface Expected {
  folderId: number;
  sourceUid: number;
  size: number;
  digest: Digest;
  /** The INTERNALDATE the APPEND gave it (ms; 0 when unknown). */
  internalDate: number;
  /** The flags the APPEND gave it (flagsKey). */
  flags: string;
}

/** INTERNALDATE has whole seconds (RFC 3501 §9, date-time). */
const seconds = (ms: number) => Math.floor(ms / 1000);

/**
 * Finds each expected message on the target (UID >= fromUid, not in `exclude`); returns
 * target UIDs by index. Two identical messages filed twice (on other days, or one read and
 * one not) are told apart by what the APPEND set, so each row takes its own copy: first
 * content + internal date + flags, then content + date, then content alone (a server that
 * does not keep the date exactly, or flags someone changed since).
 */
export async function findOnTarget(hasher: ContentHasher, target: ImapFlow, fromUid: number, expected: readonly Expected[], exclude: ReadonlySet<number>, stallMs: number): Promise<Map<number, number>> {
  const found = new Map<number, number>();
  if (expected.length === 0) return found;
  const may = new MayBeCopies(expected);
  const listed = await listTargetMessages(target, fromUid, stallMs);
  const dateOf = new Map(listed.map((m) => [m.uid, m.internalDate >= 0 ? seconds(m.internalDate) : -1]));
  const flagsOf = new Map(listed.map((m) => [m.uid, m.flags]));
  const candidates = listed.filter((m) => !exclude.has(m.uid) && may.has(m.size, m.internalDate));
  const algorithms = [...new Set(expected.map((e) => algorithmOf(e.digest)))];
  const byDigest = new Map<Digest, number[]>();
  const alsoKnownAs = new Map<number, Digest[]>();
  await readTargetBodies(target, candidates, stallMs, (uid, source) => {
    const digests = hasher.digestsOf(source, algorithms);
    if (digests.length > 1) alsoKnownAs.set(uid, digests);
    for (const digest of digests) {
      const list = byDigest.get(digest) ?? [];
      list.push(uid);
      byDigest.set(digest, list);
    }
  });
  for (const list of byDigest.values()) list.sort((a, b) => a - b);
  const sameDate = (e: Expected, uid: number) => e.internalDate > 0 && dateOf.get(uid) === seconds(e.internalDate);
  const take = (fits: (e: Expected, uid: number) => boolean) =>
    expected.forEach((e, index) => {
      if (found.has(index)) return;
      const list = byDigest.get(e.digest);
      const at = list ? list.findIndex((uid) => fits(e, uid)) : -1;
      if (at < 0) return;
      const uid = list!.splice(at, 1)[0]!;
      found.set(index, uid);
      // Hashed in two algorithms (rows journaled on machines with different ones), the
      // message is listed twice: it is taken from the other list too.
      for (const d of alsoKnownAs.get(uid) ?? []) {
        const other = byDigest.get(d);
        if (d !== e.digest && other?.includes(uid)) other.splice(other.indexOf(uid), 1);
      }
    });
  take((e, uid) => sameDate(e, uid) && flagsOf.get(uid) === e.flags);
  take(sameDate);
  take(() => true);
  return found;
}

export interface ReconcileResult {
  recovered: number;
  requeued: number;
}

/** Drops journal rows so the next scan copies those messages again. */
export async function forgetMessages(db: Kysely<Database>, folder: Pick<FolderRow, 'id' | 'synced_uidnext'>, rows: readonly Pick<MessageRow, 'source_uid' | 'state'>[]): Promise<void> {
  if (rows.length === 0) return;
  await deleteMessages(db, folder.id, rows.map((r) => r.source_uid));
  const live = rows.filter((r) => r.state !== 'orphan').map((r) => r.source_uid);
  if (live.length > 0) {
    // The scan lists source UIDs from the watermark up: move it down so they are seen again.
    // Not Math.min(...live): spreading 150,000 arguments overflows the stack.
    const lowest = live.reduce((a, b) => (b < a ? b : a));
    await db.updateTable('folder').set({ synced_uidnext: lowest, source_messages: null }).where('id', '=', folder.id).where('synced_uidnext', '>', lowest).execute();
  }
}

/**
 * Makes the journal true for one target folder. `target` must have `targetPath` selected
 * (read-only is enough) with UIDVALIDITY `uidValidity`.
 */
export async function reconcileTargetFolder(args: {
  db: Kysely<Database>;
  pairId: number;
  target: ImapFlow;
  targetPath: string;
  uidValidity: number;
  folders: readonly FolderRow[];
  stallMs: number;
  log: Logger;
  /** Reads these rows' messages from the source again and returns their loose
   * digests by source UID (changed-copies.ts); without it, changed copies are not looked for. */
  readSource?: (folder: FolderRow, rows: readonly MessageRow[]) => Promise<Map<number, string>>;
}): Promise<ReconcileResult> {
  const { db, folders } = args;
  const ids = folders.map((f) => f.id);
  if (ids.length === 0) return { recovered: 0, requeued: 0 };
  const validityChanged = folders.some((f) => f.target_uidvalidity !== null && f.target_uidvalidity !== args.uidValidity);
  const states: MessageRow['state'][] = validityChanged ? ['pending', 'copied', 'orphan'] : ['pending'];
  const rows = await db.selectFrom('message').selectAll().where('folder_id', 'in', ids).where('state', 'in', states).orderBy('folder_id').orderBy('source_uid').execute();
  if (rows.length === 0) {
    if (validityChanged) await db.updateTable('folder').set({ target_uidvalidity: args.uidValidity }).where('id', 'in', ids).execute();
    return { recovered: 0, requeued: 0 };
  }
  if (validityChanged) args.log.warn({ folder: args.targetPath }, 'target folder UIDVALIDITY changed: matching copied messages by content');

  // A pending row without a digest cannot be on the target: a chunk message is journaled
  // with its digest before its APPEND starts, and a streamed large message
  // (copy-lanes.ts readLarge) gets its digest journaled after its last byte was read
  // from the source but before the last byte of its APPEND literal is written; a server
  // stores nothing before it has read the whole literal (RFC 3501 §4.3). Such rows are
  // forgotten below (copied again).
  const withDigest = rows.filter((r): r is MessageRow & { digest: Digest } => r.digest !== null);
  const fromUid = validityChanged ? 1 : Math.min(...withDigest.map((r) => r.uid_floor ?? 1), Number.MAX_SAFE_INTEGER);
  const exclude = validityChanged ? new Set<number>() : await targetUidsOfTargetFolder(db, args.pairId, args.targetPath);
  const expected: Expected[] = withDigest.map((r) => ({ folderId: r.folder_id, sourceUid: r.source_uid, size: r.size, digest: r.digest, internalDate: r.internal_date, flags: r.flags }));
  const found = withDigest.length ? await findOnTarget(await contentHasher(db), args.target, fromUid, expected, exclude, args.stallMs) : new Map<number, number>();
  if (args.readSource) {
    // Not found by content: maybe stored changed by the server (changed-copies.ts). After
    // a UIDVALIDITY change that holds for every copy the folder had, not only pending ones
    // (orphans, with negated UIDs, cannot be read again from the source).
    const unmatched = withDigest.map((r, index) => ({ r, index })).filter(({ r, index }) => !found.has(index) && r.source_uid > 0);
    const wanted: ChangedCopyWanted[] = [];
    for (const folder of folders) {
      const mine = unmatched.filter(({ r }) => r.folder_id === folder.id);
      if (mine.length === 0) continue;
      const loose = await args.readSource(folder, mine.map(({ r }) => r));
      for (const { r, index } of mine) {
        const d = loose.get(r.source_uid);
        if (d !== undefined) wanted.push({ index, loose: d, size: r.size, internalDate: r.internal_date });
      }
    }
    const changed = await findChangedCopies(args.target, fromUid, wanted, new Set([...exclude, ...found.values()]), args.stallMs);
    for (const [index, uid] of changed) found.set(index, uid);
    if (changed.size) args.log.warn({ folder: args.targetPath, messages: changed.size }, 'found on the target as its server changed them (line ends, 8-bit bytes): not copied again');
  }

  const indexOf = new Map<MessageRow, number>(withDigest.map((r, i) => [r, i]));
  let recovered = 0;
  let requeued = 0;
  await db.transaction().execute(async (trx) => {
    for (const folder of folders) {
      const mine = rows.filter((r) => r.folder_id === folder.id);
      const matchedPending: { sourceUid: number; targetUid: number }[] = [];
      const remapped: { sourceUid: number; targetUid: number }[] = [];
      const lost: MessageRow[] = [];
      for (const r of mine) {
        const index = indexOf.get(r);
        const uid = index === undefined ? undefined : found.get(index);
        if (uid === undefined) lost.push(r);
        else if (r.state === 'pending') matchedPending.push({ sourceUid: r.source_uid, targetUid: uid });
        else remapped.push({ sourceUid: r.source_uid, targetUid: uid });
      }
      await markCopied(trx, folder.id, matchedPending);
      await setTargetUids(trx, folder.id, remapped);
      await forgetMessages(trx as unknown as Kysely<Database>, folder, lost);
      recovered += matchedPending.length;
      requeued += lost.filter((r) => r.state !== 'orphan').length;
    }
    await trx.updateTable('folder').set({ target_uidvalidity: args.uidValidity }).where('id', 'in', ids).execute();
  });
  args.log.info({ folder: args.targetPath, recovered, requeued }, 'journal reconciled with target');
  return { recovered, requeued };
}
