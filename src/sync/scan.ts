/**
 * Scans one source folder: what is new since the watermark, what is to be retried, which
 * flags changed (CHANGEDSINCE, RFC 7162 §3.1.4, when the server has CONDSTORE; a full
 * UID FLAGS listing otherwise), and what is too large to copy.
 *
 * With a `receivedAfter` cut-off, messages that arrived before it (INTERNALDATE, RFC 3501
 * §2.3.3) are left out of the listing: never journaled, copied, skipped or counted. The
 * watermark still moves past them (mailbox-sync.ts records the folder's UIDNEXT), so an
 * incremental run does not list them again.
 */
import type { FetchMessageObject, ImapFlow } from 'imapflow';
import type { Kysely } from 'kysely';
import { isImapRefusal } from '../imap/errors.js';
import { withWatchdog } from '../imap/imapflow-session.js';
import type { ListedMessage, RawFetcher } from '../imap/raw-fetch.js';
import { copiedFlagPages, deleteMessages, insertMessages, journaledBelow, journalPages, rowsAmong, skippedOf } from '../store/journal.js';
import type { Database, MessageRow } from '../store/schema.js';
import { diffFlags, flagsKey, isUncertain } from './flags.js';
import { readAroundDrops, UNREADABLE_REASON } from './read-around-drops.js';
import type { FolderWork } from './folder-work.js';
import { reclaimIfGrown } from './reclaim.js';
import { storableText } from './message-headers.js';
import type { OneAtATime } from './one-at-a-time.js';
import { uidSet } from './uid-set.js';
import { MayBeCopies } from './may-be-copies.js';

export interface ScanContext {
  db: Kysely<Database>;
  maxMessageSize: number;
  stallMs: number;
  dryRun: boolean;
  /** Only messages received at or after this (ms since the epoch); see SyncOptions. */
  receivedAfter?: number;
  /** Skipped messages this run already skipped are not tried again before the next run (RunMemory). */
  skippedInThisRun?: (folderId: number, uid: number) => boolean;
  /**
   * For a folder whose scan lost the source connection even when scanned alone: its
   * messages' sizes are read around the ones that lose it (read-around-drops.ts), on source
   * connections this opens. Those are recorded as unreadable, and `noteSkipped` keeps this
   * run's later attempts from reading them again.
   */
  carefully?: { connect(): Promise<RawFetcher>; noteSkipped(folderId: number, uid: number): void };
}

/** An INTERNALDATE as imapflow gives it (a Date, or the raw text it could not parse), in ms; undefined when absent or unreadable. */
export function internalDateMs(date: Date | string | undefined): number | undefined {
  if (date === undefined) return undefined;
  const ms = (typeof date === 'string' ? new Date(date) : date).getTime();
  return Number.isNaN(ms) ? undefined : ms;
}

/**
 * Whether a message is inside the migration's date scope. "After DATE" includes DATE
 * itself, as SEARCH SINCE does (RFC 3501 §6.4.4), so `--received-after 2024-03-01` takes
 * mail from midnight on. A message whose arrival date is unknown stays in scope: one
 * message too many on the target is visible and harmless, one silently left behind is not.
 */
export function receivedInScope(date: number | undefined, receivedAfter: number | undefined): boolean {
  return receivedAfter === undefined || date === undefined || date >= receivedAfter;
}

/** The same for a journal row, whose internal_date is 0 when it was never read (unreadable messages). */
export function rowInScope(row: Pick<MessageRow, 'internal_date'>, receivedAfter: number | undefined): boolean {
  return receivedInScope(row.internal_date === 0 ? undefined : row.internal_date, receivedAfter);
}

/**
 * What the listing fetches: UID and size, plus INTERNALDATE only when there is a cut-off
 * to compare with. The date comes in the same FETCH rather than from UID SEARCH SINCE,
 * which compares dates without time and zone (RFC 3501 §6.4.4) and would need an exact
 * check of the boundary day anyway.
 */
