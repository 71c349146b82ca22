/**
 * Compares source and target folder by folder. A folder is in sync when every source
 * message is on the target (a multiset inclusion: two identical source messages need two
 * on the target); extra target messages (new mail after the MX switch) are reported, not
 * held against it.
 *
 * Identity: by default size + internal date + Message-ID, read with one FETCH per folder
 * on each side, cheap enough to run on a whole batch; with `content`, a digest of the
 * full message (content-digest.ts, keyed for this process), which downloads everything twice but proves byte-exactness.
 *
 * With `receivedAfter`, source messages that arrived before the cut-off (INTERNALDATE,
 * RFC 3501 §2.3.3) are not expected on the target, exactly as the sync leaves them out;
 * the counts reported are of in-scope source messages. Target messages are all read: one
 * an earlier run without the cut-off copied is simply an extra.
 */
import type { FetchMessageObject, ImapFlow } from 'imapflow';
import type { Logger } from 'pino';
import { isImapRefusal, isRetryable, saysNonexistent } from '../imap/errors.js';
import { openSession, withWatchdog } from '../imap/imapflow-session.js';
import { serverWords } from '../imap/raw-connection.js';
import { looseDigest } from './changed-copies.js';
import { ByteBudget } from './byte-budget.js';
import { ephemeralHasher } from './content-digest.js';
import { flagsKey } from './flags.js';
import { mapFolders, NothingSelectedError } from './folder-map.js';
import { FolderUnreadableError, readAroundDrops } from './read-around-drops.js';
import { uidSet } from './uid-set.js';
import { listMailboxFolders, serverView, useFullNames } from './server-view.js';
import type { MailboxSide } from './options.js';
import { internalDateMs, receivedInScope } from './scan.js';

export interface VerifyOptions {
  source: MailboxSide & { userRoot?: string };
  target: MailboxSide;
  exclude?: readonly string[];
  include?: readonly string[];
  content?: boolean;
  /** Only source messages received at or after this (ms since the epoch) must be on the target; see SyncOptions. */
  receivedAfter?: number;
  stallMs?: number;
  /** Connection pairs (source + target) comparing folders at once; default 4. */
  connections?: number;
  /** Source folders the journal has copied, with their target folders (journal.ts establishedTargets): compared where sync puts them. */
  established?: ReadonlyMap<string, string>;
  /** After each folder compared. */
  onProgress?: (p: { folders: number; compared: number }) => void;
  /** When a target session has logged in: its credential worked (batch verify's admin breaker lets the other mailboxes go). */
  onTargetLogin?: () => void;
  logger: Logger;
}

export interface MissingItem {
  folder: string;
  uid: number;
  size: number;
  date: string;
  /** The source message's Subject and Message-ID (empty when it has none), so the admin can find it. */
  subject: string;
  messageId: string;
  /** Set for a message the source would not give (it closed the connection each time): its size and date are unknown. */
  unreadable?: true;
  /** Set when the target has a message with its Message-ID (or From, Subject and Date) whose content is not the
   * source's: cut short, edited, or another message. */
  differentCopy?: { uid: number; size: number };
}

export interface FolderVerdict {
  sources: string[];
  target: string;
  sourceCount: number;
  targetCount: number;
  missing: number;
  extra: number;
  /** Messages present on both sides whose flags differ. */
  flagDifferences: number;
  /** Messages present on both sides whose internal dates differ (the target's server
   * changed them: said, not held against the folder). */
  dateDifferences: number;
  /** Messages present on the target with other bytes, as some servers store them (line
   * ends, 8-bit header bytes: changed-copies.ts); said, not held against the folder. */
  changedCopies: number;
  /** Extra target messages identical to a source message that already has its copy (same
   * bytes and date with --content; else size, date and Message-ID): copied twice, by an
   * earlier tool or a run that had lost its state. Part of `extra`; said, not held against the folder. */
  duplicates: number;
  missingItems: MissingItem[];
  /** A side's RFC822.SIZE is not the length of what it sends (Exchange): copies were paired by Message-ID and date, not size (judgeResizedCopies). */
  sizesInexact?: true;
  /** Set when a side refused to open or read the folder: it is not in sync, and this says why. */
  error?: string;
}

export interface VerifyResult {
  inSync: boolean;
  sourceMessages: number;
  targetMessages: number;
  missing: number;
  folders: FolderVerdict[];
}

