/**
 * Copies messages with several lanes in parallel. A lane is one source session (imapflow:
 * one UID FETCH per chunk of messages, streamed by the server) and one target connection
 * with pipelined APPENDs (imap/append-pipeline.ts), so neither side waits for a round trip
 * per message. Every message is journaled as `pending` (with its digest and the target
 * UID floor) before its APPEND is written, and marked `copied` from the APPENDUID answer:
 * a crash anywhere leaves a journal that recovery.ts can resolve exactly.
 *
 * Memory is bounded by a shared byte budget over all lanes (fetched but not yet
 * acknowledged bytes), not by a message count, so large messages cannot pile up.
 */
import { createHash } from 'node:crypto';
import type { FetchMessageObject, ImapFlow } from 'imapflow';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import { PipelinedAppender, type StreamedBody } from '../imap/append-pipeline.js';
import { type FetchedMessage, RawFetcher } from '../imap/raw-fetch.js';
import { openSession, withWatchdog } from '../imap/imapflow-session.js';
import { insertMessages, markCopied, markSkipped } from '../store/journal.js';
import type { Database, NewMessageRow } from '../store/schema.js';
import type { ByteBudget } from './byte-budget.js';
import type { MemoryReclaimer } from './reclaim.js';
import { flagsKey, normalizeFlags } from './flags.js';
import type { FolderWork, MessageMeta } from './folder-work.js';
import { subjectOf } from './message-headers.js';
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
  source: MailboxSide;
  target: MailboxSide;
  budget: ByteBudget;
  progress: SyncProgress;
  emit: () => void;
  log: Logger;
  stallMs: number;
  signal?: AbortSignal;
  reclaimer: MemoryReclaimer;
}

