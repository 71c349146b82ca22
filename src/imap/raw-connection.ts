/**
 * A minimal hand-written IMAP client connection: transport (implicit TLS, STARTTLS or
 * plaintext), greeting, CAPABILITY, LOGIN / AUTHENTICATE PLAIN, and a response reader that
 * lets several commands be in flight at once.
 *
 * Why not imapflow here: imapflow (used for everything else in mailferry) runs one command
 * at a time and waits for the `+` continuation on every literal over 4 KB, i.e. two round
 * trips per APPEND. No maintained npm IMAP library pipelines APPEND with LITERAL+
 * (RFC 7888), so the target-side bulk writer (append-pipeline.ts) sits on this small
 * client instead. It deliberately knows nothing about mailboxes, FETCH or SEARCH.
 *
 * Secrets: the password is only ever written to the socket. It is never logged, never
 * part of an error message (server texts are scrubbed of it too, in case a server echoes
 * the command back).
 */

import { scrubSecrets } from '../secrets/scrub.js';
import iconv from 'iconv-lite';
import net from 'node:net';
import tls from 'node:tls';

import type { ImapEndpoint, ImapLogin } from './endpoint.js';
import {
  ImapAuthError as SharedAuthError,
  ImapConnectError as SharedConnectError,
  ImapConnectionLostError as SharedConnectionLostError,
  isRetryable,
} from './errors.js';

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------
// The connect / auth / connection-lost classes extend the project-wide ones in errors.ts, so
// `instanceof` and `isRetryable()` work the same for imapflow sessions and this client;
// the subclasses add what this client knows (server text, `uncertain`).

/** The connection could not be established: DNS, refused, timeout, TLS handshake or
 * certificate, no STARTTLS offered, closed before the greeting. `cause` holds the
 * underlying error when there is one. */
export class ImapConnectError extends SharedConnectError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ImapConnectError';
  }
}

/** The server greeted with `* BYE` (RFC 3501 §7.1.5): it refuses this connection
 * (overloaded, blocked address, maintenance). A kind of {@link ImapConnectError}. */
export class ImapGreetingByeError extends ImapConnectError {
  constructor(
    /** The server's text after `BYE`. */
    readonly serverText: string,
  ) {
    super(`server refused the connection: BYE ${serverText}`);
    this.name = 'ImapGreetingByeError';
  }
}

/** LOGIN or AUTHENTICATE was refused. Carries the server's text, never the password. */
export class ImapAuthError extends SharedAuthError {
  constructor(
    message: string,
    /** The server's response text (already scrubbed of the password), if it answered. */
    readonly serverText?: string,
    /** The response code, e.g. `AUTHENTICATIONFAILED` (RFC 5530), upper-case. */
    override readonly code?: string,
  ) {
    super(message);
    this.name = 'ImapAuthError';
  }
}

/**
 * The connection went away while a command was outstanding: the socket closed or errored,
 * the server said BYE, or the idle watchdog gave up on a silent server.
 *
 * `uncertain` tells whether the server may have executed the command: some byte of it had
 * reached the socket, and not half a streamed literal (a server executes nothing before it
 * has read the whole literal). When true an APPEND may have been stored; when false it
 * certainly was not.
 *
 * `written` tells whether any byte of it had reached the socket, executable or not: a
 * server that closes the connection in answer to a message (Cyrus, over its size limit,
 * as soon as it reads the literal's announcement) does so while the message is being
 * written, so that is what makes it a suspect (sync/drop-suspects.ts).
 */
export class ImapConnectionLostError extends SharedConnectionLostError {
  readonly uncertain: boolean;
  readonly written: boolean;
  constructor(message: string, options: { cause?: unknown; uncertain?: boolean; written?: boolean } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ImapConnectionLostError';
    this.uncertain = options.uncertain ?? true;
    this.written = options.written ?? this.uncertain;
  }
}

/** A command that has to succeed for the session to be usable (CAPABILITY) got NO or BAD. */
export class ImapCommandError extends Error {
  constructor(
    message: string,
    readonly response: TaggedResponse,
  ) {
    super(message);
    this.name = 'ImapCommandError';
  }
}

/** Why a streamed literal (see {@link CommandPart}) was abandoned. */
export type LiteralStreamFailure =
  /** The chunk iterator threw (or rejected); `cause` holds what it threw. */
  | 'source-error'
  /** The iterator produced no chunk for `idleTimeoutMs`. */
  | 'source-stalled'
  /** The iterator yielded more or fewer bytes in total than the announced size. */
  | 'size-mismatch'
  /** The iterator yielded something that is not a Buffer / Uint8Array. */
  | 'bad-chunk';

/**
 * A command with a streamed literal was abandoned because its byte source failed. The
 * literal was never completed on the wire: fewer than its announced `size` bytes were
 * written (the last chunk is only written once the iterator has ended, see
 * `writeLiteralStream`), and a server cannot execute a command before it has read the
 * whole literal and the rest of the command line (RFC 3501 §4.3: a literal is exactly
 * that many octets). So the command certainly did not take effect: `uncertain` is always
 * false, unlike a plain {@link ImapConnectionLostError}.
 *
 * A literal cannot be cancelled half-way (RFC 3501 has no such thing; padding it would
 * store a corrupt message), so when some of its bytes were already written the connection
 * is dropped: commands written before it get their answers if the server sends them
 * within a short grace period, the rest reject with {@link ImapConnectionLostError}
 * (cause: this error). When nothing of the command had been written yet (the source
 * failed before its first chunk with LITERAL+), the connection stays usable.
 *
 * `retryable` (read by `isRetryable()` in errors.ts): true for a stall and for a source
 * error that is itself retryable (e.g. the source connection dropped); false for a size
 * mismatch or a bad chunk, which a retry would most likely repeat.
 */
export class LiteralStreamError extends Error {
  readonly uncertain = false;
  readonly retryable: boolean;
  constructor(
    readonly reason: LiteralStreamFailure,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'LiteralStreamError';
    this.retryable = reason === 'source-stalled' || (reason === 'source-error' && isRetryable(options?.cause));
  }
}

/**
 * A write the connection's fence refused ({@link RawConnectionOptions.mayWrite}): nothing
 * more was handed to the socket, and the connection was dropped, so a command already
 * begun (an APPEND's literal) is cut short and never carried out (RFC 3501 §7.5: the
 * command is the whole literal). Not to be retried by this holder.
 */
export class WriteFencedError extends Error {
  readonly retryable = false;
  constructor() {
    super('this worker no longer holds the mailbox (its lease ran out, e.g. while the process was paused): nothing more is written');
    this.name = 'WriteFencedError';
  }
}

/** The server sent something this client cannot parse; always wrapped as the `cause` of
 * an {@link ImapConnectionLostError} because the connection is dropped. */
export class ImapProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ImapProtocolError';
  }
}

// ---------------------------------------------------------------------------------------
// Responses and command parts
// ---------------------------------------------------------------------------------------

export type ResponseStatus = 'OK' | 'NO' | 'BAD';

/** A tagged status response (RFC 3501 §7.1): `tag SP (OK|NO|BAD) SP [ "[" code "]" SP ] text`. */
export interface TaggedResponse {
  tag: string;
  status: ResponseStatus;
  /** Response code atom, upper-case (e.g. `APPENDUID`, `TRYCREATE`, `OVERQUOTA`). */
  code?: string;
  /** Whatever follows the code atom inside the brackets, e.g. `38505 3955` for APPENDUID. */
  codeArgs?: string;
  /** Human-readable text after the code. */
  text: string;
}

/** An untagged server response (`* …`), with its literals. In `line`, each literal is left
 * as its `{n}` announcement and its bytes are in `literals`, in order. */
export interface UntaggedResponse {
  line: string;
  /** The response keyword, upper-case: `OK`, `BYE`, `CAPABILITY`, `EXISTS`, `FETCH`, … */
  kind: string;
  /** The leading number of `* 12 EXISTS` / `* 3 FETCH …`. */
  number?: number;
  /** Literal bytes; `null` for a literal larger than `maxCollectedLiteralBytes` (skipped). */
  literals: Array<Buffer | null>;
}