const MISSING_LIST_CAP = 50;

/** A missing message as an admin can look it up: folder, UID, subject, Message-ID, and what the target has instead. */
export function missingItemText(m: MissingItem): string {
  if (m.unreadable) return `${m.folder} uid ${m.uid} (the source would not give it)`;
  const what = [m.subject ? `"${m.subject}"` : '(no subject)', m.messageId || null, `${m.size} bytes`, m.date].filter(Boolean).join(', ');
  const instead = m.differentCopy ? `; the target's message with its identity (uid ${m.differentCopy.uid}, ${m.differentCopy.size} bytes) has other content: cut short or changed` : '';
  return `${m.folder} uid ${m.uid} ${what}${instead}`;
}


/** A raw message's header section (up to the first empty line). */
function headerOf(raw: Buffer): Buffer {
  const end = raw.indexOf('\r\n\r\n');
  const lf = raw.indexOf('\n\n');
  const at = end < 0 ? lf : lf < 0 ? end : Math.min(end, lf);
  return at < 0 ? raw : raw.subarray(0, at);
}

function messageId(headers: Buffer | undefined): string {
  return headers ? headerValue(headers.toString('utf8'), 'message-id').replace(/\s+/g, '') : '';
}

function headerValue(text: string, name: string): string {
  const m = new RegExp(`^${name}:[ \\t]*(.*(?:\\r?\\n[ \\t].*)*)`, 'im').exec(text);
  return m ? m[1]! : '';
}

/**
 * For a message without a Message-ID: its From, Subject and Date header, blanks collapsed
 * and 8-bit bytes read as `X` (as Cyrus's munge8bit stores them), so a copy whose size
 * the target's server changed is still found.
 */
function headerKey(headers: Buffer | undefined): string {
  if (!headers) return '';
  const text = headers.toString('latin1');
  return ['from', 'subject', 'date'].map((h) => headerValue(text, h).replace(/\s+/g, ' ').trim().replace(/[\x80-\xff]/g, 'X')).join('|');
}

/**
 * A message's identities, strictest first; a source message is matched to a target one by
 * the first that finds one still free. Content mode: digest and date, digest, then loose
 * digest (changed-copies.ts: the bytes a Courier or Cyrus target changes as it stores).
 * Default: size, date and Message-ID, then size and Message-ID, then date and Message-ID,
 * then Message-ID alone (a message without Message-ID: size and date, then date with its
 * From, Subject and Date fields, then those fields alone), the loosest last: a server that
 * stores an out-of-range date as "now" and rewrites line ends changes both size and date
 * (Courier), and its copy is still the copy. A date that differs is the target's
 * server's doing (Cyrus and Courier store 1970 or 2040 as "now"); so are other bytes.
 * Pairing by date first also keeps identical messages filed on other days apart.
 */
interface Entry {
  keys: readonly [string, string | null, string | null, string | null];
  uid: number;
  size: number;
  date: string;
  flags: string;
  subject: string;
  messageId: string;
}

/** Source and target bodies are compared by digest, with a key of this process's own. */
const hasher = ephemeralHasher();

async function readFolder(client: ImapFlow, path: string, content: boolean, stallMs: number, receivedAfter?: number): Promise<Entry[]> {
  const mb = await withWatchdog(client, stallMs, `opening ${path}`, () => client.mailboxOpen(path, { readOnly: true }));
  if (mb.exists === 0) return [];
  return readEntries(client, path, '1:*', content, stallMs, receivedAfter);
}

