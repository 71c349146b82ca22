/**
 * Source folders renamed between runs. In the weeks before the cut-over users reorganise
 * their folders; a folder renamed on the source would otherwise look like a new folder
 * (copied again in full under its new name) while its old copy stays on the target under
 * the old name: every message twice, in two folders, for the user to sort out.
 *
 * A rename keeps a folder's UIDVALIDITY and UIDs on Dovecot and Cyrus (RFC 3501 §6.3.5
 * only asks that the old name's UIDs not be reused), so a journal folder whose source
 * name is gone and a new source folder with the same UIDVALIDITY are one folder once
 * sampled journaled UIDs in the new folder have the journal's sizes and digests
 * (UIDVALIDITY values are not unique across folders: see findRenames). Courier renumbers
 * a renamed folder; there content alone tells. The target copy is then renamed the same
 * way (RENAME, which takes the subfolders along) and the journal's folder row follows, so
 * the next scan resumes where the last run stopped: nothing is copied again.
 *
 * The target folder renamed must be the copy: it must have the UIDVALIDITY the journal
 * recorded for it (a folder of that name a user made on the target is left alone).
 * Crash safety: the target RENAME goes first and the journal after. A run killed in
 * between finds the old target name gone and the new one there with the copy's
 * UIDVALIDITY, and adopts it.
 *
 * Left as a new folder (copied again, as imapsync does, with a warning): a folder that
 * cannot be confirmed, one whose new target name is taken already, and one whose old
 * target folder is INBOX, a special-use folder of the target, shared with another source
 * folder (merged `Sent` + `Sent Items`: renaming it would rename more than the user did),
 * or not the copy.
 */
import type { ImapFlow, ListResponse } from 'imapflow';
import type { Kysely } from 'kysely';
import { isImapRefusal } from '../imap/errors.js';
import { withWatchdog } from '../imap/imapflow-session.js';
import { contentHasher } from '../store/content-key.js';
import type { Digest } from './content-digest.js';
import { listFolders } from '../store/journal.js';
import type { Database, FolderRow } from '../store/schema.js';
import { canonicalAttributes } from '../imap/mailbox-attributes.js';
import type { FolderMapping } from './folder-map.js';
import { serverView } from './server-view.js';
import type { SyncOptions } from './options.js';
import { uidSet } from './uid-set.js';
import { looseDigest } from './changed-copies.js';
import { servesMboxFields } from './loose-orphans.js';
import { mayBeSame } from './may-be-copies.js';
import { internalDateMs } from './scan.js';

/** A journal folder whose source folder now has another name. */
export interface FolderRename {
  row: FolderRow;
  sourcePath: string;
  /** Where the mapping puts the new name on the target. */
  targetPath: string;
}

interface RenameContext {
  db: Kysely<Database>;
  pairId: number;
  stallMs: number;
  log: SyncOptions['logger'];
  /** The target session, to read copies where the source's bytes changed (sameLoosely). */
  target?: ImapFlow;
}

/** Journaled UIDs compared with the new folder: the first and the last ones. */
const SAMPLE = 50;

const normalized = (path: string) => (path.toUpperCase() === 'INBOX' ? 'INBOX' : path);

/**
 * Pairs of (journal folder whose source name vanished, new source folder), confirmed by
 * content. With one UIDVALIDITY between them, sampled journaled UIDs must be in the new
 * folder with the journal's sizes and, for a few of them, its content digests: several
 * folders can share a UIDVALIDITY (Cyrus takes the time of creation, so folders made in
 * one second, by a client or an earlier migration, have the same one), and fixed-format
 * mail (alerts, receipts) has equal sizes. Courier gives a renamed folder a new
 * UIDVALIDITY (and so new UIDs): then the oldest messages of the new folder must be byte
 * for byte among the old folder's copies, and the scan links every message to its copy
 * by content, as after any UIDVALIDITY change (scan.ts). Pairs of the first kind are
 * settled first; a pair is taken only when neither of its folders matches any other.
 */
