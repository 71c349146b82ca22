/**
 * A focused reader of whole messages for the source side: EXAMINE a mailbox, then
 * `UID FETCH set (UID FLAGS INTERNALDATE BODY.PEEK[])` and nothing else.
 *
 * Why not imapflow here: a CPU profile of a 5,000-message migration spent about a quarter
 * of mailferry's CPU in imapflow's generic FETCH machinery (token parser, response
 * formatting, stream plumbing) plus the garbage and Buffer copies it makes, on a box where
 * the IMAP servers need that CPU too. The responses we ask for have four attributes, so
 * they are parsed directly from what {@link RawConnection} already splits out: one line
 * (literals left as `{n}`) plus the literal bytes, each read into a single Buffer of its
 * announced size (raw-connection.ts `consume`), handed over without a further copy.
 *
 * One command at a time: untagged FETCH responses carry no tag (RFC 3501 §7), so they
 * can only be attributed to a command if no other command that could cause them is in
 * flight. Calls are queued.
 */

import type { ImapEndpoint, ImapLogin } from './endpoint.js';
import { ImapConnectionLostError, type LiteralTarget, RawConnection, type TaggedResponse, type UntaggedResponse } from './raw-connection.js';

export { ImapConnectionLostError } from './raw-connection.js';

export interface FetchedMessage {
  uid: number;
  /** System flags and keywords as the server sent them (`\Seen`, `$Forwarded`, …). */
  flags: string[];
  /** Null when the server sent none, or one that is not an RFC 3501 §9 date-time: the copy then takes the target's date. */
  internalDate: Date | null;
  /** The message, byte for byte (RFC 3501 §6.4.5 `BODY[]`). */
  raw: Buffer;
}

export interface RawFetchResult {
  /** In ascending UID order. UIDs of the set that no longer exist are simply absent
   * (RFC 3501 §6.4.8: a UID FETCH of non-existent UIDs is not an error). */
  messages: FetchedMessage[];
  /** Messages the server answered without their bytes: `BODY[] NIL`, or a literal bigger
   * than `maxMessageBytes` (not read into memory). Not in `messages`. */
  unreadable: Array<{ uid: number; reason: string }>;
}

/** Options of one {@link RawFetcher.fetch}. */
export interface FetchOptions {
  /**
   * Where to read a message of `size` bytes: a Buffer of exactly that length (e.g. a view
   * into a reused arena, so message bytes make no garbage), or null for a fresh Buffer.
   */
  alloc?: (size: number) => Buffer | null;
}

/** A message's metadata (no bytes): {@link RawFetcher.fetchMeta}. */
export interface MessageMeta {
  uid: number;
  flags: string[];
  /** Null as in {@link FetchedMessage}. */
  internalDate: Date | null;
}

/** What {@link RawFetcher.list} asks for besides the UID. */
export interface ListQuery {
  /** RFC822.SIZE (RFC 3501 §6.4.5). */
  size?: boolean;
  flags?: boolean;
  internalDate?: boolean;
  /** Only messages whose mod-sequence is above this (CHANGEDSINCE, RFC 7162 §3.1.4). */
  changedSince?: string;
}

/** How {@link RawFetcher.fetch} rejects when the connection is lost: with the UIDs whose
 * response had arrived whole. */
export type FetchLostError = ImapConnectionLostError & { delivered?: number[] };

/** One message of a {@link RawFetcher.list}: the attributes asked for, where the server sent them. */
export interface ListedMessage {
  uid: number;
  size?: number;
  flags?: string[];
  internalDate?: Date;
}

/** What {@link RawFetcher.examine} learnt about the mailbox (RFC 3501 §6.3.1, RFC 7162 §3.1.2). */
export interface ExaminedMailbox {
  uidValidity: number;
  /** 0 when the server sent no UIDNEXT (Courier). */
  uidNext: number;
  exists: number;
  /** HIGHESTMODSEQ as a decimal string (a 63-bit value, RFC 7162 §7); null without
   * CONDSTORE or for a mailbox without persistent mod-sequences (`NOMODSEQ`, §3.1.2.2). */
  highestModseq: string | null;
}

/** What {@link RawFetcher.fetchStream} tells its `onStart` when the message's literal is announced. */
export interface StreamStart {
  /** The exact length of the message (the literal's announced size). */
  size: number;
  /** The server sent a literal8 (`~{n}`, RFC 3516): the message may contain NUL bytes. */
  literal8: boolean;
}

