/**
 * Loads a corpus into a lab server fast: folders via imapflow, messages via pipelined
 * APPENDs (src/imap/append-pipeline.ts, LITERAL+) over several connections.
 *
 * `loadCorpus` in corpus.ts does one APPEND per round trip (~100 msg/s); this loader keeps
 * a window of APPENDs in flight on every connection, so it runs at what the server can
 * store. The benchmark also uses it, over pre-generated messages, as "the lab's limit":
 * the time for a pipelined APPEND-only writer to load a corpus into a target.
 *
 * Distribution: one shared, lazy message stream. A connection takes the next *chunk* (up
 * to `chunkMessages` consecutive messages of one folder, at most `chunkBytes` unless one
 * message alone is larger) whenever its APPEND window has room, so connections balance
 * themselves, each mostly appends to one folder at a time, and a folder's messages keep
 * corpus order within a chunk.
 *
 * With `oneConnectionPerFolder` a folder is written by one connection at a time (for
 * Maildir, see the option).
 *
 * Memory: bounded by bytes, not by the corpus. Per connection at most the appender's
 * in-flight window (`maxInFlightBytes`, message bytes written but not yet answered) plus
 * one chunk being handed over; a single message larger than both is held alone. The
 * corpus itself is only iterated, never materialised.
 */
import type { ImapFlow } from 'imapflow';
import { type AppendResult, PipelinedAppender } from '../imap/append-pipeline.js';
import type { ImapEndpoint, ImapLogin } from '../imap/endpoint.js';
import { openSession } from '../imap/imapflow-session.js';
import type { CorpusFolder, CorpusMessage } from './corpus.js';

/** What the loader needs of a corpus: `generateCorpus()` results, or any hand-made list. */
export interface FastLoadCorpus {
  folders: readonly CorpusFolder[];
  messages(): Iterable<CorpusMessage>;
}

export interface FastLoadOptions {
  /** The server's hierarchy separator; folder segments are joined with it. */
  separator: string;
  /** Parallel APPEND connections. Default 4. */
  connections?: number;
  /** Messages per chunk a connection takes at once (same folder only). Default 250. */
  chunkMessages?: number;
  /** Bytes per chunk (a larger single message still goes, alone). Default 4 MiB. */
  chunkBytes?: number;
  /** Per-connection APPEND window in bytes; default: the appender's (16 MiB). */
  maxInFlightBytes?: number;
  /** Per-connection APPEND window in messages; default: the appender's (64). */
  maxInFlightCommands?: number;
  /** Send MULTIAPPEND batches where the server offers them (default true; see
   * append-pipeline.ts); false: one APPEND command per message. */
  multiAppend?: boolean;
  /**
   * Never APPEND to one folder over two connections at once (default false). Needed for
   * Maildir, where concurrent APPENDs to one folder queue on the dovecot-uidlist dotlock
   * (4 connections load a Maildir account at about half the speed of one); sdbox does not
   * need it. A connection that takes a chunk of a folder busy on another connection holds
   * it (one chunk) until that folder's outstanding APPENDs are answered.
   */
  oneConnectionPerFolder?: boolean;
  /** Create the corpus's folders first (default true). INBOX is never created. */
  createFolders?: boolean;
  /** Resolve with the refusals listed instead of rejecting when the server refuses a
   * message (tagged NO/BAD). Default false. */
  allowRefused?: boolean;
  /** Called after every answered APPEND. */
  onProgress?: (appended: number, bytes: number) => void;
}

export interface FastLoadRefusal {
  mailbox: string;
  size: number;
  reason: string;
}

export interface FastLoadResult {
  /** Folders created or already present (INBOX not counted). */
  folders: number;
  appended: number;
  /** Bytes of the appended messages. */
  bytes: number;
  refused: FastLoadRefusal[];
  /** Wall time of the whole load: connecting, folders, messages. */
  seconds: number;
  /** Of that, creating the folders. */
  folderSeconds: number;
}