export async function findRenames(ctx: RenameContext, src: ImapFlow, srcList: readonly ListResponse[], mappings: readonly FolderMapping[]): Promise<FolderRename[]> {
  const rows = await listFolders(ctx.db, ctx.pairId);
  const byPath = new Map(rows.map((r) => [r.source_path, r]));
  const statusOf = new Map(srcList.map((f) => [f.path, f.status && !('error' in f.status) ? f.status : undefined]));
  // Gone from the source, or its name now taken by another folder (renamed, and a new one
  // made under the old name: a yearly "Projects" → "Projects 2025"), or only a node of the
  // hierarchy now (Dovecot's Maildir++ lists a renamed parent whose old name still has a
  // subfolder, without a STATUS: it cannot be opened).
  const vanished = rows.filter((r) => {
    if (r.source_uidvalidity === null) return false;
    const now = statusOf.get(r.source_path)?.uidValidity;
    return now === undefined || Number(now) !== r.source_uidvalidity;
  });
  if (vanished.length === 0) return [];
  // New to the journal: no row, or an empty one an interrupted attempt made before its
  // first scan. (A run killed while copying a new folder leaves rows: that folder is on
  // its way to the target already, and is finished as it was started.)
  const started = new Set(
    (await ctx.db.selectFrom('message').select('folder_id').distinct().where('folder_id', 'in', [0, ...rows.filter((r) => r.source_uidvalidity === null).map((r) => r.id)]).execute()).map((r) => r.folder_id),
  );
  const fresh = mappings.filter((m) => {
    const row = byPath.get(m.sourcePath);
    return m.selectable && (row === undefined || (row.source_uidvalidity === null && !started.has(row.id))) && statusOf.get(m.sourcePath)?.uidValidity !== undefined;
  });
  const sameUids: Pair[] = [];
  const otherUids: Pair[] = [];
  for (const mapping of fresh) {
    const st = statusOf.get(mapping.sourcePath)!;
    for (const row of vanished) {
      if (row.source_uidvalidity !== Number(st.uidValidity)) otherUids.push({ row, mapping });
      // UIDs only grow under one UIDVALIDITY (RFC 3501 §2.3.1.1).
      else if (st.uidNext === undefined || st.uidNext >= row.synced_uidnext) sameUids.push({ row, mapping });
    }
  }
  let budget = MAX_COMPARISONS;
  const sameConfirmed: Pair[] = [];
  for (const p of sameUids) if (budget-- > 0 && (await sameMessages(ctx, src, p.row, p.mapping.sourcePath))) sameConfirmed.push(p);
  const taken = unambiguous(sameConfirmed);
  const rowsTaken = new Set(taken.map((p) => p.row.id));
  const pathsTaken = new Set(taken.map((p) => p.mapping.sourcePath));
  const otherConfirmed: Pair[] = [];
  // Each new folder is read once, whatever the number of folders it is compared with.
  const oldest = new Map<string, Digest[][] | null>();
  for (const p of otherUids) {
    if (rowsTaken.has(p.row.id) || pathsTaken.has(p.mapping.sourcePath)) continue;
    const path = p.mapping.sourcePath;
    if (!oldest.has(path)) oldest.set(path, budget-- > 0 ? await oldestDigests(ctx, src, path) : null);
    const digests = oldest.get(path);
    if (digests && (await amongCopies(ctx, [p.row.id], digests))) otherConfirmed.push(p);
  }
  const unique = [...taken, ...unambiguous(otherConfirmed)];
  if (sameConfirmed.length + otherConfirmed.length > unique.length) {
    ctx.log.info({ candidates: [...sameConfirmed, ...otherConfirmed].map((p) => [p.row.source_path, p.mapping.sourcePath]) }, 'renamed folders that cannot be told apart; copied under their new names');
  }
  return unique.map(({ row, mapping }) => ({ row, sourcePath: mapping.sourcePath, targetPath: mapping.targetPath }));
}

/** The pairs neither of whose folders is in another pair. */
function unambiguous(pairs: readonly Pair[]): Pair[] {
  const count = (key: (p: Pair) => unknown, p: Pair) => pairs.filter((q) => key(q) === key(p)).length;
  return pairs.filter((p) => count((q) => q.row.id, p) === 1 && count((q) => q.mapping.sourcePath, p) === 1);
}