/** The entries of the messages `uids` (a UID set) of the folder open on `client`. */
async function readEntries(client: ImapFlow, path: string, uids: string, content: boolean, stallMs: number, receivedAfter?: number): Promise<Entry[]> {
  const query = content ? { uid: true, size: true, internalDate: true, flags: true, source: true } : { uid: true, size: true, internalDate: true, flags: true, headers: ['message-id', 'from', 'subject', 'date'] };
  const out: Entry[] = [];
  const take = (m: FetchMessageObject) => {
    const ms = internalDateMs(m.internalDate);
    if (!receivedInScope(ms, receivedAfter)) return;
    const date = new Date(ms ?? 0);
    const seconds = Math.floor(date.getTime() / 1000);
    let keys: Entry['keys'];
    let head: Buffer | undefined = m.headers;
    if (content) {
      const raw = m.source ?? Buffer.alloc(0);
      const digest = hasher.digestOf(raw);
      keys = [`${digest}|${seconds}`, digest, `~${looseDigest(raw)}`, null];
      head = headerOf(raw);
    } else {
      const id = messageId(m.headers);
      const other = id ? null : headerKey(m.headers);
      keys = [`${m.size}|${seconds}|${id}`, id ? `${m.size}|${id}` : null, id ? `${seconds}|${id}` : other ? `${seconds}|h:${other}` : null, id ? `id:${id}` : other ? `h:${other}` : null];
    }
    const text = head?.toString('utf8') ?? '';
    out.push({ keys, uid: m.uid, size: m.size ?? 0, date: date.toISOString(), flags: flagsKey(m.flags), subject: headerValue(text, 'subject').replace(/\s+/g, ' ').trim().slice(0, 200), messageId: messageId(head) });
  };
  // Streamed so a large folder is never held whole when hashing contents.
  await withWatchdog(client, stallMs * 10, `reading ${path}`, async () => {
    for await (const m of client.fetch(uids, query, { uid: true })) take(m);
  });
  return out;
}

/**
 * readFolder for a source folder whose reading lost the connection in an earlier attempt:
 * around the messages that make the source drop it (read-around-drops.ts), on sessions of
 * its own. The UIDs of those it could not read are returned; any other lost connection is
 * thrown.
 */
async function readFolderAroundDrops(opts: VerifyOptions, path: string, stallMs: number): Promise<{ entries: Entry[]; unreadable: number[] }> {
  const open = async (): Promise<ImapFlow> => {
    const c = await openSession({ endpoint: opts.source.endpoint, login: opts.source.login, logger: opts.logger, stallMs });
    if (opts.source.userRoot) useFullNames(c);
    try {
      await withWatchdog(c, stallMs, `opening ${path}`, () => c.mailboxOpen(path, { readOnly: true }));
      return c;
    } catch (err) {
      c.close();
      throw err;
    }
  };
  const close = (c: ImapFlow) => c.logout().catch(() => c.close());
  const first = await open();
  let uids: number[];
  try {
    // UIDs alone: the server reads no message to list them.
    uids = first.mailbox && first.mailbox.exists === 0 ? [] : (await withWatchdog(first, stallMs, `listing ${path}`, () => first.fetchAll('1:*', { uid: true }, { uid: true }))).map((m) => m.uid);
  } finally {
    await close(first);
  }
  const read = await readAroundDrops(uids, { open, close, read: (c, chunk) => readEntries(c, path, uidSet(chunk), !!opts.content, stallMs, opts.receivedAfter) });
  return { entries: read.items, unreadable: read.unreadable };
}

/** Each source entry's target copy, matched by each identity in turn (see Entry) among the target entries still free. */
function pairEntries(sourceEntries: readonly Entry[], targetEntries: readonly Entry[]): Map<Entry, Entry> {
  const taken = new Set<Entry>();
  const matched = new Map<Entry, Entry>();
  // First identity and flags together: identical messages with different flags (one read,
  // one not) pair with their own copies, so flags are not called different when they are not.
  const keyOf = (e: Entry, pass: -1 | 0 | 1 | 2 | 3): string | null => (pass === -1 ? `${e.keys[0]}|${e.flags}` : e.keys[pass]);
  for (const pass of [-1, 0, 1, 2, 3] as const) {
    const pool = new Map<string, Entry[]>();
    for (const t of targetEntries) {
      const k = keyOf(t, pass);
      if (k === null || taken.has(t)) continue;
      const list = pool.get(k);
      if (list) list.push(t);
      else pool.set(k, [t]);
    }
    for (const e of sourceEntries) {
      const k = keyOf(e, pass);
      if (matched.has(e) || k === null) continue;
      const t = pool.get(k)?.shift();
      if (!t) continue;
      taken.add(t);
      matched.set(e, t);
    }
  }
  return matched;
}

/** The server's words when `err` is imapflow's error for a NO or BAD answer, else null. */
function imapRefusal(err: unknown): string | null {
  if (!isImapRefusal(err)) return null;
  return `${err.responseStatus} ${serverWords(err.responseText ?? err.message ?? '')}`;
}