interface Chunk {
  mailbox: string;
  messages: CorpusMessage[];
}

const DEFAULT_CONNECTIONS = 4;
const DEFAULT_CHUNK_MESSAGES = 250;
const DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024;

function isInbox(path: readonly string[]): boolean {
  return path.length === 1 && (path[0] ?? '').toUpperCase() === 'INBOX';
}

function positiveInt(v: number | undefined, dflt: number, name: string): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v < 1) throw new RangeError(`loadCorpusFast: ${name} must be a positive integer, got ${v}`);
  return v;
}

/** Creates every folder of the corpus (parents first), tolerating "already exists". */
export async function createCorpusFolders(client: ImapFlow, folders: readonly CorpusFolder[], separator: string): Promise<number> {
  const paths = [...new Set(folders.filter((f) => !isInbox(f.path)).map((f) => f.path.join(separator)))];
  // Parents before children, although Dovecot would create missing parents itself.
  paths.sort((a, b) => a.split(separator).length - b.split(separator).length);
  for (const path of paths) {
    try {
      // imapflow encodes modified UTF-7 itself and treats [ALREADYEXISTS] as success.
      await client.mailboxCreate(path);
    } catch (err) {
      const e = err as { serverResponseCode?: string; responseText?: string; message?: string };
      const text = `${e.serverResponseCode ?? ''} ${e.responseText ?? ''} ${e.message ?? ''}`;
      if (/ALREADYEXISTS|already exists/i.test(text)) continue;
      throw new Error(`loadCorpusFast: cannot create folder ${JSON.stringify(path)}: ${text.trim()}`, { cause: err });
    }
  }
  return paths.length;
}

/**
 * Creates the corpus's folders and APPENDs every message (flags, internal date, bytes as
 * generated) over `connections` pipelined connections. Expects the account not to hold the
 * corpus's messages yet (it appends, it does not sync).
 */