interface Pair {
  row: FolderRow;
  mapping: FolderMapping;
}

/** Folders read to compare in one run, at most: each costs an EXAMINE and a FETCH or two. */
const MAX_COMPARISONS = 200;

/**
 * Whether the journaled UIDs sampled are in `path` with the sizes the journal recorded,
 * and a few of them with its digests.
 */
async function sameMessages(ctx: RenameContext, src: ImapFlow, row: FolderRow, path: string): Promise<boolean> {
  const sample = async (order: 'asc' | 'desc') =>
    ctx.db.selectFrom('message').select(['source_uid', 'size', 'internal_date', 'digest', 'target_uid']).where('folder_id', '=', row.id).where('state', '=', 'copied').where('source_uid', '>', 0).orderBy('source_uid', order).limit(SAMPLE).execute();
  const journaled = new Map([...(await sample('asc')), ...(await sample('desc'))].map((r) => [r.source_uid, r]));
  // Nothing copied: nothing to be copied twice, and nothing to confirm it by.
  if (journaled.size === 0) return false;
  const mailbox = await withWatchdog(src, ctx.stallMs, `opening ${path}`, () => src.mailboxOpen(path, { readOnly: true }));
  if (Number(mailbox.uidValidity) !== row.source_uidvalidity || mailbox.exists === 0) return false;
  const listed = await withWatchdog(src, ctx.stallMs, `listing ${path}`, () => src.fetchAll(uidSet([...journaled.keys()]), { uid: true, size: true, internalDate: true }, { uid: true }));
  // Messages deleted since are simply absent; one present with another size and date is
  // another message (a size alone may be Exchange's estimate: may-be-copies.ts).
  const present = listed.filter((m) => journaled.has(m.uid));
  if (present.length === 0) return false;
  if (present.every((m) => mayBeSame({ size: m.size ?? -1, internalDate: internalDateMs(m.internalDate) ?? 0 }, { size: journaled.get(m.uid)!.size, internalDate: journaled.get(m.uid)!.internal_date }))) {
    const read = present.filter((m) => (m.size ?? 0) <= CONTENT_SAMPLE_MAX_BYTES && journaled.get(m.uid)!.digest !== null).slice(0, CONTENT_SAMPLE);
    if (read.length === 0) return false;
    const bodies = await withWatchdog(src, ctx.stallMs, `reading ${path}`, () => src.fetchAll(uidSet(read.map((m) => m.uid)), { uid: true, source: true }, { uid: true }));
    const hasher = await contentHasher(ctx.db);
    if (bodies.length === read.length && bodies.every((m) => hasher.digestsOf(m.source ?? Buffer.alloc(0), ['gmac', 'sha256']).includes(journaled.get(m.uid)!.digest!))) return true;
  }
  // A source whose bytes change under its messages (imap4d rewrites its mbox fields when a
  // client sets a flag): compared with their copies on the target by loose digest.
  return ctx.target !== undefined && (await servesMboxFields(src, path, present[0]!.uid, ctx.stallMs)) && sameLoosely(ctx.target, ctx.stallMs, src, row, path, present.map((m) => ({ uid: m.uid, size: m.size ?? 0, copy: journaled.get(m.uid)!.target_uid })));
}

