/**
 * Copies messages with several lanes in parallel. A lane is one source connection
 * (imap/raw-fetch.ts: one UID FETCH per chunk of messages) and one target connection with
 * pipelined APPENDs (imap/append-pipeline.ts), so neither side waits for a round trip per
 * message. Every message is journaled as `pending` (with the target UID floor) before its
 * APPEND is written, and marked `copied` from the APPENDUID answer: a crash anywhere leaves
 * a journal that recovery.ts can resolve exactly.
 *
 * The digest rule that makes that exact: a message the target may have stored always has
 * its content digest (content-digest.ts) in its pending row. A chunk message is hashed
 * before its APPEND starts. A large message is streamed from the source FETCH straight
 * into the APPEND literal (readLarge) and hashed on the way: its pending row is written
 * without a digest before the APPEND, and the digest is written once the last byte has
 * been read, before the last byte of the literal goes out (the appender holds the
 * literal's final chunk back until the source iterator has ended, see append-pipeline.ts
 * StreamedBody). A server stores
 * nothing before it has the whole literal (RFC 3501 §4.3), so a pending row without a
 * digest is a message that cannot be on the target, and recovery forgets it (it is copied
 * again); one with a digest is looked for by content as before.
 *
 * Memory is bounded by a shared byte budget over all lanes (fetched but not yet
 * acknowledged bytes), not by a message count, so large messages cannot pile up; chunk
 * messages are read into reused slabs (arena.ts), large ones only pass through.
 */
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import { PipelinedAppender, type StreamedBody } from '../imap/append-pipeline.js';
import { loginDisplayName } from '../imap/endpoint.js';
import { isImapRefusal } from '../imap/errors.js';
import { ImapConnectionLostError, WriteFencedError } from '../imap/raw-connection.js';
import { isOverQuota, type Refusal } from '../imap/refusal.js';
import { LiteralPipe } from '../imap/literal-pipe.js';
import { type FetchedMessage, type FetchLostError, RawFetcher } from '../imap/raw-fetch.js';
import { journalChunk, recordChunkOutcome, setDigest } from '../store/journal.js';
import { type Slab, SlabPool } from './arena.js';
import type { Database, MessageRow, NewMessageRow } from '../store/schema.js';
import type { ByteBudget } from './byte-budget.js';
import type { RunMemory } from './run-memory.js';
import type { MemoryReclaimer } from './reclaim.js';
import { contentHasher } from '../store/content-key.js';
import { type ContentHasher, type Digest, type DigestAlgorithm, algorithmOf } from './content-digest.js';
import { flagsKey, normalizeFlags, unsendableFlags } from './flags.js';
import type { FolderWork, MessageMeta } from './folder-work.js';
import { subjectOf } from './message-headers.js';
import { looseDigest } from './changed-copies.js';
import { TARGET_ORPHAN_UID } from './existing-copies.js';
import { TargetFullError } from './target-full.js';
import type { MailboxSide } from './options.js';
import type { SyncProgress } from './progress.js';
import { uidSet } from './uid-set.js';

export interface CopyJob {
  work: FolderWork;
  items: MessageMeta[];
  bytes: number;
}

export interface CopyContext {
  db: Kysely<Database>;
  /**
   * Journal rows adopted in this attempt (`folder:uid`): a row offered to two folders (an
   * expunged copy of a merged group, mailbox-sync.ts) is linked to one message only, or two
   * source messages would share one target copy.
   */
  adoptedRows: Set<string>;
  source: MailboxSide;
  target: MailboxSide;
  budget: ByteBudget;
  progress: SyncProgress;
  emit: () => void;
  log: Logger;
  stallMs: number;
  signal?: AbortSignal;
  /** SyncOptions.mayWrite. */
  mayWrite?: () => boolean;
  reclaimer: MemoryReclaimer;
  /** What earlier attempts of this run learnt (suspects, messages skipped). */
  memory: RunMemory;
  /**
   * Settles when the scan's own source connection is closed (or the attempt ends): a source
   * that allows only two sessions per user turns every lane away while the mailbox's own
   * session and the scan's are open, and takes one lane once the scan is done.
   */
  sourceFreed?: Promise<void>;
}

/** Splits each folder's messages into fetch chunks of at most `chunkBytes` / `chunkCount`. */
export function planJobs(works: readonly FolderWork[], chunkBytes: number, chunkCount = 250, alone: (folderId: number, uid: number) => boolean = () => false): CopyJob[] {
  const jobs: CopyJob[] = [];
  for (const work of works) {
    const items = [...work.toCopy].sort((a, b) => a.uid - b.uid);
    let current: CopyJob | null = null;
    for (const item of items) {
      if (item.size > STREAM_THRESHOLD) {
        // Streamed in slices: it holds about two slices of memory, not its size.
        jobs.push({ work, items: [item], bytes: 2 * SLICE_BYTES });
        continue;
      }
      if (alone(work.row.id, item.uid)) {
        // Suspected of making the source drop the connection: fetched on its own.
        jobs.push({ work, items: [item], bytes: item.size });
        continue;
      }
      if (!current || (current.items.length > 0 && (current.bytes + item.size > chunkBytes || current.items.length >= chunkCount))) {
        current = { work, items: [], bytes: 0 };
        jobs.push(current);
      }
      current.items.push(item);
      current.bytes += item.size;
    }
  }
  return jobs;
}