export async function loadCorpusFast(
  endpoint: ImapEndpoint,
  login: ImapLogin,
  corpus: FastLoadCorpus,
  opts: FastLoadOptions,
): Promise<FastLoadResult> {
  const connections = positiveInt(opts.connections, DEFAULT_CONNECTIONS, 'connections');
  const chunkMessages = positiveInt(opts.chunkMessages, DEFAULT_CHUNK_MESSAGES, 'chunkMessages');
  const chunkBytes = positiveInt(opts.chunkBytes, DEFAULT_CHUNK_BYTES, 'chunkBytes');
  if (!opts.separator) throw new RangeError('loadCorpusFast: separator is required');
  const started = performance.now();

  let folders = 0;
  let folderSeconds = 0;
  if (opts.createFolders ?? true) {
    const client = await openSession({ endpoint, login });
    try {
      folders = await createCorpusFolders(client, corpus.folders, opts.separator);
    } finally {
      await client.logout().catch(() => client.close());
    }
    folderSeconds = (performance.now() - started) / 1000;
  }

  // The shared stream, cut into single-folder chunks on demand.
  const iterator = corpus.messages()[Symbol.iterator]();
  let lookahead: CorpusMessage | undefined;
  let exhausted = false;
  const nextMessage = (): CorpusMessage | undefined => {
    if (lookahead) {
      const m = lookahead;
      lookahead = undefined;
      return m;
    }
    if (exhausted) return undefined;
    const r = iterator.next();
    if (r.done) {
      exhausted = true;
      return undefined;
    }
    return r.value;
  };
  const takeChunk = (): Chunk | undefined => {
    const first = nextMessage();
    if (!first) return undefined;
    const mailbox = first.folder.join(opts.separator);
    const messages = [first];
    let bytes = first.raw.length;
    while (messages.length < chunkMessages && bytes < chunkBytes) {
      const m = nextMessage();
      if (!m) break;
      if (m.folder.join(opts.separator) !== mailbox || bytes + m.raw.length > chunkBytes) {
        lookahead = m;
        break;
      }
      messages.push(m);
      bytes += m.raw.length;
    }
    return { mailbox, messages };
  };

  let appended = 0;
  let bytes = 0;
  const refused: FastLoadRefusal[] = [];
  let failure: unknown = null;

  const record = (mailbox: string, size: number, r: AppendResult): void => {
    if (r.ok) {
      appended += 1;
      bytes += size;
      opts.onProgress?.(appended, bytes);
    } else {
      refused.push({ mailbox, size, reason: `${r.status}${r.code ? ` [${r.code}]` : ''} ${r.text}` });
    }
  };

  // Folder ownership for oneConnectionPerFolder: which lane has APPENDs outstanding on it.
  const owners = new Map<string, { lane: number; outstanding: number }>();
  const ownerWaiters: Array<() => void> = [];
  const acquire = async (mailbox: string, lane: number): Promise<void> => {
    if (!opts.oneConnectionPerFolder) return;
    for (;;) {
      const o = owners.get(mailbox);
      if (!o || o.lane === lane || failure) break;
      await new Promise<void>((resolve) => ownerWaiters.push(resolve));
    }
    const o = owners.get(mailbox);
    if (o) o.outstanding += 1;
    else owners.set(mailbox, { lane, outstanding: 1 });
  };
  const releaseOne = (mailbox: string): void => {
    if (!opts.oneConnectionPerFolder) return;
    const o = owners.get(mailbox);
    if (!o) return;
    o.outstanding -= 1;
    if (o.outstanding <= 0) {
      owners.delete(mailbox);
      for (const w of ownerWaiters.splice(0)) w();
    }
  };

  const lane = async (app: PipelinedAppender, laneNo: number): Promise<void> => {
    const outstanding = new Set<Promise<void>>();
    try {
      for (;;) {
        if (failure) break;
        const chunk = takeChunk();
        if (!chunk) break;
        for (const m of chunk.messages) {
          await app.ready();
          if (failure) break;
          await acquire(chunk.mailbox, laneNo);
          if (failure) {
            releaseOne(chunk.mailbox);
            break;
          }
          const size = m.raw.length;
          const p: Promise<void> = app
            .append({ mailbox: chunk.mailbox, flags: m.flags, internalDate: m.internalDate, raw: m.raw })
            .then(
              (r) => record(chunk.mailbox, size, r),
              (err: unknown) => {
                failure ??= err;
              },
            )
            .finally(() => {
              outstanding.delete(p);
              releaseOne(chunk.mailbox);
            });
          outstanding.add(p);
        }
      }
    } catch (err) {
      failure ??= err;
    } finally {
      if (failure) for (const w of ownerWaiters.splice(0)) w();
      await Promise.all([...outstanding]);
    }
  };

  const apps: PipelinedAppender[] = [];
  try {
    const connected = await Promise.allSettled(
      Array.from({ length: connections }, () =>
        PipelinedAppender.connect({
          endpoint,
          login,
          ...(opts.maxInFlightBytes !== undefined ? { maxInFlightBytes: opts.maxInFlightBytes } : {}),
          ...(opts.maxInFlightCommands !== undefined ? { maxInFlightCommands: opts.maxInFlightCommands } : {}),
          ...(opts.multiAppend !== undefined ? { multiAppend: opts.multiAppend } : {}),
        }),
      ),
    );
    for (const c of connected) {
      if (c.status === 'fulfilled') apps.push(c.value);
      else failure ??= c.reason;
    }
    if (!failure) await Promise.all(apps.map((app, i) => lane(app, i)));
  } finally {
    await Promise.all(apps.map((app) => app.close()));
  }
  if (failure) throw failure;
  if (refused.length > 0 && !opts.allowRefused) {
    const first = refused.slice(0, 3).map((r) => `${r.mailbox} (${r.size} bytes): ${r.reason}`);
    throw new Error(`loadCorpusFast: the server refused ${refused.length} message(s): ${first.join('; ')}`);
  }
  return { folders, appended, bytes, refused, seconds: (performance.now() - started) / 1000, folderSeconds };
}
