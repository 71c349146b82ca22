/**
 * Pipelined APPEND to the target server.
 *
 * Why hand-written: imapflow allows one command in flight and waits for the `+`
 * continuation on every literal over 4 KB, so each APPEND costs two round trips (about
 * 25 msgs/s at 20 ms RTT). No maintained npm IMAP library pipelines APPEND with LITERAL+,
 * so this module writes APPEND commands back to back on a {@link RawConnection}:
 *
 * - With LITERAL+ (RFC 7888 §3) every message goes as a non-synchronising literal
 *   `{n+}`: command line and bytes are written without waiting, and many commands are in
 *   flight at once, bounded by bytes and by count. Tagged responses are matched by tag.
 * - With LITERAL- only (RFC 7888 §4) that is allowed for literals up to 4096 bytes; larger
 *   ones use a synchronising literal.
 * - Without either, each command sends `{n}`, waits for `+`, then writes the bytes; the
 *   next command follows right after (the tagged responses are still pipelined).
 *
 * MULTIAPPEND (RFC 3502): with it and LITERAL+, consecutive queued messages for the same
 * mailbox go as one command, `APPEND mbox (flags) date {n+}… (flags) date {n+}…` (up to
 * {@link MAX_BATCH_MESSAGES} and {@link MAX_BATCH_BYTES}; streamed and isolated requests
 * always go alone). Why: a server stores each APPEND command in a transaction of its own,
 * and committing it (index, UID list, fsync on a real server) is most of its cost per
 * message: in the lab, Dovecot (sdbox on tmpfs) took 2.5–3× less CPU for 5,000 messages
 * of 36 KB sent in batches of 10 than one per command, and the benchmark's target half as
 * much during a whole migration. Callers still append one message at a time: `append()`
 * queues, and the queue is drained at the end of the event loop's turn, so the messages a
 * caller appends meanwhile are grouped, as are those queued while the window was full. A
 * batch is atomic (RFC 3502 §6.3.11: all stored or none), so a refused batch is sent again
 * one message per command, which tells which message the server refuses and stores the
 * others; a server that answers a batch with BAD is not sent batches again.
 *
 * Results: a tagged OK resolves `{ok: true}` with the APPENDUID (RFC 4315 §3) when the
 * server offers it; a tagged NO/BAD resolves `{ok: false}` (that one message was refused,
 * e.g. [OVERQUOTA], [TOOBIG], [TRYCREATE]; the session goes on). If the connection drops,
 * every request without a tagged response rejects with {@link ImapConnectionLostError}:
 * its `uncertain` is true when the command had (partly) been written, so the message may
 * or may not be stored; false when it was never written.
 *
 * Streamed messages: `raw` may be a {@link StreamedBody} instead of a Buffer, so a large
 * message never has to be held whole (peak RSS must stay bounded whatever the message
 * sizes). Its literal is announced with the given size and its chunks are written as the
 * iterator yields them, with socket backpressure. Because nothing else can be written
 * while a literal is open (RFC 3501 §4.3: the literal's octets follow the announcement
 * with nothing in between), the window treats a stream specially (see `pump`): at most one
 * streamed request per connection is in flight, nothing is admitted behind it until its
 * last byte is written, and its bytes do not count in `maxInFlightBytes`, since the
 * appender holds at most two of its chunks, never its size. Buffer appends pipeline before
 * and after it. If the source fails, the request rejects with {@link LiteralStreamError}
 * (`uncertain` false: the literal was never completed, so nothing was stored); see
 * raw-connection.ts for when that costs the connection.
 */


import type { ImapEndpoint, ImapLogin } from './endpoint.js';
import {
  type CommandPart,
  ImapConnectionLostError,
  LITERAL_MINUS_MAX,
  LiteralStreamError,
  RawConnection,
  type TaggedResponse,
} from './raw-connection.js';
import { isOverQuota } from './refusal.js';

export { LiteralStreamError, type LiteralStreamFailure } from './raw-connection.js';