/** Attempts at verifying one mailbox when its connection drops (each on fresh sessions). */
const VERIFY_ATTEMPTS = 3;

/**
 * Compares one mailbox. A dropped connection (server restart, a proxy's idle cut, a busy
 * server closing sessions) is tried again on fresh sessions, as a sync would be: a
 * verification is read-only, so trying again is always safe.
 */
export async function verifyMailbox(opts: VerifyOptions): Promise<VerifyResult> {
  // Target folders whose comparison lost the connection: their source folders are read
  // around the messages that make the source drop it in the next attempts.
  const dropped = new Set<string>();
  for (let attempt = 1; ; attempt++) {
    try {
      return await verifyOnce(opts, dropped);
    } catch (err) {
      if (attempt >= VERIFY_ATTEMPTS || !isRetryable(err)) throw err;
      const where = (err as { comparing?: string }).comparing;
      if (where !== undefined) dropped.add(where);
      opts.logger.warn({ err: (err as Error).message, attempt }, 'verification lost its connection; trying again');
      await new Promise((r) => setTimeout(r, 1000 * attempt));
    }
  }
}

async function verifyOnce(opts: VerifyOptions, dropped: ReadonlySet<string>): Promise<VerifyResult> {
  const stallMs = opts.stallMs ?? 120_000;
  const open = async (): Promise<Lane> => {
    const src = await openSession({ endpoint: opts.source.endpoint, login: opts.source.login, logger: opts.logger, stallMs });
    if (opts.source.userRoot) useFullNames(src);
    try {
      const tgt = await openSession({ endpoint: opts.target.endpoint, login: opts.target.login, logger: opts.logger, stallMs });
      opts.onTargetLogin?.();
      return { src, tgt };
    } catch (err) {
      await src.logout().catch(() => src.close());
      throw err;
    }
  };
  const lanes: Lane[] = [await open()];
  try {
    const { src, tgt } = lanes[0]!;
    // Folder sizes bound what the lanes hold at once (below). Only where one LIST-STATUS
    // (RFC 5819) tells them: imapflow asks other servers one STATUS per folder, a round
    // trip each, and there the folders are compared on one pair, as they always were.
    const sized = src.capabilities.has('LIST-STATUS');
    const [srcList, tgtList] = await Promise.all([listMailboxFolders(src, sized ? { statusQuery: { messages: true } } : {}, opts.source.userRoot), tgt.list()]);
    const tgtPaths = new Set(tgtList.map((f) => (f.path.toUpperCase() === 'INBOX' ? 'INBOX' : f.path)));
    const mappings = mapFolders(serverView(src, srcList), serverView(tgt, tgtList), {
      ...(opts.exclude ? { exclude: opts.exclude } : {}),
      ...(opts.include ? { include: opts.include } : {}),
      ...(opts.source.userRoot ? { userRoot: opts.source.userRoot } : {}),
      ...(opts.established ? { established: opts.established } : {}),
    }).filter((m) => m.selectable);
    // Nothing compared is not "in sync" (mailbox-sync.ts: the sync refuses it too).
    if (opts.include?.length && mappings.length === 0) throw new NothingSelectedError(`nothing to verify: no folder of this mailbox matches --include ${opts.include.join(', ')}`);
    // Source folders merged into one target folder are compared together.
    const byTarget = new Map<string, string[]>();
    for (const m of mappings) byTarget.set(m.targetPath, [...(byTarget.get(m.targetPath) ?? []), m.sourcePath]);
    const groups = [...byTarget];
    const messages = new Map(srcList.map((f) => [f.path, f.status && !('error' in f.status) ? (f.status.messages ?? 0) : 0]));
    const withoutStatus = new Set(sized ? srcList.filter((f) => !f.status).map((f) => f.path) : []);

    // Folders are compared on several connection pairs at once (at a 20 ms round trip, one
    // pair spent ~95 ms per folder, most of it waiting), while the messages held at once
    // are bounded: a folder of 150,000 is compared alone.
    // A server that refuses more sessions (a per-user connection limit) leaves fewer lanes, not a failure.
    // With --content each pair holds whole messages as they are hashed, which the message
    // counts do not bound: one pair, as before.
    const wanted = sized && !opts.content ? Math.min(opts.connections ?? DEFAULT_VERIFY_CONNECTIONS, Math.ceil(groups.length / FOLDERS_PER_LANE)) : 1;
    for (const r of await Promise.allSettled(Array.from({ length: wanted - 1 }, open))) {
      if (r.status === 'fulfilled') lanes.push(r.value);
      else opts.logger.debug({ err: (r.reason as Error)?.message }, 'verification: one connection pair fewer');
    }
    const verdicts: FolderVerdict[] = new Array<FolderVerdict>(groups.length);
    const held = new ByteBudget(MESSAGES_HELD);
    let next = 0;
    let compared = 0;
    let failed: { err: unknown } | undefined;
    const work = async (first: Lane): Promise<void> => {
      let lane = first;
      while (!failed && next < groups.length) {
        const i = next++;
        const [target, sources] = groups[i]!;
        // Twice: source and target entries; at least 1, so empty folders count too.
        const weight = 1 + 2 * sources.reduce((n, s) => n + (messages.get(s) ?? 0), 0);
        await held.acquire(weight);
        try {
          const compare = (aroundDrops: boolean) => compareFolder(lane, target, sources, tgtPaths.has(target), withoutStatus, opts, stallMs, aroundDrops);
          try {
            verdicts[i] = await compare(dropped.has(target));
          } catch (err) {
            if (dropped.has(target) || !isRetryable(err)) throw err;
            // The connection was lost on this folder: compared again at once on a new pair,
            // around the messages that make the source drop it (read-around-drops.ts), so
            // a few broken messages cost neither the other folders nor an attempt each.
            opts.logger.warn({ err: (err as Error).message }, 'verification lost its connection; comparing this folder again, a few messages at a time');
            await Promise.allSettled([lane.src.logout(), lane.tgt.logout()]);
            lane = await open();
            lanes.push(lane);
            verdicts[i] = await compare(true);
          }
        } catch (err) {
          // The other lanes stop too: the attempt is tried again as a whole (verifyMailbox).
          failed ??= { err };
          return;
        } finally {
          held.release(weight);
        }
        opts.onProgress?.({ folders: groups.length, compared: ++compared });
      }
    };
    await Promise.all(lanes.map(work));
    if (failed) throw failed.err;
    const folders = verdicts;
    const missing = folders.reduce((n, f) => n + f.missing, 0);
    return {
      inSync: missing === 0 && folders.every((f) => f.error === undefined),
      sourceMessages: folders.reduce((n, f) => n + f.sourceCount, 0),
      targetMessages: folders.reduce((n, f) => n + f.targetCount, 0),
      missing,
      folders,
    };
  } finally {
    await Promise.allSettled(lanes.flatMap((l) => [l.src.logout(), l.tgt.logout()]));
  }
}