export interface RawFetcherOptions {
  endpoint: ImapEndpoint;
  login: ImapLogin;
  /** Drop the connection when the server is silent this long with a command outstanding
   * (RawConnection's watchdog). Default 60 s; 0 disables. */
  idleTimeoutMs?: number;
  /** TCP connect + TLS + greeting limit. Default 30 s. */
  connectTimeoutMs?: number;
  /** Largest message read into memory; a bigger one is listed in `unreadable` (its bytes
   * are read off the socket and dropped). Default 1 GiB. */
  maxMessageBytes?: number;
}

/**
 * A tagged NO or BAD (RFC 3501 §7.1.2, §7.1.3). `responseStatus` has the same name and
 * meaning as on imapflow's errors, so callers can treat both alike (copy-lanes.ts refetches
 * one by one on it to isolate an unreadable message).
 */
export class RawFetchCommandError extends Error {
  readonly responseStatus: 'NO' | 'BAD';
  /** The server's text after the status (and response code). */
  readonly serverText: string;
  /** Response code, upper-case, e.g. `NONEXISTENT` (RFC 5530), `SERVERBUG`. */
  readonly code: string | undefined;
  constructor(command: string, r: TaggedResponse) {
    super(`${command} failed: ${r.status}${r.code ? ` [${r.code}]` : ''} ${r.text}`);
    this.name = 'RawFetchCommandError';
    this.responseStatus = r.status === 'NO' ? 'NO' : 'BAD';
    this.serverText = r.text;
    this.code = r.code;
  }
}

/** The server sent a FETCH response this parser cannot make sense of. */
export class RawFetchParseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RawFetchParseError';
  }
}

const DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024 * 1024;
/** sequence-set syntax only (RFC 3501 §9): anything else could smuggle in a command. */
const UID_SET = /^(\d+|\*)(:(\d+|\*))?(,(\d+|\*)(:(\d+|\*))?)*$/;
/** The start of a FETCH response, as the literal handler sees it (the line so far). */
const FETCH_LINE = /^\* \d+ FETCH \(/i;

/** What one message's FETCH responses said so far. A server may split one message's
 * attributes over several FETCH responses (RFC 3501 §7.4.2 allows any grouping), and may
 * send unsolicited ones (flag changes by other sessions, §7.4.2) in between: all are
 * merged by message sequence number, which cannot change during a FETCH because EXPUNGE
 * must not be sent while one is answered (§7.4.1). Later values win. */
interface FetchParts {
  uid?: number;
  size?: number;
  flags?: string[];
  /** Null: sent, but not a date-time. */
  internalDate?: Date | null;
  /** Buffer, or `null` for NIL / skipped; absent when no BODY[] came. */
  raw?: Buffer | null;
  rawWhy?: string;
}

type Collector = { kind: 'fetch'; bySeq: Map<number, FetchParts>; error: Error | null } | { kind: 'stream'; uid: number | undefined; streamed: boolean } | {
  kind: 'examine';
  uidValidity?: number;
  uidNext?: number;
  exists?: number;
  highestModseq?: string;
  noModseq?: boolean;
};

export class RawFetcher {
  private current: Collector | null = null;
  private tail: Promise<unknown> = Promise.resolve();
  private readonly mailboxCache = new Map<string, string>();

  private constructor(private readonly conn: RawConnection) {}

  /** Connect and authenticate (RawConnection: STARTTLS/TLS, LOGIN or AUTHENTICATE PLAIN).
   * Rejects with the connect/greeting/auth errors of raw-connection.ts. */
  static async connect(opts: RawFetcherOptions): Promise<RawFetcher> {
    let fetcher: RawFetcher | null = null;
    const conn = await RawConnection.connect(opts.endpoint, {
      ...(opts.idleTimeoutMs !== undefined ? { idleTimeoutMs: opts.idleTimeoutMs } : {}),
      ...(opts.connectTimeoutMs !== undefined ? { connectTimeoutMs: opts.connectTimeoutMs } : {}),
      maxCollectedLiteralBytes: opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
      onUntagged: (r) => fetcher?.onUntagged(r),
    });
    try {
      await conn.login(opts.login);
    } catch (err) {
      conn.destroy();
      throw err;
    }
    fetcher = new RawFetcher(conn);
    return fetcher;
  }

  /** Upper-case capabilities of the authenticated session. */
  get capabilities(): ReadonlySet<string> {
    return this.conn.capabilities;
  }

  /** The connection is gone (lost or closed). */
  get closed(): boolean {
    return this.conn.closed;
  }

  /**
   * EXAMINE (RFC 3501 §6.3.2): select the mailbox read-only, so fetching BODY.PEEK[] can
   * never set `\Seen` or clear `\Recent` on the source. `mailbox` is the full UTF-8 path
   * with the server's separator; it is sent in modified UTF-7 (§5.1.3), like the appender.
   * `uidNext` is 0 if the server did not send it (RFC 3501 §6.3.1 requires it, but some
   * old servers omit it); a missing UIDVALIDITY rejects, since UIDs mean nothing without it.
   * With `condstore` (only where the server offers CONDSTORE) the EXAMINE carries the
   * CONDSTORE parameter, which makes the server report HIGHESTMODSEQ (RFC 7162 §3.1.8).
   */
  examine(mailbox: string, opts: { condstore?: boolean } = {}): Promise<ExaminedMailbox> {
    return this.serial(async () => {
      const col: Collector = { kind: 'examine' };
      const r = await this.run(col, ['EXAMINE ', this.encodeMailbox(mailbox), opts.condstore ? ' (CONDSTORE)' : '']);
      if (r.status !== 'OK') throw new RawFetchCommandError(`EXAMINE ${mailbox}`, r);
      if (col.uidValidity === undefined) {
        // RFC 3501 §6.3.1: UIDVALIDITY is REQUIRED; without it UIDs mean nothing.
        throw new RawFetchParseError(`EXAMINE ${mailbox}: the server sent no UIDVALIDITY`);
      }
      const highestModseq = opts.condstore && !col.noModseq ? (col.highestModseq ?? null) : null;
      return { uidValidity: col.uidValidity, uidNext: col.uidNext ?? 0, exists: col.exists ?? 0, highestModseq };
    });
  }

  /**
   * `UID FETCH uids (UID [RFC822.SIZE] [FLAGS] [INTERNALDATE]) [(CHANGEDSINCE n)]` in the
   * mailbox last examined: a folder's listing without bodies (scan.ts). Ascending UIDs;
   * note that `n:*` includes the highest message even below n (RFC 3501 §6.4.8), which
   * the caller filters. Errors as {@link fetch}.
   */
  list(uids: string, query: ListQuery): Promise<ListedMessage[]> {
    if (!UID_SET.test(uids)) return Promise.reject(new TypeError(`not a UID set: ${JSON.stringify(uids)}`));
    if (query.changedSince !== undefined && !/^\d+$/.test(query.changedSince)) return Promise.reject(new TypeError(`not a mod-sequence: ${query.changedSince}`));
    const atts = ['UID', ...(query.size ? ['RFC822.SIZE'] : []), ...(query.flags ? ['FLAGS'] : []), ...(query.internalDate ? ['INTERNALDATE'] : [])];
    const command = `UID FETCH ${uids} (${atts.join(' ')})${query.changedSince !== undefined ? ` (CHANGEDSINCE ${query.changedSince})` : ''}`;
    return this.serial(async () => {
      const col: Collector = { kind: 'fetch', bySeq: new Map(), error: null };
      const r = await this.run(col, [command]);
      if (r.status !== 'OK') throw new RawFetchCommandError(command, r);
      if (col.error) throw col.error;
      const out: ListedMessage[] = [];
      for (const p of col.bySeq.values()) {
        // Without UID it is an unsolicited update for another message (RFC 3501 §6.4.8).
        if (p.uid === undefined) continue;
        const m: ListedMessage = { uid: p.uid };
        if (query.size) {
          if (p.size === undefined) throw new RawFetchParseError(`the server sent no RFC822.SIZE for UID ${p.uid}`);
          m.size = p.size;
        }
        if (query.flags) m.flags = p.flags ?? [];
        if (query.internalDate && p.internalDate) m.internalDate = p.internalDate;
        out.push(m);
      }
      return out.sort((a, b) => a.uid - b.uid);
    });
  }

  /**
   * `UID FETCH uids (UID FLAGS INTERNALDATE BODY.PEEK[])` (RFC 3501 §6.4.8, §6.4.5) in the
   * mailbox last examined. A tagged NO/BAD rejects with {@link RawFetchCommandError};
   * connection loss with ImapConnectionLostError; a response that cannot be parsed with
   * {@link RawFetchParseError} (after the tagged response, so the session stays in step).
   */
  fetch(uids: string, opts: FetchOptions = {}): Promise<RawFetchResult> {
    if (!UID_SET.test(uids)) {
      return Promise.reject(new TypeError(`not a UID set: ${JSON.stringify(uids)}`));
    }
    const alloc = opts.alloc;
    return this.serial(async () => {
      const col: Collector = { kind: 'fetch', bySeq: new Map(), error: null };
      // Only the literals of FETCH responses (the BODY[] of a message) go to `alloc`.
      const handler = alloc
        ? (size: number, line: string): LiteralTarget | undefined => {
            if (!FETCH_LINE.test(line)) return undefined;
            const buffer = alloc(size);
            return buffer ? { buffer } : undefined;
          }
        : null;
      let r: TaggedResponse;
      try {
        r = await this.run(col, [`UID FETCH ${uids} (UID FLAGS INTERNALDATE BODY.PEEK[])`], handler);
      } catch (err) {
        // Which messages had arrived whole when the connection went: the next one is the
        // one the server was sending (sync/drop-suspects.ts).
        if (err instanceof ImapConnectionLostError) (err as FetchLostError).delivered = [...col.bySeq.values()].flatMap((p) => ('raw' in p && p.uid !== undefined ? [p.uid] : []));
        throw err;
      }
      if (r.status !== 'OK') throw new RawFetchCommandError(`UID FETCH ${uids}`, r);
      if (col.error) throw col.error;
      return collect(col.bySeq);
    });
  }

  /** `UID FETCH uid (UID FLAGS INTERNALDATE)`: null if the message does not exist (any more). */
  fetchMeta(uid: number): Promise<MessageMeta | null> {
    if (!Number.isSafeInteger(uid) || uid < 1) return Promise.reject(new TypeError(`not a UID: ${uid}`));
    return this.serial(async () => {
      const col: Collector = { kind: 'fetch', bySeq: new Map(), error: null };
      const r = await this.run(col, [`UID FETCH ${uid} (UID FLAGS INTERNALDATE)`]);
      if (r.status !== 'OK') throw new RawFetchCommandError(`UID FETCH ${uid}`, r);
      if (col.error) throw col.error;
      for (const p of col.bySeq.values()) {
        if (p.uid !== uid) continue;
        return { uid, flags: p.flags ?? [], internalDate: p.internalDate ?? null };
      }
      return null;
    });
  }

  /**
   * `UID FETCH uid (UID BODY.PEEK[])` with the message's bytes streamed instead of held:
   * when its literal is announced, `onStart` is called (synchronously, from the socket
   * reader) with its exact size and returns where the bytes go: `write` gets each piece as
   * a view that is only valid during the call (copy what you keep; pause with
   * {@link pauseReading} when you cannot keep up), `end` follows the last byte. Resolves
   * `true` when the tagged OK has come and the literal was the requested UID's, `false`
   * when the message does not exist (then `onStart` was never called). A tagged NO/BAD
   * rejects with {@link RawFetchCommandError}, a lost connection with
   * ImapConnectionLostError, after `write`/`end` if the literal had started.
   */
  fetchStream(uid: number, onStart: (s: StreamStart) => { write: (piece: Buffer) => void; end: () => void }): Promise<boolean> {
    if (!Number.isSafeInteger(uid) || uid < 1) return Promise.reject(new TypeError(`not a UID: ${uid}`));
    return this.serial(async () => {
      const col: Collector = { kind: 'stream', uid: undefined, streamed: false };
      const handler = (size: number, line: string): LiteralTarget | undefined => {
        // Only the BODY[] literal of a FETCH response; nothing else of ours has literals.
        if (col.streamed || !FETCH_LINE.test(line) || !/BODY\[\](<0>)? ~?\{\d+\}$/i.test(line)) return undefined;
        col.streamed = true;
        return onStart({ size, literal8: /~\{\d+\}$/.test(line) });
      };
      const r = await this.run(col, [`UID FETCH ${uid} (UID BODY.PEEK[])`], handler);
      if (r.status !== 'OK') throw new RawFetchCommandError(`UID FETCH ${uid}`, r);
      if (col.streamed && col.uid !== undefined && col.uid !== uid) {
        throw new RawFetchParseError(`asked for UID ${uid}, the server sent the message of UID ${col.uid}`);
      }
      return col.streamed;
    });
  }

  /** Stop reading the server's output for now (backpressure); see RawConnection. */
  pauseReading(): void {
    this.conn.pauseReading();
  }

  resumeReading(): void {
    this.conn.resumeReading();
  }

  /** LOGOUT (best effort, bounded) and close the socket. Never rejects. */
  async close(): Promise<void> {
    await this.tail.catch(() => undefined);
    await this.conn.logout();
  }

  // -------------------------------------------------------------------------------------

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.tail.then(fn, fn);
    this.tail = p.catch(() => undefined);
    return p;
  }

  private async run(col: Collector, parts: string[], handler: RawConnection['literalHandler'] = null): Promise<TaggedResponse> {
    this.current = col;
    this.conn.literalHandler = handler;
    try {
      return await this.conn.send(parts).done;
    } finally {
      this.current = null;
      this.conn.literalHandler = null;
      this.conn.resumeReading();
    }
  }

  private onUntagged(r: UntaggedResponse): void {
    const col = this.current;
    if (!col) return;
    if (col.kind === 'stream') {
      // The response that carried the streamed literal: note its UID (checked at the end).
      if (r.kind !== 'FETCH' || !col.streamed || col.uid !== undefined) return;
      const m = /[( ]UID (\d+)/i.exec(r.line);
      if (m && /BODY\[\]/i.test(r.line)) col.uid = Number(m[1]);
      return;
    }
    if (col.kind === 'fetch') {
      if (r.kind !== 'FETCH' || r.number === undefined || col.error) return;
      try {
        mergeFetch(col.bySeq, r.number, r.line, r.literals);
      } catch (err) {
        // Keep reading to the tagged response (the stream stays in step), then reject.
        col.error = err instanceof Error ? err : new RawFetchParseError(String(err));
      }
      return;
    }
    if (r.kind === 'EXISTS' && r.number !== undefined) {
      col.exists = r.number;
    } else if (r.kind === 'OK') {
      // RFC 3501 §7.1: `* OK [UIDVALIDITY n]`, `* OK [UIDNEXT n]` (§6.3.1); RFC 7162
      // §3.1.2.1 `* OK [HIGHESTMODSEQ n]`, §3.1.2.2 `* OK [NOMODSEQ]`.
      const m = /^\* OK \[(UIDVALIDITY|UIDNEXT|HIGHESTMODSEQ|NOMODSEQ)(?: (\d+))?\]/i.exec(r.line);
      const name = m?.[1]!.toUpperCase();
      if (name === 'NOMODSEQ') col.noModseq = true;
      else if (m?.[2] === undefined) return;
      else if (name === 'UIDVALIDITY') col.uidValidity = Number(m[2]);
      else if (name === 'UIDNEXT') col.uidNext = Number(m[2]);
      else col.highestModseq = m[2].replace(/^0+(?=\d)/, '');
    }
  }

  /** The connection's quoted mailbox name (UTF-8 or modified UTF-7, see RawConnection.mailboxName), cached. */
  private encodeMailbox(name: string): string {
    const cached = this.mailboxCache.get(name);
    if (cached !== undefined) return cached;
    const quoted = this.conn.mailboxName(name);
    if (this.mailboxCache.size > 1000) this.mailboxCache.clear();
    this.mailboxCache.set(name, quoted);
    return quoted;
  }
}

// ---------------------------------------------------------------------------------------
// Parsing `* n FETCH (att value att value …)` (RFC 3501 §7.4.2)
// ---------------------------------------------------------------------------------------

/** The parts of one response: its line (each literal left as `{n}`) and literal bytes. */
class Cursor {
  pos: number;
  private lit = 0;
  constructor(
    readonly s: string,
    start: number,
    private readonly literals: Array<Buffer | null>,
  ) {
    this.pos = start;
  }

  fail(what: string): never {
    const at = this.s.slice(Math.max(0, this.pos - 20), this.pos + 40);
    throw new RawFetchParseError(`unparsable FETCH response: ${what} at …${at}…`);
  }

  peek(): number {
    return this.s.charCodeAt(this.pos);
  }

  expect(ch: string): void {
    if (this.s[this.pos] !== ch) this.fail(`expected '${ch}'`);
    this.pos += 1;
  }

  skipSpaces(): void {
    while (this.s.charCodeAt(this.pos) === 0x20) this.pos += 1;
  }

  /** An attribute name: atom, with a `[section]` and `<origin>` as in `BODY[]<0>`. */
  attName(): string {
    const s = this.s;
    const start = this.pos;
    let depth = 0;
    for (;;) {
      const c = s.charCodeAt(this.pos);
      if (Number.isNaN(c)) break;
      if (c === 0x5b /* [ */) depth += 1;
      else if (c === 0x5d /* ] */) depth -= 1;
      else if (depth === 0 && (c === 0x20 || c === 0x28 || c === 0x29)) break;
      this.pos += 1;
    }
    if (this.pos === start) this.fail('expected an attribute name');
    return s.slice(start, this.pos).toUpperCase();
  }

  /** An atom or number (up to SP, parenthesis or end). */
  atom(): string {
    const s = this.s;
    const start = this.pos;
    for (;;) {
      const c = s.charCodeAt(this.pos);
      if (Number.isNaN(c) || c === 0x20 || c === 0x28 || c === 0x29) break;
      this.pos += 1;
    }
    if (this.pos === start) this.fail('expected an atom');
    return s.slice(start, this.pos);
  }

  number(): number {
    const a = this.atom();
    if (!/^\d+$/.test(a)) this.fail('expected a number');
    return Number(a);
  }

  /** A quoted string (RFC 3501 §9 `quoted`), unescaped. */
  quoted(): string {
    this.expect('"');
    const s = this.s;
    let out = '';
    let from = this.pos;
    for (;;) {
      const i = s.indexOf('"', this.pos);
      const j = s.indexOf('\\', this.pos);
      if (i < 0) this.fail('unterminated quoted string');
      if (j >= 0 && j < i) {
        out += s.slice(from, j) + s.charAt(j + 1);
        this.pos = j + 2;
        from = this.pos;
        continue;
      }
      out += s.slice(from, i);
      this.pos = i + 1;
      return out;
    }
  }

  /** `{n}` (or `~{n}`, RFC 3516): the next literal's bytes (null if it was skipped). */
  literal(): Buffer | null {
    const m = /^~?\{(\d+)\}/.exec(this.s.slice(this.pos, this.pos + 24));
    if (!m) this.fail('expected a literal');
    this.pos += m[0].length;
    if (this.lit >= this.literals.length) this.fail('literal missing');
    return this.literals[this.lit++]!;
  }

  /** nstring (RFC 3501 §9): NIL, a quoted string or a literal. */
  nstring(): { value: Buffer | null; size?: number } {
    const c = this.peek();
    if (c === 0x22 /* " */) return { value: Buffer.from(this.quoted(), 'utf8') };
    if (c === 0x7b /* { */ || c === 0x7e /* ~ */) {
      const size = Number(/\{(\d+)\}/.exec(this.s.slice(this.pos, this.pos + 24))?.[1]);
      return { value: this.literal(), size };
    }
    const a = this.atom();
    if (a.toUpperCase() !== 'NIL') this.fail('expected NIL, a string or a literal');
    return { value: null };
  }

  /** Any value we do not need (MODSEQ (n), RFC822.SIZE n, ENVELOPE …): skipped, keeping
   * the literal count in step. */
  skipValue(): void {
    const c = this.peek();
    if (c === 0x28 /* ( */) {
      this.pos += 1;
      for (;;) {
        this.skipSpaces();
        if (this.peek() === 0x29) {
          this.pos += 1;
          return;
        }
        if (this.pos >= this.s.length) this.fail('unterminated list');
        this.skipValue();
      }
    }
    if (c === 0x22) this.quoted();
    else if (c === 0x7b || c === 0x7e) this.literal();
    else this.atom();
  }

  /** `(flag flag …)` (RFC 3501 §9 `flag-fetch`). */
  flagList(): string[] {
    this.expect('(');
    const out: string[] = [];
    for (;;) {
      this.skipSpaces();
      if (this.peek() === 0x29) {
        this.pos += 1;
        return out;
      }
      if (this.pos >= this.s.length) this.fail('unterminated flag list');
      out.push(this.atom());
    }
  }
}

/** Parse one `* n FETCH (…)` and merge it into `bySeq[n]`. Exported for the tests. */
export function mergeFetch(bySeq: Map<number, FetchParts>, seq: number, line: string, literals: Array<Buffer | null>): void {
  const m = /^\* \d+ FETCH /i.exec(line);
  if (!m) throw new RawFetchParseError(`not a FETCH response: ${line.slice(0, 60)}`);
  const c: Cursor = new Cursor(line, m[0].length, literals);
  const got: FetchParts = {};
  c.expect('(');
  for (;;) {
    c.skipSpaces();
    if (c.peek() === 0x29) break;
    if (c.pos >= line.length) c.fail('unterminated attribute list');
    const name = c.attName();
    c.expect(' ');
    switch (name) {
      case 'UID':
        got.uid = c.number();
        break;
      case 'RFC822.SIZE':
        got.size = c.number();
        break;
      case 'FLAGS':
        got.flags = c.flagList();
        break;
      case 'INTERNALDATE': {
        // One unreadable date is that message's problem, not the whole response's: the
        // message is copied without it (null), not the mailbox failed. NIL, which the
        // grammar does not allow here (RFC 3501 §9 date-time), is read the same way.
        const v = c.nstring().value;
        got.internalDate = v === null ? null : parseInternalDate(v.toString('latin1'));
        break;
      }
      // The server echoes BODY.PEEK[] as BODY[] (RFC 3501 §7.4.2); `<0>` only if partial.
      case 'BODY[]':
      case 'BODY[]<0>': {
        const { value, size } = c.nstring();
        got.raw = value;
        if (value === null) {
          got.rawWhy = size === undefined
            ? 'the server returned BODY[] NIL'
            : `message of ${size} bytes is over maxMessageBytes; not read`;
        }
        break;
      }
      default:
        c.skipValue();
    }
  }
  let p = bySeq.get(seq);
  if (!p) {
    p = {};
    bySeq.set(seq, p);
  }
  if (got.uid !== undefined) p.uid = got.uid;
  if (got.size !== undefined) p.size = got.size;
  if (got.flags !== undefined) p.flags = got.flags;
  if (got.internalDate !== undefined) p.internalDate = got.internalDate;
  if ('raw' in got) {
    p.raw = got.raw;
    if (got.rawWhy !== undefined) p.rawWhy = got.rawWhy;
  }
}

/** Messages that got a BODY[] (flag-only updates for others are dropped), by UID. */
function collect(bySeq: Map<number, FetchParts>): RawFetchResult {
  const messages: FetchedMessage[] = [];
  const unreadable: RawFetchResult['unreadable'] = [];
  for (const p of bySeq.values()) {
    // RFC 3501 §6.4.8: responses to UID FETCH always carry UID; one without it is an
    // unsolicited flag update for some other message.
    if (!('raw' in p) || p.uid === undefined) continue;
    if (p.raw === null || p.raw === undefined) {
      unreadable.push({ uid: p.uid, reason: p.rawWhy ?? 'no message bytes' });
      continue;
    }
    messages.push({ uid: p.uid, flags: p.flags ?? [], internalDate: p.internalDate ?? null, raw: p.raw });
  }
  messages.sort((a, b) => a.uid - b.uid);
  unreadable.sort((a, b) => a.uid - b.uid);
  return { messages, unreadable };
}

const MONTHS: Record<string, number> = {
  JAN: 0, FEB: 1, MAR: 2, APR: 3, MAY: 4, JUN: 5, JUL: 6, AUG: 7, SEP: 8, OCT: 9, NOV: 10, DEC: 11,
};

/**
 * RFC 3501 §9 `date-time`: `dd-Mon-yyyy hh:mm:ss +zzzz`, day possibly space-padded
 * (`date-day-fixed`). The zone is applied, so the Date is the same instant the server
 * stored whatever zone it reports in; a server that leaves the zone out is read as UTC
 * (its own zone is unknown). Null if malformed.
 */
export function parseInternalDate(s: string): Date | null {
  const m = /^ *(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{1,2}):(\d{2}):(\d{2})(?: ([+-])(\d{2})(\d{2}))?$/.exec(s);
  if (!m) return null;
  const mon = MONTHS[m[2]!.toUpperCase()];
  if (mon === undefined) return null;
  const offsetMin = m[7] === undefined ? 0 : (m[7] === '-' ? -1 : 1) * (Number(m[8]) * 60 + Number(m[9]));
  const year = Number(m[3]);
  let t = Date.UTC(year, mon, Number(m[1]), Number(m[4]), Number(m[5]), Number(m[6]));
  // Date.UTC reads the years 0–99 as 1900–1999.
  if (year < 100) t = new Date(t).setUTCFullYear(year);
  t -= offsetMin * 60_000;
  return Number.isFinite(t) ? new Date(t) : null;
}