/**
 * A message whose bytes arrive in pieces (e.g. partial FETCHes of the source,
 * `BODY.PEEK[]<offset.length>`, RFC 3501 §6.4.5), written into the APPEND literal as they
 * come. The iterator is started only when the command's turn comes, and is iterated once.
 * - `chunks` must yield exactly `size` bytes in total (empty chunks are skipped). Fewer,
 *   more, a non-Uint8Array chunk, an iterator that throws, or one that yields nothing for
 *   `idleTimeoutMs`: the request rejects with {@link LiteralStreamError}.
 * - A chunk must not be modified or reused after it was yielded: the socket may still be
 *   writing it while the next one is requested (one chunk of read-ahead).
 * - The last chunk is written only after the iterator has ended, so a check the source
 *   makes after its last chunk (a digest) can still stop the message from being stored.
 * - If the request is rejected before its literal starts (invalid, over APPENDLIMIT,
 *   connection lost first, or refused by the server before `+` without LITERAL+) the
 *   iterator is not started or gets `return()`: a lazy generator fetches nothing.
 */
export interface StreamedBody {
  /** Total bytes; announced up front as the literal's length. */
  size: number;
  chunks: AsyncIterable<Uint8Array>;
  /**
   * Set when the message contains NUL bytes (or may): the appender cannot scan a stream
   * ahead of time the way it scans a Buffer. With BINARY (RFC 3516 §4.4) it then goes as a
   * literal8 `~{n}`; without BINARY, or when unset, as a normal literal, exactly like a
   * Buffer without NUL bytes (the server decides what to do with a NUL).
   */
  binary?: boolean;
}

export interface AppendRequest {
  /** Full mailbox name in UTF-8, already using the server's hierarchy separator. */
  mailbox: string;
  /** System flags (`\Seen`, …) and keywords (`$Forwarded`, …). `\Recent` is dropped. */
  flags: string[];
  /** The internal (arrival) date; the server uses "now" when absent. */
  internalDate?: Date;
  /** The message, byte for byte: whole, or streamed (see {@link StreamedBody}). */
  raw: Buffer | StreamedBody;
}

export type AppendResult =
  | { ok: true; uidValidity?: number; uid?: number }
  | { ok: false; status: 'NO' | 'BAD'; code?: string; text: string };

export interface AppenderOptions {
  endpoint: ImapEndpoint;
  login: ImapLogin;
  /** Bytes of message data in flight (written or being written, not yet answered).
   * Default 16 MiB. A single larger message is still sent, alone. */
  maxInFlightBytes?: number;
  /** Messages in flight (one per APPEND command, several per MULTIAPPEND). Default 64. */
  maxInFlightCommands?: number;
  /** Group consecutive messages for one mailbox into MULTIAPPEND commands (RFC 3502) when
   * the server offers MULTIAPPEND and LITERAL+. Default true; false sends one APPEND per
   * message (the benchmark's single-APPEND limit). */
  multiAppend?: boolean;
  /** Drop the connection when the server is silent this long with commands outstanding.
   * Also the longest a {@link StreamedBody} may take to yield its next chunk: longer is a
   * stalled source ({@link LiteralStreamError} `source-stalled`). Default 60 s. */
  idleTimeoutMs?: number;
  /** TCP connect + TLS + greeting limit. Default 30 s. */
  connectTimeoutMs?: number;
  /** The write fence of raw-connection.ts (a worker's lease on the mailbox). */
  mayWrite?: () => boolean;
}

/** The request itself is unusable (bad flag, mailbox name or date); nothing was sent. */
export class InvalidAppendRequestError extends TypeError {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidAppendRequestError';
  }
}

const DEFAULT_MAX_IN_FLIGHT_BYTES = 16 * 1024 * 1024;
const DEFAULT_MAX_IN_FLIGHT_COMMANDS = 64;
/**
 * Messages per MULTIAPPEND command at most. The server's saving per message levels off
 * after a few (Dovecot: batches of 10 cost ~1.15× batches of 50), while a refused batch
 * is sent again message by message, and its answer (so the caller's progress) waits for
 * its last message: a few dozen is the balance.
 */
export const MAX_BATCH_MESSAGES = 32;
/**
 * Message bytes per MULTIAPPEND command at most (a larger message still goes, alone). The
 * saving is per message, so large messages gain little from sharing a command, and a
 * server may bound a command's total size.
 */