/** A source and a target session comparing folders. */
interface Lane {
  src: ImapFlow;
  tgt: ImapFlow;
}

/** Connection pairs a verification uses by default, and the folders that make another pair worth its login. */
const DEFAULT_VERIFY_CONNECTIONS = 4;
const FOLDERS_PER_LANE = 4;
/** Entries held at once across the lanes (about 300 bytes each). */
const MESSAGES_HELD = 120_000;

/** Messages read at once to compare copies whose size differs (bounded bytes too: CONFIRM_BYTES). */
const CONFIRM_MESSAGES = 50;
const CONFIRM_BYTES = 32 * 1024 * 1024;

/** Resized pairs read first, to tell a server whose RFC822.SIZE is an estimate. */
const SIZE_PROBE = 3;

interface ResizedJudgement {
  /** Source entries paired again, with the copy that has their content. */
  repaired: Map<Entry, Entry>;
  /** Source entries with no copy, and the copy they had been paired with. */
  missing: Map<Entry, { uid: number; size: number }>;
  /** Pairs whose sizes differ only as listed: the bytes are the same length (or sizes are estimates), not changed copies. */
  sameLength: Set<Entry>;
  /** A side's RFC822.SIZE is not the length of what it sends (Exchange): pairs stood on Message-ID and date. */
  sizesInexact: boolean;
}