/**
 * One piece of a command after its tag. A `string` or `Buffer` is written as-is (the caller
 * supplies separators and quoting). A `literal` is announced as `{n}` (synchronising: the
 * client waits for `+` first), `{n+}` (non-synchronising, RFC 7888) or with a `~` prefix
 * for a literal8 (RFC 3516). A `literalStream` is the same with its `size` bytes taken
 * from an async iterator as they come (see `writeLiteralStream`); a source failure rejects
 * the command with {@link LiteralStreamError}. A `continuation` ends the line, waits for
 * `+`, then writes the given line (a SASL response, RFC 3501 §6.2.2). The final CRLF is
 * added by `send`.
 */
export type CommandPart =
  | string
  | Buffer
  | { literal: Buffer; nonSync?: boolean; binary?: boolean }
  | { literalStream: AsyncIterable<Uint8Array>; size: number; nonSync?: boolean; binary?: boolean }
  | { continuation: string };
// A `literalStream` chunk is referenced by the connection until it has been written to the
// kernel, which has happened by the time the iterator is asked for the chunk after the
// next one: from then on its memory may be reused by the source.

/** What {@link RawConnection.send} returns. */
export interface SentCommand {
  tag: string;
  /** Settles once the whole command is handed to the socket (and the socket has drained
   * if it asked to), or the server refused it before its literal. */
  sent: Promise<void>;
  /** The tagged response. Rejects with {@link ImapConnectionLostError} if the connection
   * is lost first. */
  done: Promise<TaggedResponse>;
}

/**
 * Where the bytes of a server literal go, as decided by {@link RawConnection.literalHandler}
 * when its `{n}` announcement arrives:
 * - `{ buffer }`: read into this Buffer (exactly `size` bytes long, e.g. a view into a
 *   reused arena), which then appears in the response's `literals`;
 * - `{ write, end }`: streamed: `write` gets each piece as it arrives, as a view of the
 *   connection's read buffer that is only valid during the call (copy what you keep), and
 *   `end` is called after the last byte; the response's `literals` get a zero-length Buffer
 *   in its place. Pair with {@link RawConnection.pauseReading} for backpressure.
 */
export type LiteralTarget = { buffer: Buffer } | { write: (piece: Buffer) => void; end: () => void };

export interface RawConnectionOptions {
  /** Limit for TCP connect + TLS handshake + greeting (+ STARTTLS). Default 30 s. */
  connectTimeoutMs?: number;
  /** While a command is outstanding, drop the connection when nothing has been received
   * and no write has been flushed to the kernel for this long. Default 60 s; 0 disables.
   * Flushed writes count as life because a server says nothing while it reads a big
   * literal: a 35 MB message over a slow link must not trip the watchdog. A hung server
   * stops reading, our writes stop flushing within one socket buffer, and the clock runs.
   * While a streamed literal waits for its source's next chunk, the server is waiting for
   * us: its silence does not count then, instead the source gets this long per chunk. */
  idleTimeoutMs?: number;
  /** Receives every untagged response (after the greeting). Must not throw. */
  onUntagged?: (response: UntaggedResponse) => void;
  /** A server line longer than this (without its literals) is a protocol error. Default 1 MiB. */
  maxLineBytes?: number;
  /** Literals in server responses up to this size are collected, larger ones skipped.
   * Default 8 MiB. */
  maxCollectedLiteralBytes?: number;
  /**
   * A fence, asked right before each piece of a command is handed to the socket, and
   * before corked pieces are let go: a worker whose lease on the mailbox ran out (a paused
   * process that another worker took over from) must not complete an APPEND the new
   * holder cannot know of. When it says no, the connection is dropped
   * ({@link WriteFencedError}). A command with a literal keeps its last byte back until
   * the rest has reached the kernel (writeCommand), so a pause can leave it incomplete
   * but never completes it later.
   */
  mayWrite?: () => boolean;
}

type SessionState = 'connecting' | 'not-authenticated' | 'authenticated' | 'logout' | 'closed';

interface PendingCommand {
  tag: string;
  /** Some byte of this command has been handed to the socket. */
  started: boolean;
  /** A streamed literal of this command is partly written: the server cannot have
   * executed the command, so losing the connection now is not `uncertain`. */
  literalIncomplete?: boolean;
  /** AUTHENTICATE: an unexpected further `+` is answered with `*` (cancel). */
  authenticate: boolean;
  resolve: (r: TaggedResponse) => void;
  reject: (e: Error) => void;
}

interface ContinuationWaiter {
  cmd: PendingCommand;
  /** true: `+` arrived, go on; false: the tagged response came instead (refused). */
  resolve: (go: boolean) => void;
  reject: (e: Error) => void;
}

const CRLF = Buffer.from('\r\n');
const DEFAULT_CONNECT_TIMEOUT_MS = 30_000;
const DEFAULT_IDLE_TIMEOUT_MS = 60_000;
const DEFAULT_MAX_LINE_BYTES = 1024 * 1024;
const DEFAULT_MAX_COLLECTED_LITERAL = 8 * 1024 * 1024;
const READ_BUFFER_BYTES = 64 * 1024;
/** After a streamed literal is abandoned, how long to wait at most for the answers to the
 * commands written before it before the connection is dropped (capped by idleTimeoutMs). */
const ABORT_GRACE_MS = 5000;
/** RFC 7888 §4: with LITERAL- only, a non-synchronising literal may carry at most 4096 octets. */
export const LITERAL_MINUS_MAX = 4096;
const noop = (): void => {};
const EMPTY = Buffer.alloc(0);

// ---------------------------------------------------------------------------------------
// Small protocol helpers (exported for the appender and the tests)
// ---------------------------------------------------------------------------------------

/** Parse a space-separated capability list into an upper-case set (RFC 3501 §7.2.1:
 * capability names are case-insensitive). */
export function parseCapabilities(list: string): Set<string> {
  const caps = new Set<string>();
  for (const c of list.trim().split(/\s+/)) if (c) caps.add(c.toUpperCase());
  return caps;
}

/**
 * A tagged response's human text without the timing Dovecot appends to it
 * (`… (0.001 + 0.000 + 0.012 secs).`, imap_command_timing): noise in a report that lists
 * why thousands of messages were refused, and it makes identical reasons differ.
 */
export function serverWords(text: string): string {
  return text.replace(/ \(\d+\.\d+(?: \+ \d+\.\d+)+ secs\)\.?$/, '');
}

/** Split `[CODE args] text` (RFC 3501 §7.1 resp-text) into its parts. */
export function parseRespText(s: string): { code?: string; codeArgs?: string; text: string } {
  if (!s.startsWith('[')) return { text: serverWords(s) };
  const close = s.indexOf(']');
  if (close < 0) return { text: serverWords(s) };
  const inner = s.slice(1, close);
  const sp = inner.indexOf(' ');
  const code = (sp < 0 ? inner : inner.slice(0, sp)).toUpperCase();
  const codeArgs = sp < 0 ? undefined : inner.slice(sp + 1);
  const text = serverWords(s.slice(close + 1).replace(/^ /, ''));
  return codeArgs === undefined ? { code, text } : { code, codeArgs, text };
}

/**
 * Encode a string as an IMAP quoted string (RFC 3501 §4.3) when it can be one, escaping
 * `\` and `"`; otherwise return `null` (it needs a literal). The grammar allows any 7-bit
 * char but CR, LF and NUL in a quoted string; other control characters go in a literal
 * too, because some servers mishandle them.
 */
/** UTF-8 → modified UTF-7 (RFC 3501 §5.1.3): `&` becomes `&-`, non-ASCII runs become
 * `&…-` modified BASE64 of UTF-16. */
export function encodeModifiedUtf7(name: string): string {
  return iconv.encode(name, 'utf-7-imap').toString('latin1');
}