export const MAX_BATCH_BYTES = 4 * 1024 * 1024;
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** One message's APPEND, split so that several can share a MULTIAPPEND command. */
interface Job {
  /** The quoted mailbox name; only jobs for the same one can share a command. */
  mailbox: string;
  /** `append-opts SP` of RFC 3502: ` (flags) "date" `, or ` ` when neither is set. */
  opts: string;
  /** The message's literal; dropped (null) once the job is settled. */
  literal: CommandPart | null;
  /** Bytes this job counts in the byte window: the message size, 0 for a stream. */
  windowBytes: number;
  stream: boolean;
  /** Only ever sent in a command of its own (it was in a batch the server refused). */
  alone: boolean;
  /** Sent with nothing else in flight, and nothing after it until it is answered. */
  isolated: boolean;
  resolve: (r: AppendResult) => void;
  reject: (e: Error) => void;
}

export class PipelinedAppender {
  /** Upper-case capabilities of the authenticated session. */
  get capabilities(): ReadonlySet<string> {
    return this.conn.capabilities;
  }

  /**
   * Whether APPENDs go out without waiting for `+`: true with LITERAL+, and with LITERAL-
   * (then only for messages of at most 4096 bytes; larger ones wait for `+`).
   */
  readonly pipelined: boolean;

  private readonly maxBytes: number;
  private readonly maxCommands: number;
  /** MULTIAPPEND batches are sent (see the module comment); off after a batch got BAD. */
  private multiAppend: boolean;
  /** A pump is scheduled (see `append`). */
  private pumpScheduled = false;
  /** An isolated request is in flight: nothing else is admitted until it is answered. */
  private isolatedInFlight = false;
  /** An answer arrived in this turn of the event loop (see `finish`). */
  private answeredThisTurn = false;
  /** RFC 7889 APPENDLIMIT=n, when the server announces a global limit. */
  private readonly appendLimit: number | undefined;
  private readonly queue: Job[] = [];
  /** Of the queue: message bytes, and streams or isolated requests (nothing queues behind those). */
  private queuedBytes = 0;
  private queuedBlockers = 0;
  private inFlight = 0;
  private inFlightBytes = 0;
  /** A streamed request is in flight (admitted, no tagged response yet). */
  private streamInFlight = false;
  /** …and its literal is still being written: nothing else may be admitted. */
  private streamWriting = false;
  private closing = false;
  private lost: Error | null = null;
  private closePromise: Promise<void> | null = null;
  private readonly idleWaiters: Array<() => void> = [];
  private readonly readyWaiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  private readonly mailboxCache = new Map<string, string>();

  private constructor(
    private readonly conn: RawConnection,
    opts: AppenderOptions,
  ) {
    this.maxBytes = positive(opts.maxInFlightBytes, DEFAULT_MAX_IN_FLIGHT_BYTES, 'maxInFlightBytes');
    this.maxCommands = positive(opts.maxInFlightCommands, DEFAULT_MAX_IN_FLIGHT_COMMANDS, 'maxInFlightCommands');
    const caps = conn.capabilities;
    this.pipelined = caps.has('LITERAL+') || caps.has('LITERAL-');
    // Only with LITERAL+: with synchronising literals each message of a batch would wait
    // for its `+` anyway, and LITERAL- allows non-synchronising ones only up to 4 KB.
    this.multiAppend = (opts.multiAppend ?? true) && caps.has('MULTIAPPEND') && caps.has('LITERAL+');
    let limit: number | undefined;
    for (const c of caps) {
      const m = /^APPENDLIMIT=(\d+)$/.exec(c);
      if (m) limit = Number(m[1]);
    }
    this.appendLimit = limit;
    conn.onClose((err) => this.connectionClosed(err));
  }