/**
 * Copies paired by identity whose size differs, judged by content: each such source message
 * and the target messages that could be its copy (the one it was paired with, and those of
 * its identity no other message took) are read and compared by loose digest
 * (changed-copies.ts); a source message is paired again with a copy that has its digest,
 * and is missing when none has. Re-pairing matters: two messages with one Message-ID (a
 * list copy and a CC copy) whose sizes a Courier target both changed may have been paired
 * crosswise. Leaves the target folder, then a source folder, selected.
 *
 * A server whose RFC822.SIZE is an estimate (Exchange; RFC 3501 §6.4.5 asks for the exact
 * size: may-be-copies.ts) makes nearly every pair look resized, and reading them all would
 * read both mailboxes whole. So a few are read first: when in each of them a side listed
 * another size than the length it sent, sizes say nothing in this folder, and the other
 * pairs stand on their Message-ID and date, as pairs of equal size do (`--content` reads all).
 */
async function judgeResizedCopies(
  lane: Lane,
  target: string,
  sourceEntries: readonly (Entry & { folder: string })[],
  targetEntries: readonly Entry[],
  matched: ReadonlyMap<Entry, Entry>,
  stallMs: number,
): Promise<ResizedJudgement> {
  const out: ResizedJudgement = { repaired: new Map(), missing: new Map(), sameLength: new Set(), sizesInexact: false };
  const resized = sourceEntries.filter((e) => {
    const t = matched.get(e);
    return t !== undefined && t.size !== e.size;
  });
  if (resized.length === 0) return out;
  const paired = new Set(matched.values());
  const identity = (e: Entry) => e.keys[3] ?? e.keys[2];
  const read = async (client: ImapFlow, path: string, wanted: readonly { uid: number; size: number }[]): Promise<Map<number, { loose: string; length: number }>> => {
    const got = new Map<number, { loose: string; length: number }>();
    await withWatchdog(client, stallMs, `opening ${path}`, () => client.mailboxOpen(path, { readOnly: true }));
    for (let i = 0; i < wanted.length; ) {
      const chunk: number[] = [];
      let bytes = 0;
      while (i < wanted.length && chunk.length < CONFIRM_MESSAGES && (chunk.length === 0 || bytes + wanted[i]!.size <= CONFIRM_BYTES)) {
        bytes += wanted[i]!.size;
        chunk.push(wanted[i++]!.uid);
      }
      // As long as reading a folder's entries may take (readEntries): a chunk is up to 32 MiB.
      await withWatchdog(client, stallMs * 10, `reading ${path}`, async () => {
        for await (const m of client.fetch(uidSet(chunk), { uid: true, source: true }, { uid: true })) {
          const raw = m.source ?? Buffer.alloc(0);
          got.set(m.uid, { loose: looseDigest(raw), length: raw.length });
        }
      });
    }
    return got;
  };
  // One pool across the probe and the rest: a copy taken by either is not given twice, and
  // a pair split crosswise across the two (e3↔t4, e4↔t3) is still put right.
  const resizedOf = new Map<string, Entry[]>();
  for (const e of resized) {
    const k = identity(e);
    if (k !== null) resizedOf.set(k, [...(resizedOf.get(k) ?? []), e]);
  }
  const targetRead = new Map<number, { loose: string; length: number }>();
  const byDigest = new Map<string, Entry[]>();
  /** How many pairs read had both sizes listed right, and the gap between listed sizes the estimates seen explain (twice the largest error, absolute and relative to messages of 4 KiB and more, plus 1 KiB). */
  const judge = async (some: readonly (Entry & { folder: string })[]): Promise<{ listedRight: number; slack: (size: number) => number }> => {
    let worstBytes = 0;
    let worstShare = 0;
    if (some.length === 0) return { listedRight: 0, slack: () => 0 };
    const identities = new Set(some.map(identity).filter((k): k is string => k !== null));
    const pool = new Set<Entry>(some.map((e) => matched.get(e)!));
    for (const k of identities) for (const e of resizedOf.get(k) ?? []) pool.add(matched.get(e)!);
    for (const t of targetEntries) if (!paired.has(t) && identities.has(identity(t) ?? '')) pool.add(t);
    const fresh = [...pool].filter((t) => !targetRead.has(t.uid));
    const got = await read(lane.tgt, target, fresh);
    for (const t of fresh) {
      const r = got.get(t.uid);
      if (r === undefined) continue;
      targetRead.set(t.uid, r);
      byDigest.set(r.loose, [...(byDigest.get(r.loose) ?? []), t]);
    }
    let listedRight = 0;
    for (const folder of new Set(some.map((e) => e.folder))) {
      const mine = some.filter((e) => e.folder === folder);
      const sourceRead = await read(lane.src, folder, mine);
      for (const e of mine) {
        const s = sourceRead.get(e.uid);
        // Expunged from the source since it was listed: nothing left to hold the copy against.
        if (s === undefined) continue;
        const own = matched.get(e)!;
        const t = targetRead.get(own.uid);
        if (s.length === e.size && (t === undefined || t.length === own.size)) listedRight++;
        for (const [real, listed] of [[s.length, e.size], ...(t ? [[t.length, own.size]] : [])] as [number, number][]) {
          worstBytes = Math.max(worstBytes, Math.abs(real - listed));
          // A share from a tiny message (a header's worth off) would excuse anything in a large one.
          if (real >= 4096) worstShare = Math.max(worstShare, Math.abs(real - listed) / real);
        }
        const candidates = byDigest.get(s.loose) ?? [];
        // Its own pair first, so a right pairing is never moved.
        const at = Math.max(0, candidates.indexOf(own));
        const copy = candidates.splice(at, 1)[0];
        if (!copy) {
          out.missing.set(e, { uid: own.uid, size: own.size });
          continue;
        }
        out.repaired.set(e, copy);
        if (targetRead.get(copy.uid)?.length === s.length) out.sameLength.add(e);
      }
    }
    return { listedRight, slack: (size) => 2 * (worstBytes + worstShare * size) + 1024 };
  };
  const probe = resized.slice(0, SIZE_PROBE);
  const { listedRight, slack } = await judge(probe);
  const rest = resized.slice(SIZE_PROBE);
  if (listedRight > 0 || out.missing.size === probe.length) {
    await judge(rest);
    return out;
  }
  out.sizesInexact = true;
  // Estimates are off by about what the probe showed; a pair whose listed sizes are much
  // further apart (a copy cut short, another message) is still read and judged.
  const far = rest.filter((e) => Math.abs(e.size - matched.get(e)!.size) > slack(e.size));
  for (const e of rest) if (!far.includes(e)) out.sameLength.add(e);
  await judge(far);
  return out;
}