export function quoteString(s: string): string | null {
  if (/[^\x20-\x7e]/.test(s)) return null;
  return `"${s.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

// ---------------------------------------------------------------------------------------
// The connection
// ---------------------------------------------------------------------------------------

export class RawConnection {
  private socket: net.Socket | null = null;
  private state: SessionState = 'connecting';
  private caps = new Set<string>();
  private utf8 = false;
  private tagCounter = 0;
  private readonly pending = new Map<string, PendingCommand>();
  private contWaiter: ContinuationWaiter | null = null;
  private writeTail: Promise<void> = Promise.resolve();
  /** The socket corked by `corkUntilNextTick`, until its uncork runs. */
  private corked: net.Socket | null = null;
  private readonly drainWaiters = new Set<{ resolve: () => void; reject: (e: Error) => void }>();
  private readonly closeListeners: Array<(err: Error | null) => void> = [];
  private greetingWaiter: { resolve: (r: UntaggedResponse) => void } | null = null;

  // Reader state: the current line's pieces, the response assembled so far, literal progress.
  private lineChunks: Buffer[] = [];
  private lineBytes = 0;
  private respLine = '';
  private respLiterals: Array<Buffer | null> = [];
  private literalRemaining = 0;
  /** The literal being read (its size known from `{n}`), or null when it is skipped. */
  private literalBuf: Buffer | null = null;
  /** The literal being streamed to a {@link LiteralTarget} `write`, instead. */
  private literalStreamTo: { write: (piece: Buffer) => void; end: () => void } | null = null;
  /**
   * Consulted for every server literal that would be collected: see {@link LiteralTarget}.
   * Returns undefined for the default (a fresh Buffer of the literal's size). Set by the
   * one user of the connection (raw-fetch.ts) around the command whose literals it wants.
   */
  literalHandler: ((size: number, lineSoFar: string) => LiteralTarget | undefined) | null = null;
  /** Reading is paused by {@link pauseReading}: the server's silence is ours, not its own. */
  private readPaused = false;
  /**
   * Plain TCP sockets read into this one reused buffer (net `onread`) instead of a fresh
   * 64 KiB Buffer per read: a migration reads the whole mailbox through here, and those
   * short-lived Buffers (memory outside the V8 heap) piled up between collections. Nothing
   * may keep a reference into it past `consume` (see there).
   */
  private readBuffer: Buffer | null = null;
  /** Set when the reader must stop consuming this socket's bytes (STARTTLS switch). */
  private readerDetached = false;
  private startTlsTag: string | null = null;

  // Closing / failure bookkeeping.
  private closeError: Error | null = null;
  private destroyCause: unknown = undefined;
  private socketError: Error | undefined;
  private byeText: string | undefined;
  private connectFailure: Error | null = null;

  // Idle watchdog.
  private lastActivity = Date.now();
  private watchdog: NodeJS.Timeout | null = null;
  private readonly idleTimeoutMs: number;
  private readonly maxLineBytes: number;
  private readonly maxCollectedLiteral: number;

  private _preauth = false;

  // Streamed literals (see writeLiteralStream).
  /** Set while a streamed literal waits for its source's next chunk. */
  private sourceWait: { since: number; stop: (why: 'stalled' | 'closed') => void } | null = null;
  /** A streamed literal was abandoned part-way: nothing more is written, and the socket is
   * dropped once the commands written before it are answered or the grace period ends. */
  private aborting: LiteralStreamError | null = null;
  private abortTimer: NodeJS.Timeout | null = null;

  private constructor(
    readonly endpoint: ImapEndpoint,
    private readonly opts: RawConnectionOptions,
  ) {
    this.idleTimeoutMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.maxLineBytes = opts.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
    this.maxCollectedLiteral = opts.maxCollectedLiteralBytes ?? DEFAULT_MAX_COLLECTED_LITERAL;
  }

  /**
   * Connect, read the greeting, negotiate STARTTLS when asked, and learn the capabilities.
   * Rejects with {@link ImapConnectError} or {@link ImapGreetingByeError}.
   */
  static async connect(endpoint: ImapEndpoint, opts: RawConnectionOptions = {}): Promise<RawConnection> {
    const conn = new RawConnection(endpoint, opts);
    await conn.open();
    return conn;
  }

  /** Upper-case capability names currently known (re-read after STARTTLS and login). */
  get capabilities(): ReadonlySet<string> {
    return this.caps;
  }

  /** The greeting was `* PREAUTH` (RFC 3501 §7.1.4): already authenticated, no login. */
  get preauth(): boolean {
    return this._preauth;
  }

  get authenticated(): boolean {
    return this.state === 'authenticated';
  }

  /** The socket is gone (closed, lost, or destroyed). */
  get closed(): boolean {
    return this.state === 'closed';
  }

  /** Why the connection closed: `null` after an orderly LOGOUT/destroy, else the error. */
  get closeReason(): Error | null {
    return this.closeError;
  }

  /** Commands are accepted: false once closed, and while the connection is being torn down
   * after an abandoned streamed literal (see {@link LiteralStreamError}). */
  get writable(): boolean {
    return this.state !== 'closed' && this.aborting === null;
  }

  /** Number of commands sent (or queued for writing) without a tagged response yet. */
  get outstanding(): number {
    return this.pending.size;
  }

  /** Called once when the socket closes: `null` when it was closed on purpose. */
  onClose(listener: (err: Error | null) => void): void {
    if (this.state === 'closed') queueMicrotask(() => listener(this.closeError));
    else this.closeListeners.push(listener);
  }

  // -------------------------------------------------------------------------------------
  // Connection set-up
  // -------------------------------------------------------------------------------------

  private describe(): string {
    return `${this.endpoint.host}:${this.endpoint.port}`;
  }

  private async open(): Promise<void> {
    const timeoutMs = this.opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const timer = setTimeout(() => {
      this.connectFailure = new ImapConnectError(
        `could not connect to ${this.describe()}: no greeting/handshake within ${timeoutMs} ms`,
      );
      this.destroy(this.connectFailure);
    }, timeoutMs);
    try {
      await this.openSocket();
      const greeting = await this.readGreeting();
      if (greeting.kind === 'BYE') throw new ImapGreetingByeError(restAfterKind(greeting));
      if (greeting.kind !== 'OK' && greeting.kind !== 'PREAUTH') {
        throw new ImapConnectError(`${this.describe()} is not an IMAP server (greeting: ${truncate(greeting.line)})`);
      }
      this._preauth = greeting.kind === 'PREAUTH';
      this.state = this._preauth ? 'authenticated' : 'not-authenticated';
      // RFC 3501 §7.1: the greeting may carry [CAPABILITY …]; saves a round trip.
      const rt = parseRespText(restAfterKind(greeting));
      if (rt.code === 'CAPABILITY' && rt.codeArgs) this.caps = parseCapabilities(rt.codeArgs);

      if (this.endpoint.tls === 'starttls') {
        if (this._preauth) {
          // RFC 3501 §6.2.1: STARTTLS is only valid in the not-authenticated state.
          throw new ImapConnectError(`${this.describe()} sent PREAUTH, so STARTTLS is impossible`);
        }
        if (this.caps.size === 0) await this.capability();
        if (!this.caps.has('STARTTLS')) {
          throw new ImapConnectError(`${this.describe()} does not offer STARTTLS`);
        }
        await this.startTls();
        // RFC 3501 §6.2.1 / RFC 2595 §3.1: forget everything learned before TLS and ask again.
        this.caps = new Set();
        await this.capability();
      } else if (this.caps.size === 0) {
        await this.capability();
      }
    } catch (err) {
      this.destroy(err);
      if (this.connectFailure) throw this.connectFailure;
      if (err instanceof ImapConnectError || err instanceof ImapGreetingByeError) throw err;
      throw new ImapConnectError(`could not connect to ${this.describe()}: ${describeError(err)}`, {
        cause: err instanceof ImapConnectionLostError && err.cause !== undefined ? err.cause : err,
      });
    } finally {
      clearTimeout(timer);
    }
  }

  private tlsOptions(): tls.ConnectionOptions {
    const { host, acceptUntrustedCert } = this.endpoint;
    return {
      // SNI must not be an IP address (RFC 6066 §3).
      ...(net.isIP(host) ? {} : { servername: host }),
      rejectUnauthorized: !acceptUntrustedCert,
    };
  }

  private openSocket(): Promise<void> {
    const { host, port, tls: mode } = this.endpoint;
    return new Promise<void>((resolve, reject) => {
      let socket: net.Socket;
      const onError = (err: Error): void => reject(err);
      if (mode === 'implicit') {
        socket = tls.connect({ host, port, ...this.tlsOptions() });
        socket.once('secureConnect', () => {
          socket.off('error', onError);
          resolve();
        });
      } else if (mode === 'starttls') {
        // Not with `onread`: the TLS layer takes this socket's handle over after STARTTLS.
        socket = net.connect({ host, port });
        socket.once('connect', () => {
          socket.off('error', onError);
          resolve();
        });
      } else {
        this.readBuffer ??= Buffer.allocUnsafe(READ_BUFFER_BYTES);
        socket = net.connect({
          host,
          port,
          onread: {
            buffer: this.readBuffer,
            callback: (n: number, buf: Uint8Array): boolean => {
              this.onData((buf as Buffer).subarray(0, n));
              // false pauses the socket (pauseReading); resume() restarts it.
              return !this.readPaused;
            },
          },
        });
        socket.once('connect', () => {
          socket.off('error', onError);
          resolve();
        });
      }
      socket.once('error', onError);
      // Destroyed by the connect timeout: no 'error' follows, so settle here (no-op if done).
      socket.once('close', () => reject(new Error('connection closed')));
      // Small command lines follow each other closely when pipelining; Nagle + delayed ACK
      // would add tens of ms per round. Writes are corked per command, so no tiny segments.
      socket.setNoDelay(true);
      this.attach(socket);
    });
  }

  private attach(socket: net.Socket): void {
    this.socket = socket;
    this.readerDetached = false;
    this.lineChunks = [];
    this.lineBytes = 0;
    this.respLine = '';
    this.respLiterals = [];
    this.literalRemaining = 0;
    this.literalBuf = null;
    this.literalStreamTo = null;
    socket.on('data', this.onData);
    socket.on('error', this.onSocketError);
    socket.on('close', this.onSocketClose);
  }

  private detach(socket: net.Socket): void {
    socket.off('data', this.onData);
    socket.off('error', this.onSocketError);
    socket.off('close', this.onSocketClose);
  }

  private readGreeting(): Promise<UntaggedResponse> {
    return new Promise<UntaggedResponse>((resolve, reject) => {
      if (this.state === 'closed') {
        reject(this.lostError(false));
        return;
      }
      this.greetingWaiter = { resolve };
      this.onClose((err) => reject(err ?? this.lostError(false)));
    });
  }

  private async startTls(): Promise<void> {
    const { tag, done } = this.send(['STARTTLS']);
    this.startTlsTag = tag;
    const r = await done;
    if (r.status !== 'OK') {
      throw new ImapConnectError(`${this.describe()} refused STARTTLS: ${r.status} ${r.text}`);
    }
    // The reader detached itself synchronously on the tagged OK (see dispatchTagged), so no
    // plaintext byte that followed the OK can be taken as coming from the TLS session.
    const raw = this.socket;
    if (!raw) throw this.lostError(false);
    this.detach(raw);
    raw.on('error', noop); // the TLS socket reports errors from here on
    await new Promise<void>((resolve, reject) => {
      const secure = tls.connect({ socket: raw, ...this.tlsOptions() });
      const onError = (err: Error): void => reject(err);
      secure.once('error', onError);
      secure.once('close', () => reject(new Error('connection closed during the TLS handshake')));
      secure.once('secureConnect', () => {
        secure.off('error', onError);
        resolve();
      });
      this.attach(secure);
    });
  }

  /** Ask for CAPABILITY (RFC 3501 §6.1.1); the untagged reply replaces the known set. */
  async capability(): Promise<ReadonlySet<string>> {
    const r = await this.send(['CAPABILITY']).done;
    if (r.status !== 'OK') throw new ImapCommandError(`CAPABILITY failed: ${r.status} ${r.text}`, r);
    return this.caps;
  }

  // -------------------------------------------------------------------------------------
  // Login
  // -------------------------------------------------------------------------------------

  /**
   * Authenticate, then re-read the capabilities (they usually change after login;
   * RFC 3501 §6.2.3 / §7.2.1). A no-op after a PREAUTH greeting.
   * Rejects with {@link ImapAuthError} (server refused) or {@link ImapConnectionLostError}.
   */
  async login(login: ImapLogin): Promise<void> {
    if (this.state === 'authenticated') return;
    if (this.state !== 'not-authenticated') throw this.lostError(false);
    const password = login.password;
    let parts: CommandPart[];
    let authenticate = false;
    const secrets = [password];
    if (login.method === 'login') {
      // RFC 3501 §6.2.3: a client MUST NOT send LOGIN when LOGINDISABLED is advertised.
      if (this.caps.has('LOGINDISABLED')) {
        throw new ImapAuthError(
          `${this.describe()} advertises LOGINDISABLED; use TLS or AUTHENTICATE PLAIN`,
        );
      }
      parts = ['LOGIN ', this.astring(login.username), ' ', this.astring(password)];
    } else {
      // RFC 4616 §2: message = [authzid] NUL authcid NUL passwd, UTF-8.
      const msg = Buffer.from(`${login.authzid ?? ''}\0${login.authcid}\0${password}`, 'utf8').toString('base64');
      authenticate = true;
      secrets.push(msg);
      parts = this.caps.has('SASL-IR')
        ? // RFC 4959 §3: initial response on the command line ("=" would stand for empty).
          [`AUTHENTICATE PLAIN ${msg || '='}`]
        : // RFC 3501 §6.2.2: wait for the server's "+" (empty challenge), then send it.
          ['AUTHENTICATE PLAIN', { continuation: msg }];
    }
    const r = await this.send(parts, { authenticate }).done;
    if (r.status !== 'OK') {
      const text = scrubSecrets(r.text, secrets, [login.method === 'login' ? login.username : login.authcid]);
      // RFC 5530 §3 [LIMIT]: the credentials are fine, the user has too many sessions
      // (Dovecot's mail_max_userip_connections). A sync needs at least two per side.
      const what = r.code?.toUpperCase() === 'LIMIT' ? 'the server refused another session for this user (it limits sessions per user; a sync needs at least two)' : 'authentication failed';
      throw new ImapAuthError(`${what} at ${this.describe()}: ${r.status}${r.code ? ` [${r.code}]` : ''} ${text}`, text, r.code);
    }
    this.state = 'authenticated';
    // RFC 3501 §7.1 / RFC 9051 §6.2.3: servers may put the new list in the tagged OK.
    if (r.code === 'CAPABILITY' && r.codeArgs) this.caps = parseCapabilities(r.codeArgs);
    else await this.capability();
    await this.enableUtf8();
  }

  /**
   * RFC 6855 §3: where the server offers UTF8=ACCEPT, ENABLE it and send mailbox names as
   * UTF-8 from then on (mailboxName()). Modified UTF-7 (RFC 3501 §5.1.3) is the fallback,
   * but some servers refuse its surrogate pairs: Courier answers NO to `&2D7d,g-` (🧾)
   * and accepts the UTF-8 name. imapflow does the same on its sessions, so both kinds of
   * connection name a folder alike.
   */
  private async enableUtf8(): Promise<void> {
    if (!this.caps.has('UTF8=ACCEPT') && !this.caps.has('UTF8=ONLY')) return;
    const r = await this.send(['ENABLE UTF8=ACCEPT']).done;
    // A refusal only means modified UTF-7 names, as without the capability.
    if (r.status !== 'OK') this.utf8 = false;
  }

  /** Whether mailbox names go as UTF-8 on this connection (ENABLE UTF8=ACCEPT took effect). */
  get utf8Names(): boolean {
    return this.utf8;
  }

  /**
   * A mailbox name as a quoted string: UTF-8 once UTF8=ACCEPT is enabled (RFC 6855 §3),
   * else modified UTF-7 (RFC 3501 §5.1.3). INBOX is case-insensitive (§5.1) and sent as
   * "INBOX".
   */
  mailboxName(name: string): string {
    if (name.length === 0) throw new TypeError('empty mailbox name');
    if (/[\x00-\x1f\x7f]/.test(name)) throw new TypeError(`mailbox name contains a control character: ${JSON.stringify(name)}`);
    const encoded = name.toUpperCase() === 'INBOX' ? 'INBOX' : this.utf8 ? name : encodeModifiedUtf7(name);
    return `"${encoded.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
  }

  /** A string argument: quoted if possible, else a literal (UTF-8 bytes), non-synchronising
   * when LITERAL+ (or LITERAL- for ≤ 4096 bytes) is offered (RFC 7888). */
  private astring(s: string): CommandPart {
    const q = quoteString(s);
    if (q !== null) return q;
    const data = Buffer.from(s, 'utf8');
    return { literal: data, nonSync: this.canNonSync(data.length) };
  }

  /** May a literal of this size be sent without waiting for `+`? (RFC 7888 §3, §4) */
  canNonSync(size: number): boolean {
    return this.caps.has('LITERAL+') || (this.caps.has('LITERAL-') && size <= LITERAL_MINUS_MAX);
  }

  // -------------------------------------------------------------------------------------
  // Sending
  // -------------------------------------------------------------------------------------

  private nextTag(): string {
    this.tagCounter += 1;
    return `A${this.tagCounter}`;
  }

  /**
   * Queue a command. Commands are written strictly in call order and never interleave;
   * several can be outstanding at once (their tagged responses are matched by tag).
   * A synchronising literal or a continuation holds back later commands until the server's
   * `+` has arrived and the rest of this command is written (RFC 3501 §7.5); a streamed
   * literal holds them back until its source has delivered its last chunk.
   */
  send(parts: CommandPart[], opts: { authenticate?: boolean } = {}): SentCommand {
    const tag = this.nextTag();
    if (this.state === 'closed' || this.aborting) {
      const err = this.lostError(false);
      const sent = Promise.reject(err);
      const done = Promise.reject(err);
      sent.catch(noop);
      return { tag, sent, done };
    }
    let resolve!: (r: TaggedResponse) => void;
    let reject!: (e: Error) => void;
    const done = new Promise<TaggedResponse>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const cmd: PendingCommand = { tag, started: false, authenticate: opts.authenticate ?? false, resolve, reject };
    if (this.pending.size === 0) this.lastActivity = Date.now(); // the silence clock starts now
    this.pending.set(tag, cmd);
    this.armWatchdog();
    const sent = this.writeTail.then(() => this.writeCommand(cmd, parts));
    this.writeTail = sent.catch(noop);
    sent.catch(noop); // failures also surface through `done`
    return { tag, sent, done };
  }

  private async writeCommand(cmd: PendingCommand, parts: CommandPart[]): Promise<void> {
    if (this.state === 'closed' || this.aborting) throw this.lostError(false);
    if (!this.pending.has(cmd.tag)) return; // already answered (cannot normally happen)
    let chunks: Buffer[] = [Buffer.from(`${cmd.tag} `, 'latin1')];
    let hasLiteral = false;
    for (const part of parts) {
      if (typeof part === 'object' && !Buffer.isBuffer(part) && ('literal' in part || 'literalStream' in part)) hasLiteral = true;
      if (typeof part === 'string') {
        chunks.push(Buffer.from(part, 'utf8'));
      } else if (Buffer.isBuffer(part)) {
        chunks.push(part);
      } else if ('literal' in part) {
        const n = part.literal.length;
        chunks.push(Buffer.from(`${part.binary ? '~' : ''}{${n}${part.nonSync ? '+' : ''}}\r\n`, 'latin1'));
        if (!part.nonSync) {
          await this.flush(cmd, chunks);
          chunks = [];
          // The server may refuse here (e.g. too big) with a tagged NO instead of "+":
          // then the literal is not sent and the command is over (RFC 3501 §7.5).
          if (!(await this.waitContinuation(cmd))) return;
        }
        if (n > 0) chunks.push(part.literal);
      } else if ('literalStream' in part) {
        const rest = await this.writeLiteralStream(cmd, part, chunks);
        if (rest === null) return;
        chunks = rest;
      } else {
        chunks.push(CRLF);
        await this.flush(cmd, chunks);
        chunks = [];
        if (!(await this.waitContinuation(cmd))) return;
        chunks.push(Buffer.from(part.continuation, 'utf8'));
      }
    }
    const last = chunks.at(-1);
    if (this.opts.mayWrite && hasLiteral && last !== undefined && last.length > 0) {
      // Behind a fence, a command with a literal (an APPEND) keeps its last byte back until
      // everything before it has left Node for the kernel, then asks the fence again. What
      // Node still holds when the process is paused is written by libuv on resume, before
      // any JavaScript runs; held back here, the command stays incomplete, and a server
      // stores no message whose literal and command line did not end (RFC 3501 §7.5).
      chunks[chunks.length - 1] = last.subarray(0, last.length - 1);
      const flushed = this.flush(cmd, chunks, true);
      const written = this.lastWrite; // set synchronously by flush
      await flushed;
      await written;
      await this.flush(cmd, [last.subarray(last.length - 1), CRLF]);
      return;
    }
    chunks.push(CRLF);
    await this.flush(cmd, chunks);
  }

  /**
   * Write a streamed literal: its announcement, then each chunk as the iterator yields it.
   * `chunks` holds this command's bytes not written yet (its line so far). Returns what is
   * still to be written before the rest of the command (the literal's last chunk), or
   * `null` when the command is over: refused before its literal (RFC 3501 §7.5), or
   * abandoned (see {@link LiteralStreamError}).
   *
   * - Backpressure: each chunk is handed to the socket, and the next one is written only
   *   after 'drain'. The next chunk is requested before that wait (one chunk of
   *   read-ahead), so the source's latency overlaps the socket's: at most two chunks are
   *   held, the one being written and the one being produced.
   * - The chunk that completes the literal is held back until the iterator has reported
   *   its end. A source that fails or yields extra bytes at that point (a digest check
   *   after the last chunk, say) still leaves the literal incomplete, so the server cannot
   *   have stored anything. For the same reason a zero-size literal's iterator is drained
   *   before anything is announced.
   * - Nothing else is written meanwhile (writes are queued on `writeTail`), so no other
   *   command's bytes can land inside the literal.
   * - Stall: if the iterator yields nothing for `idleTimeoutMs`, the literal is abandoned
   *   (`source-stalled`). While we owe the server bytes its silence is expected, so the
   *   server-silence clock is paused during that wait and restarts with each chunk.
   * - An iterator that is left before its end (failure, refusal) gets `return()` called,
   *   so a generator's `finally` runs or a Readable is destroyed.
   */
  private async writeLiteralStream(
    cmd: PendingCommand,
    part: { literalStream: AsyncIterable<Uint8Array>; size: number; nonSync?: boolean; binary?: boolean },
    chunks: Buffer[],
  ): Promise<Buffer[] | null> {
    const { size } = part;
    const nonSync = part.nonSync ?? false;
    let it: AsyncIterator<Uint8Array> | undefined;
    let next: Promise<IteratorResult<Uint8Array>> = Promise.resolve({ done: true, value: undefined });
    let written = 0;
    let ended = false;
    const pull = (): void => {
      try {
        next = Promise.resolve(it!.next());
      } catch (err) {
        next = Promise.reject(err);
      }
      next.catch(noop); // read through waitSource; never an unhandled rejection
    };
    const fail = (reason: LiteralStreamFailure, what: string, cause?: unknown): LiteralStreamError =>
      new LiteralStreamError(
        reason,
        `streamed literal of ${size} bytes to ${this.describe()} abandoned after ${written} bytes: ${what}; ` +
          'the command was not executed (its literal was never completed)',
        cause === undefined ? undefined : { cause },
      );
    /** The next non-empty chunk, or null at the end of the iterator. */
    const nextChunk = async (): Promise<Buffer | null> => {
      for (;;) {
        const got = await this.waitSource(next);
        if ('stalled' in got) throw fail('source-stalled', `the source produced no data for ${this.idleTimeoutMs} ms`);
        if ('error' in got) throw fail('source-error', `the source failed: ${describeError(got.error)}`, got.error);
        if (got.result.done) {
          ended = true;
          return null;
        }
        const v: unknown = got.result.value;
        if (!(v instanceof Uint8Array)) throw fail('bad-chunk', `the source yielded a ${typeof v}, not a Buffer`);
        if (v.length > 0) return Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
        pull();
      }
    };
    cmd.literalIncomplete = true;
    try {
      try {
        it = part.literalStream[Symbol.asyncIterator]();
      } catch (err) {
        throw fail('source-error', `the source failed: ${describeError(err)}`, err);
      }
      if (size === 0) {
        pull();
        if ((await nextChunk()) !== null) throw fail('size-mismatch', 'the source yielded more bytes than announced');
      }
      chunks.push(Buffer.from(`${part.binary ? '~' : ''}{${size}${nonSync ? '+' : ''}}\r\n`, 'latin1'));
      if (!nonSync) {
        await this.flush(cmd, chunks);
        chunks = [];
        if (!(await this.waitContinuation(cmd))) {
          cmd.literalIncomplete = false;
          if (!ended) closeIterator(it);
          return null;
        }
      }
      if (size > 0) pull();
      // Settles once the chunk before the one being written has left for the kernel: the
      // next chunk is only asked for then, so a source may reuse a chunk's memory once it
      // has been asked for the chunk after the next one (see CommandPart).
      let previousWritten: Promise<void> = Promise.resolve();
      while (written < size) {
        const chunk = await nextChunk();
        if (chunk === null) throw fail('size-mismatch', 'the source ended early');
        if (written + chunk.length > size) throw fail('size-mismatch', `the source yielded more than ${size} bytes`);
        written += chunk.length;
        chunks.push(chunk);
        await previousWritten;
        pull();
        if (written === size) break; // held back until the end is confirmed, below
        const flushed = this.flush(cmd, chunks, true);
        previousWritten = this.lastWrite; // set synchronously by flush
        await flushed;
        chunks = [];
      }
      if (size > 0 && (await nextChunk()) !== null) throw fail('size-mismatch', `the source yielded more than ${size} bytes`);
      cmd.literalIncomplete = false;
      return chunks;
    } catch (err) {
      if (it && !ended) closeIterator(it);
      // Anything else is the connection failing under us; `done` is settled by handleClosed.
      if (!(err instanceof LiteralStreamError)) throw err;
      this.abandonLiteral(cmd, err);
      return null;
    }
  }

  /** Wait for the source's next chunk, unless the connection closes or the watchdog finds
   * the source stalled first (see checkIdle). */
  private waitSource(
    next: Promise<IteratorResult<Uint8Array>>,
  ): Promise<{ result: IteratorResult<Uint8Array> } | { error: unknown } | { stalled: true }> {
    return new Promise((resolve, reject) => {
      if (this.state === 'closed') {
        reject(this.lostError(false));
        return;
      }
      const w = {
        since: Date.now(),
        stop: (why: 'stalled' | 'closed'): void => {
          if (this.sourceWait !== w) return;
          this.sourceWait = null;
          if (why === 'stalled') resolve({ stalled: true });
          else reject(this.lostError(false));
        },
      };
      this.sourceWait = w;
      next.then(
        (result) => {
          if (this.sourceWait !== w) return;
          this.sourceWait = null;
          // A chunk is life: the server's silence clock restarts with it.
          this.lastActivity = Date.now();
          resolve({ result });
        },
        (error: unknown) => {
          if (this.sourceWait !== w) return;
          this.sourceWait = null;
          resolve({ error });
        },
      );
    });
  }

  /**
   * A streamed literal failed at its source. The command is rejected with `err` (never
   * `uncertain`, see {@link LiteralStreamError}). If none of its bytes reached the socket
   * the session goes on as if it had never been sent. Otherwise the server is waiting for
   * the rest of a literal it will never get: stop writing, fail what is queued behind it
   * (never sent), give the commands written before it a short grace period to get their
   * answers (so they do not end up `uncertain` needlessly), then drop the connection.
   */
  private abandonLiteral(cmd: PendingCommand, err: LiteralStreamError): void {
    if (this.state === 'closed') return;
    if (this.pending.delete(cmd.tag)) cmd.reject(err);
    if (!cmd.started) return;
    this.aborting = err;
    this.destroyCause ??= err;
    this.lastActivity = Date.now();
    for (const c of [...this.pending.values()]) {
      if (c.started) continue;
      this.pending.delete(c.tag);
      c.reject(this.lostError(false));
    }
    if (this.pending.size === 0) {
      this.destroy(err);
      return;
    }
    const grace = this.idleTimeoutMs > 0 ? Math.min(this.idleTimeoutMs, ABORT_GRACE_MS) : ABORT_GRACE_MS;
    this.abortTimer = setTimeout(() => this.destroy(err), grace);
    this.abortTimer.unref();
  }

  /**
   * Hand the chunks to the socket; wait for `drain` when the socket's buffer is over its
   * high-water mark. The socket stays corked until the next tick (see `corkUntilNextTick`),
   * so this command's pieces (line, literal, CRLF) and those of the commands queued right
   * behind it leave in one writev: the Buffers are passed as they are, never copied.
   */
  private async flush(cmd: PendingCommand, chunks: Buffer[], track = false): Promise<void> {
    const socket = this.socket;
    if (this.state === 'closed' || !socket || socket.destroyed) throw this.lostError(cmd.started);
    if (!this.fenceOpen()) throw this.fenced();
    cmd.started = true;
    this.corkUntilNextTick(socket);
    let ok = true;
    const last = chunks.length - 1;
    let written: (() => void) | undefined;
    if (track) {
      // Resolved by the write's callback (also called, with an error, when the socket is
      // destroyed first), or when the connection closes.
      this.lastWrite = new Promise<void>((resolve) => {
        const done = (): void => {
          this.writeWaiters.delete(done);
          resolve();
        };
        written = done;
        this.writeWaiters.add(done);
      });
    }
    for (let i = 0; i <= last; i++) {
      if (i > 0 && !this.fenceOpen()) throw this.fenced();
      // A flushed write means the peer's TCP stack is taking our bytes: the server is alive
      // even though it has nothing to say until a big literal is complete.
      ok = i === last
        ? socket.write(chunks[i]!, written ? () => (this.markActivity(), written!()) : this.markActivity)
        : socket.write(chunks[i]!);
    }
    if (!ok) await this.waitDrain();
  }

  /** The write callback of the last tracked flush (see writeLiteralStream). */
  private lastWrite: Promise<void> = Promise.resolve();
  private readonly writeWaiters = new Set<() => void>();

  /**
   * Cork the socket once per tick and uncork it on `process.nextTick`. The writer chain
   * (`writeTail`) runs the queued commands one after the other in promise microtasks, and
   * Node runs the nextTick queue only after the microtask queue is empty, so everything
   * a pipelined burst writes in that turn (e.g. a dozen small APPENDs, RFC 7888 LITERAL+)
   * becomes a single writev syscall instead of one per command. Waiting for `drain` or for
   * a `+` continuation (RFC 3501 §7.5) yields to the event loop, and the uncork happens
   * before that wait can end, so corking never delays bytes the server is waiting for.
   */
  private corkUntilNextTick(socket: net.Socket): void {
    if (this.corked === socket) return;
    if (this.corked) this.uncorkNow(); // a different socket (before STARTTLS): flush it now
    socket.cork();
    this.corked = socket;
    process.nextTick(this.uncorkNow);
  }

  /** Undo `corkUntilNextTick`: exactly one uncork per cork, whichever runs first. */
  private readonly uncorkNow = (): void => {
    const socket = this.corked;
    this.corked = null;
    if (!socket || socket.destroyed) return;
    // Corked bytes passed the fence as they were written; a pause since then closes it,
    // and destroy() discards what is still corked.
    if (!this.fenceOpen()) {
      socket.destroy();
      return;
    }
    socket.uncork();
  };

  private fenceOpen(): boolean {
    return this.opts.mayWrite === undefined || this.opts.mayWrite();
  }

  /** Drops the connection for a closed fence; the error to throw. */
  private fenced(): WriteFencedError {
    const err = new WriteFencedError();
    this.destroy(err);
    return err;
  }

  private readonly markActivity = (): void => {
    this.lastActivity = Date.now();
  };

  private waitDrain(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const socket = this.socket;
      if (!socket || this.state === 'closed') {
        reject(this.lostError(true));
        return;
      }
      const w = {
        resolve: () => {
          this.drainWaiters.delete(w);
          socket.off('drain', w.resolve);
          resolve();
        },
        reject,
      };
      this.drainWaiters.add(w);
      socket.once('drain', w.resolve);
    });
  }

  private waitContinuation(cmd: PendingCommand): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      if (this.state === 'closed') {
        reject(this.lostError(true));
        return;
      }
      if (!this.pending.has(cmd.tag)) {
        resolve(false);
        return;
      }
      this.contWaiter = { cmd, resolve, reject };
    });
  }

  // -------------------------------------------------------------------------------------
  // Reading
  // -------------------------------------------------------------------------------------

  private readonly onData = (chunk: Buffer): void => {
    this.lastActivity = Date.now();
    try {
      this.consume(chunk);
    } catch (err) {
      this.destroy(err);
    }
  };

  /** Split server output into responses: CRLF-terminated lines, where a line ending in
   * `{n}` (or `~{n}`, RFC 3516) is followed by n literal bytes and then continues
   * (RFC 3501 §4.3, §7). */
  private consume(chunk: Buffer): void {
    // `chunk` may be a view of the reused read buffer (plain TCP): nothing below keeps a
    // reference to it after this call; partial lines and literal bytes are copied out.
    let off = 0;
    while (off < chunk.length && !this.readerDetached && this.state !== 'closed') {
      if (this.literalRemaining > 0) {
        const take = Math.min(this.literalRemaining, chunk.length - off);
        const lit = this.literalBuf;
        const sink = this.literalStreamTo;
        // Copied straight into the literal's own buffer: one allocation and one copy per
        // literal, however many socket chunks it spans, and the socket's read buffers are
        // not kept alive by the message.
        if (lit) chunk.copy(lit, lit.length - this.literalRemaining, off, off + take);
        else if (sink) sink.write(chunk.subarray(off, off + take));
        off += take;
        this.literalRemaining -= take;
        if (this.literalRemaining === 0) {
          if (sink) {
            this.literalStreamTo = null;
            this.respLiterals.push(EMPTY);
            sink.end();
          } else {
            this.respLiterals.push(lit);
          }
          this.literalBuf = null;
        }
        continue;
      }
      const lf = chunk.indexOf(0x0a, off);
      if (lf < 0) {
        // Kept past this call: copied, the read buffer is reused.
        this.lineChunks.push(Buffer.from(chunk.subarray(off)));
        this.lineBytes += chunk.length - off;
        if (this.lineBytes > this.maxLineBytes) {
          throw new ImapProtocolError(`server line longer than ${this.maxLineBytes} bytes`);
        }
        return;
      }
      this.lineChunks.push(chunk.subarray(off, lf + 1));
      off = lf + 1;
      const lineBuf = this.lineChunks.length === 1 ? this.lineChunks[0]! : Buffer.concat(this.lineChunks);
      this.lineChunks = [];
      this.lineBytes = 0;
      // Lenient about a bare LF; RFC 3501 §2.2 says CRLF. resp-text may be UTF-8 (RFC 9051).
      const end = lineBuf.length >= 2 && lineBuf[lineBuf.length - 2] === 0x0d ? 2 : 1;
      const text = lineBuf.toString('utf8', 0, lineBuf.length - end);
      this.respLine += text;
      // Only a line ending in '}' can announce a literal: skip the regex for the others.
      const lit = text.charCodeAt(text.length - 1) === 0x7d ? /~?\{(\d+)\}$/.exec(text) : null;
      if (lit) {
        const n = Number(lit[1]);
        if (!Number.isSafeInteger(n)) throw new ImapProtocolError('server literal size out of range');
        const target = n <= this.maxCollectedLiteral && this.literalHandler ? this.literalHandler(n, this.respLine) : undefined;
        if (target && 'write' in target) {
          if (n === 0) {
            this.respLiterals.push(EMPTY);
            target.end();
          } else {
            this.literalRemaining = n;
            this.literalStreamTo = target;
          }
          continue;
        }
        if (target && target.buffer.length !== n) throw new ImapProtocolError('literal buffer of the wrong size');
        if (n === 0) {
          this.respLiterals.push(Buffer.alloc(0));
        } else {
          this.literalRemaining = n;
          // allocUnsafe: every byte is overwritten from the socket before it is handed out.
          this.literalBuf = target ? target.buffer : n <= this.maxCollectedLiteral ? Buffer.allocUnsafe(n) : null;
        }
        continue;
      }
      const line = this.respLine;
      const literals = this.respLiterals;
      this.respLine = '';
      this.respLiterals = [];
      this.dispatch(line, literals);
    }
  }

  /**
   * Stop reading from the server until {@link resumeReading} (backpressure for a streamed
   * literal whose consumer is slower than the server). What was already read is still
   * delivered. The idle watchdog does not count the time paused.
   */
  pauseReading(): void {
    if (this.readPaused) return;
    this.readPaused = true;
    this.socket?.pause();
  }

  resumeReading(): void {
    if (!this.readPaused) return;
    this.readPaused = false;
    this.lastActivity = Date.now();
    if (this.socket && !this.socket.destroyed && !this.readerDetached) this.socket.resume();
  }

  private dispatch(line: string, literals: Array<Buffer | null>): void {
    if (line.startsWith('+')) {
      this.dispatchContinuation();
      return;
    }
    const sp = line.indexOf(' ');
    const tag = sp < 0 ? line : line.slice(0, sp);
    if (tag === '*') {
      this.dispatchUntagged(line, literals);
      return;
    }
    this.dispatchTagged(tag, sp < 0 ? '' : line.slice(sp + 1));
  }

  private dispatchContinuation(): void {
    const w = this.contWaiter;
    if (w) {
      this.contWaiter = null;
      w.resolve(true);
      return;
    }
    // A further challenge during AUTHENTICATE PLAIN (which has none): cancel the exchange
    // with "*" (RFC 3501 §6.2.2) rather than leave the server waiting forever.
    for (const cmd of this.pending.values()) {
      if (cmd.authenticate && cmd.started) {
        this.socket?.write('*\r\n');
        return;
      }
    }
    // Otherwise an unsolicited "+": nothing is waiting for it, ignore.
  }

  private dispatchUntagged(line: string, literals: Array<Buffer | null>): void {
    const m = /^\* (?:(\d+) )?(\S+)/.exec(line);
    const kind = (m?.[2] ?? '').toUpperCase();
    const resp: UntaggedResponse = { line, kind, literals };
    if (m?.[1] !== undefined) resp.number = Number(m[1]);
    if (this.greetingWaiter) {
      const g = this.greetingWaiter;
      this.greetingWaiter = null;
      g.resolve(resp);
      return;
    }
    if (kind === 'CAPABILITY') {
      this.caps = parseCapabilities(line.slice(m![0].length));
    } else if (kind === 'ENABLED') {
      // RFC 5161 §3.2: what the server actually turned on.
      if (/(^|\s)UTF8=ACCEPT(\s|$)/i.test(line.slice(m![0].length))) this.utf8 = true;
    } else if (kind === 'OK' || kind === 'NO' || kind === 'BAD' || kind === 'BYE') {
      const rt = parseRespText(restAfterKind(resp));
      if (rt.code === 'CAPABILITY' && rt.codeArgs) this.caps = parseCapabilities(rt.codeArgs);
      // RFC 3501 §7.1.5: BYE announces the close; keep its text for the lost-connection error.
      if (kind === 'BYE') this.byeText = restAfterKind(resp);
    }
    const listener = this.opts.onUntagged;
    if (listener) {
      try {
        listener(resp);
      } catch (err) {
        process.emitWarning(`mailferry: untagged-response listener threw: ${describeError(err)}`);
      }
    }
  }

  private dispatchTagged(tag: string, rest: string): void {
    const cmd = this.pending.get(tag);
    if (!cmd) return; // not ours (or already failed): ignore
    this.pending.delete(tag);
    const sp = rest.indexOf(' ');
    const statusWord = (sp < 0 ? rest : rest.slice(0, sp)).toUpperCase();
    const status: ResponseStatus = statusWord === 'OK' || statusWord === 'NO' ? statusWord : 'BAD';
    const rt = parseRespText(sp < 0 ? '' : rest.slice(sp + 1));
    const r: TaggedResponse = { tag, status, text: rt.text };
    if (rt.code !== undefined) r.code = rt.code;
    if (rt.codeArgs !== undefined) r.codeArgs = rt.codeArgs;
    if (this.contWaiter?.cmd === cmd) {
      const w = this.contWaiter;
      this.contWaiter = null;
      w.resolve(false);
    }
    if (tag === this.startTlsTag) {
      this.startTlsTag = null;
      // RFC 3501 §6.2.1 / RFC 2595: the TLS negotiation starts right after this CRLF; stop
      // reading plaintext now. Anything the server (or an attacker) squeezed in after the
      // OK is discarded, never interpreted (the STARTTLS command-injection attack).
      if (status === 'OK') {
        this.readerDetached = true;
        this.socket?.pause();
      }
    }
    cmd.resolve(r);
    if (this.aborting && this.pending.size === 0) this.destroy(this.aborting);
  }

  // -------------------------------------------------------------------------------------
  // Watchdog, closing
  // -------------------------------------------------------------------------------------

  private armWatchdog(): void {
    if (this.watchdog || !(this.idleTimeoutMs > 0) || !Number.isFinite(this.idleTimeoutMs)) return;
    this.watchdog = setTimeout(this.checkIdle, this.idleTimeoutMs);
    this.watchdog.unref();
  }

  private readonly checkIdle = (): void => {
    this.watchdog = null;
    if (this.state === 'closed' || this.pending.size === 0) return;
    const now = Date.now();
    let due: number;
    const sw = this.sourceWait;
    if (sw) {
      // Waiting for a streamed literal's source: the server is waiting for us, so only the
      // source's clock runs. A stall abandons the literal (writeLiteralStream).
      if (now - sw.since >= this.idleTimeoutMs) {
        this.lastActivity = now;
        sw.stop('stalled');
        due = now + this.idleTimeoutMs;
      } else {
        due = sw.since + this.idleTimeoutMs;
      }
    } else if (this.readPaused) {
      this.lastActivity = now;
      due = now + this.idleTimeoutMs;
    } else {
      const idle = now - this.lastActivity;
      if (idle >= this.idleTimeoutMs) {
        this.destroy(new ImapConnectionLostError(`no response from ${this.describe()} for ${this.idleTimeoutMs} ms`));
        return;
      }
      due = this.lastActivity + this.idleTimeoutMs;
    }
    this.watchdog = setTimeout(this.checkIdle, Math.max(1, due - now));
    this.watchdog.unref();
  };

  private readonly onSocketError = (err: Error): void => {
    this.socketError ??= err;
  };

  private readonly onSocketClose = (): void => {
    this.handleClosed();
  };

  /** The error a command gets when the connection is gone. */
  private lostError(uncertain: boolean, written = uncertain): ImapConnectionLostError {
    const cause = this.destroyCause ?? this.socketError;
    let why = '';
    if (this.byeText !== undefined) why = `: server said BYE ${this.byeText}`;
    else if (cause !== undefined) why = `: ${describeError(cause)}`;
    return new ImapConnectionLostError(
      `connection to ${this.describe()} lost${why}`,
      cause === undefined ? { uncertain, written } : { cause, uncertain, written },
    );
  }

  private handleClosed(): void {
    if (this.state === 'closed') return;
    const orderly = this.state === 'logout' || (this.destroyCause === null && this.pending.size === 0);
    this.state = 'closed';
    if (this.watchdog) {
      clearTimeout(this.watchdog);
      this.watchdog = null;
    }
    if (this.abortTimer) {
      clearTimeout(this.abortTimer);
      this.abortTimer = null;
    }
    this.closeError = orderly ? null : this.lostError(true);
    // A command whose streamed literal is incomplete cannot have been executed.
    for (const cmd of this.pending.values()) cmd.reject(this.lostError(cmd.started && !cmd.literalIncomplete, cmd.started));
    this.pending.clear();
    this.sourceWait?.stop('closed');
    if (this.contWaiter) {
      this.contWaiter.reject(this.lostError(true));
      this.contWaiter = null;
    }
    for (const w of this.drainWaiters) w.reject(this.lostError(true));
    this.drainWaiters.clear();
    for (const w of [...this.writeWaiters]) w();
    for (const l of this.closeListeners.splice(0)) l(this.closeError);
  }

  /**
   * Drop the connection now. Outstanding commands reject with
   * {@link ImapConnectionLostError}; `cause` (if given) becomes its cause.
   */
  destroy(cause?: unknown): void {
    if (this.state === 'closed') return;
    if (this.destroyCause === undefined) this.destroyCause = cause === undefined ? null : cause;
    const socket = this.socket;
    if (socket && !socket.destroyed) {
      // Hand what is still corked (see corkUntilNextTick) to the kernel first: destroy()
      // would discard it, and e.g. an abandoned literal's partial bytes must still go out
      // the way they were written, for the record (they can never complete the command).
      this.uncorkNow();
      socket.destroy();
      // 'close' is emitted asynchronously; settle everything now so callers see it at once.
    }
    this.handleClosed();
  }

  /**
   * LOGOUT (RFC 3501 §6.1.3), best effort: waits at most `timeoutMs` for the tagged reply,
   * then destroys the socket. Never rejects.
   */
  async logout(timeoutMs = 5000): Promise<void> {
    if (this.state === 'closed') return;
    if (this.aborting) {
      // Tearing down after an abandoned literal: nothing more can be written; the socket
      // goes within the grace period.
      await new Promise<void>((resolve) => this.onClose(() => resolve()));
      return;
    }
    if (this.state === 'connecting') {
      this.destroy();
      return;
    }
    const { done } = this.send(['LOGOUT']);
    // From here on, BYE and the close that follows are expected, not failures.
    this.state = 'logout';
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      done.catch(noop),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
        timer.unref();
      }),
    ]);
    clearTimeout(timer);
    this.destroy();
  }
}

// ---------------------------------------------------------------------------------------

/** Let an iterator that is abandoned before its end clean up (a generator's `finally`, a
 * Readable's destroy). Not awaited: a source that hangs must not hang us. */
function closeIterator(it: AsyncIterator<unknown>): void {
  try {
    const r = it.return?.();
    if (r) Promise.resolve(r).catch(noop);
  } catch {
    // The source's own clean-up failed; nothing to do about it here.
  }
}

/** The part of an untagged response after `* [n] KIND `. */
function restAfterKind(r: UntaggedResponse): string {
  const m = /^\* (?:\d+ )?\S+ ?/.exec(r.line);
  return m ? r.line.slice(m[0].length) : r.line;
}

function truncate(s: string, n = 120): string {
  return s.length > n ? `${s.slice(0, n)}…` : s;
}

function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code && !err.message.includes(code) ? `${code} ${err.message}` : err.message;
  }
  return String(err);
}