  /** Connect, authenticate, and learn the session's capabilities. Rejects with the
   * connect/greeting/auth errors of raw-connection.ts. */
  static async connect(opts: AppenderOptions): Promise<PipelinedAppender> {
    // Validate before touching the network.
    positive(opts.maxInFlightBytes, DEFAULT_MAX_IN_FLIGHT_BYTES, 'maxInFlightBytes');
    positive(opts.maxInFlightCommands, DEFAULT_MAX_IN_FLIGHT_COMMANDS, 'maxInFlightCommands');
    const conn = await RawConnection.connect(opts.endpoint, {
      ...(opts.idleTimeoutMs !== undefined ? { idleTimeoutMs: opts.idleTimeoutMs } : {}),
      ...(opts.connectTimeoutMs !== undefined ? { connectTimeoutMs: opts.connectTimeoutMs } : {}),
      ...(opts.mayWrite ? { mayWrite: opts.mayWrite } : {}),
    });
    try {
      await conn.login(opts.login);
    } catch (err) {
      conn.destroy();
      throw err;
    }
    return new PipelinedAppender(conn, opts);
  }

  /** True once no more appends are accepted: after `close()` was called or the connection
   * was lost. */
  get closed(): boolean {
    return this.closing || this.lost !== null;
  }

  /** Requests waiting for room in the window (not written yet). */
  get queued(): number {
    return this.queue.length;
  }

  /** Whether consecutive appends to one mailbox currently go as MULTIAPPEND batches. */
  get batching(): boolean {
    return this.multiAppend;
  }

  /** What went on the wire so far: commands, those of them that were MULTIAPPENDs with
   * more than one message, messages sent again alone after their batch was refused, and
   * isolated ones (see `append`). */
  readonly sent = { commands: 0, batches: 0, resentAlone: 0, isolated: 0 };

  /** Requests written (or being written) without a tagged response yet. */
  get inFlightCount(): number {
    return this.inFlight;
  }

  /**
   * Append one message. The command is written as soon as the window has room (earlier
   * requests first), at the earliest once this turn of the event loop is over
   * (`setImmediate`), so that the messages appended meanwhile can share a MULTIAPPEND
   * command; the promise settles when its tagged response arrives. To keep the window full, have several appends outstanding, e.g. `await appender.ready()` before
   * each `append()` and collect the promises.
   *
   * `isolated`: the command is written only when nothing else is in flight, and nothing
   * is written after it until it is answered, so if the connection drops meanwhile, this
   * message was the only one the server was handling (see sync/drop-suspects.ts).
   *
   * Rejects with {@link InvalidAppendRequestError} (nothing sent),
   * {@link ImapConnectionLostError}, or, for a streamed body whose source failed,
   * {@link LiteralStreamError} (never stored).
   */
  append(req: AppendRequest, opts: { isolated?: boolean } = {}): Promise<AppendResult> {
    if (this.lost) return Promise.reject(this.notSentError());
    if (this.closing) {
      return Promise.reject(new ImapConnectionLostError('the appender is closed', { uncertain: false }));
    }
    let command: Pick<Job, 'mailbox' | 'opts' | 'literal'>;
    try {
      command = this.buildCommand(req);
    } catch (err) {
      return Promise.reject(err);
    }
    const stream = !Buffer.isBuffer(req.raw);
    const size = Buffer.isBuffer(req.raw) ? req.raw.length : req.raw.size;
    if (this.appendLimit !== undefined && size > this.appendLimit) {
      // RFC 7889 §3: the client should not send a message over the announced limit; the
      // server would refuse it anyway, after we had pushed all of its bytes.
      return Promise.resolve({
        ok: false,
        status: 'NO',
        code: 'TOOBIG',
        text: `not sent: ${size} bytes is over the server's APPENDLIMIT of ${this.appendLimit}`,
      });
    }
    return new Promise<AppendResult>((resolve, reject) => {
      this.enqueue([{ ...command, windowBytes: stream ? 0 : size, stream, alone: false, isolated: opts.isolated ?? false, resolve, reject }], 'back');
      if (!this.pumpScheduled) {
        this.pumpScheduled = true;
        // After the I/O callbacks and promise chains of this turn of the event loop (a
        // producer awaiting `ready()` between appends included), so they can be batched.
        setImmediate(() => {
          this.pumpScheduled = false;
          this.pump();
        });
      }
    });
  }