/** Splits each folder's messages into fetch chunks of at most `chunkBytes` / `chunkCount`. */
export function planJobs(works: readonly FolderWork[], chunkBytes: number, chunkCount = 250): CopyJob[] {
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

  async take(prefer: string | null, stop: () => boolean): Promise<CopyJob | undefined> {
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
      if (this.closed) return undefined;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  done(job: CopyJob): void {
    const path = job.work.mapping.sourcePath;
    this.busy.set(path, (this.busy.get(path) ?? 1) - 1);
  }
}

function isImapNo(err: unknown): boolean {
  const e = err as { responseStatus?: string } | null;
  return !!e && (e.responseStatus === 'NO' || e.responseStatus === 'BAD');
}

/** Bodies larger than this are streamed in slices instead of held whole (see readLarge). */
export const STREAM_THRESHOLD = 2 * 1024 * 1024;
const SLICE_BYTES = 1024 * 1024;
const HEAD_BYTES = 64 * 1024;
/**
 * A chunk message is read whole; its size was announced small by RFC822.SIZE, but a server
 * may misreport. Above this it is listed as unreadable rather than held in memory.
 */
const MAX_CHUNK_MESSAGE_BYTES = 64 * 1024 * 1024;

/** A source message ready to be journaled and appended. */
interface SourceMessage {
  uid: number;
  sha256: string;
  flags: string[];
  internalDate: Date;
  body: Buffer | StreamedBody;
  /** The start of the message, for naming it (Subject) if the target refuses it. */
  head: Buffer;
}

function bodySize(body: Buffer | StreamedBody): number {
  return Buffer.isBuffer(body) ? body.length : body.size;
}

type Unreadable = { uid: number; reason: string };

function fromFetched(m: FetchedMessage): SourceMessage {
  return {
    uid: m.uid,
    sha256: createHash('sha256').update(m.raw).digest('hex'),
    flags: normalizeFlags(m.flags),
    internalDate: m.internalDate,
    body: m.raw,
    head: m.raw.subarray(0, HEAD_BYTES),
  };
}

/**
 * Fetches a chunk with the lane's RawFetcher (src/imap/raw-fetch.ts: ~5× less CPU per
 * message than imapflow's generic parser, which matters on a machine shared with the IMAP
 * servers). A message the source cannot deliver (tagged NO) is isolated and reported.
 */
async function fetchChunk(fetcher: RawFetcher, job: CopyJob): Promise<{ messages: SourceMessage[]; unreadable: Unreadable[] }> {
  const uids = job.items.map((i) => i.uid);
  try {
    const r = await fetcher.fetch(uidSet(uids));
    return { messages: r.messages.map(fromFetched), unreadable: r.unreadable };
  } catch (err) {
    if (!isImapNo(err)) throw err;
  }
  const messages: SourceMessage[] = [];
  const unreadable: Unreadable[] = [];
  for (const uid of uids) {
    try {
      const r = await fetcher.fetch(String(uid));
      messages.push(...r.messages.map(fromFetched));
      unreadable.push(...r.unreadable);
    } catch (err) {
      if (!isImapNo(err)) throw err;
      unreadable.push({ uid, reason: `source could not deliver it: ${(err as Error).message}` });
    }
  }
  return { messages, unreadable };
}

/**
 * A large message is never held whole: it is read twice in 1 MB slices (partial FETCH,
 * RFC 3501 §6.4.5 `BODY.PEEK[]<offset.length>`), once to hash it for the journal (the
 * digest must be recorded before the APPEND starts, so a crash mid-way can be resolved),
 * and once streamed into the APPEND literal. Messages are immutable (RFC 3501 §2.3.1.1),
 * so both reads yield the same bytes; the second read is hashed again to make sure.
 */
async function readLarge(src: ImapFlow, job: CopyJob, stallMs: number): Promise<{ messages: SourceMessage[]; unreadable: Unreadable[] }> {
  const uid = job.items[0]!.uid;
  const path = job.work.mapping.sourcePath;
  let meta: FetchMessageObject | undefined;
  try {
    meta = (await withWatchdog(src, stallMs, `reading message ${uid} in ${path}`, () => src.fetchAll(String(uid), { uid: true, flags: true, internalDate: true, size: true }, { uid: true })))[0];
  } catch (err) {
    if (!isImapNo(err)) throw err;
    return { messages: [], unreadable: [{ uid, reason: `source could not deliver it: ${(err as Error).message}` }] };
  }
  if (!meta) return { messages: [], unreadable: [] }; // expunged meanwhile
  const slice = async (start: number): Promise<Buffer> => {
    const got = await withWatchdog(src, stallMs, `reading message ${uid} in ${path}`, () => src.fetchAll(String(uid), { uid: true, source: { start, maxLength: SLICE_BYTES } }, { uid: true }));
    if (!got[0]) throw Object.assign(new Error(`source returned nothing for message ${uid} in ${path} at offset ${start}`), { retryable: true });
    // Past the end a server answers with an empty string, which imapflow may leave unset.
    return got[0].source ?? Buffer.alloc(0);
  };
  // The real length is counted, not taken from RFC822.SIZE: some servers (Exchange among
  // them) report a size that differs from the bytes they deliver, and the APPEND literal
  // must announce exactly what will be sent (RFC 3501 §4.3). A short slice is the end.
  const hash = createHash('sha256');
  let head = Buffer.alloc(0);
  let size = 0;
  let binary = false;
  for (;;) {
    const buf = await slice(size);
    if (size === 0) head = Buffer.from(buf.subarray(0, HEAD_BYTES));
    hash.update(buf);
    binary ||= buf.includes(0);
    size += buf.length;
    if (buf.length < SLICE_BYTES) break;
  }
  const sha256 = hash.digest('hex');
  async function* chunks(): AsyncGenerator<Buffer> {
    const again = createHash('sha256');
    for (let offset = 0; offset < size; ) {
      const buf = await slice(offset);
      again.update(buf);
      offset += buf.length;
      if (buf.length === 0) break;
      yield buf;
    }
    // Thrown before the appender writes the last chunk, so a changed message is never stored.
    if (again.digest('hex') !== sha256) throw new Error(`message ${uid} in ${path} changed between two reads`);
  }
  return {
    messages: [{ uid, sha256, flags: normalizeFlags(meta.flags), internalDate: meta.internalDate ? new Date(meta.internalDate) : new Date(), body: { size, chunks: chunks(), binary }, head }],
    unreadable: [],
  };
}

/** Journals the chunk, writes its APPENDs, and returns a promise for the recorded outcome. */
async function journalAndSend(ctx: CopyContext, app: PipelinedAppender, job: CopyJob, messages: SourceMessage[], unreadable: Unreadable[]): Promise<{ finish: Promise<void> }> {
  const { work } = job;
  const tf = work.target;
  const folderId = work.row.id;
  const pending: NewMessageRow[] = [];
  const prepared: SourceMessage[] = [];
  const adopted: { row: NewMessageRow; orphanUid: number }[] = [];
  for (const m of messages.sort((a, b) => a.uid - b.uid)) {
    const base = { folder_id: folderId, source_uid: m.uid, size: bodySize(m.body), internal_date: m.internalDate.getTime(), sha256: m.sha256, skip_kind: null, reason: null, subject: null };
    const orphan = work.orphans.get(m.sha256)?.shift();
    if (orphan) {
      // The same content was copied under the folder's old UIDVALIDITY: link, don't copy.
      adopted.push({ row: { ...base, state: 'copied', flags: orphan.flags, target_uid: orphan.target_uid, uid_floor: null }, orphanUid: orphan.source_uid });
      const after = flagsKey(m.flags);
      if (after !== orphan.flags) work.flagChanges.push({ sourceUid: m.uid, targetUid: orphan.target_uid, before: orphan.flags, after });
      continue;
    }
    pending.push({ ...base, state: 'pending', flags: flagsKey(m.flags), target_uid: null, uid_floor: tf.floor });
    prepared.push(m);
  }
  await ctx.db.transaction().execute(async (trx) => {
    await insertMessages(trx, pending);
    for (const a of adopted) {
      await trx.deleteFrom('message').where('folder_id', '=', folderId).where('source_uid', '=', a.orphanUid).execute();
    }
    await insertMessages(
      trx,
      [...adopted.map((a) => a.row), ...unreadable.map((u) => ({ folder_id: folderId, source_uid: u.uid, state: 'skipped' as const, size: job.items.find((i) => i.uid === u.uid)?.size ?? 0, internal_date: 0, sha256: null, flags: '', target_uid: null, uid_floor: null, skip_kind: 'unreadable' as const, reason: u.reason, subject: null }))],
    );
  });
  ctx.progress.failed += unreadable.length;
  // Adopted messages were on the target already: this run did not copy them (`copied`
  // must stay 0 after a source folder is recreated), so they leave the to-do instead.
  ctx.progress.toCopy -= adopted.length;
  ctx.progress.toCopyBytes -= adopted.reduce((n, a) => n + a.row.size, 0);

  const sends = prepared.map((p) => app.append({ mailbox: tf.path, flags: p.flags, internalDate: p.internalDate, raw: p.body }));
  const finish = (async () => {
    const settled = await Promise.allSettled(sends);
    const copied: { sourceUid: number; targetUid: number | null }[] = [];
    const refused: { uid: number; reason: string; subject: string }[] = [];
    let lost: unknown = null;
    let bytes = 0;
    settled.forEach((s, i) => {
      const p = prepared[i]!;
      if (s.status === 'rejected') {
        lost ??= s.reason;
        return;
      }
      const r = s.value;
      if (!r.ok) {
        refused.push({ uid: p.uid, reason: `target refused it: ${r.code ? `[${r.code}] ` : ''}${r.text}`, subject: subjectOf(p.head) });
        return;
      }
      if (r.uid !== undefined && r.uidValidity !== undefined && r.uidValidity !== tf.uidValidity) {
        // The target folder was recreated under us; recovery will sort it out.
        lost ??= Object.assign(new Error(`target folder ${tf.path} changed UIDVALIDITY during the run`), { retryable: true });
        return;
      }
      if (r.uid !== undefined) tf.noteAppended(r.uid);
      copied.push({ sourceUid: p.uid, targetUid: r.uid ?? null });
      bytes += bodySize(p.body);
    });
    await ctx.db.transaction().execute(async (trx) => {
      await markCopied(trx, folderId, copied);
      for (const r of refused) await markSkipped(trx, folderId, r.uid, 'refused', r.reason, r.subject);
    });
    ctx.progress.copied += copied.length;
    ctx.progress.copiedBytes += bytes;
    ctx.progress.skipped += refused.length;
    ctx.emit();
    if (lost) throw lost;
  })();
  // Wrapped: awaiting a bare promise-of-promise would wait for the appends too.
  return { finish };
}

/**
 * One lane: a RawFetcher for chunks, a pipelined appender, and (opened only when a large
 * message comes along) an imapflow session for partial fetches. Each source connection
 * keeps its own selected folder.
 */
async function runLane(ctx: CopyContext, queue: JobQueue, state: { failure: unknown }): Promise<void> {
  const fetcher = await RawFetcher.connect({ endpoint: ctx.source.endpoint, login: ctx.source.login, idleTimeoutMs: ctx.stallMs, maxMessageBytes: MAX_CHUNK_MESSAGE_BYTES });
  let slicer: ImapFlow | undefined;
  let app: PipelinedAppender | undefined;
  const completions: Promise<void>[] = [];
  try {
    app = await PipelinedAppender.connect({ endpoint: ctx.target.endpoint, login: ctx.target.login, idleTimeoutMs: ctx.stallMs });
    let fetcherFolder: string | null = null;
    let slicerFolder: string | null = null;
    const checkValidity = (job: CopyJob, uidValidity: number) => {
      if (uidValidity !== job.work.snapshot?.uidValidity) throw Object.assign(new Error(`source folder ${job.work.mapping.sourcePath} changed UIDVALIDITY during the run`), { retryable: true });
    };
    for (;;) {
      const job = await queue.take(fetcherFolder, () => !!state.failure || !!ctx.signal?.aborted);
      if (!job) break;
      await ctx.budget.acquire(job.bytes);
      let handedOff = false;
      try {
        const path = job.work.mapping.sourcePath;
        const t0 = performance.now();
        const streamed = job.items.length === 1 && job.items[0]!.size > STREAM_THRESHOLD;
        let read: { messages: SourceMessage[]; unreadable: Unreadable[] };
        if (streamed) {
          slicer ??= await openSession({ endpoint: ctx.source.endpoint, login: ctx.source.login, logger: ctx.log, stallMs: ctx.stallMs });
          if (slicerFolder !== path) {
            // A streamed message still reads its slices through this session (by UID, in
            // the selected folder): let those finish before selecting another folder.
            while (completions.length) await completions.shift();
            slicerFolder = null;
            const mb = await withWatchdog(slicer, ctx.stallMs, `opening ${path}`, () => slicer!.mailboxOpen(path, { readOnly: true }));
            checkValidity(job, Number(mb.uidValidity));
            slicerFolder = path;
          }
          read = await readLarge(slicer, job, ctx.stallMs);
        } else {
          if (fetcherFolder !== path) {
            fetcherFolder = null;
            checkValidity(job, (await fetcher.examine(path)).uidValidity);
            fetcherFolder = path;
          }
          read = await fetchChunk(fetcher, job);
        }
        const t1 = performance.now();
        const { finish } = await journalAndSend(ctx, app, job, read.messages, read.unreadable);
        ctx.log.debug({ folder: path, messages: job.items.length, bytes: job.bytes, fetchMs: Math.round(t1 - t0), journalMs: Math.round(performance.now() - t1) }, 'chunk sent');
        const completion = finish.finally(() => {
          ctx.budget.release(job.bytes);
          // A streamed message holds little at once but churns its whole size in slices.
          ctx.reclaimer.released(job.items.reduce((n, i) => n + i.size, 0));
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
        if (!handedOff) ctx.budget.release(job.bytes);
      }
    }
    while (completions.length) await completions.shift();
  } catch (err) {
    state.failure ??= err;
    await Promise.allSettled(completions);
    throw err;
  } finally {
    await app?.close().catch(() => undefined);
    await fetcher.close().catch(() => undefined);
    if (slicer) await slicer.logout().catch(() => slicer!.close());
  }
}

/**
 * Runs `lanes` lanes over the queue until it is closed and drained; the first lane error
 * stops the others and is thrown. `wake` is called when a lane fails, so the producer
 * filling the queue can stop early.
 */
export async function runCopyLanes(ctx: CopyContext, queue: JobQueue, lanes: number, onFailure: () => void = () => undefined): Promise<void> {
  const state: { failure: unknown } = { failure: null };
  const results = await Promise.allSettled(
    Array.from({ length: Math.max(1, lanes) }, () =>
      runLane(ctx, queue, state).catch((err: unknown) => {
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