/** One target folder and the source folders copied into it, compared. */
async function compareFolder(lane: Lane, target: string, sources: readonly string[], targetExists: boolean, withoutStatus: ReadonlySet<string>, opts: VerifyOptions, stallMs: number, aroundDrops: boolean): Promise<FolderVerdict> {
  const sourceEntries: (Entry & { folder: string })[] = [];
  const unreadable: MissingItem[] = [];
  let targetEntries: Entry[];
  try {
    // Both sides at once: each is a round trip or two of its own.
    const [sourceLists, targetList] = await Promise.all([
      (async () => {
        const lists: Entry[][] = [];
        for (const s of sources) {
          if (aroundDrops) {
            const read = await readFolderAroundDrops(opts, s, stallMs);
            lists.push(read.entries);
            for (const uid of read.unreadable) unreadable.push({ folder: s, uid, size: 0, date: '', subject: '', messageId: '', unreadable: true });
            continue;
          }
          lists.push(
            await readFolder(lane.src, s, !!opts.content, stallMs, opts.receivedAfter).catch((err: unknown) => {
              // A hierarchy node listed without a STATUS that is not there when opened
              // (Dovecot's Maildir++, mailbox-sync.ts): no messages.
              if (withoutStatus.has(s) && isImapRefusal(err) && saysNonexistent((err as { serverResponseCode?: string }).serverResponseCode, err.responseText ?? err.message)) return [];
              throw err;
            }),
          );
        }
        return lists;
      })(),
      targetExists ? readFolder(lane.tgt, target, !!opts.content, stallMs) : Promise.resolve([]),
    ]);
    sources.forEach((s, i) => {
      for (const e of sourceLists[i]!) sourceEntries.push({ ...e, folder: s });
    });
    targetEntries = targetList;
  } catch (err) {
    // A folder a server refuses (NO/BAD: broken on disk, no rights) is this folder's
    // verdict, named; a lost connection still ends the attempt.
    const refusal = imapRefusal(err);
    const failed = (error: string): FolderVerdict => ({ sources: [...sources], target, sourceCount: 0, targetCount: 0, missing: 0, extra: 0, flagDifferences: 0, dateDifferences: 0, changedCopies: 0, duplicates: 0, missingItems: [], error });
    if (refusal !== null) return failed(refusal);
    // Read around drops already: this folder's verdict, not the mailbox's failure.
    if (err instanceof FolderUnreadableError) return failed(err.message);
    if (aroundDrops && isRetryable(err)) return failed('the connection was lost each time this folder was read');
    // A lost connection ends the attempt, and says where (a source that drops the
    // connection on one message would otherwise leave only "Connection not available").
    throw Object.assign(new Error(`${(err as Error)?.message ?? String(err)} (while comparing ${sources.join(' + ')} -> ${target})`), { retryable: isRetryable(err), comparing: target });
  }
  const matched = pairEntries(sourceEntries, targetEntries);
  // Copies paired by Message-ID (or From, Subject and Date) whose size differs: the same
  // message only if what differs is what a server changes as it stores (line ends, 8-bit
  // header bytes, mbox header fields: changed-copies.ts), so both are read and compared by
  // loose digest. A copy cut short or edited is missing. (With --content the loose digest
  // was the key already; around drops the source is not read again.)
  let differs = new Map<Entry, { uid: number; size: number }>();
  let sameLength = new Set<Entry>();
  let sizesInexact = false;
  if (!opts.content && !aroundDrops) {
    try {
      const judged = await judgeResizedCopies(lane, target, sourceEntries, targetEntries, matched, stallMs);
      for (const [e, t] of judged.repaired) matched.set(e, t);
      for (const e of judged.missing.keys()) matched.delete(e);
      differs = judged.missing;
      sameLength = judged.sameLength;
      sizesInexact = judged.sizesInexact;
    } catch (err) {
      // As reading the folder: a refusal is this folder's verdict, a lost connection ends the attempt (and says where).
      const refusal = imapRefusal(err);
      if (refusal !== null) return { sources: [...sources], target, sourceCount: 0, targetCount: 0, missing: 0, extra: 0, flagDifferences: 0, dateDifferences: 0, changedCopies: 0, duplicates: 0, missingItems: [], error: `reading copies whose size differs: ${refusal}` };
      throw Object.assign(new Error(`${(err as Error)?.message ?? String(err)} (while comparing ${sources.join(' + ')} -> ${target})`), { retryable: isRetryable(err), comparing: target });
    }
  }
  const missingItems: MissingItem[] = unreadable.slice(0, MISSING_LIST_CAP);
  let missing = unreadable.length;
  let flagDifferences = 0;
  let dateDifferences = 0;
  let changedCopies = 0;
  for (const e of sourceEntries) {
    const match = matched.get(e);
    if (!match) {
      missing++;
      if (missingItems.length < MISSING_LIST_CAP) missingItems.push({ folder: e.folder, uid: e.uid, size: e.size, date: e.date, subject: e.subject, messageId: e.messageId, ...(differs.has(e) ? { differentCopy: differs.get(e)! } : {}) });
      continue;
    }
    if (match.flags !== e.flags) flagDifferences++;
    if (match.date.slice(0, 19) !== e.date.slice(0, 19)) dateDifferences++;
    if (opts.content ? match.keys[1] !== e.keys[1] : match.size !== e.size && !sameLength.has(e)) changedCopies++;
  }
  // Where sizes are estimates, a duplicate is told by date and Message-ID alone.
  const dupKey = (e: Entry) => (sizesInexact ? e.keys[2] : e.keys[0]);
  const sourceKeys = new Set(sourceEntries.map(dupKey));
  const paired = new Set(matched.values());
  return {
    sources: [...sources],
    target,
    sourceCount: sourceEntries.length + unreadable.length,
    targetCount: targetEntries.length,
    missing,
    extra: targetEntries.length - matched.size,
    flagDifferences,
    dateDifferences,
    changedCopies,
    // Without --content only a message with a Message-ID (keys[1]) is identified well
    // enough to be called a duplicate: two without one may just share size and date.
    duplicates: targetEntries.filter((t) => !paired.has(t) && t.keys[1] !== null && sourceKeys.has(dupKey(t))).length,
    missingItems,
    ...(sizesInexact ? { sizesInexact: true as const } : {}),
  };
}