/** Whether the sampled source messages have their copies' loose digests (changed-copies.ts). */
async function sameLoosely(tgt: ImapFlow, stallMs: number, src: ImapFlow, row: FolderRow, path: string, present: readonly { uid: number; size: number; copy: number | null }[]): Promise<boolean> {
  const read = present.filter((m): m is { uid: number; size: number; copy: number } => m.copy !== null && m.size <= CONTENT_SAMPLE_MAX_BYTES).slice(0, CONTENT_SAMPLE);
  if (read.length === 0 || row.target_uidvalidity === null) return false;
  const mb = await withWatchdog(tgt, stallMs, `opening ${row.target_path} on the target`, () => tgt.mailboxOpen(row.target_path, { readOnly: true }));
  if (Number(mb.uidValidity) !== row.target_uidvalidity) return false;
  const copies = await withWatchdog(tgt, stallMs, `reading ${row.target_path} on the target`, () => tgt.fetchAll(uidSet(read.map((m) => m.copy)), { uid: true, source: true }, { uid: true }));
  const copyLoose = new Map(copies.map((m) => [m.uid, looseDigest(m.source ?? Buffer.alloc(0))]));
  await withWatchdog(src, stallMs, `opening ${path}`, () => src.mailboxOpen(path, { readOnly: true }));
  const bodies = await withWatchdog(src, stallMs, `reading ${path}`, () => src.fetchAll(uidSet(read.map((m) => m.uid)), { uid: true, source: true }, { uid: true }));
  const copyOf = new Map(read.map((m) => [m.uid, m.copy]));
  return bodies.length === read.length && bodies.every((m) => copyLoose.get(copyOf.get(m.uid)!) === looseDigest(m.source ?? Buffer.alloc(0)));
}
/**
 * The digests (in both algorithms) of the oldest messages of `path`, the first by sequence
 * number (mail that arrived after a rename comes last); only a few, and only up to a
 * size; null when there is none to read.
 */
export async function oldestDigests(ctx: Pick<RenameContext, 'db' | 'stallMs'>, src: ImapFlow, path: string): Promise<Digest[][] | null> {
  const mailbox = await withWatchdog(src, ctx.stallMs, `opening ${path}`, () => src.mailboxOpen(path, { readOnly: true }));
  if (mailbox.exists === 0) return null;
  const first = await withWatchdog(src, ctx.stallMs, `listing ${path}`, () => src.fetchAll(`1:${Math.min(mailbox.exists, 2 * CONTENT_SAMPLE)}`, { uid: true, size: true }));
  const picked = first.filter((m) => (m.size ?? 0) <= CONTENT_SAMPLE_MAX_BYTES).slice(0, CONTENT_SAMPLE);
  if (picked.length === 0) return null;
  const bodies = await withWatchdog(src, ctx.stallMs, `reading ${path}`, () => src.fetchAll(uidSet(picked.map((m) => m.uid)), { uid: true, source: true }, { uid: true }));
  if (bodies.length !== picked.length) return null;
  const hasher = await contentHasher(ctx.db);
  return bodies.map((m) => hasher.digestsOf(m.source ?? Buffer.alloc(0), ['gmac', 'sha256']));
}

/** Whether every message `digests` stands for is, byte for byte, a copy the journal made from one of the folders `folderIds`. */
export async function amongCopies(ctx: Pick<RenameContext, 'db'>, folderIds: readonly number[], digests: readonly Digest[][]): Promise<boolean> {
  const known = new Set(
    (await ctx.db.selectFrom('message').select('digest').where('folder_id', 'in', folderIds).where('state', 'in', ['copied', 'orphan']).where('digest', 'in', digests.flat()).execute()).map((r) => r.digest),
  );
  return digests.every((ds) => ds.some((d) => known.has(d)));
}

/** Messages read to compare a folder that changed its UIDVALIDITY, and the largest read. */
const CONTENT_SAMPLE = 8;
const CONTENT_SAMPLE_MAX_BYTES = 1024 * 1024;

/**
 * Renames the target copies and moves the journal rows. Returns the target renames done
 * (old path → new path), parents before children, for the caller's view of the target.
 */