/**
 * Work an idle lane may do on its source connection while no copy job is waiting: the
 * scan of a folder (mailbox-sync.ts). A first sync of many small folders is otherwise
 * bound by one connection scanning them one after another while the lanes wait.
 */
export type IdleTask = (fetcher: RawFetcher) => Promise<void>;

/**
 * Hands out jobs with folder affinity: a lane keeps to the folder it has selected, then
 * takes a folder no other lane is working on, and only then helps with a busy folder.
 * This keeps each folder's messages mostly in source order on the target.
 *
 * Jobs arrive while the source is still being scanned (`add`), so copying starts with the
 * first changed folder instead of after the last one: at a 20 ms round trip, scanning a
 * few dozen folders one SELECT and FETCH at a time takes seconds.
 */
export class JobQueue {
  private readonly jobs: CopyJob[] = [];
  private readonly busy = new Map<string, number>();
  private closed = false;
  private waiters: (() => void)[] = [];
  private idleWork: (() => IdleTask | undefined) | undefined;

  /** Where idle lanes find other work; undefined from `take` means there is none now. */
  offerIdleWork(take: () => IdleTask | undefined): void {
    this.idleWork = take;
    this.wake();
  }

  add(jobs: readonly CopyJob[]): void {
    this.jobs.push(...jobs);
    this.wake();
  }