function listingQuery(receivedAfter: number | undefined): { uid: true; size: true; internalDate?: true } {
  return receivedAfter === undefined ? { uid: true, size: true } : { uid: true, size: true, internalDate: true };
}

function listedInScope(m: FetchMessageObject | ListedMessage, receivedAfter: number | undefined): boolean {
  return receivedInScope(internalDateMs(m.internalDate), receivedAfter);
}

/**
 * For a dry run with a cut-off: how many messages at or above `fromUid` are in scope. Opens
 * the folder read-only (EXAMINE) and changes nothing.
 */
export async function countNewInScope(src: ImapFlow, path: string, fromUid: number, receivedAfter: number, stallMs: number): Promise<number> {
  const mailbox = await withWatchdog(src, stallMs, `opening ${path}`, () => src.mailboxOpen(path, { readOnly: true }));
  if (mailbox.exists === 0) return 0;
  const listed = await withWatchdog(src, stallMs, `listing ${path}`, () => src.fetchAll(`${fromUid}:*`, listingQuery(receivedAfter), { uid: true }));
  // `n:*` includes the highest message even below n (RFC 3501 §6.4.8).
  return listed.filter((m) => m.uid >= fromUid && listedInScope(m, receivedAfter)).length;
}

function sizeText(bytes: number): string {
  if (bytes >= 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  // One decimal below 10 KB, so a message just over a small limit is not "2 KB, over the 2 KB limit".
  return bytes < 10 * 1024 ? `${(bytes / 1024).toFixed(1)} KB` : `${Math.ceil(bytes / 1024)} KB`;
}

/** "message is 36.2 MB, over the 35.0 MB limit"; in bytes when both round alike (one byte over). */
export function tooLargeReason(size: number, limit: number): string {
  const [a, b] = sizeText(size) === sizeText(limit) ? [`${size} bytes`, `${limit}-byte`] : [sizeText(size), sizeText(limit)];
  return `message is ${a}, over the ${b} limit`;
}

/** True when a skipped message should be tried again in this run. */
export function isRetryable(row: Pick<MessageRow, 'state' | 'skip_kind' | 'size'>, maxMessageSize: number): boolean {
  if (row.state !== 'skipped') return false;
  return row.skip_kind !== 'too-large' || row.size <= maxMessageSize;
}

/**
 * The two source connections a scan uses: the listings go through a RawFetcher (the
 * generic FETCH parser of imapflow cost about a tenth of a migration's CPU on a 5,000
 * message folder set, for UID and size alone), the rare envelope reads of too-large
 * messages through the imapflow session.
 */
export interface ScanSource {
  lister: RawFetcher;
  /** The imapflow session, shared with scans of other folders: `use` it one scan at a time. */
  session: ImapFlow;
  use: OneAtATime;
}

/**
 * Journal rows of messages expunged from the source since (RFC 3501 §7.4.1). Whether
 * there are any the counts tell: the journal holds more rows below the watermark than the
 * folder has messages there (`presentBelow`). The counts cannot tell when the journal has
 * rows from the watermark up (`rowsAbove`: a killed run's copies, or every row when a
 * wider cut-off lists the folder from UID 1 again), nor with a `receivedAfter` cut-off
 * (the folder's count includes messages the journal never took in): the folder is then
 * always looked at. Which ones, a UID listing below UIDNEXT tells. A
 * skipped message that is gone is forgotten: there is nothing left to copy, retry or
 * report. A copied one keeps its row (its copy stays on the target), and while new
 * messages are to be copied it is offered as an orphan: a message that left the folder
 * and came back (deleted to Trash and restored, moved away and back) has a new UID but
 * the same bytes, and is linked to the copy it already has instead of copied twice.
 */
async function handleExpunged(ctx: ScanContext, lister: RawFetcher, work: FolderWork, counts: { uidNext: number; watermark: number; presentBelow: number; rowsAbove: number }): Promise<number[]> {
  const { uidNext, watermark } = counts;
  if (uidNext <= 1 || ctx.dryRun) return [];
  const mayTell = ctx.receivedAfter === undefined && counts.rowsAbove === 0;
  if (mayTell && (watermark <= 1 || (await journaledBelow(ctx.db, work.row.id, watermark)) <= counts.presentBelow)) return [];
  const listed = new Set((await lister.list(`1:${uidNext - 1}`, {})).map((m) => m.uid));
  const goneSkipped: number[] = [];
  const goneCopied: number[] = [];
  for await (const page of journalPages(ctx.db, work.row.id, uidNext, ['copied', 'skipped'])) {
    reclaimIfGrown();
    for (const r of page) if (!listed.has(r.source_uid)) (r.state === 'skipped' ? goneSkipped : goneCopied).push(r.source_uid);
  }
  if (goneSkipped.length) await deleteMessages(ctx.db, work.row.id, goneSkipped);
  return goneCopied;
}

const byUid = <T extends { source_uid: number }>(rows: readonly T[]): Map<number, T> => new Map(rows.map((r) => [r.source_uid, r]));

/**
 * Offers the copies of expunged messages (handleExpunged) whose size or internal date one
 * of the messages to copy has (may-be-copies.ts): a folder emptied again and again (Trash, Junk) keeps many such rows, and
 * only those that can match are held. `from`: the folder they were expunged from, when it
 * is another source folder copied into the same target folder (mail moved from `Sent` to
 * `Sent Items`, both merged into the target's Sent, is there already).
 */
export async function offerExpunged(db: ScanContext['db'], work: FolderWork, gone: readonly number[], from: FolderWork = work): Promise<void> {
  if (gone.length === 0 || work.toCopy.length === 0) return;
  const may = new MayBeCopies(work.toCopy);
  for (let i = 0; i < gone.length; i += 5000) {
    for (const r of await rowsAmong(db, from.row.id, gone.slice(i, i + 5000))) {
      if (r.digest === null || !may.has(r.size, r.internal_date)) continue;
      const list = work.orphans.get(r.digest) ?? [];
      list.push(r);
      work.orphans.set(r.digest, list);
    }
  }
}

/**
 * Offers the copies made under an earlier UIDVALIDITY of the folder (orphans) whose size or
 * internal date one of the messages to copy has (`anySize`: all of them, for a source whose bytes change
 * under its messages, matched by loose digest whatever their sizes: loose-orphans.ts).
 * They are kept for as long as the journal is, not only for the run that saw the change:
 * a folder deleted and made again, and mail moved back into it later (from Trash, say), is
 * mail whose copies are there already. Only those that can match are held.
 */
export async function offerOrphans(db: ScanContext['db'], work: FolderWork, anySize = false): Promise<void> {
  if (work.toCopy.length === 0) return;
  const may = new MayBeCopies(work.toCopy);
  if (anySize) {
    // Offered again whole: drop those offered by size first, so none is in a list twice.
    for (const [digest, list] of work.orphans) {
      const rest = list.filter((o) => o.state !== 'orphan');
      if (rest.length) work.orphans.set(digest, rest);
      else work.orphans.delete(digest);
    }
  }
  for (const o of await db.selectFrom('message').selectAll().where('folder_id', '=', work.row.id).where('state', '=', 'orphan').execute()) {
    // Copied rows always carry a digest; one without could never be matched anyway.
    if (o.digest === null || (!anySize && !may.has(o.size, o.internal_date))) continue;
    const list = work.orphans.get(o.digest) ?? [];
    list.push(o);
    work.orphans.set(o.digest, list);
  }
}

export async function scanFolder(ctx: ScanContext, source: ScanSource, work: FolderWork): Promise<void> {
  const { db } = ctx;
  const { lister } = source;
  const path = work.mapping.sourcePath;
  const condstore = lister.capabilities.has('CONDSTORE') || lister.capabilities.has('QRESYNC');
  const mailbox = await lister.examine(path, { condstore });
  // RFC 3501 §7.3.1 makes UIDNEXT part of the answer to SELECT/EXAMINE, but Courier sends
  // none. Then the value STATUS gave in the folder listing (read before the folder was
  // opened, so a message arriving in between is left for the next run), else one past the
  // highest UID listed below.
  const announcedUidNext: number | undefined = mailbox.uidNext || work.listedUidNext;
  const snapshot = {
    uidValidity: mailbox.uidValidity,
    uidNext: announcedUidNext ?? work.row.synced_uidnext,
    messages: mailbox.exists,
    highestModseq: mailbox.highestModseq,
  };
  work.snapshot = snapshot;
  let row = work.row;

  if (row.source_uidvalidity !== null && row.source_uidvalidity !== snapshot.uidValidity && !ctx.dryRun) {
    // RFC 3501 §2.3.1.1: the old UIDs mean nothing now. Keep what was copied as orphans
    // (negative keys) to be adopted by content, and scan the folder from the start.
    await db.transaction().execute(async (trx) => {
      // Orphans are kept (offerOrphans), so those of an earlier change may be there: the new
      // ones are numbered below them (a negative key each; the old UID means nothing now).
      const lowest = await trx.selectFrom('message').select((eb) => eb.fn.min<number | string | null>('source_uid').as('m')).where('folder_id', '=', row.id).where('state', '=', 'orphan').executeTakeFirst();
      const below = Math.max(0, -Number(lowest?.m ?? 0));
      await trx.updateTable('message').set((eb) => ({ state: 'orphan', source_uid: eb.neg(eb(eb.ref('source_uid'), '+', below)) })).where('folder_id', '=', row.id).where('state', '=', 'copied').where('source_uid', '>', 0).execute();
      await trx.deleteFrom('message').where('folder_id', '=', row.id).where('state', 'in', ['pending', 'skipped']).execute();
      await trx.updateTable('folder').set({ source_uidvalidity: snapshot.uidValidity, synced_uidnext: 1, source_highestmodseq: null, source_messages: null }).where('id', '=', row.id).execute();
    });
    row = { ...row, source_uidvalidity: snapshot.uidValidity, synced_uidnext: 1, source_highestmodseq: null, source_messages: null };
    work.row = row;
  }
  if (snapshot.messages === 0) return;

  const watermark = row.synced_uidnext;
  const listed: ListedMessage[] = [];
  // The internal date too where copies may be there already (a folder scanned before, a
  // target folder that holds mail): with the size, it tells which of the journal's or the
  // target's copies may be these messages' (may-be-copies.ts). Not on a first sync into an
  // empty folder, where 150,000 Dates would be held for nothing.
  const datesMatter = ctx.receivedAfter !== undefined || row.synced_uidnext > 1 || work.target.uidNextAtStart > 1;
  const query = { size: true, internalDate: datesMatter };
  const unreadable: number[] = [];
  const list = async (set: string): Promise<ListedMessage[]> => {
    if (!ctx.carefully) return lister.list(set, query);
    const careful = ctx.carefully;
    const uids = (await lister.list(set, {})).map((m) => m.uid);
    const read = await readAroundDrops(uids, {
      open: async () => {
        const f = await careful.connect();
        try {
          const mb = await f.examine(path);
          if (mb.uidValidity !== snapshot.uidValidity) throw new Error(`source folder ${path} changed UIDVALIDITY during the run`);
          return f;
        } catch (err) {
          await f.close().catch(() => undefined);
          throw err;
        }
      },
      close: (f) => f.close(),
      read: (f, chunk) => f.list(uidSet(chunk), query),
    });
    unreadable.push(...read.unreadable);
    return read.items.sort((a, b) => a.uid - b.uid);
  };
  // `n:*` always includes the highest message even when its UID is below n (RFC 3501
  // §6.4.8), hence the UID filter. Messages older than the cut-off are dropped here, and
  // only here: everything below decides among in-scope messages.
  if (announcedUidNext === undefined) snapshot.uidNext = watermark;
  let freshCount = 0;
  if (announcedUidNext === undefined || snapshot.uidNext > watermark || row.source_messages === null) {
    const fresh = await list(`${watermark}:*`);
    for (const m of fresh) {
      if (m.uid < watermark) continue;
      freshCount++;
      if (listedInScope(m, ctx.receivedAfter)) listed.push(m);
    }
    if (announcedUidNext === undefined) snapshot.uidNext = fresh.reduce((next, m) => Math.max(next, m.uid + 1), snapshot.uidNext);
  }
  const rowsAbove = await journaledBelow(db, row.id, Number.MAX_SAFE_INTEGER, watermark);
  const goneCopied = await handleExpunged(ctx, lister, work, { uidNext: snapshot.uidNext, watermark, presentBelow: snapshot.messages - freshCount, rowsAbove });
  // The journal is read for what this scan needs, never a whole folder of it at once (a
  // folder of 150,000 messages held as one Map pushed a run past 150 MB).
  const retryable = (uid: number, r: Pick<MessageRow, 'state' | 'skip_kind' | 'size'>): boolean => isRetryable(r, ctx.maxMessageSize) && !ctx.skippedInThisRun?.(row.id, uid);
  const skipped = await skippedOf(db, row.id);
  const retry = [...skipped].filter(([uid, r]) => uid < watermark && retryable(uid, r)).map(([uid]) => uid);
  if (retry.length) {
    const again = await list(uidSet(retry));
    for (const m of again) if (listedInScope(m, ctx.receivedAfter)) listed.push(m);
  }

  // What is listed is new (at or above the watermark: journaled only by a run that ended
  // before it could move the watermark, or by every run before a wider cut-off) or a
  // skipped message to retry. Looked up a few thousand at a time, and not at all when the
  // journal has nothing from the watermark up (a first sync).
  const lookUp = rowsAbove > 0;
  /** Too-large messages not journaled yet: UID → size listed. */
  const tooLarge = new Map<number, number>();
  for (let i = 0; i < listed.length; i += 5000) {
    const part = listed.slice(i, i + 5000);
    const known = lookUp ? byUid(await rowsAmong(db, row.id, part.map((m) => m.uid))) : new Map<number, Pick<MessageRow, 'state' | 'skip_kind' | 'size'>>();
    for (const m of part) {
      const k = skipped.get(m.uid) ?? known.get(m.uid);
      if (k && !retryable(m.uid, k)) continue;
      const size = m.size ?? 0;
      if (size > ctx.maxMessageSize) {
        if (!k) tooLarge.set(m.uid, size);
        continue;
      }
      work.toCopy.push({ uid: m.uid, size, internalDate: internalDateMs(m.internalDate) ?? 0 });
    }
  }
  await offerExpunged(db, work, goneCopied);
  work.expunged = goneCopied;
  if (!ctx.dryRun) await offerOrphans(db, work);
  if (unreadable.length && !ctx.dryRun) {
    // Below the watermark only as a retried skip: `n:*` lists the highest message whatever n.
    const recorded = unreadable.filter((uid) => uid >= watermark || retry.includes(uid));
    await insertMessages(
      db,
      recorded.map((uid) => ({ folder_id: row.id, source_uid: uid, state: 'skipped' as const, size: 0, internal_date: 0, digest: null, flags: '', target_uid: null, uid_floor: null, skip_kind: 'unreadable' as const, reason: UNREADABLE_REASON, subject: null })),
    );
    for (const uid of recorded) ctx.carefully?.noteSkipped(row.id, uid);
  }
  if (tooLarge.size && !ctx.dryRun) {
    const src = source.session;
    // Their date and subject are for the report. A source that will not give them (a NO)
    // has them listed by size alone, not the folder failed over it.
    const envelopes = await source
      .use(async () => {
        await withWatchdog(src, ctx.stallMs, `opening ${path}`, () => src.mailboxOpen(path, { readOnly: true }));
        return withWatchdog(src, ctx.stallMs, `reading ${path}`, () => src.fetchAll(uidSet([...tooLarge.keys()]), { uid: true, size: true, flags: true, internalDate: true, envelope: true }, { uid: true }));
      })
      .catch((err: unknown): Pick<FetchMessageObject, 'uid' | 'size' | 'flags' | 'internalDate' | 'envelope'>[] => {
        if (!isImapRefusal(err)) throw err;
        return [...tooLarge].map(([uid, size]) => ({ uid, size }));
      });
    await insertMessages(
      db,
      envelopes.map((m) => ({
        folder_id: row.id,
        source_uid: m.uid,
        state: 'skipped' as const,
        size: m.size ?? 0,
        internal_date: internalDateMs(m.internalDate) ?? 0,
        digest: null,
        flags: flagsKey(m.flags),
        target_uid: null,
        uid_floor: null,
        skip_kind: 'too-large' as const,
        reason: tooLargeReason(m.size ?? 0, ctx.maxMessageSize),
        subject: storableText(m.envelope?.subject ?? ''),
      })),
    );
  }
  await scanFlags(ctx, lister, work, condstore);
}

/**
 * Flag changes on messages copied by earlier runs. With CONDSTORE (RFC 7162 §3.1.4) and a
 * mod-sequence recorded by the last complete pass, only what changed since is listed;
 * otherwise every copied message's flags, a page of the journal at a time. Either way up
 * to the folder's UIDNEXT, not the watermark: copies a killed run made or linked above
 * the watermark are included, so their flags follow the source on the next run, not the
 * one after.
 */
async function scanFlags(ctx: ScanContext, lister: RawFetcher, work: FolderWork, condstore: boolean): Promise<void> {
  const { row } = work;
  const snapshot = work.snapshot!;
  const changedSince = condstore && snapshot.highestModseq !== null ? row.source_highestmodseq : null;
  const compare = (k: Pick<MessageRow, 'state' | 'flags' | 'target_uid'> | undefined, m: ListedMessage) => {
    // A null target_uid (copied without UIDPLUS) is still a flag change to mirror:
    // skipping it here made such messages' flags never follow the source.
    if (!k || k.state !== 'copied') return;
    const after = flagsKey(m.flags);
    // An uncertain copy (flag-sync.ts) is looked at on the target, whatever the source says.
    if (isUncertain(k.flags) || diffFlags(k.flags, after)) work.flagChanges.push({ sourceUid: m.uid, targetUid: k.target_uid, before: k.flags, after });
  };
  const upTo = Math.max(row.synced_uidnext, snapshot.uidNext) - 1;
  if (upTo < 1) return;
  if (changedSince !== null) {
    if (snapshot.highestModseq === changedSince) return;
    if (snapshot.messages <= CHANGEDSINCE_PAGE) {
      // One command: what changed is usually a handful of messages.
      const changed = await lister.list(`1:${upTo}`, { flags: true, changedSince });
      for (let i = 0; i < changed.length; i += 5000) {
        const part = changed.slice(i, i + 5000);
        const known = byUid(await rowsAmong(ctx.db, row.id, part.map((m) => m.uid)));
        for (const m of part) compare(known.get(m.uid), m);
      }
      return;
    }
  }
  // A page of the journal, and the source's flags over the same UIDs (with CHANGEDSINCE
  // only those changed): a "mark all as read" of a huge folder is never listed at once.
  // A UID range spans at most a page's worth of UIDs, so a sparse journal (a cut-off on
  // an old folder) does not make one range cover the whole folder either.
  const pageSize = changedSince !== null ? CHANGEDSINCE_PAGE : FLAGS_PAGE;
  for await (const page of copiedFlagPages(ctx.db, row.id, upTo + 1, pageSize)) {
    const known = byUid(page);
    for (let i = 0; i < page.length; ) {
      const from = page[i]!.source_uid;
      let j = i;
      while (j + 1 < page.length && page[j + 1]!.source_uid < from + pageSize) j++;
      for (const m of await lister.list(`${from}:${page[j]!.source_uid}`, { flags: true, ...(changedSince !== null ? { changedSince } : {}) })) compare(known.get(m.uid), m);
      i = j + 1;
    }
    reclaimIfGrown();
  }
}

/** Messages per flag listing without CONDSTORE, and with it in folders larger than this. */
const FLAGS_PAGE = 5000;
const CHANGEDSINCE_PAGE = 10_000;