export async function applyRenames(ctx: RenameContext, tgt: ImapFlow, tgtList: readonly ListResponse[], mappings: readonly FolderMapping[], renames: readonly FolderRename[]): Promise<[string, string][]> {
  const tgtView = serverView(tgt, tgtList);
  const d = tgtView.delimiter ?? '';
  const depth = (p: string) => (d ? p.split(d).length : 1);
  const done: [string, string][] = [];
  // The target's folders as they are after the renames done so far, with their UIDVALIDITY
  // (which Dovecot and Cyrus keep through a RENAME): a folder of that name is the copy the
  // journal knows only with the UIDVALIDITY it recorded, not one a user made on the target
  // under the same name.
  let validity = new Map(
    tgtList.filter((f) => !canonicalAttributes(f.flags).has('\\NonExistent')).map((f) => [normalized(f.path), f.status && !('error' in f.status) && f.status.uidValidity !== undefined ? Number(f.status.uidValidity) : undefined]),
  );
  const isCopy = (path: string, r: FolderRename) => r.row.target_uidvalidity !== null && validity.get(path) === r.row.target_uidvalidity;
  const protectedPaths = new Set(['INBOX', ...tgtView.folders.filter((f) => f.specialUse !== undefined).map((f) => f.path)]);
  const renamedSources = new Set(renames.map((r) => r.sourcePath));
  for (const r of [...renames].sort((a, b) => depth(a.row.target_path) - depth(b.row.target_path))) {
    const from = renamedPath(r.row.target_path, done, d);
    const to = r.targetPath;
    const what = { from: r.row.source_path, to: r.sourcePath };
    if (from !== to) {
      // Another source folder copied there too; a new folder under the old name is not one.
      const sharedWith = mappings.find((m) => m.targetPath === from && !renamedSources.has(m.sourcePath) && m.sourcePath !== r.row.source_path);
      if (!validity.has(from)) {
        // Not there under its old name: renamed by a run killed before it could record it
        // (then its copy is there under the new one), or deleted on the target (then the
        // folder is copied anew; copies already on the target are found by content).
        if (!isCopy(to, r)) continue;
      } else if (validity.has(to) || protectedPaths.has(from) || sharedWith || !isCopy(from, r)) {
        const reason = validity.has(to) ? `${to} exists on the target` : sharedWith ? `${sharedWith.sourcePath} is copied there too` : protectedPaths.has(from) ? 'a special folder of the target' : `${from} on the target is not the copy (another UIDVALIDITY)`;
        ctx.log.warn({ ...what, target: from, reason }, 'source folder renamed; copied again under its new name');
        continue;
      } else {
        try {
          await withWatchdog(tgt, ctx.stallMs, `renaming ${from} on the target`, () => tgt.mailboxRename(from, to));
        } catch (err) {
          if (!isImapRefusal(err)) throw err;
          ctx.log.warn({ ...what, target: from, reason: (err as Error).message }, 'source folder renamed; the target refused the rename, copied again under the new name');
          continue;
        }
        done.push([from, to]);
        validity = new Map([...validity].map(([p, v]) => [renamedPath(p, [[from, to]], d), v]));
      }
    }
    await ctx.db.transaction().execute(async (trx) => {
      // The row an interrupted attempt made for the new name, before it was recognised.
      const stale = await trx.selectFrom('folder').select('id').where('pair_id', '=', ctx.pairId).where('source_path', '=', r.sourcePath).executeTakeFirst();
      // (Empty: findRenames leaves out folders with journaled messages.)
      if (stale) await trx.deleteFrom('folder').where('id', '=', stale.id).execute();
      await trx.updateTable('folder').set({ source_path: r.sourcePath, target_path: to }).where('id', '=', r.row.id).execute();
    });
    ctx.log.info({ ...what, target: to }, 'source folder renamed; followed on the target');
  }
  return done;
}

/** The target's listing with the renamed folders (and their subfolders) under their new names; their STATUS is asked anew. */
export function renamedListing(list: readonly ListResponse[], done: readonly [string, string][], delimiter: string | null): ListResponse[] {
  if (done.length === 0) return [...list];
  const d = delimiter ?? '';
  return list.map((f) => {
    const path = renamedPath(f.path, done, d);
    if (path === f.path) return f;
    const { status: _status, ...rest } = f;
    return { ...rest, path, name: d ? path.split(d).pop()! : path };
  });
}

/** Where `path` is after the target renames `done` (a renamed folder's subfolders move with it, RFC 3501 §6.3.5). */
function renamedPath(path: string, done: readonly [string, string][], delimiter: string): string {
  for (const [from, to] of done) {
    if (path === from) path = to;
    else if (delimiter && path.startsWith(from + delimiter)) path = to + path.slice(from.length);
  }
  return path;
}