  /** No more jobs will come: lanes finish what is queued, then stop. */
  close(): void {
    this.closed = true;
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** The next copy job (of the folder `prefer` if there is one), else idle work, else waits; undefined when closed and drained. */
  async take(prefer: string | null, stop: () => boolean): Promise<CopyJob | { idle: IdleTask } | undefined> {
    for (;;) {
      if (stop()) return undefined;
      let i = prefer === null ? -1 : this.jobs.findIndex((j) => j.work.mapping.sourcePath === prefer);
      if (i < 0) i = this.jobs.findIndex((j) => !this.busy.get(j.work.mapping.sourcePath));
      if (i < 0 && this.jobs.length) i = 0;
      if (i >= 0) {
        const [job] = this.jobs.splice(i, 1);
        const path = job!.work.mapping.sourcePath;
        this.busy.set(path, (this.busy.get(path) ?? 0) + 1);
        return job;
      }
      const idle = this.idleWork?.();
      if (idle) return { idle };
      if (this.closed) return undefined;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  done(job: CopyJob): void {
    const path = job.work.mapping.sourcePath;
    this.busy.set(path, (this.busy.get(path) ?? 1) - 1);
  }
}

/** Bodies larger than this are streamed from source to target instead of held whole (see readLarge). */
export const STREAM_THRESHOLD = 2 * 1024 * 1024;
/** What a streamed message holds at once (LiteralPipe's high-water mark, with slack). */
const SLICE_BYTES = 1024 * 1024;
const HEAD_BYTES = 64 * 1024;
/** A chunk's messages are read into one slab of this size (arena.ts); chunks are at most 2 MiB. */
const SLAB_BYTES = STREAM_THRESHOLD;
/**
 * Large messages found to contain NUL bytes although the source sent them as a plain
 * literal (`folderId:uid`): the next attempt hashes them first, so the APPEND can be
 * announced as binary (literal8, RFC 3516) from the start. Rare: a compliant server sends
 * such a message as a literal8 itself.
 */
const needsBinary = new Set<string>();
/**
 * A chunk message is read whole; its size was announced small by RFC822.SIZE, but a server
 * may misreport. Above this it is listed as unreadable rather than held in memory.
 */
const MAX_CHUNK_MESSAGE_BYTES = 64 * 1024 * 1024;

/** A source message ready to be journaled and appended. */
interface SourceMessage {
  uid: number;
  /**
   * The preferred algorithm's digest first (journaled), then the same content's digest in
   * each other algorithm the folder's orphans use. Empty for a large message streamed
   * without a first pass until its last byte was read: see readLarge.
   */
  digests: Digest[];
  flags: string[];
  /** Source keywords no IMAP command can carry (flags.ts), left out. */
  droppedFlags?: string[];
  /** Null when the source's INTERNALDATE is missing or unreadable: copied with the target's date (appendableDate). */
  internalDate: Date | null;
  body: Buffer | StreamedBody;
  /** The start of the message, for naming it (Subject) if the target refuses it. */
  head: () => Buffer;
  /** Settles when the source has delivered all of the message (streamed ones). */
  delivered?: Promise<unknown>;
  /** The APPEND is over (answered or failed): streamed ones stop reading the source. */
  onSettled?: () => void;
}

function bodySize(body: Buffer | StreamedBody): number {
  return Buffer.isBuffer(body) ? body.length : body.size;
}

type Unreadable = { uid: number; reason: string };

/**
 * What a folder's messages are hashed in: the preferred algorithm (journaled) first, then
 * those of the folder's orphans, which a message must match to adopt one.
 */
function digestAlgorithms(hasher: ContentHasher, work: FolderWork): DigestAlgorithm[] {
  const out = new Set<DigestAlgorithm>([hasher.preferred]);
  for (const d of work.orphans.keys()) out.add(algorithmOf(d));
  for (const d of work.existing?.keys() ?? []) out.add(algorithmOf(d));
  return [...out];
}

function withDropped(flags: Iterable<string> | undefined): { droppedFlags?: string[] } {
  const dropped = unsendableFlags(flags);
  return dropped.length ? { droppedFlags: dropped } : {};
}

function fromFetched(hasher: ContentHasher, m: FetchedMessage, algorithms: readonly DigestAlgorithm[]): SourceMessage {
  const raw = m.raw;
  return {
    uid: m.uid,
    digests: hasher.digestsOf(raw, algorithms),
    flags: normalizeFlags(m.flags),
    ...withDropped(m.flags),
    internalDate: m.internalDate,
    body: raw,
    head: () => raw.subarray(0, HEAD_BYTES),
  };
}

/**
 * Fetches a chunk with the lane's RawFetcher (src/imap/raw-fetch.ts: ~5× less CPU per
 * message than imapflow's generic parser, which matters on a machine shared with the IMAP
 * servers). A message the source cannot deliver (tagged NO) is isolated and reported.
 */
async function fetchChunk(hasher: ContentHasher, fetcher: RawFetcher, job: CopyJob, slab: Slab): Promise<{ messages: SourceMessage[]; unreadable: Unreadable[] }> {
  const uids = job.items.map((i) => i.uid);
  const alloc = (size: number) => slab.alloc(size);
  const algorithms = digestAlgorithms(hasher, job.work);
  try {
    const r = await fetcher.fetch(uidSet(uids), { alloc });
    return { messages: r.messages.map((m) => fromFetched(hasher, m, algorithms)), unreadable: await stillThere(fetcher, r.unreadable) };
  } catch (err) {
    if (!isImapRefusal(err)) throw err;
  }
  const messages: SourceMessage[] = [];
  const unreadable: Unreadable[] = [];
  for (const uid of uids) {
    try {
      const r = await fetcher.fetch(String(uid), { alloc });
      messages.push(...r.messages.map((m) => fromFetched(hasher, m, algorithms)));
      unreadable.push(...(await stillThere(fetcher, r.unreadable)));
    } catch (err) {
      if (!isImapRefusal(err)) throw err;
      unreadable.push({ uid, reason: `source could not deliver it: ${(err as Error).message}` });
    }
  }
  return { messages, unreadable };
}

/**
 * Of the messages the source sent no bytes for (`BODY[] NIL`), those that still exist.
 * Dovecot answers so for a message another session expunged (a user deleting or moving
 * mail while the sync runs) before it tells this session of the expunge; the listing
 * that follows (a UID command, during which the server may send EXPUNGE: RFC 3501
 * §7.4.1) leaves such a message out. It is not a failure: the scan sees it gone next time,
 * or, moved, copied from its new folder.
 */
async function stillThere(fetcher: RawFetcher, unreadable: Unreadable[]): Promise<Unreadable[]> {
  if (unreadable.length === 0) return unreadable;
  const listed = new Set((await fetcher.list(uidSet(unreadable.map((u) => u.uid)), {})).map((m) => m.uid));
  return unreadable.filter((u) => listed.has(u.uid));
}

/**
 * fetchChunk, minding messages that make the source drop the connection
 * (drop-suspects.ts): one judged so is not asked for again in this run but recorded as
 * unreadable; when the connection is lost during a fetch, the message the source was
 * sending then (the first not received whole) becomes a suspect, fetched alone next time.
 */
async function readChunk(ctx: CopyContext, hasher: ContentHasher, fetcher: RawFetcher, job: CopyJob, slab: Slab): Promise<{ messages: SourceMessage[]; unreadable: Unreadable[] }> {
  const folderId = job.work.row.id;
  const alone = job.items.length === 1;
  const verdict = alone ? ctx.memory.sourceSuspects.verdict(folderId, job.items[0]!.uid) : null;
  if (verdict !== null) return { messages: [], unreadable: [{ uid: job.items[0]!.uid, reason: verdict }] };
  try {
    return await fetchChunk(hasher, fetcher, job, slab);
  } catch (err) {
    if (err instanceof ImapConnectionLostError) {
      const delivered = new Set((err as FetchLostError).delivered ?? []);
      const next = job.items.find((i) => !delivered.has(i.uid));
      if (next) ctx.memory.sourceSuspects.lostInFlight(folderId, next.uid, alone, err.message);
    }
    throw err;
  }
}

/**
 * A large message is never held whole: its FETCH literal is streamed into its APPEND
 * literal through a LiteralPipe (about 1 MiB in flight, the source connection paused
 * when the target is slower), hashed on the way. The APPEND is announced with the
 * literal's exact size (from `{n}`, not RFC822.SIZE, which some servers misreport).
 *
 * The digest is journaled between the last byte read and the last byte written (see the
 * top of this file), unless it is needed before the APPEND: when the folder has orphans
 * (copied under an old source UIDVALIDITY, adopted by content instead of copied again) or
 * the message needs a binary literal (needsBinary). Then a first pass reads and hashes it
 * without keeping anything, and the second, streamed pass must yield the same digest
 * (messages are immutable, RFC 3501 §2.3.1.1), or its literal is abandoned before its
 * last byte.
 */
async function readLarge(ctx: CopyContext, hasher: ContentHasher, fetcher: RawFetcher, app: PipelinedAppender, job: CopyJob): Promise<{ messages: SourceMessage[]; unreadable: Unreadable[] }> {
  const uid = job.items[0]!.uid;
  const path = job.work.mapping.sourcePath;
  const folderId = job.work.row.id;
  const key = `${folderId}:${uid}`;
  let meta;
  try {
    meta = await fetcher.fetchMeta(uid);
  } catch (err) {
    if (!isImapRefusal(err)) throw err;
    return { messages: [], unreadable: [{ uid, reason: `source could not deliver it: ${(err as Error).message}` }] };
  }
  if (!meta) return { messages: [], unreadable: [] }; // expunged meanwhile
  const flags = normalizeFlags(meta.flags);
  const dropped = withDropped(meta.flags);

  // The first pass, when the digest is needed up front: hashed straight from the socket.
  let known: { digests: Digest[]; size: number; binary: boolean; head: Buffer } | null = null;
  if (job.work.orphans.size > 0 || (job.work.existing?.size ?? 0) > 0 || needsBinary.has(key)) {
    const hash = hasher.digester(digestAlgorithms(hasher, job.work));
    let size = 0;
    let binary = false;
    const headParts: Buffer[] = [];
    let headBytes = 0;
    let found: boolean;
    try {
      found = await fetcher.fetchStream(uid, () => ({
        write: (piece) => {
          hash.update(piece);
          binary ||= piece.includes(0);
          if (headBytes < HEAD_BYTES) {
            const part = Buffer.from(piece.subarray(0, HEAD_BYTES - headBytes));
            headParts.push(part);
            headBytes += part.length;
          }
          size += piece.length;
        },
        end: () => undefined,
      }));
    } catch (err) {
      if (!isImapRefusal(err)) throw err;
      return { messages: [], unreadable: [{ uid, reason: `source could not deliver it: ${(err as Error).message}` }] };
    }
    if (!found) return { messages: [], unreadable: [] };
    known = { digests: hash.digests(), size, binary, head: Buffer.concat(headParts) };
    if (known.digests.some((d) => job.work.orphans.get(d)?.length || job.work.existing?.get(d)?.length)) {
      // Adopted by journalAndSend without an APPEND: the body is never read.
      const k = known;
      // Should another lane adopt that orphan first, this message must be read again.
      const retry = (async function* (): AsyncGenerator<Buffer> {
        throw Object.assign(new Error(`message ${uid} in ${path}: its orphan was adopted by another message`), { retryable: true });
      })();
      return { messages: [{ uid, digests: k.digests, flags, ...dropped, internalDate: meta.internalDate, body: { size: k.size, chunks: retry }, head: () => k.head }], unreadable: [] };
    }
  }

  // The streamed pass.
  const pipe = new LiteralPipe({ pause: () => fetcher.pauseReading(), resume: () => fetcher.resumeReading(), highWater: SLICE_BYTES });
  const headParts: Buffer[] = [];
  let headBytes = 0;
  let started: ((s: { size: number; literal8: boolean }) => void) | undefined;
  const start = new Promise<{ size: number; literal8: boolean }>((resolve) => (started = resolve));
  const delivered = fetcher.fetchStream(uid, (s) => {
    started!(s);
    return {
      write: (piece) => {
        if (headBytes < HEAD_BYTES) {
          const part = Buffer.from(piece.subarray(0, HEAD_BYTES - headBytes));
          headParts.push(part);
          headBytes += part.length;
        }
        pipe.write(piece);
      },
      end: () => pipe.end(),
    };
  });
  delivered.catch((err: unknown) => pipe.fail(err instanceof Error ? err : new Error(String(err))));
  let info: { size: number; literal8: boolean } | null;
  try {
    // onStart runs before the tagged response, so `start` wins whenever a literal came.
    info = await Promise.race([start, delivered.then(() => null)]);
  } catch (err) {
    if (!isImapRefusal(err)) throw err;
    return { messages: [], unreadable: [{ uid, reason: `source could not deliver it: ${(err as Error).message}` }] };
  }
  if (!info) return { messages: [], unreadable: [] }; // expunged meanwhile
  const { size } = info;
  if (known && known.size !== size) {
    pipe.discard();
    await delivered.catch(() => undefined);
    throw new Error(`message ${uid} in ${path} changed between two reads (${known.size} then ${size} bytes)`);
  }
  const binary = info.literal8 || (known?.binary ?? false);
  // A NUL in a plain literal could only be stored exactly as a literal8: see needsBinary.
  const watchNul = !binary && app.capabilities.has('BINARY');
  const message: SourceMessage = {
    uid,
    digests: known?.digests ?? [],
    flags,
    ...dropped,
    internalDate: meta.internalDate,
    body: { size, binary, chunks: streamed() },
    head: () => (headParts.length === 1 ? headParts[0]! : Buffer.concat(headParts)),
    delivered,
    onSettled: () => pipe.discard(),
  };
  async function* streamed(): AsyncGenerator<Buffer> {
    const hash = hasher.digester();
    let nul = false;
    for await (const chunk of pipe) {
      hash.update(chunk);
      if (watchNul && !nul) nul = chunk.includes(0);
      yield chunk;
    }
    // Every byte is read; the last one is not written yet. The FETCH must have completed
    // (a tagged OK, for the UID asked for) before anything is stored.
    if (!(await delivered)) throw new Error(`message ${uid} in ${path} vanished while it was read`);
    if (nul) {
      needsBinary.add(key);
      throw Object.assign(new Error(`message ${uid} in ${path} contains NUL bytes: it is sent again as binary`), { retryable: true });
    }
    const [digest] = hash.digests();
    if (known) {
      if (digest !== known.digests[0]) throw new Error(`message ${uid} in ${path} changed between two reads`);
    } else {
      await setDigest(ctx.db, folderId, uid, digest!);
      message.digests = [digest!];
    }
  }
  return { messages: [message], unreadable: [] };
}

/**
 * An orphan with this content to adopt, preferring one with the same internal date (to the
 * second): two identical messages filed on different days each keep their own copy.
 * `sameDateOnly`: none other (the first of journalAndSend's two passes).
 */
function takeOrphan(orphans: ReadonlyMap<string, MessageRow[]> | undefined, digests: readonly string[], internalDate: number, adopted?: Set<MessageRow>, sameDateOnly = false): MessageRow | undefined {
  if (!orphans) return undefined;
  for (const d of digests) {
    const list = orphans.get(d);
    if (!list) continue;
    // Those linked through the other map already (loose-orphans.ts) are gone.
    if (adopted) for (let i = list.length - 1; i >= 0; i--) if (adopted.has(list[i]!)) list.splice(i, 1);
    if (list.length === 0) continue;
    // An unknown date (0) is nobody's date: two undated messages are not "the same date".
    const at = internalDate === 0 ? -1 : list.findIndex((o) => o.internal_date !== 0 && Math.floor(o.internal_date / 1000) === Math.floor(internalDate / 1000));
    if (at < 0 && sameDateOnly) continue;
    const row = list.splice(Math.max(0, at), 1)[0]!;
    adopted?.add(row);
    return row;
  }
  return undefined;
}

/** takeOrphan by the message's loose digest, where the source's bytes change (loose-orphans.ts); not for a streamed message. */
function takeLooseOrphan(work: FolderWork, m: SourceMessage, internalDate: number, sameDateOnly = false): MessageRow | undefined {
  const loose = work.looseOrphans;
  if (!loose || loose.byLoose.size === 0 || !Buffer.isBuffer(m.body)) return undefined;
  return takeOrphan(loose.byLoose, [looseDigest(m.body)], internalDate, loose.adopted, sameDateOnly);
}

/**
 * The copy each message of a chunk links to, if any: the journal's own copies first, then
 * copies found on the target (existing-copies.ts). Two passes: copies of the same date
 * first, for every message, then any copy of the content; in one pass the first of three
 * identical messages filed a second apart could take the second's copy, leaving the
 * second a new one and both the wrong date.
 */
function orphansFor(work: FolderWork, messages: readonly SourceMessage[]): Map<SourceMessage, MessageRow> {
  const out = new Map<SourceMessage, MessageRow>();
  const anyWork = work.orphans.size + (work.existing?.size ?? 0) + (work.looseOrphans?.byLoose.size ?? 0) > 0;
  if (!anyWork) return out;
  for (const sameDateOnly of [true, false]) {
    for (const m of messages) {
      if (out.has(m)) continue;
      const date = m.internalDate?.getTime() ?? 0;
      const o = takeOrphan(work.orphans, m.digests, date, work.looseOrphans?.adopted, sameDateOnly) ?? takeLooseOrphan(work, m, date, sameDateOnly) ?? takeOrphan(work.existing, m.digests, date, undefined, sameDateOnly);
      if (o) out.set(m, o);
    }
  }
  return out;
}

const isSystemFlag = (f: string): boolean => f.startsWith('\\');

/** Keywords of the shape every server stores: short, letters, digits and `$_-.` (the
 * `$Forwarded`, `$MDNSent`, `NonJunk`, `$label1` kind). */
function commonKeywords(keywords: readonly string[]): string[] {
  return keywords.filter((k) => k.length <= 32 && /^\$?[A-Za-z0-9_.-]+$/.test(k));
}

/** A refusal that may be about the message's keywords: it has some, is held whole (a
 * streamed body cannot be sent twice), and was not refused for its size. */
function mayBeTheKeywords(p: SourceMessage, r: Refusal): boolean {
  const code = r.code?.toUpperCase();
  return Buffer.isBuffer(p.body) && p.flags.some((f) => !isSystemFlag(f)) && code !== 'LIMIT' && code !== 'TOOBIG';
}

/**
 * The date an APPEND can carry for a message (RFC 3501 §6.3.11: optional), or none, so the
 * target dates the copy itself: when the source sent no readable INTERNALDATE, or one whose
 * year `date-year = 4DIGIT` cannot write (§9). Said in the log, per message.
 */
function appendableDate(ctx: CopyContext, work: FolderWork, m: SourceMessage, warn = true): Date | undefined {
  const year = m.internalDate?.getUTCFullYear();
  if (year !== undefined && year >= 1000 && year <= 9999) return m.internalDate!;
  if (warn) {
    const why = year === undefined ? 'the source sent no readable INTERNALDATE' : `its INTERNALDATE (year ${year}) cannot be written in an APPEND`;
    ctx.log.warn({ folder: work.mapping.sourcePath, uid: m.uid }, `${why}: the copy takes the target's date`);
  }
  return undefined;
}

/** Journals the chunk, writes its APPENDs, and returns a promise for the recorded outcome. */
async function journalAndSend(ctx: CopyContext, app: PipelinedAppender, job: CopyJob, messages: SourceMessage[], unreadable: Unreadable[]): Promise<{ finish: Promise<void> }> {
  const { work } = job;
  const tf = work.target;
  const folderId = work.row.id;
  const pending: NewMessageRow[] = [];
  const prepared: SourceMessage[] = [];
  const adopted: { row: NewMessageRow; orphan: { folderId: number; uid: number } | null }[] = [];
  const dropped: NewMessageRow[] = [];
  const notSent: SourceMessage[] = [];
  const linked = orphansFor(work, messages.sort((a, b) => a.uid - b.uid));
  for (const m of messages) {
    const base = { folder_id: folderId, source_uid: m.uid, size: bodySize(m.body), internal_date: m.internalDate?.getTime() ?? 0, digest: m.digests[0] ?? null, skip_kind: null, reason: null, subject: null };
    let orphan = linked.get(m);
    if (orphan && orphan.source_uid !== TARGET_ORPHAN_UID) {
      const key = `${orphan.folder_id}:${orphan.source_uid}`;
      if (ctx.adoptedRows.has(key)) orphan = undefined;
      else ctx.adoptedRows.add(key);
    }
    if (orphan) {
      // The same content was copied under the folder's old UIDVALIDITY: link, don't copy.
      // (Or it was on the target before: existing-copies.ts; such an orphan has no row.)
      adopted.push({ row: { ...base, state: 'copied', flags: orphan.flags, target_uid: orphan.target_uid, uid_floor: null }, orphan: orphan.source_uid === TARGET_ORPHAN_UID ? null : { folderId: orphan.folder_id, uid: orphan.source_uid } });
      const after = flagsKey(m.flags);
      if (after !== orphan.flags) work.flagChanges.push({ sourceUid: m.uid, targetUid: orphan.target_uid, before: orphan.flags, after });
      continue;
    }
    const verdict = ctx.memory.suspects.verdict(folderId, m.uid);
    if (verdict !== null) {
      // Refused by dropping the connection, again and again (drop-suspects.ts). A streamed
      // message is drained unread, but its head is kept on the way: the Subject is known
      // once the source has delivered it.
      m.onSettled?.();
      if (m.delivered) await m.delivered.catch(() => undefined);
      dropped.push({ ...base, state: 'skipped', flags: '', target_uid: null, uid_floor: null, skip_kind: 'refused', reason: verdict, subject: subjectOf(m.head()) });
      notSent.push(m);
      continue;
    }
    if (m.droppedFlags) ctx.log.warn({ folder: work.mapping.sourcePath, uid: m.uid, keywords: m.droppedFlags }, 'copied without keywords that are not IMAP atoms (RFC 3501 §9): no server can be sent them');
    pending.push({ ...base, state: 'pending', flags: flagsKey(m.flags), target_uid: null, uid_floor: tf.floor });
    prepared.push(m);
  }
  // Not journaled as on their way by a worker that may no longer hold the mailbox.
  if (ctx.mayWrite && !ctx.mayWrite()) throw new WriteFencedError();
  await journalChunk(ctx.db, folderId, {
    pending,
    adopted,
    skipped: [
      ...unreadable.map((u) => ({ folder_id: folderId, source_uid: u.uid, state: 'skipped' as const, size: job.items.find((i) => i.uid === u.uid)?.size ?? 0, internal_date: 0, digest: null, flags: '', target_uid: null, uid_floor: null, skip_kind: 'unreadable' as const, reason: u.reason, subject: null })),
      ...dropped,
    ],
  });
  for (const u of unreadable) ctx.memory.noteSkipped(folderId, u.uid);
  for (const d of dropped) ctx.memory.noteSkipped(folderId, d.source_uid);
  ctx.progress.failed += unreadable.length;
  ctx.progress.skipped += dropped.length;
  if (dropped.length) ctx.log.warn({ folder: work.mapping.sourcePath, uids: dropped.map((d) => d.source_uid) }, 'skipped: the target closed the connection each time these were sent');
  // Adopted messages were on the target already: this run did not copy them (`copied`
  // must stay 0 after a source folder is recreated), so they leave the to-do instead.
  ctx.progress.toCopy -= adopted.length;
  ctx.progress.alreadyOnTarget += adopted.length;
  ctx.progress.toCopyBytes -= adopted.reduce((n, a) => n + a.row.size, 0);

  const isolated = prepared.map((p) => ctx.memory.suspects.isSuspect(folderId, p.uid));
  const sends = prepared.map((p, i) => {
    const sent = app.append({ mailbox: tf.path, flags: p.flags, internalDate: appendableDate(ctx, work, p), raw: p.body }, { isolated: isolated[i]! });
    if (p.onSettled) void sent.then(p.onSettled, p.onSettled);
    return sent;
  });
  const finish = (async () => {
    const settled = await Promise.allSettled(sends);
    // A streamed message's source command must be over before its connection is reused
    // (and before its head, for the Subject of a refusal, is complete).
    for (const p of [...prepared, ...notSent]) if (p.delivered) await p.delivered.catch(() => undefined);
    const copied: { sourceUid: number; targetUid: number | null }[] = [];
    const refused: { uid: number; reason: string; subject: string }[] = [];
    const withoutKeywords: { p: SourceMessage; first: Refusal }[] = [];
    let full: Refusal | null = null;
    let lost: unknown = null;
    let bytes = 0;
    const noteCopied = (p: SourceMessage, r: { uid?: number; uidValidity?: number }, keywordsLeftOut = false): void => {
      if (r.uid !== undefined && r.uidValidity !== undefined && r.uidValidity !== tf.uidValidity) {
        // The target folder was recreated under us; recovery will sort it out.
        lost ??= Object.assign(new Error(`target folder ${tf.path} changed UIDVALIDITY during the run`), { retryable: true });
        return;
      }
      if (r.uid !== undefined) tf.noteAppended(r.uid);
      copied.push({ sourceUid: p.uid, targetUid: r.uid ?? null });
      bytes += bodySize(p.body);
      // Counted once it is copied, so a message refused after all, or sent again by a later attempt, is not counted twice.
      if (keywordsLeftOut || p.droppedFlags) ctx.progress.withoutSomeKeywords++;
    };
    const refuse = (p: SourceMessage, r: Refusal): void => {
      refused.push({ uid: p.uid, reason: `target refused it: ${r.code ? `[${r.code}] ` : ''}${r.text}`, subject: subjectOf(p.head()) });
    };
    settled.forEach((s, i) => {
      const p = prepared[i]!;
      if (s.status === 'rejected') {
        lost ??= s.reason;
        // The target connection was lost with this APPEND (partly) written: maybe over
        // this message.
        if (s.reason instanceof ImapConnectionLostError && s.reason.written) ctx.memory.suspects.lostInFlight(folderId, p.uid, isolated[i]!, s.reason.message);
        return;
      }
      ctx.memory.suspects.answered(folderId, p.uid);
      const r = s.value;
      if (!r.ok) {
        if (isOverQuota(r)) {
          // Recorded as refused, so the next run sends it again (target-full.ts).
          full ??= r;
          refuse(p, r);
        } else if (mayBeTheKeywords(p, r)) withoutKeywords.push({ p, first: r });
        else refuse(p, r);
        return;
      }
      noteCopied(p, r);
    });
    // A server's limits on keywords (Dovecot: 50 characters; Cyrus: about 100 per folder;
    // Courier: stricter characters) refuse the whole APPEND, with words that seldom say
    // so. A message is worth more than its keywords: it is sent again with only the
    // keywords every server takes (commonKeywords), then, if need be, with none; what is
    // left behind is logged.
    await Promise.all(
      withoutKeywords.map(async ({ p, first }) => {
        const keywords = p.flags.filter((f) => !isSystemFlag(f));
        const common = commonKeywords(keywords);
        for (const kept of common.length && common.length < keywords.length ? [common, []] : [[]]) {
          const again = await app.append({ mailbox: tf.path, flags: [...p.flags.filter(isSystemFlag), ...kept], internalDate: appendableDate(ctx, work, p, false), raw: p.body }).catch((err: unknown) => {
            lost ??= err;
            return null;
          });
          if (again === null) return;
          if (!again.ok) continue;
          const dropped = keywords.filter((k) => !kept.includes(k));
          ctx.log.warn({ folder: work.mapping.sourcePath, uid: p.uid, keywords: dropped, refused: `${first.code ? `[${first.code}] ` : ''}${first.text}` }, 'the target refused the message with these keywords: copied without them');
          return noteCopied(p, again, true);
        }
        refuse(p, first);
      }),
    );
    await recordChunkOutcome(ctx.db, folderId, copied, refused.map((r) => ({ ...r, kind: 'refused' as const })));
    for (const r of refused) ctx.memory.noteSkipped(folderId, r.uid);
    ctx.progress.copied += copied.length;
    ctx.progress.copiedBytes += bytes;
    ctx.progress.skipped += refused.length;
    ctx.emit();
    if (full) throw new TargetFullError(loginDisplayName(ctx.target.login), work.mapping.sourcePath, full);
    if (lost) throw lost;
  })();
  // Wrapped: awaiting a bare promise-of-promise would wait for the appends too.
  return { finish };
}

/**
 * One lane: a RawFetcher (chunks, and large messages streamed) and a pipelined appender.
 * Each source connection keeps its own selected folder.
 */
async function runLane(ctx: CopyContext, queue: JobQueue, state: LanesState, pool: SlabPool): Promise<void> {
  const hasher = await contentHasher(ctx.db);
  let opened: { fetcher: RawFetcher; app: PipelinedAppender };
  try {
    opened = await openLane(ctx);
  } catch (err) {
    state.connecting--;
    // Servers limit sessions per user (Dovecot's mail_max_userip_connections, Gmail's 15,
    // hosters' 4 or 5) and answer one too many like a refused login: while another lane
    // is up or may still come up, this is one lane fewer, not the run's failure.
    if (state.up > 0 || state.connecting > 0) {
      ctx.log.warn({ err: (err as Error)?.message }, 'a copy lane could not connect; copying on fewer connections');
      return;
    }
    // The last lane, with none up. The mailbox's own session logged in with the same
    // credentials, so a source allowing two sessions per user is the likely cause while the
    // scan's connection is open: try once more when it is closed. If that fails too, the
    // error says why (a wrong target password, an unreachable server, the server's [LIMIT]).
    if (!ctx.sourceFreed) throw err;
    ctx.log.warn({ err: (err as Error)?.message }, 'no copy lane could connect while the scan is reading the source; trying again when it is done');
    state.connecting++;
    await ctx.sourceFreed;
    try {
      opened = await openLane(ctx);
    } catch (again) {
      state.connecting--;
      throw again;
    }
  }
  state.connecting--;
  state.up++;
  return copyOnLane(ctx, queue, state, pool, hasher, opened.fetcher, opened.app);
}

/** A lane's two connections, or neither. */
async function openLane(ctx: CopyContext): Promise<{ fetcher: RawFetcher; app: PipelinedAppender }> {
  const fetcher = await RawFetcher.connect({ endpoint: ctx.source.endpoint, login: ctx.source.login, idleTimeoutMs: ctx.stallMs, maxMessageBytes: MAX_CHUNK_MESSAGE_BYTES });
  try {
    // MAILFERRY_MULTIAPPEND=off sends one APPEND per message even to servers that offer
    // MULTIAPPEND: a way around a server that mishandles it, and the benchmark's baseline.
    const multiAppend = process.env.MAILFERRY_MULTIAPPEND !== 'off';
    const app = await PipelinedAppender.connect({ endpoint: ctx.target.endpoint, login: ctx.target.login, idleTimeoutMs: ctx.stallMs, multiAppend, ...(ctx.mayWrite ? { mayWrite: ctx.mayWrite } : {}) });
    return { fetcher, app };
  } catch (err) {
    await fetcher.close().catch(() => undefined);
    throw err;
  }
}

/** What the lanes of one run know of each other. */
interface LanesState {
  failure: unknown;
  /** Lanes still logging in, and lanes copying. */
  connecting: number;
  up: number;
}

async function copyOnLane(ctx: CopyContext, queue: JobQueue, state: LanesState, pool: SlabPool, hasher: ContentHasher, fetcher: RawFetcher, app: PipelinedAppender): Promise<void> {
  const completions: Promise<void>[] = [];
  try {
    let fetcherFolder: string | null = null;
    const checkValidity = (job: CopyJob, uidValidity: number) => {
      if (uidValidity !== job.work.snapshot?.uidValidity) throw Object.assign(new Error(`source folder ${job.work.mapping.sourcePath} changed UIDVALIDITY during the run`), { retryable: true });
    };
    for (;;) {
      const next = await queue.take(fetcherFolder, () => !!state.failure || !!ctx.signal?.aborted);
      if (!next) break;
      if ('idle' in next) {
        // It selects folders of its own on this connection.
        fetcherFolder = null;
        await next.idle(fetcher);
        continue;
      }
      const job = next;
      await ctx.budget.acquire(job.bytes);
      let handedOff = false;
      const streamed = job.items.length === 1 && job.items[0]!.size > STREAM_THRESHOLD;
      const slab = streamed ? null : pool.take(job.bytes);
      try {
        const path = job.work.mapping.sourcePath;
        const t0 = performance.now();
        if (fetcherFolder !== path) {
          fetcherFolder = null;
          checkValidity(job, (await fetcher.examine(path)).uidValidity);
          fetcherFolder = path;
        }
        const read = slab ? await readChunk(ctx, hasher, fetcher, job, slab) : await readLarge(ctx, hasher, fetcher, app, job);
        const t1 = performance.now();
        const { finish } = await journalAndSend(ctx, app, job, read.messages, read.unreadable);
        ctx.log.debug({ folder: path, messages: job.items.length, bytes: job.bytes, fetchMs: Math.round(t1 - t0), journalMs: Math.round(performance.now() - t1) }, 'chunk sent');
        const completion = finish.finally(() => {
          slab?.release();
          ctx.budget.release(job.bytes);
          // Message bytes now live in reused slabs and pipe blocks, but each chunk's
          // objects (promises, parsed lines, rows) outlive young-generation collections and
          // pile up in the old generation until V8 gets to a full collection: see reclaim.ts.
          ctx.reclaimer.released(job.items.reduce((n, i) => n + i.size, 0), job.items.length);
        });
        // Awaited below (which still throws), but it may reject while this lane awaits a
        // fetch: without a handler attached now, Node would treat that as an unhandled
        // rejection and kill the process on a dropped target connection.
        completion.catch(() => undefined);
        completions.push(completion);
        handedOff = true;
        // Fetch the next chunk while this one is being appended, but no further ahead.
        while (completions.length > 1) await completions.shift();
      } finally {
        queue.done(job);
        if (!handedOff) {
          // Nothing of this job reached the appender: no socket can read the slab.
          slab?.release();
          ctx.budget.release(job.bytes);
        }
      }
    }
    while (completions.length) await completions.shift();
  } catch (err) {
    state.failure ??= err;
    await Promise.allSettled(completions);
    throw err;
  } finally {
    await app.close().catch(() => undefined);
    await fetcher.close().catch(() => undefined);
  }
}

/**
 * Runs `lanes` lanes over the queue until it is closed and drained; the first lane error
 * stops the others and is thrown. `wake` is called when a lane fails, so the producer
 * filling the queue can stop early.
 */
export async function runCopyLanes(ctx: CopyContext, queue: JobQueue, lanes: number, onFailure: () => void = () => undefined): Promise<void> {
  const state: LanesState = { failure: null, connecting: Math.max(1, lanes), up: 0 };
  // As many reusable slabs as the byte budget holds full chunks; with more lanes than
  // that, the extra chunks get one-off buffers of their own size (see SlabPool.take).
  const pool = new SlabPool(SLAB_BYTES, Math.max(1, Math.ceil(ctx.budget.capacity / SLAB_BYTES)));
  const results = await Promise.allSettled(
    Array.from({ length: Math.max(1, lanes) }, () =>
      runLane(ctx, queue, state, pool).catch((err: unknown) => {
        state.failure ??= err;
        onFailure();
        queue.close();
        throw err;
      }),
    ),
  );
  const failed = results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
  if (failed) throw state.failure ?? failed.reason;
}