  /**
   * Resolves when the window (requests queued or in flight, by count and bytes) has room
   * for one more; rejects if the connection is lost. Lets a producer bound its own memory.
   */
  ready(): Promise<void> {
    if (this.lost) return Promise.reject(this.notSentError());
    if (this.hasRoom()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
  }

  /**
   * Stop accepting appends, wait for the ones already accepted to be answered, then LOGOUT
   * (best effort) and close the socket. Never rejects.
   */
  close(): Promise<void> {
    this.closePromise ??= (async () => {
      this.closing = true;
      await this.idle();
      await this.conn.logout();
      this.rejectReadyWaiters(new ImapConnectionLostError('the appender is closed', { uncertain: false }));
    })();
    return this.closePromise;
  }

  // -------------------------------------------------------------------------------------

  /**
   * Room for one more request: queued requests count like those in flight, so a producer
   * that waits for `ready()` keeps at most a window's worth, sent or not. Nothing is
   * admitted behind a queued or still-writing stream, nor behind an isolated request.
   */
  private hasRoom(): boolean {
    if (this.streamWriting || this.isolatedInFlight || this.queuedBlockers > 0) return false;
    return this.inFlight + this.queue.length < this.maxCommands && this.inFlightBytes + this.queuedBytes < this.maxBytes;
  }

  private enqueue(jobs: Job[], end: 'front' | 'back'): void {
    if (end === 'front') this.queue.unshift(...jobs);
    else this.queue.push(...jobs);
    for (const j of jobs) {
      this.queuedBytes += j.windowBytes;
      if (j.stream || j.isolated) this.queuedBlockers += 1;
    }
  }

  /** Takes `n` jobs off the front of the queue (all of them by default). */
  private dequeue(n = this.queue.length): Job[] {
    const jobs = this.queue.splice(0, n);
    for (const j of jobs) {
      this.queuedBytes -= j.windowBytes;
      if (j.stream || j.isolated) this.queuedBlockers -= 1;
    }
    return jobs;
  }

  /**
   * Move queued jobs into flight while the window allows: at most `maxCommands`, and at
   * most `maxBytes` of message data, except that a message larger than the whole window
   * goes when nothing else is in flight. Strict FIFO, so UIDs follow call order.
   *
   * Streams: while a streamed literal is being written the window counts as full (nothing
   * is admitted and `ready()` waits): nothing could be written before it ends anyway, and
   * this keeps the producer from piling up Buffers behind a source that may be slow. A
   * stream itself waits only for the previous stream's tagged response (so at most one
   * big literal per connection, and its source is not started early), not for the Buffer
   * appends in flight before it, and it adds 0 to `inFlightBytes`: the appender holds at
   * most two of its chunks (raw-connection.ts), never its size. Once its last byte is
   * handed to the socket, Buffer appends behind it go without waiting for its answer.
   */
  private pump(): void {
    while (this.queue.length > 0 && !this.lost) {
      const job = this.queue[0]!;
      if (this.inFlight >= this.maxCommands || this.streamWriting || this.isolatedInFlight) break;
      if (job.isolated && (this.inFlight > 0 || this.answeredThisTurn)) break;
      if (job.stream && this.streamInFlight) break;
      if (!job.stream && this.inFlight > 0 && this.inFlightBytes + job.windowBytes > this.maxBytes) break;
      const batch = this.takeBatch();
      this.sent.commands += 1;
      if (batch.length > 1) this.sent.batches += 1;
      else if (job.alone) this.sent.resentAlone += 1;
      if (job.isolated) {
        this.sent.isolated += 1;
        this.isolatedInFlight = true;
      }
      this.inFlight += batch.length;
      for (const j of batch) this.inFlightBytes += j.windowBytes;
      const cmd = this.conn.send(commandOf(batch));
      if (job.stream) {
        this.streamInFlight = true;
        this.streamWriting = true;
        const written = (): void => {
          this.streamWriting = false;
          this.pump();
        };
        cmd.sent.then(written, written);
      }
      cmd.done.then(
        (r) => this.answered(batch, r),
        (err: Error) => {
          // A stream abandoned mid-literal dooms the connection (raw-connection.ts drops it
          // after a grace period for the answers already due): stop admitting right away.
          if (err instanceof LiteralStreamError && !this.conn.writable) this.abandon(err);
          this.finish(batch, () => {
            for (const j of batch) j.reject(err);
          });
        },
      );
    }
    if (this.hasRoom()) {
      for (const w of this.readyWaiters.splice(0)) w.resolve();
    }
    if (this.queue.length === 0 && this.inFlight === 0) {
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  /**
   * Takes the queue's head (admitted by `pump`) and, when batching, the Buffer messages
   * queued right behind it for the same mailbox that fit the window: FIFO is kept, so
   * UIDs still follow call order.
   */
  private takeBatch(): Job[] {
    const head = this.queue[0]!;
    let n = 1;
    if (this.multiAppend && !head.stream && !head.alone && !head.isolated) {
      const most = Math.min(MAX_BATCH_MESSAGES, this.maxCommands - this.inFlight);
      const room = Math.min(MAX_BATCH_BYTES, this.maxBytes - this.inFlightBytes);
      let bytes = head.windowBytes;
      for (; n < this.queue.length && n < most; n++) {
        const next = this.queue[n]!;
        if (next.stream || next.alone || next.isolated || next.mailbox !== head.mailbox || bytes + next.windowBytes > room) break;
        bytes += next.windowBytes;
      }
    }
    return this.dequeue(n);
  }

  /** A tagged response for `batch`: settle each job, or send a refused batch again one by one. */
  private answered(batch: Job[], r: TaggedResponse): void {
    if (batch.length > 1 && r.status !== 'OK' && !(r.status === 'NO' && isOverQuota(r))) {
      // Atomic (RFC 3502 §6.3.11): nothing of the batch is stored. Send each message alone
      // to learn which one the server refuses; they go first, in their order. BAD says
      // the server did not take the command as we sent it: no more batches to it.
      // A batch refused because the mailbox is over quota is refused for each of its
      // messages (refusal.ts): sent again one by one, they would be refused again.
      if (r.status === 'BAD') this.multiAppend = false;
      for (const j of batch) j.alone = true;
      this.finish(batch, () => this.enqueue(batch, 'front'), { requeued: true });
      return;
    }
    const results = toResults(r, batch.length);
    this.finish(batch, () => batch.forEach((j, i) => j.resolve(results[i]!)));
  }

  private finish(batch: Job[], settle: () => void, { requeued = false } = {}): void {
    this.inFlight -= batch.length;
    for (const j of batch) this.inFlightBytes -= j.windowBytes;
    if (batch[0]!.stream) this.streamInFlight = false;
    if (batch[0]!.isolated) this.isolatedInFlight = false;
    if (!this.answeredThisTurn) {
      // An isolated request waits for the next turn of the event loop after an answer:
      // a server that closes the connection after a refusal (`NO …` then `* BYE`) has
      // then been heard out, and the isolated message is not written into a dying
      // connection, where its loss would count against it.
      this.answeredThisTurn = true;
      setImmediate(() => {
        this.answeredThisTurn = false;
        this.pump();
      });
    }
    settle();
    // Drop the message bytes now (unless sent again alone, see `answered`): the caller
    // may hold the promise for a while.
    if (!requeued) for (const j of batch) j.literal = null;
    this.pump();
  }

  private idle(): Promise<void> {
    if ((this.queue.length === 0 && this.inFlight === 0) || this.conn.closed) return Promise.resolve();
    return new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  private notSentError(): ImapConnectionLostError {
    const cause = this.lost ?? undefined;
    return new ImapConnectionLostError(
      `connection to the target is lost${cause ? `: ${cause.message}` : ''}; not sent`,
      cause ? { cause, uncertain: false } : { uncertain: false },
    );
  }

  private rejectReadyWaiters(err: Error): void {
    for (const w of this.readyWaiters.splice(0)) w.reject(err);
  }

  /** The connection can take no more commands (it is about to close): fail what is queued,
   * as never sent. Requests in flight settle through the connection. */
  private abandon(err: Error): void {
    this.lost ??= err;
    for (const job of this.dequeue()) job.reject(this.notSentError());
    this.rejectReadyWaiters(this.notSentError());
  }

  private connectionClosed(err: Error | null): void {
    this.lost ??= err ?? new ImapConnectionLostError('connection closed');
    // In-flight jobs are rejected by the connection itself (with `uncertain` set per
    // command). Queued jobs never reached the socket: certainly not stored.
    for (const job of this.dequeue()) job.reject(this.notSentError());
    this.rejectReadyWaiters(this.notSentError());
    for (const w of this.idleWaiters.splice(0)) w();
  }

  /**
   * One message's part of `APPEND mailbox [flag-list] [date-time] literal` (RFC 3501
   * §6.3.11), in the shape RFC 3502's grammar repeats for each message of a MULTIAPPEND:
   * `append-message = append-opts SP append-data`.
   */
  private buildCommand(req: AppendRequest): Pick<Job, 'mailbox' | 'opts' | 'literal'> {
    const raw: unknown = req.raw;
    if (!Buffer.isBuffer(raw) && !isStreamedBody(raw)) {
      throw new InvalidAppendRequestError('raw must be a Buffer or a StreamedBody { size, chunks: AsyncIterable }');
    }
    const mailbox = this.encodeMailbox(req.mailbox);
    let opts = '';
    const flags = flagList(req.flags);
    if (flags) opts += ` ${flags}`;
    if (req.internalDate !== undefined) opts += ` "${imapDateTime(req.internalDate)}"`;
    opts += ' ';
    const caps = this.conn.capabilities;
    if (!Buffer.isBuffer(raw)) {
      // A stream cannot be scanned for NUL bytes ahead of time: the caller says (`binary`).
      const { size } = raw;
      const binary = caps.has('BINARY') && raw.binary === true;
      const nonSync = caps.has('LITERAL+') || (caps.has('LITERAL-') && size <= LITERAL_MINUS_MAX);
      return { mailbox, opts, literal: { literalStream: raw.chunks, size, nonSync, binary } };
    }
    const size = raw.length;
    // RFC 3516 §4.4: a message with NUL bytes cannot be a plain literal (CHAR8 excludes
    // NUL); with BINARY it can go as literal8 "~{n}", keeping it byte-exact. Without
    // BINARY it is sent as is and the server decides.
    const binary = caps.has('BINARY') && raw.includes(0);
    const nonSync = caps.has('LITERAL+') || (caps.has('LITERAL-') && size <= LITERAL_MINUS_MAX);
    return { mailbox, opts, literal: { literal: raw, nonSync, binary } };
  }

  /** The connection's quoted mailbox name (UTF-8 or modified UTF-7, see RawConnection.mailboxName), cached. */
  private encodeMailbox(name: string): string {
    const cached = this.mailboxCache.get(name);
    if (cached !== undefined) return cached;
    let quoted: string;
    try {
      quoted = this.conn.mailboxName(name);
    } catch (err) {
      throw new InvalidAppendRequestError((err as Error).message);
    }
    if (this.mailboxCache.size > 1000) this.mailboxCache.clear();
    this.mailboxCache.set(name, quoted);
    return quoted;
  }
}

// ---------------------------------------------------------------------------------------
// Helpers (exported for tests)
// ---------------------------------------------------------------------------------------


/**
 * RFC 3501 §9: `date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP
 * zone DQUOTE`, with `date-day-fixed = (SP DIGIT) / 2DIGIT`. We use the 2DIGIT form (no
 * leading space, which some servers trim) and UTC (`+0000`). Returned without quotes.
 */
export function imapDateTime(d: Date): string {
  const t = d instanceof Date ? d.getTime() : NaN;
  if (!Number.isFinite(t)) throw new InvalidAppendRequestError('internalDate is not a valid Date');
  const year = d.getUTCFullYear();
  // date-year = 4DIGIT
  if (year < 1000 || year > 9999) throw new InvalidAppendRequestError(`internalDate year ${year} is out of range`);
  const p2 = (n: number): string => String(n).padStart(2, '0');
  return (
    `${p2(d.getUTCDate())}-${MONTHS[d.getUTCMonth()]}-${year} ` +
    `${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())} +0000`
  );
}

/** A flag is `\` atom (system or extension flag) or an atom (keyword); ATOM-CHAR excludes
 * `(){ %*"\]`, SP, CTL and 8-bit (RFC 3501 §9). */
const FLAG_RE = /^\\?[^\x00-\x20\x7f-\uffff(){%*"\\\]]+$/;

/**
 * `(flag flag …)` or `''` when there is nothing to set. `\Recent` is dropped: clients
 * cannot set it (RFC 3501 §2.3.2). Duplicates (case-insensitive, §2.3.2) are removed.
 * An invalid flag throws: sending it would make the server reject or misparse the command
 * line, and a misparsed line before a literal could have the message body read as commands.
 */
export function isSendableFlag(flag: string): boolean {
  return FLAG_RE.test(flag);
}

export function flagList(flags: readonly string[]): string {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const f of flags) {
    if (typeof f !== 'string' || !isSendableFlag(f)) {
      throw new InvalidAppendRequestError(`invalid flag: ${JSON.stringify(f)}`);
    }
    const key = f.toLowerCase();
    if (key === '\\recent' || seen.has(key)) continue;
    seen.add(key);
    out.push(f);
  }
  return out.length ? `(${out.join(' ')})` : '';
}

function isStreamedBody(v: unknown): v is StreamedBody {
  if (typeof v !== 'object' || v === null) return false;
  const b = v as Partial<StreamedBody>;
  // A literal's length is a non-negative number of octets (RFC 3501 §4.3, §9); whether it
  // is too big is for APPENDLIMIT / the server's TOOBIG to say.
  return (
    typeof b.size === 'number' &&
    Number.isSafeInteger(b.size) &&
    b.size >= 0 &&
    typeof b.chunks === 'object' &&
    b.chunks !== null &&
    typeof (b.chunks as Partial<AsyncIterable<Uint8Array>>)[Symbol.asyncIterator] === 'function'
  );
}

/** `APPEND mailbox` and each message's opts and literal: one APPEND, or a MULTIAPPEND. */
function commandOf(batch: readonly Job[]): CommandPart[] {
  const parts: CommandPart[] = [`APPEND ${batch[0]!.mailbox}`];
  for (const j of batch) parts.push(j.opts, j.literal!);
  return parts;
}

/**
 * The results of one command for its `n` messages. RFC 4315 §3: `APPENDUID uidvalidity
 * append-uid`, where append-uid is one UID, or a uid-set for a MULTIAPPEND. The set's
 * UIDs are matched to the messages in ascending order: a server assigns UIDs in the
 * order it appends, and appends a MULTIAPPEND's messages in command order (RFC 3502
 * §6.3.11). A set of the wrong size is not trusted: the messages are then stored without
 * known UIDs, like on a server without UIDPLUS.
 */
function toResults(r: TaggedResponse, n: number): AppendResult[] {
  if (r.status !== 'OK') {
    const refused: AppendResult =
      r.code === undefined ? { ok: false, status: r.status, text: r.text } : { ok: false, status: r.status, code: r.code, text: r.text };
    return Array.from({ length: n }, () => refused);
  }
  const m = r.code === 'APPENDUID' && r.codeArgs ? /^(\d+) ([\d:,]+)$/.exec(r.codeArgs.trim()) : null;
  const uids = m ? uidSetValues(m[2]!, n) : null;
  if (!m || !uids || uids.length !== n) return Array.from({ length: n }, () => ({ ok: true }));
  const uidValidity = Number(m[1]);
  return uids.map((uid) => ({ ok: true, uidValidity, uid }));
}

/** The UIDs of an RFC 4315 uid-set (`4`, `2:4`, `4:2`, `1,3:4`) ascending, or null when
 * malformed or longer than `most`. */
function uidSetValues(set: string, most: number): number[] | null {
  const out: number[] = [];
  for (const item of set.split(',')) {
    const ends = item.split(':').map(Number);
    const lo = Math.min(...ends), hi = Math.max(...ends);
    if (ends.length > 2 || !Number.isSafeInteger(lo) || !Number.isSafeInteger(hi) || lo < 1) return null;
    if (out.length + hi - lo + 1 > most) return null;
    for (let u = lo; u <= hi; u++) out.push(u);
  }
  return out.sort((x, y) => x - y);
}

function positive(v: number | undefined, dflt: number, name: string): number {
  if (v === undefined) return dflt;
  if (!Number.isFinite(v) || v < 1) throw new RangeError(`${name} must be a positive number`);
  return Math.floor(v);
}
