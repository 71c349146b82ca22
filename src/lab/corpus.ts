/**
 * Deterministic generator of realistic mailboxes for tests, the benchmark and the demo.
 *
 * Design constraints (see SPEC §5 — byte-exact migration):
 * - Deterministic from a seed: every random choice comes from a seeded sfc32 generator,
 *   never Math.random, so a failing exactness/crash test can be replayed bit for bit.
 * - Lazy: only a small per-message plan (size, folder, traits — a few bytes each) is held
 *   in memory; message bytes are produced one at a time, so a 180 MB corpus never sits in
 *   memory. Each message depends only on (seed, index, plan), which also gives random
 *   access (`Corpus.messageAt`).
 * - Fast: bodies are sliced from pre-generated line pools (text, quoted-printable, HTML,
 *   base64) instead of calling the PRNG per byte; a message is mostly a concatenation of
 *   sub-arrays of those pools.
 * - Awkward on purpose: encoded words, raw 8-bit headers, 8-bit bodies in two charsets,
 *   long folded headers, missing Message-IDs, exact duplicates, a missing final CRLF,
 *   minimal messages — the things that break "byte for byte" in real migrations.
 * - Never NUL, never a bare CR or LF: IMAP literals may not carry NUL, and servers are free
 *   to normalise bare line ends, which would make byte comparison meaningless.
 */
import { createHash } from 'node:crypto';
import { endianness } from 'node:os';
import type { ImapFlow } from 'imapflow';

// ---------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------

export type SpecialUse = '\\Sent' | '\\Drafts' | '\\Trash' | '\\Junk' | '\\Archive';

export interface CorpusFolder {
  /** Name segments, UTF-8; INBOX is ['INBOX']. */
  path: string[];
  specialUse?: SpecialUse;
  /**
   * Relative share of the messages (extension). 0 keeps the folder empty. When absent a
   * weight is derived from the folder's role (INBOX and Sent get most, a long tail for the
   * rest). Every folder with a positive weight gets at least one message when the corpus
   * has at least as many messages as such folders.
   */
  weight?: number;
}

export interface CorpusMessage {
  folder: string[];
  raw: Buffer;
  flags: string[];
  internalDate: Date;
}

export interface CorpusOptions {
  /** Default 1. Any 32-bit integer. */
  seed?: number;
  /** Number of regular messages (extraLarge ones come on top). */
  messages: number;
  /**
   * Average raw size in bytes of the regular messages; default 36,000 (5,000 msgs ≈ 180 MB).
   * Honoured to within a few percent for a few hundred messages or more; below ~5 KB the
   * corpus comes out larger (at 4 KB: +17%) because headers alone are about 1–3 KB.
   */
  averageSize?: number;
  /**
   * Largest regular message (default 8 MB). About one message in 500 (at least one from
   * 200 messages on) is "big" (1 MB–maxSize), as long as the big ones stay under ~30% of
   * the total byte budget.
   */
  maxSize?: number;
  /** Raw sizes in bytes (each >= 16,000) of extra messages generated exactly that size, at
   * the end of INBOX; e.g. one just over the 35 MB skip limit. Not counted in averageSize. */
  extraLarge?: number[];
  /** Default: defaultFolders(). Missing ancestors are added (empty). */
  folders?: CorpusFolder[];
  /**
   * Characters that must not appear in folder names (the servers' hierarchy separators);
   * default './'. Occurrences are replaced by '_' (an error is thrown if that makes two
   * folders collide).
   */
  forbiddenChars?: string;
  /** Put `\Deleted` on ~2% of INBOX/Trash messages (extension; default false). */
  includeDeleted?: boolean;
}

export interface Corpus {
  folders: CorpusFolder[];
  /** messages + extraLarge.length */
  count: number;
  /** A fresh iterator over all messages, grouped by folder (in `folders` order), each
   * folder's messages in ascending date order. Every call yields identical messages. */
  messages(): IterableIterator<CorpusMessage>;
  /** Message number `index` (0-based, same as the iteration order), generated on its own.
   * Always present on generateCorpus() results; optional so hand-made corpora need not. */
  messageAt?(index: number): CorpusMessage;
}

/** A realistic Exchange/Outlook-like source tree exercising names and special-use mapping. */
export function defaultFolders(): CorpusFolder[] {
  return [
    { path: ['INBOX'], weight: 38 },
    { path: ['INBOX', 'Receipts'], weight: 4 },
    { path: ['INBOX', 'Newsletters'], weight: 5 },
    { path: ['Sent Items'], specialUse: '\\Sent', weight: 20 },
    { path: ['Drafts'], specialUse: '\\Drafts', weight: 0.6 },
    { path: ['Deleted Items'], specialUse: '\\Trash', weight: 5 },
    { path: ['Junk E-mail'], specialUse: '\\Junk', weight: 2.5 },
    { path: ['Archive'], specialUse: '\\Archive', weight: 3 },
    { path: ['Archive', '2019'], weight: 4 },
    // '&' must become '&-' and 'Ä' a base64 run in modified UTF-7.
    { path: ['Archive', '2019', 'Ärger & Co'], weight: 0.8 },
    { path: ['Archive', '2020'], weight: 3 },
    { path: ['日本語'], weight: 0.6 },
    { path: ['Überweisungen'], weight: 1 },
    { path: ['Ελληνικά'], weight: 0.4 },
    // Astral-plane character: a UTF-16 surrogate pair inside modified UTF-7.
    { path: ['Rechnungen 🧾'], weight: 1.2 },
    { path: ['Projects & Plans'], weight: 1.5 },
    { path: ['Projects & Plans', 'Q3 Review'], weight: 0.7 },
    { path: ['[Old] Stuff (2010)'], weight: 1 },
    { path: ["Mom's Recipes"], weight: 0.3 },
    { path: ['Reisen + Urlaub 2018'], weight: 0.5 },
    // A four-level chain; the top level holds no mail of its own, like many real trees.
    { path: ['Clients'], weight: 0 },
    { path: ['Clients', 'Acme Corp'], weight: 0.8 },
    { path: ['Clients', 'Acme Corp', 'Contracts'], weight: 0.5 },
    { path: ['Clients', 'Acme Corp', 'Contracts', '2021'], weight: 0.4 },
    { path: ['Empty Folder'], weight: 0 },
  ];
}

export function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

export function generateCorpus(opts: CorpusOptions): Corpus {
  const seed = (opts.seed ?? 1) >>> 0;
  const messages = opts.messages;
  if (!Number.isInteger(messages) || messages < 0) throw new Error(`messages must be a non-negative integer, got ${messages}`);
  const averageSize = opts.averageSize ?? 36_000;
  const maxSize = opts.maxSize ?? 8 * 1024 * 1024;
  if (!(averageSize > 0) || !(maxSize >= 2000)) throw new Error('averageSize must be > 0 and maxSize >= 2000');
  const extraLarge = opts.extraLarge ?? [];
  for (const s of extraLarge) {
    if (!Number.isInteger(s) || s < MIN_EXACT_SIZE) throw new Error(`extraLarge sizes must be integers >= ${MIN_EXACT_SIZE}, got ${s}`);
  }
  const folders = prepareFolders(opts.folders ?? defaultFolders(), opts.forbiddenChars ?? './');
  const plan = makePlan(seed, messages, averageSize, maxSize, extraLarge, folders);
  const ctx = makeContext(seed, folders, plan, opts.includeDeleted ?? false);
  const count = plan.total;
  const messageAt = (index: number): CorpusMessage => {
    if (!Number.isInteger(index) || index < 0 || index >= count) throw new RangeError(`message index ${index} out of range 0..${count - 1}`);
    return buildMessage(ctx, index);
  };
  return {
    folders: folders.map((f) => ({ ...f, path: [...f.path] })),
    count,
    messages: function* () {
      for (let i = 0; i < count; i++) yield buildMessage(ctx, i);
    },
    messageAt,
  };
}

/**
 * Create every folder and APPEND every message with its flags and internal date. Simple and
 * sequential on purpose (a pipelined loader comes later). Expects the account to be empty
 * of the corpus's messages; folders that already exist are fine.
 */
export async function loadCorpus(
  client: ImapFlow,
  corpus: Corpus,
  opts: { separator: string },
): Promise<{ appended: number; bytes: number }> {
  for (const folder of corpus.folders) {
    if (isInboxPath(folder.path)) continue; // INBOX always exists; CREATE INBOX is an error
    const path = folder.path.join(opts.separator);
    try {
      // imapflow encodes modified UTF-7 itself and treats [ALREADYEXISTS] as success.
      await client.mailboxCreate(path);
    } catch (err) {
      // Some servers answer a plain NO for an existing mailbox; only that is harmless.
      const list = await client.list();
      if (!list.some((box) => box.path === path || box.path.endsWith(opts.separator + path))) throw err;
    }
  }
  let appended = 0;
  let bytes = 0;
  for (const msg of corpus.messages()) {
    const res = await client.append(msg.folder.join(opts.separator), msg.raw, msg.flags, msg.internalDate);
    if (!res) throw new Error(`APPEND to ${msg.folder.join(opts.separator)} failed (not authenticated?)`);
    appended++;
    bytes += msg.raw.length;
  }
  return { appended, bytes };
}

// ---------------------------------------------------------------------------------------
// PRNG
// ---------------------------------------------------------------------------------------

/**
 * sfc32: 128-bit state, so (seed, stream, index) all go into the state directly and two
 * messages can never share a random stream (a 32-bit seed hash would collide at ~100k).
 */
class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  constructor(seed: number, stream: number, index: number) {
    this.a = seed | 0;
    this.b = index | 0;
    this.c = (stream ^ 0x9e3779b9) | 0;
    this.d = 1;
    for (let i = 0; i < 15; i++) this.u32();
  }
  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }
  float(): number {
    return this.u32() / 4294967296;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.float() * n);
  }
  /** Integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.float() < p;
  }
  pick<T>(arr: readonly T[]): T {
    return arr[this.int(arr.length)] as T;
  }
  normal(): number {
    const u = 1 - this.float();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.float());
  }
  weighted(weights: readonly number[]): number {
    let total = 0;
    for (const w of weights) total += w;
    let r = this.float() * total;
    for (let i = 0; i < weights.length; i++) {
      r -= weights[i] as number;
      if (r < 0) return i;
    }
    return weights.length - 1;
  }
  bytes(n: number): Buffer {
    const buf = Buffer.allocUnsafe(n);
    let i = 0;
    if (LITTLE_ENDIAN && buf.byteOffset % 4 === 0) {
      // Word writes: the pool build draws megabytes. Same bytes as writeUInt32LE on LE hosts.
      const words = new Uint32Array(buf.buffer, buf.byteOffset, n >>> 2);
      for (let w = 0; w < words.length; w++) words[w] = this.u32();
      i = words.length * 4;
    }
    for (; i + 4 <= n; i += 4) buf.writeUInt32LE(this.u32(), i);
    if (i < n) {
      const last = this.u32();
      for (let k = 0; i < n; i++, k++) buf[i] = (last >>> (8 * k)) & 0xff;
    }
    return buf;
  }
  hex(n: number, upper = false): string {
    let s = '';
    while (s.length < n) s += this.u32().toString(16).padStart(8, '0');
    s = s.slice(0, n);
    return upper ? s.toUpperCase() : s;
  }
  alnum(n: number): string {
    const abc = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
    let s = '';
    for (let i = 0; i < n; i++) s += abc[this.int(abc.length)];
    return s;
  }
}

const LITTLE_ENDIAN = endianness() === 'LE';

const STREAM_PLAN = 1;
const STREAM_MSG = 2;
const STREAM_CTX = 3;
const STREAM_POOL = 4;

// ---------------------------------------------------------------------------------------
// Folders
// ---------------------------------------------------------------------------------------

type Role = 'inbox' | 'sent' | 'drafts' | 'trash' | 'junk' | 'archive' | 'other';

function isInboxPath(path: readonly string[]): boolean {
  return path.length === 1 && (path[0] as string).toUpperCase() === 'INBOX';
}

function roleOf(f: CorpusFolder): Role {
  if (isInboxPath(f.path)) return 'inbox';
  switch (f.specialUse) {
    case '\\Sent':
      return 'sent';
    case '\\Drafts':
      return 'drafts';
    case '\\Trash':
      return 'trash';
    case '\\Junk':
      return 'junk';
    case '\\Archive':
      return 'archive';
    default:
      return 'other';
  }
}

function defaultWeight(role: Role, tailRank: number): number {
  switch (role) {
    case 'inbox':
      return 40;
    case 'sent':
      return 18;
    case 'archive':
      return 6;
    case 'trash':
      return 6;
    case 'junk':
      return 3;
    case 'drafts':
      return 1;
    default:
      return 3 / (tailRank + 1) + 0.3; // Zipf-like long tail
  }
}

function prepareFolders(input: CorpusFolder[], forbidden: string): CorpusFolder[] {
  const sanitize = (seg: string): string => {
    let out = '';
    for (const ch of seg) out += forbidden.includes(ch) ? '_' : ch;
    return out;
  };
  const out: CorpusFolder[] = [];
  const seen = new Map<string, number>();
  const implicit = new Set<number>(); // ancestors we added, which an explicit entry may replace
  const key = (p: string[]): string => JSON.stringify(isInboxPath(p) ? ['INBOX'] : p);
  let tailRank = 0;
  for (const f of input) {
    if (f.path.length === 0 || f.path.some((seg) => seg.length === 0)) throw new Error(`invalid folder path ${JSON.stringify(f.path)}`);
    const path = f.path.map((seg, i) => (i === 0 && isInboxPath([seg]) ? seg : sanitize(seg)));
    // Parents first: a server cannot hold a child whose parent was never created.
    for (let k = 1; k < path.length; k++) {
      const anc = path.slice(0, k);
      if (!seen.has(key(anc))) {
        seen.set(key(anc), out.length);
        implicit.add(out.length);
        out.push({ path: anc, weight: 0 });
      }
    }
    const role = roleOf({ ...f, path });
    const folder: CorpusFolder = { path, weight: f.weight ?? defaultWeight(role, role === 'other' ? tailRank++ : 0) };
    if (f.specialUse) folder.specialUse = f.specialUse;
    const existing = seen.get(key(path));
    if (existing !== undefined) {
      if (!implicit.delete(existing)) throw new Error(`duplicate folder ${JSON.stringify(path)} (after replacing forbidden characters)`);
      out[existing] = folder;
      continue;
    }
    seen.set(key(path), out.length);
    out.push(folder);
  }
  return out;
}

/** Messages of a folder named after a year (e.g. Archive/2019) are dated in that year. */
function dateRangeOf(f: CorpusFolder): [number, number] {
  const lo = Date.UTC(2010, 0, 1) / 1000;
  const hi = Date.UTC(2025, 11, 31, 23, 59, 59) / 1000;
  for (let i = f.path.length - 1; i >= 0; i--) {
    const m = /(?:^|\D)(20[0-2]\d)(?:\D|$)/.exec(f.path[i] as string);
    const year = m ? Number(m[1]) : NaN;
    if (year >= 2010 && year <= 2025) return [Date.UTC(year, 0, 1) / 1000, Date.UTC(year, 11, 31, 23, 59, 59) / 1000];
  }
  return [lo, hi];
}

// ---------------------------------------------------------------------------------------
// Plan: per-message folder, target size and traits (a few bytes per message)
// ---------------------------------------------------------------------------------------

const T_MINIMAL = 1 << 0;
const T_NO_MSGID = 1 << 1;
const T_RAW8 = 1 << 2;
const T_ENC_B = 1 << 3;
const T_ENC_Q = 1 << 4;
const T_BODY_8BIT = 1 << 5;
const T_LATIN1 = 1 << 6;
const T_ATTACH = 1 << 7;
const T_LONG_HEADERS = 1 << 8;
const T_NO_FINAL_CRLF = 1 << 9;
const T_FORWARD = 1 << 10;
const T_DUP_COPY = 1 << 11; // identical copy of the previous message
const T_BIG = 1 << 12;
const T_EXACT = 1 << 13;

/** Traits guaranteed to occur (about once per 250 messages, at least once from 40 on). */
const FORCED_TRAITS = [T_NO_MSGID, T_RAW8, T_ENC_B, T_ENC_Q, T_BODY_8BIT, T_LATIN1, T_ATTACH, T_LONG_HEADERS, T_NO_FINAL_CRLF, T_MINIMAL, T_FORWARD];

/** Random frequency of each trait on ordinary messages. */
const TRAIT_RATES: ReadonlyArray<readonly [number, number]> = [
  [T_NO_MSGID, 0.015],
  [T_RAW8, 0.02],
  [T_ENC_B, 0.1],
  [T_ENC_Q, 0.04],
  [T_BODY_8BIT, 0.08],
  [T_LATIN1, 0.02],
  [T_LONG_HEADERS, 0.03],
  [T_NO_FINAL_CRLF, 0.004],
  [T_MINIMAL, 0.004],
  [T_FORWARD, 0.02],
];

const MINIMAL_SIZE_ESTIMATE = 160;
const MIN_REGULAR_SIZE = 1000;
const MIN_EXACT_SIZE = 16_000;
const SIZE_SIGMA = 1.2; // log-normal spread of regular sizes: median ≈ 0.5 × mean

interface Plan {
  total: number;
  folderStart: number[]; // first index of each folder's block
  folderCount: number[];
  size: Uint32Array;
  traits: Uint32Array;
}

function makePlan(seed: number, messages: number, averageSize: number, maxSize: number, extraLarge: number[], folders: CorpusFolder[]): Plan {
  const rng = new Rng(seed, STREAM_PLAN, 0);
  const total = messages + extraLarge.length;

  // Messages per folder: one for every weighted folder first (so each exists with mail),
  // the rest by largest remainder of the weights.
  const weights = folders.map((f) => Math.max(0, f.weight ?? 0));
  const counts = folders.map(() => 0);
  const positive = weights.map((w, i) => [w, i] as const).filter(([w]) => w > 0).sort((x, y) => y[0] - x[0]);
  let left = messages;
  for (const [, i] of positive) {
    if (left === 0) break;
    counts[i] = 1;
    left--;
  }
  const wsum = positive.reduce((s, [w]) => s + w, 0);
  if (left > 0 && wsum > 0) {
    const shares = positive.map(([w, i]) => ({ i, exact: (left * w) / wsum }));
    let given = 0;
    for (const s of shares) {
      const n = Math.floor(s.exact);
      counts[s.i] = (counts[s.i] as number) + n;
      given += n;
    }
    shares.sort((x, y) => y.exact - Math.floor(y.exact) - (x.exact - Math.floor(x.exact)));
    for (let k = 0; given < left; k++, given++) {
      const s = shares[k % shares.length] as { i: number };
      counts[s.i] = (counts[s.i] as number) + 1;
    }
  } else if (left > 0) {
    counts[0] = (counts[0] as number) + left;
  }
  const inboxIdx = Math.max(0, folders.findIndex((f) => isInboxPath(f.path)));
  counts[inboxIdx] = (counts[inboxIdx] as number) + extraLarge.length;

  const folderStart: number[] = [];
  let acc = 0;
  for (const c of counts) {
    folderStart.push(acc);
    acc += c;
  }
  const size = new Uint32Array(total);
  const traits = new Uint32Array(total);
  const folderOfIdx = new Uint16Array(total);
  counts.forEach((c, f) => folderOfIdx.fill(f, folderStart[f] as number, (folderStart[f] as number) + c));

  // Extra-large messages: last in the INBOX block, exact sizes.
  const exStart = (folderStart[inboxIdx] as number) + (counts[inboxIdx] as number) - extraLarge.length;
  extraLarge.forEach((s, k) => {
    traits[exStart + k] = T_EXACT;
    size[exStart + k] = s;
  });
  const isFree = (i: number): boolean => traits[i] === 0;
  const isOrdinary = (i: number): boolean => ((traits[i] as number) & (T_EXACT | T_BIG | T_DUP_COPY)) === 0;

  // Exact duplicate pairs: message p+1 is a byte copy of p, same folder (INBOX if it can).
  const pairs = messages >= 10 ? Math.max(1, Math.floor(messages / 400)) : 0;
  for (let k = 0; k < pairs; k++) {
    const candidates = counts
      .map((c, f) => ({ c: f === inboxIdx ? c - extraLarge.length : c, f }))
      .filter(({ c }) => c >= 2);
    if (candidates.length === 0) break;
    const inbox = candidates.find(({ f }) => f === inboxIdx);
    const { c, f } = inbox && rng.chance(0.7) ? inbox : rng.pick(candidates);
    for (let tries = 0; tries < 20; tries++) {
      const p = (folderStart[f] as number) + rng.int(c - 1);
      if (isFree(p) && isFree(p + 1) && (p === 0 || ((traits[p - 1] as number) & T_DUP_COPY) === 0)) {
        traits[p + 1] = T_DUP_COPY;
        break;
      }
    }
  }

  // Budget: averageSize over the regular messages; big ones take at most ~30% of it.
  const budget = averageSize * messages;
  const bigWanted = messages >= 200 ? Math.max(1, Math.round(messages / 500)) : 0;
  const bigLo = Math.min(1024 * 1024, maxSize / 2);
  const bigCount = Math.min(bigWanted, Math.floor((0.3 * budget) / Math.max(bigLo / 2, 256 * 1024)));
  const bigSizes: number[] = [];
  for (let k = 0; k < bigCount; k++) bigSizes.push(Math.round(bigLo * Math.pow(maxSize / bigLo, rng.float())));
  const bigSum = bigSizes.reduce((s, x) => s + x, 0);
  const bigScale = bigSum > 0.3 * budget ? (0.3 * budget) / bigSum : 1;
  let bigTotal = 0;
  for (const s0 of bigSizes) {
    const s = Math.max(MIN_EXACT_SIZE, Math.round(s0 * bigScale));
    for (let tries = 0; tries < 50; tries++) {
      const i = rng.int(total);
      const role = roleOf(folders[folderOfIdx[i] as number] as CorpusFolder);
      if (isFree(i) && !(i + 1 < total && (traits[i + 1] as number) & T_DUP_COPY) && role !== 'drafts' && role !== 'junk') {
        traits[i] = T_BIG;
        size[i] = s;
        bigTotal += s;
        break;
      }
    }
  }

  // Forced traits first, each on a message of its own, then random ones on the rest.
  const forcedEach = messages >= 40 ? Math.max(1, Math.floor(messages / 250)) : messages >= 12 ? 1 : 0;
  const forced = new Uint8Array(total);
  for (const t of FORCED_TRAITS) {
    for (let k = 0; k < forcedEach; k++) {
      for (let tries = 0; tries < 50; tries++) {
        const i = rng.int(total);
        if (isFree(i) && !forced[i] && !(i + 1 < total && (traits[i + 1] as number) & T_DUP_COPY)) {
          traits[i] = t;
          forced[i] = 1;
          break;
        }
      }
    }
  }
  for (let i = 0; i < total; i++) {
    if (!isOrdinary(i) || forced[i]) continue;
    let t = 0;
    for (const [bit, p] of TRAIT_RATES) if (rng.chance(p)) t |= bit;
    if (t & T_ENC_B && t & T_ENC_Q) t &= ~T_ENC_Q;
    if (t & T_BODY_8BIT && t & T_LATIN1) t &= ~T_LATIN1;
    traits[i] = t;
  }

  // Regular sizes: log-normal draws scaled (with clamping) so the whole corpus averages
  // averageSize. A copy takes its original's draw, so both count in the sum.
  const raw = new Float64Array(total);
  let minimalCount = 0;
  const regular: number[] = [];
  for (let i = 0; i < total; i++) {
    const t = traits[i] as number;
    if (t & (T_EXACT | T_BIG)) continue;
    if (t & T_DUP_COPY) {
      const orig = traits[i - 1] as number;
      if (orig & T_MINIMAL) minimalCount++;
      else regular.push(i);
      raw[i] = raw[i - 1] as number;
      continue;
    }
    if (t & T_MINIMAL) {
      minimalCount++;
      size[i] = MINIMAL_SIZE_ESTIMATE;
      continue;
    }
    raw[i] = Math.exp(SIZE_SIGMA * rng.normal());
    regular.push(i);
  }
  const maxRegular = Math.max(MIN_REGULAR_SIZE, maxSize);
  const regBudget = Math.max(regular.length * MIN_REGULAR_SIZE, budget - bigTotal - minimalCount * MINIMAL_SIZE_ESTIMATE);
  let rawSum = 0;
  for (const i of regular) rawSum += raw[i] as number;
  let f = rawSum > 0 ? regBudget / rawSum : 1;
  const clamp = (x: number): number => Math.min(maxRegular, Math.max(MIN_REGULAR_SIZE, x));
  for (let iter = 0; iter < 12 && regular.length > 0; iter++) {
    let sum = 0;
    for (const i of regular) sum += clamp((raw[i] as number) * f);
    if (Math.abs(sum - regBudget) < regBudget * 1e-4) break;
    f *= regBudget / sum;
  }
  for (const i of regular) size[i] = Math.round(clamp((raw[i] as number) * f));
  for (let i = 0; i < total; i++) if ((traits[i] as number) & T_DUP_COPY) size[i] = size[i - 1] as number;

  return { total, folderStart, folderCount: counts, size, traits };
}

// ---------------------------------------------------------------------------------------
// People, words and templates
// ---------------------------------------------------------------------------------------

interface Person {
  name: string;
  /** ASCII fallback for 7-bit text. */
  ascii: string;
  first: string;
  addr: string;
  tz: number; // minutes east of UTC
}

const PEOPLE: ReadonlyArray<readonly [string, string, string, string, number]> = [
  // name, ascii, first, address, tz
  ['John Smith', 'John Smith', 'John', 'john.smith@example.com', -300],
  ['Smith, Jane', 'Smith, Jane', 'Jane', 'jane.smith@example.com', -300],
  ['Jürgen Weiß', 'Juergen Weiss', 'Jürgen', 'j.weiss@example.de.example', 60],
  ['François Dubois', 'Francois Dubois', 'François', 'francois.dubois@example.fr.example', 60],
  ['María García', 'Maria Garcia', 'María', 'maria.garcia@example.es.example', 60],
  ['Γιώργος Παπαδόπουλος', 'Giorgos Papadopoulos', 'Γιώργος', 'g.papadopoulos@example.gr.example', 120],
  ['山田 太郎', 'Taro Yamada', '太郎', 'yamada@example.jp.example', 540],
  ['Ольга Иванова', 'Olga Ivanova', 'Ольга', 'olga.ivanova@example.ru.example', 180],
  ["O'Brien, Patrick", "O'Brien, Patrick", 'Patrick', 'pobrien@example.ie.example', 0],
  ['Chloé Martin', 'Chloe Martin', 'Chloé', 'chloe.martin@example.net', 60],
  ['Priya Natarajan', 'Priya Natarajan', 'Priya', 'priya.n@example.in.example', 330],
  ['Lars Østergård', 'Lars Ostergard', 'Lars', 'lars@example.dk.example', 60],
  ['Zoë Brennan', 'Zoe Brennan', 'Zoë', 'zoe.brennan@example.com', 600],
  ['Michael Chen', 'Michael Chen', 'Michael', 'mchen@corp.example.com', -480],
  ['Acme Billing', 'Acme Billing', 'Acme', 'billing@acme.example', -300],
  ['IT Service Desk', 'IT Service Desk', 'IT', 'servicedesk@corp.example.com', 60],
  ['Paketdienst Müller & Söhne', 'Paketdienst Mueller & Soehne', 'Team', 'noreply@versand.example', 60],
  ['The Weekly Digest', 'The Weekly Digest', 'Reader', 'newsletter@digest.example.net', 0],
  ['Bank of Example', 'Bank of Example', 'Customer', 'no-reply@bank.example', 60],
  ['Sven Ødegaard', 'Sven Odegaard', 'Sven', 'sven@example.no.example', 60],
];

const OWNERS: ReadonlyArray<readonly [string, string, string, string]> = [
  ['Anna Müller', 'Anna Mueller', 'Anna', 'anna.mueller@example.org'],
  ['Thomas Becker', 'Thomas Becker', 'Thomas', 't.becker@corp.example.com'],
  ['Sophie Laurent', 'Sophie Laurent', 'Sophie', 'sophie.laurent@example.net'],
  ['Jörg Schäfer', 'Joerg Schaefer', 'Jörg', 'joerg@home.example.net'],
];

const W_EN = (
  'the meeting project report invoice please find attached regarding schedule budget review update quarter team ' +
  'customer delivery contract draft proposal thanks tomorrow next week agenda minutes action items deadline server ' +
  'migration mailbox folder account confirm order shipment tracking number payment reminder balance statement we ' +
  'should discuss before friday let me know if you have any questions about this I will send the final version ' +
  'after lunch could you check the numbers again our customers expect results by end of month the office is closed ' +
  'on monday due to maintenance new policy applies from january please review and sign the attached document it ' +
  'looks good to me approved with minor changes slides for the workshop travel expenses hotel booking flight'
).split(' ');
const W_DE = (
  'Rechnung Überweisung Bestätigung Grüße Besprechung nächste Woche Termin Änderung Gebühren Straße größer Bäckerei ' +
  'Übersicht Zahlung fällig Mahnung Auftrag Lieferung schön natürlich für über während können möchten würde ' +
  'bitte danke Unterlagen Anhang prüfen heute morgen Büro Kündigung Vertrag Angebot Frühstück Gespräch'
).split(' ');
const W_FR = 'réunion équipe reçu facture déjà très été prévu élève à bientôt prochaine semaine propriété garçon où ça être fenêtre'.split(' ');
const W_ES = 'reunión mañana año señor información dirección código niño teléfono película canción también está'.split(' ');
const W_EL = 'Καλημέρα συνάντηση τιμολόγιο εβδομάδα ευχαριστώ παρακαλώ αρχείο έργο σήμερα αύριο γραφείο'.split(' ');
const W_RU = 'встреча счёт неделя спасибо пожалуйста отчёт проект сегодня завтра документ'.split(' ');
const W_JA = ['会議', '請求書', '来週', 'よろしくお願いします', '資料', '確認', '予定', '添付', 'ありがとうございます', '本日'];
const W_ZH = ['会议', '发票', '下周', '谢谢', '附件', '项目', '今天', '请确认'];
const W_EMOJI = ['🙂', '👍', '🎉', '📎', '🧾', '✅', '☕', '🚀'];

const SUBJECTS_ASCII = [
  'Quarterly report Q{q}',
  'Meeting notes {day}',
  'Invoice #{num}',
  'Your order {num} has shipped',
  'Project timeline',
  'Lunch on Friday?',
  '[dev-list] Build failure on main',
  'Password reset request',
  'Out of office: back on Monday',
  'Contract draft v{q}',
  'Photos from the weekend',
  'Server maintenance window {day}',
  'Budget {year} - final numbers',
  'Agenda for tomorrow',
  'Quick question about the migration',
  'Updated slides',
  'Travel expenses {year}',
  'Welcome to the team!',
];
const SUBJECTS_UTF8 = [
  'Rechnung Nr. {num} – Zahlungserinnerung',
  'Überweisung bestätigt',
  'Grüße aus München',
  "Réunion de l'équipe – compte rendu",
  'Καλημέρα – συνάντηση την Τρίτη',
  '会議の議事録について',
  'Встреча в четверг',
  'Happy birthday 🎉🎂',
  'Año nuevo – información',
  'Ärger mit der Lieferung ⚠️',
  '【重要】請求書の送付 ({num})',
  'Café ☕ tomorrow?',
];
const SUBJECTS_LATIN1 = [
  'Rechnung für März',
  'Überweisung bestätigt - Nr. {num}',
  'Réunion à côté du café',
  'Grüße aus Köln',
  'Año nuevo, señor',
  "Café de l'été",
  'Kündigung zum {day}',
  'Straßenfest am Wochenende',
];
const SUBJECTS_NEWS = ['Weekly digest #{num}', 'Your {year} year in review', 'Last chance: 30% off everything', 'New features this month', 'Webinar invitation: {day}'];
const SUBJECTS_SPAM = ['You have WON a prize!!!', 'Action required: verify your account', 'Cheap meds online', 'Re: your invoice {num}', 'URGENT business proposal'];
const SUBJECTS_RECEIPT = ['Your receipt from Acme Store #{num}', 'Payment received - thank you', 'Order confirmation {num}', 'Ihre Bestellung {num} wurde versandt'];

const KEYWORDS = ['Project_X', 'Invoice', 'Later', '$label1', '$label3', 'NonJunk', 'Follow-up', 'Q3_2019', 'TODO'];

const DAY_NAMES = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

// ---------------------------------------------------------------------------------------
// Pools: pre-generated line material, shared by all corpora (built once per process)
// ---------------------------------------------------------------------------------------

interface LinePool {
  buf: Buffer;
  /** Start offset of each unit (a line, or a QP-encoded source line), plus buf.length. */
  off: Uint32Array;
}

interface Pools {
  ascii: LinePool;
  utf8: LinePool;
  latin1: LinePool;
  qp: LinePool;
  html: LinePool;
  /** Base64 of random bytes, 76 characters + CRLF per line. */
  b64: Buffer;
  b64Lines: number;
  /** Long ASCII text without line breaks, for exact-length filler lines. */
  filler: Buffer;
}

let poolsCache: Pools | undefined;

function makeLinePool(lines: Buffer[]): LinePool {
  const off = new Uint32Array(lines.length + 1);
  let acc = 0;
  lines.forEach((l, i) => {
    off[i] = acc;
    acc += l.length;
  });
  off[lines.length] = acc;
  return { buf: Buffer.concat(lines, acc), off };
}

function wrapWords(words: string[], width: number, joiner: string): string[] {
  const lines: string[] = [];
  let line = '';
  let len = 0;
  for (const w of words) {
    const wl = [...w].length;
    if (len > 0 && len + joiner.length + wl > width) {
      lines.push(line);
      line = '';
      len = 0;
    }
    line += (len > 0 ? joiner : '') + w;
    len += (len > 0 ? joiner.length : 0) + wl;
  }
  if (line) lines.push(line);
  return lines;
}

function sentence(rng: Rng, words: readonly string[], min: number, max: number): string[] {
  const n = rng.range(min, max);
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(rng.pick(words));
  const first = out[0] as string;
  out[0] = first.charAt(0).toUpperCase() + first.slice(1);
  out[n - 1] += rng.pick(['.', '.', '.', '?', '!', ',']);
  return out;
}

/** Paragraphs of text lines (no line ends), blank line between paragraphs. */
function textLines(rng: Rng, count: number, languages: ReadonlyArray<readonly string[]>, cjk: ReadonlyArray<readonly string[]>): string[] {
  const lines: string[] = [];
  while (lines.length < count) {
    if (cjk.length > 0 && rng.chance(0.12)) {
      const words: string[] = [];
      const n = rng.range(6, 30);
      const lang = rng.pick(cjk);
      for (let i = 0; i < n; i++) words.push(rng.pick(lang) + (rng.chance(0.2) ? '。' : ''));
      lines.push(...wrapWords(words, 36, ''));
    } else {
      const words: string[] = [];
      const sentences = rng.range(1, 5);
      for (let s = 0; s < sentences; s++) {
        const lang = rng.pick(languages);
        words.push(...sentence(rng, lang, 4, 16));
      }
      lines.push(...wrapWords(words, rng.range(64, 76), ' '));
    }
    lines.push('');
  }
  return lines;
}

function getPools(): Pools {
  if (poolsCache) return poolsCache;
  const rng = new Rng(0x5eed, STREAM_POOL, 0);
  const crlf = (s: string, enc: BufferEncoding = 'utf8'): Buffer => Buffer.from(s + '\r\n', enc);

  const asciiLines = textLines(rng, 4000, [W_EN], []);
  const ascii = makeLinePool(asciiLines.map((l) => crlf(l)));

  const mixed = [W_EN, W_DE, W_DE, W_FR, W_ES, W_EL, W_RU, [...W_EN, ...W_EMOJI]];
  const utf8Lines = textLines(rng, 4000, mixed, [W_JA, W_ZH]);
  const utf8 = makeLinePool(utf8Lines.map((l) => crlf(l)));

  const latin = [W_DE, W_FR, W_ES, W_EN].map((ws) => ws.filter((w) => [...w].every((c) => c.charCodeAt(0) <= 0xff)));
  const latin1 = makeLinePool(textLines(rng, 3000, latin, []).map((l) => crlf(l, 'latin1')));

  const qp = makeLinePool(utf8Lines.map((l) => Buffer.from(qpEncode(Buffer.from(l, 'utf8')), 'ascii')));

  const htmlSrc: string[] = [];
  while (htmlSrc.length < 3000) {
    const text = sentence(rng, rng.pick(mixed), 5, 20).join(' ');
    switch (rng.int(6)) {
      case 0:
        htmlSrc.push(`<div style="font-family:Calibri,Arial,sans-serif;font-size:11pt;color:#1F497D">${text}</div>`);
        break;
      case 1:
        htmlSrc.push(`<p class="MsoNormal"><span lang="DE" style="mso-ansi-language:DE">${text}</span><o:p></o:p></p>`);
        break;
      case 2:
        htmlSrc.push(`<tr><td style="padding:4px 8px;border-bottom:1px solid #ddd">${rng.pick(W_EN)}</td><td align="right">${rng.range(1, 9999)},${rng.range(10, 99)}</td></tr>`);
        break;
      case 3:
        htmlSrc.push(`<a href="https://www.example.com/t/${rng.hex(16)}?u=${rng.hex(8)}&amp;utm_source=newsletter">${text}</a><br>`);
        break;
      case 4:
        htmlSrc.push(`<img src="https://cdn.example.net/img/${rng.hex(12)}.png" width="600" height="${rng.range(40, 400)}" alt="" style="display:block">`);
        break;
      default:
        htmlSrc.push(`<p>${text}</p>`);
    }
  }
  const html = makeLinePool(htmlSrc.map((l) => Buffer.from(qpEncode(Buffer.from(l, 'utf8')), 'ascii')));

  // 3.2 MB of random bytes → ~4.3 MB of wrapped base64; big attachments cycle through it.
  const b64Lines = 56_000;
  const b64Text = Buffer.from(rng.bytes(b64Lines * 57).toString('base64'), 'ascii');
  const b64 = Buffer.allocUnsafe(b64Lines * 78);
  for (let i = 0; i < b64Lines; i++) {
    b64Text.copy(b64, i * 78, i * 76, i * 76 + 76);
    b64[i * 78 + 76] = 0x0d;
    b64[i * 78 + 77] = 0x0a;
  }

  const fillerWords: string[] = [];
  while (fillerWords.join(' ').length < 16_384) fillerWords.push(...sentence(rng, W_EN, 4, 14));
  const filler = Buffer.from(fillerWords.join(' '), 'ascii');

  poolsCache = { ascii, utf8, latin1, qp, html, b64, b64Lines, filler };
  return poolsCache;
}

/** Whole units from `pool`, starting at a random unit, totalling at most `n` bytes. */
function takeApprox(pool: LinePool, n: number, rng: Rng, out: Buffer[]): number {
  const units = pool.off.length - 1;
  let got = 0;
  for (let guard = 0; guard < 1000; guard++) {
    const s = rng.int(units);
    const limit = (pool.off[s] as number) + (n - got);
    // Largest e with off[e] <= limit.
    let lo = s;
    let hi = units;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if ((pool.off[mid] as number) <= limit) lo = mid;
      else hi = mid - 1;
    }
    if (lo === s) break;
    out.push(pool.buf.subarray(pool.off[s], pool.off[lo]));
    got += (pool.off[lo] as number) - (pool.off[s] as number);
    if (lo < units) break; // stopped by size, not by the end of the pool
  }
  return got;
}

/** One ASCII filler line of exactly `len` characters (plus CRLF): no leading or trailing
 * space, so it is also valid quoted-printable. */
function fillerLine(pools: Pools, len: number, rng: Rng): Buffer {
  const line = Buffer.allocUnsafe(len + 2);
  const start = rng.int(pools.filler.length - len);
  pools.filler.copy(line, 0, start, start + len);
  if (len > 0 && line[0] === 0x20) line[0] = 0x41; // 'A'
  if (len > 0 && line[len - 1] === 0x20) line[len - 1] = 0x2e; // '.'
  line[len] = 0x0d;
  line[len + 1] = 0x0a;
  return line;
}

/** Exactly `n` bytes (n = 0 or n >= 2) of CRLF-terminated lines: pool lines, then filler. */
function takeExact(pools: Pools, pool: LinePool, n: number, rng: Rng, out: Buffer[]): void {
  let r = n;
  if (r > 400) r -= takeApprox(pool, r - 200, rng, out);
  while (r > 0) {
    if (r <= 78) {
      out.push(fillerLine(pools, r - 2, rng));
      r = 0;
    } else {
      const len = r - 78 === 1 ? 75 : 76; // never leave a single byte behind
      out.push(fillerLine(pools, len, rng));
      r -= len + 2;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Encoders
// ---------------------------------------------------------------------------------------

/** Quoted-printable (RFC 2045 §6.7) of one line, soft-wrapped at 76, ending in CRLF. */
function qpEncode(bytes: Buffer): string {
  let out = '';
  let lineLen = 0;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i] as number;
    const last = i === bytes.length - 1;
    const literal = (b >= 33 && b <= 126 && b !== 61) || (b === 32 && !last);
    const enc = literal ? String.fromCharCode(b) : '=' + b.toString(16).toUpperCase().padStart(2, '0');
    if (lineLen + enc.length > 75) {
      out += '=\r\n';
      lineLen = 0;
    }
    out += enc;
    lineLen += enc.length;
  }
  return out + '\r\n';
}

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}

/** `s` with every character above `max` replaced by '?', as a charset-limited mailer does. */
function downgrade(s: string, max: number): string {
  let out = '';
  for (const ch of s) out += (ch.codePointAt(0) as number) > max ? '?' : ch;
  return out;
}

/** RFC 2047 encoded words for `s`, each ≤ 75 characters, never splitting a character. */
function encodeWords(s: string, charset: 'UTF-8' | 'utf-8' | 'ISO-8859-1' | 'iso-8859-1', mode: 'B' | 'Q'): string[] {
  const latin = charset.toUpperCase() === 'ISO-8859-1';
  const words: string[] = [];
  const maxBytes = mode === 'B' ? 42 : 18; // keeps every word ≤ 75 chars
  let chunk: Buffer[] = [];
  let chunkLen = 0;
  const flush = (): void => {
    if (chunkLen === 0) return;
    const bytes = Buffer.concat(chunk, chunkLen);
    let text = '';
    if (mode === 'B') text = bytes.toString('base64');
    else {
      for (const b of bytes) {
        if ((b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x21 || b === 0x2a || b === 0x2b || b === 0x2d || b === 0x2f) text += String.fromCharCode(b);
        else if (b === 0x20) text += '_';
        else text += '=' + b.toString(16).toUpperCase().padStart(2, '0');
      }
    }
    words.push(`=?${charset}?${mode}?${text}?=`);
    chunk = [];
    chunkLen = 0;
  };
  for (const ch of s) {
    const b = Buffer.from(ch, latin ? 'latin1' : 'utf8');
    if (chunkLen + b.length > maxBytes) flush();
    chunk.push(b);
    chunkLen += b.length;
  }
  flush();
  return words;
}

/** Fold `tokens` into a header, breaking only between tokens (so unfolding restores it). */
function foldHeader(name: string, tokens: string[], sep = ' ', indent = ' '): string {
  let out = `${name}:`;
  let lineLen = out.length;
  tokens.forEach((tok, i) => {
    const glue = i === 0 ? ' ' : sep;
    if (i > 0 && lineLen + glue.length + tok.length > 76) {
      out += glue.trimEnd() + '\r\n' + indent + tok;
      lineLen = indent.length + tok.length;
    } else {
      out += glue + tok;
      lineLen += glue.length + tok.length;
    }
  });
  return out;
}

/** A header value as a run of words, encoded or raw as the traits demand. */
function phraseTokens(text: string, rng: Rng, how: 'raw' | 'B' | 'Q-latin1' | 'auto'): string[] {
  if (how === 'raw' || (how === 'auto' && isAscii(text))) return text.split(' ');
  if (how === 'Q-latin1' && [...text].every((c) => c.charCodeAt(0) <= 0xff)) return encodeWords(text, rng.chance(0.8) ? 'ISO-8859-1' : 'iso-8859-1', 'Q');
  if (how === 'B' || rng.chance(0.6)) return encodeWords(text, rng.chance(0.8) ? 'UTF-8' : 'utf-8', 'B');
  return encodeWords(text, 'utf-8', 'Q');
}

function mailbox(p: Person, rng: Rng, how: 'raw' | 'B' | 'Q-latin1' | 'auto'): string {
  if (how === 'auto' && isAscii(p.name)) {
    // Names with specials (',' '\'') must be quoted (RFC 5322 §3.2.3).
    return /[^A-Za-z0-9 !#$%&*+\-/=?^_`{|}~]/.test(p.name) ? `"${p.name}" <${p.addr}>` : `${p.name} <${p.addr}>`;
  }
  if (how === 'raw') return `"${p.name}" <${p.addr}>`;
  return `${phraseTokens(p.name, rng, how).join(' ')} <${p.addr}>`;
}

function rfc5322Date(sec: number, tzMin: number, comment: boolean): string {
  const d = new Date((sec + tzMin * 60) * 1000);
  const sign = tzMin < 0 ? '-' : '+';
  const a = Math.abs(tzMin);
  const zone = `${sign}${String(Math.floor(a / 60)).padStart(2, '0')}${String(a % 60).padStart(2, '0')}`;
  const base =
    `${DAY_NAMES[d.getUTCDay()]}, ${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ` +
    `${String(d.getUTCHours()).padStart(2, '0')}:${String(d.getUTCMinutes()).padStart(2, '0')}:${String(d.getUTCSeconds()).padStart(2, '0')} ${zone}`;
  return comment ? `${base} (${tzMin === 0 ? 'UTC' : tzMin === 60 ? 'CET' : tzMin === 120 ? 'CEST' : 'local'})` : base;
}

/** Rough European DST so the owner's Date headers switch between +0100 and +0200. */
function europeTz(sec: number): number {
  const m = new Date(sec * 1000).getUTCMonth();
  return m >= 3 && m <= 9 ? 120 : 60;
}

// ---------------------------------------------------------------------------------------
// Message building
// ---------------------------------------------------------------------------------------

interface Ctx {
  seed: number;
  folders: CorpusFolder[];
  roles: Role[];
  ranges: Array<[number, number]>;
  plan: Plan;
  pools: Pools;
  owner: Person;
  contacts: Person[];
  includeDeleted: boolean;
  /** Last built message, so a duplicate copy is not generated twice in a row. */
  last?: { index: number; msg: CorpusMessage };
}

function makeContext(seed: number, folders: CorpusFolder[], plan: Plan, includeDeleted: boolean): Ctx {
  const rng = new Rng(seed, STREAM_CTX, 0);
  const o = rng.pick(OWNERS);
  const owner: Person = { name: o[0], ascii: o[1], first: o[2], addr: o[3], tz: 60 };
  const contacts = PEOPLE.map(([name, ascii, first, addr, tz]) => ({ name, ascii, first, addr, tz }));
  // Seed-dependent order so different seeds favour different correspondents.
  for (let i = contacts.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [contacts[i], contacts[j]] = [contacts[j] as Person, contacts[i] as Person];
  }
  return {
    seed,
    folders,
    roles: folders.map(roleOf),
    ranges: folders.map(dateRangeOf),
    plan,
    pools: getPools(),
    owner,
    contacts,
    includeDeleted,
  };
}

type Style = 'outlook' | 'gmail' | 'thunderbird' | 'apple' | 'newsletter' | 'java';
type TextEnc = '7bit' | '8bit' | 'latin1' | 'qp';

/** Per-message state shared by the part writers. */
interface M {
  ctx: Ctx;
  rng: Rng;
  index: number;
  traits: number;
  style: Style;
  from: Person;
  to: Person;
  dateSec: number;
  dateHeader: string;
  blankBeforeBoundary: boolean;
  fold: string; // continuation indent
}

/**
 * Output with one "hole": the text/plain body, sized last so the message hits its target
 * size exactly (or as close as its fixed parts allow).
 */
class Out {
  segs: Buffer[] = [];
  len = 0;
  private holeAt = -1;
  private holeFill: ((n: number) => Buffer[]) | undefined;
  s(str: string): void {
    this.b(Buffer.from(str, 'utf8'));
  }
  b(buf: Buffer): void {
    this.segs.push(buf);
    this.len += buf.length;
  }
  hole(fill: (n: number) => Buffer[]): void {
    this.holeAt = this.segs.length;
    this.segs.push(Buffer.alloc(0));
    this.holeFill = fill;
  }
  finish(target: number, minHole: number): Buffer {
    if (this.holeAt >= 0 && this.holeFill) {
      const n = Math.max(minHole, target - this.len);
      const parts = this.holeFill(n);
      this.segs.splice(this.holeAt, 1, ...parts);
      for (const p of parts) this.len += p.length;
    }
    return Buffer.concat(this.segs, this.len);
  }
}

interface Entity {
  headers: string[];
  write(o: Out): void;
}

function boundaryFor(m: M, depth: number): string {
  const r = m.rng;
  switch (m.style) {
    case 'outlook':
      return `_00${depth * 2}_${r.alnum(4).toUpperCase()}PR0${r.range(1, 9)}MB${r.range(1000, 9999)}${r.hex(16, true)}_`;
    case 'gmail':
      return `0000000000${r.hex(18)}`;
    case 'thunderbird':
      return `------------${r.alnum(24)}`;
    case 'apple':
      // '=' is legal in a boundary but forces quoting: a classic parser trap.
      return `Apple-Mail=_${r.hex(8, true)}-${r.hex(4, true)}-${r.hex(4, true)}-${r.hex(4, true)}-${r.hex(12, true)}`;
    case 'java':
      return `----=_Part_${r.range(1, 99999)}_${r.range(100000, 999999999)}.${m.dateSec}${r.range(100, 999)}`;
    default:
      return `==_mimepart_${r.hex(20)}`;
  }
}

function multipart(m: M, subtype: string, children: Entity[], depth: number): Entity {
  const boundary = boundaryFor(m, depth);
  return {
    headers: [`Content-Type: multipart/${subtype};${m.fold}boundary="${boundary}"`],
    write(o) {
      if (depth === 0 && m.rng.chance(0.4)) o.s('This is a multi-part message in MIME format.\r\n');
      for (const child of children) {
        o.s(`${m.blankBeforeBoundary ? '\r\n' : ''}--${boundary}\r\n${child.headers.join('\r\n')}\r\n\r\n`);
        child.write(o);
      }
      o.s(`${m.blankBeforeBoundary ? '\r\n' : ''}--${boundary}--\r\n`);
    },
  };
}

function encodeText(s: string, enc: TextEnc): Buffer {
  switch (enc) {
    case '7bit':
      return Buffer.from(downgrade(s, 0x7f), 'ascii');
    case '8bit':
      return Buffer.from(s, 'utf8');
    case 'latin1':
      return Buffer.from(downgrade(s, 0xff), 'latin1');
    case 'qp':
      return Buffer.from(
        s
          .split('\r\n')
          .slice(0, -1)
          .map((l) => qpEncode(Buffer.from(l, 'utf8')))
          .join(''),
        'ascii',
      );
  }
}

function textEncFor(m: M): TextEnc {
  if (m.traits & T_BODY_8BIT) return '8bit';
  if (m.traits & T_LATIN1) return 'latin1';
  switch (m.style) {
    case 'outlook':
    case 'apple':
      return 'qp';
    case 'thunderbird':
      return m.rng.chance(0.5) ? '8bit' : '7bit';
    case 'gmail':
      return m.rng.chance(0.5) ? 'qp' : '7bit';
    default:
      return m.rng.chance(0.3) ? 'qp' : '7bit';
  }
}

/** The text/plain entity carrying the size-adjusting hole. */
function textEntity(m: M, withReply: boolean): Entity {
  const enc = textEncFor(m);
  const charset = enc === 'latin1' ? m.rng.pick(['iso-8859-1', 'ISO-8859-1', 'windows-1252']) : enc === '7bit' ? m.rng.pick(['us-ascii', 'UTF-8', 'utf-8']) : m.rng.pick(['UTF-8', 'utf-8', '"utf-8"']);
  const ct = m.style === 'thunderbird' ? `Content-Type: text/plain; charset=${charset.replace(/"/g, '')}; format=flowed` : `Content-Type: text/plain; charset=${charset}`;
  const cte = enc === 'latin1' ? '8bit' : enc === 'qp' ? 'quoted-printable' : enc;
  const pools = m.ctx.pools;
  const pool = enc === '8bit' ? pools.utf8 : enc === 'latin1' ? pools.latin1 : enc === 'qp' ? pools.qp : pools.ascii;
  const rng = m.rng;
  const nonAscii = enc !== '7bit';
  const first = nonAscii ? m.to.first : m.to.ascii.split(/[ ,]+/)[0];
  const greeting = rng.pick(nonAscii ? ['Hallo {n},', 'Bonjour {n},', 'Hi {n},', 'Guten Tag {n},', 'Dear {n},'] : ['Hi {n},', 'Hello {n},', 'Dear {n},', 'Good morning,']).replace('{n}', first ?? '');
  const closing = rng.pick(nonAscii ? ['Viele Grüße', 'Mit freundlichen Grüßen', 'Cordialement,', 'Saludos', 'Best regards,'] : ['Best regards,', 'Thanks,', 'Cheers,', 'Kind regards,']);
  const senderName = nonAscii ? m.from.name : m.from.ascii;
  let tail = `\r\n${closing}\r\n${senderName}\r\n`;
  if (rng.chance(0.4)) tail += `-- \r\n${senderName}\r\n${rng.pick(['Acme Corp', 'Example GmbH', 'Beispiel & Partner'])} | Tel. +49 30 ${rng.range(1000000, 9999999)}\r\n`;
  if (withReply) {
    tail += `\r\nOn ${m.dateHeader}, ${m.to.ascii} <${m.to.addr}> wrote:\r\n`;
    const quoted: Buffer[] = [];
    takeApprox(pools.ascii, rng.range(150, 900), rng, quoted);
    tail += Buffer.concat(quoted)
      .toString('ascii')
      .split('\r\n')
      .slice(0, -1)
      .map((l) => (l ? `> ${l}` : '>'))
      .join('\r\n');
    tail += '\r\n';
  }
  const head = encodeText(`${greeting}\r\n\r\n`, enc);
  const foot = encodeText(tail, enc);
  return {
    headers: [ct, `Content-Transfer-Encoding: ${cte}`],
    write(o) {
      o.b(head);
      // The hole covers body and closing, so the closing counts towards the exact size.
      o.hole((n) => {
        const out: Buffer[] = [];
        takeExact(pools, pool, Math.max(2, n - foot.length), rng, out);
        out.push(foot);
        return out;
      });
    },
  };
}

function htmlEntity(m: M, approx: number, inlineCid?: string): Entity {
  const pools = m.ctx.pools;
  const rng = m.rng;
  return {
    headers: [`Content-Type: text/html;${m.fold}charset="utf-8"`, 'Content-Transfer-Encoding: quoted-printable'],
    write(o) {
      o.s(qpEncode(Buffer.from('<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8"></head>', 'utf8')));
      o.s(qpEncode(Buffer.from(`<body lang="DE" style="word-wrap:break-word"><p>${m.to.name},</p>`, 'utf8')));
      const chunks: Buffer[] = [];
      takeApprox(pools.html, Math.max(200, approx - 300), rng, chunks);
      for (const c of chunks) o.b(c);
      if (inlineCid) o.s(qpEncode(Buffer.from(`<img src="cid:${inlineCid}" width="480" alt="image001.png">`, 'utf8')));
      o.s(qpEncode(Buffer.from('</body></html>', 'utf8')));
    },
  };
}

const ATTACH_TYPES: ReadonlyArray<{ type: string; ext: string; magic: Buffer }> = [
  { type: 'application/pdf', ext: 'pdf', magic: Buffer.from('%PDF-1.5\n%\xe2\xe3\xcf\xd3\n', 'latin1') },
  { type: 'image/png', ext: 'png', magic: Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex') },
  { type: 'image/jpeg', ext: 'jpg', magic: Buffer.from('ffd8ffe000104a46494600', 'hex') },
  { type: 'application/zip', ext: 'zip', magic: Buffer.from('504b0304140000000800', 'hex') },
  { type: 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet', ext: 'xlsx', magic: Buffer.from('504b030414000600', 'hex') },
  { type: 'application/vnd.openxmlformats-officedocument.wordprocessingml.document', ext: 'docx', magic: Buffer.from('504b030414000600', 'hex') },
  { type: 'application/octet-stream', ext: 'bin', magic: Buffer.from('7f454c46', 'hex') },
];
const FILE_BASES_ASCII = ['Invoice_{num}', 'scan0001', 'IMG_{num}', 'Quarterly Report Q{q}', 'contract-final-v{q}', 'Budget {year}', 'presentation'];
const FILE_BASES_UTF8 = ['Übersicht März', '見積書', 'Αναφορά', 'Rechnung Nr. {num}', 'Präsentation – final', 'Отчёт {year}'];

/** Base64 body of `decoded` bytes: magic-number line, pool lines, fresh padded last line. */
function base64Body(m: M, decoded: number, magic: Buffer): Buffer[] {
  const pools = m.ctx.pools;
  const rng = m.rng;
  const out: Buffer[] = [];
  const firstLen = Math.min(57, decoded);
  const first = Buffer.concat([magic.subarray(0, firstLen), rng.bytes(Math.max(0, firstLen - magic.length))]);
  out.push(Buffer.from(first.toString('base64') + '\r\n', 'ascii'));
  const rest = decoded - firstLen;
  let full = Math.floor(rest / 57);
  const tail = rest - full * 57;
  while (full > 0) {
    const start = rng.int(pools.b64Lines);
    const take = Math.min(full, pools.b64Lines - start);
    out.push(pools.b64.subarray(start * 78, (start + take) * 78));
    full -= take;
  }
  // A short last line with '=' padding, as real encoders end.
  if (tail > 0) out.push(Buffer.from(rng.bytes(tail).toString('base64') + '\r\n', 'ascii'));
  return out;
}

function fillTemplate(t: string, m: M): string {
  const d = new Date(m.dateSec * 1000);
  return t
    .replace('{num}', String(m.rng.range(1000, 999999)))
    .replace('{q}', String(m.rng.range(1, 4)))
    .replace('{year}', String(d.getUTCFullYear()))
    .replace('{day}', `${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, '0')}-${String(d.getUTCDate()).padStart(2, '0')}`);
}

function attachmentEntity(m: M, encodedBudget: number, inline?: string): Entity {
  const rng = m.rng;
  const kind = inline ? (ATTACH_TYPES[1] as (typeof ATTACH_TYPES)[number]) : rng.pick(ATTACH_TYPES);
  const decoded = Math.max(16, Math.floor((encodedBudget * 57) / 78));
  const raw8 = (m.traits & T_RAW8) !== 0 && rng.chance(0.7);
  const utf8Name = raw8 || rng.chance(0.3);
  const base = fillTemplate(rng.pick(utf8Name ? FILE_BASES_UTF8 : FILE_BASES_ASCII), m);
  const fname = inline ? 'image001.png' : `${base}.${kind.ext}`;
  const f = m.fold;
  let nameParam: string;
  let dispParam: string;
  if (isAscii(fname)) {
    nameParam = `name="${fname}"`;
    dispParam = `filename="${fname}"`;
  } else if (raw8) {
    // Raw UTF-8 in a parameter: what many broken mailers send.
    nameParam = `name="${fname}"`;
    dispParam = `filename="${fname}"`;
  } else if (m.style === 'outlook' || m.style === 'java') {
    const enc = encodeWords(fname, 'utf-8', 'B').join(`${f}`);
    nameParam = `name="${enc}"`;
    dispParam = `filename="${enc}"`;
  } else {
    // RFC 2231 parameter value continuation, as Thunderbird/Gmail/Apple send it.
    const pct = [...Buffer.from(fname, 'utf8')].map((b) => (/[A-Za-z0-9.\-_]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : '%' + b.toString(16).toUpperCase().padStart(2, '0'))).join('');
    // Split into continuations of ≤ 40 characters, never inside a %XX escape.
    const parts: string[] = [''];
    for (const tok of pct.match(/%[0-9A-F]{2}|[^%]/g) ?? []) {
      if ((parts[parts.length - 1] as string).length + tok.length > 40) parts.push('');
      parts[parts.length - 1] += tok;
    }
    nameParam = `name="=?UTF-8?B?${Buffer.from(fname, 'utf8').toString('base64')}?="`;
    dispParam = parts.map((p, i) => `filename*${i}*=${i === 0 ? "UTF-8''" : ''}${p}`).join(`;${f}`);
  }
  const headers = [`Content-Type: ${kind.type};${f}${nameParam}`];
  if (m.style === 'outlook') {
    headers.push(`Content-Description: ${inline ? fname : isAscii(fname) || raw8 ? fname : encodeWords(fname, 'utf-8', 'B').join(' ')}`);
    const when = new Date(m.dateSec * 1000).toUTCString();
    headers.push(`Content-Disposition: ${inline ? 'inline' : 'attachment'}; ${dispParam}; size=${decoded};${f}creation-date="${when}";${f}modification-date="${when}"`);
  } else {
    headers.push(`Content-Disposition: ${inline ? 'inline' : 'attachment'};${f}${dispParam}`);
  }
  if (inline) headers.push(`Content-ID: <${inline}>`);
  headers.push('Content-Transfer-Encoding: base64');
  if (m.style === 'apple' && !inline) headers.push(`X-Attachment-Id: f_${rng.alnum(9).toLowerCase()}`);
  return {
    headers,
    write(o) {
      for (const c of base64Body(m, decoded, kind.magic)) o.b(c);
    },
  };
}

/** A forwarded message as message/rfc822: headers of its own and a short 7-bit body. */
function forwardEntity(m: M): Entity {
  const rng = m.rng;
  const ctx = m.ctx;
  const from = rng.pick(ctx.contacts);
  const when = m.dateSec - rng.range(3600, 30 * 86400);
  const lines = [
    `From: ${mailbox(from, rng, 'auto')}`,
    `To: ${mailbox(m.from, rng, 'auto')}`,
    `Subject: ${fillTemplate(rng.pick(SUBJECTS_ASCII), m)}`,
    `Date: ${rfc5322Date(when, from.tz, false)}`,
    `Message-ID: <${rng.hex(16)}.${m.index.toString(36)}.fwd@${from.addr.split('@')[1]}>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
    'Content-Transfer-Encoding: 7bit',
  ];
  return {
    headers: ['Content-Type: message/rfc822', `Content-Disposition: attachment;${m.fold}filename="Forwarded message.eml"`],
    write(o) {
      o.s(lines.join('\r\n') + '\r\n\r\n');
      const body: Buffer[] = [];
      takeApprox(ctx.pools.ascii, rng.range(600, 4000), rng, body);
      if (body.length === 0) body.push(Buffer.from('See below.\r\n'));
      for (const b of body) o.b(b);
    },
  };
}

function messageId(m: M): string {
  const r = m.rng;
  const u = m.index.toString(36); // guarantees uniqueness within the corpus
  const dom = m.from.addr.split('@')[1] as string;
  switch (m.style) {
    case 'outlook': {
      const host = `${r.alnum(4).toUpperCase()}PR0${r.range(1, 9)}MB${r.range(1000, 9999)}`;
      return `<${host}${r.hex(12, true)}${u.toUpperCase()}@${host}.eurprd0${r.range(1, 9)}.prod.outlook.example>`;
    }
    case 'gmail': {
      const s = r.bytes(30).toString('base64').replace(/\//g, '_');
      return `<CA${s}${u}@mail.gmail.example>`;
    }
    case 'thunderbird':
      return `<${r.hex(8)}-${r.hex(4)}-${r.hex(4)}-${r.hex(4)}-${r.hex(8)}${u.padStart(4, '0')}@${dom}>`;
    case 'apple':
      return `<${r.hex(8, true)}-${r.hex(4, true)}-${r.hex(4, true)}-${r.hex(4, true)}-${r.hex(8, true)}${u.toUpperCase().padStart(4, '0')}@${dom}>`;
    case 'java':
      return `<${r.range(100000000, 999999999)}.${u}.${m.dateSec}${r.range(100, 999)}.JavaMail.app@${dom}>`;
    default:
      return `<${r.hex(20)}.${u}@mailer.${dom}>`;
  }
}

function received(m: M, deliveredSec: number, hops: number): string[] {
  const r = m.rng;
  const ownerDom = m.to.addr.split('@')[1] as string;
  const senderDom = m.from.addr.split('@')[1] as string;
  const out: string[] = [];
  let t = deliveredSec;
  const f = m.fold;
  for (let h = 0; h < hops; h++) {
    const when = rfc5322Date(t, 0, r.chance(0.3));
    const ip = r.chance(0.8) ? `${r.pick(['192.0.2', '198.51.100', '203.0.113'])}.${r.range(1, 254)}` : `IPv6:2001:db8:${r.hex(4)}::${r.hex(3)}`;
    if (h === 0) {
      out.push(`Received: from mx${r.range(1, 4)}.${ownerDom} (mx.${ownerDom} [${ip}])${f}by imap.${ownerDom} (Dovecot) with LMTP id ${r.alnum(22)}${f}for <${m.to.addr}>; ${when}`);
    } else if (h === hops - 1) {
      out.push(`Received: from [${ip}] (unknown [${ip}])${f}(Authenticated sender: ${m.from.addr.split('@')[0]})${f}by smtp.${senderDom} (Postfix) with ESMTPSA id ${r.hex(10, true)}${f}for <${m.to.addr}>; ${when}`);
    } else {
      out.push(`Received: from mail-${r.alnum(6).toLowerCase()}.${senderDom} (mail.${senderDom} [${ip}])${f}by mx.${ownerDom} (Postfix) with ESMTPS id ${r.alnum(12)}${f}for <${m.to.addr}>; ${when}`);
    }
    t -= r.range(0, 20);
  }
  return out;
}

function chooseStyle(rng: Rng, role: Role, folder: CorpusFolder): Style {
  if (role === 'sent' || role === 'drafts') return (['outlook', 'outlook', 'outlook', 'thunderbird', 'apple'] as const)[rng.int(5)] as Style;
  if (role === 'junk' || /newsletter/i.test(folder.path.join('/'))) return rng.chance(0.8) ? 'newsletter' : 'java';
  return (['outlook', 'outlook', 'gmail', 'gmail', 'thunderbird', 'apple', 'newsletter', 'java'] as const)[rng.int(8)] as Style;
}

function chooseFlags(rng: Rng, role: Role, includeDeleted: boolean): string[] {
  const flags: string[] = [];
  const add = (f: string, p: number): boolean => {
    if (rng.chance(p)) flags.push(f);
    return flags[flags.length - 1] === f;
  };
  switch (role) {
    case 'sent':
      add('\\Seen', 0.99);
      add('\\Flagged', 0.02);
      add(rng.pick(KEYWORDS), 0.01);
      break;
    case 'drafts':
      add('\\Seen', 0.7);
      flags.push('\\Draft');
      break;
    case 'junk':
      add('\\Seen', 0.4);
      add('$Junk', 0.9);
      break;
    case 'trash':
      add('\\Seen', 0.95);
      add('\\Answered', 0.05);
      if (includeDeleted) add('\\Deleted', 0.02);
      break;
    default: {
      const seen = add('\\Seen', role === 'inbox' ? 0.88 : 0.97);
      if (seen) add('\\Answered', 0.18);
      add('\\Flagged', 0.05);
      add('$Forwarded', 0.04);
      add('$MDNSent', 0.015);
      add('$NotJunk', 0.03);
      if (rng.chance(0.03)) {
        const kw = rng.pick(KEYWORDS);
        flags.push(kw);
        if (rng.chance(0.3)) {
          const kw2 = rng.pick(KEYWORDS);
          if (kw2 !== kw) flags.push(kw2);
        }
      }
      if (includeDeleted && role === 'inbox') add('\\Deleted', 0.02);
    }
  }
  return flags;
}

function folderIndexOf(plan: Plan, index: number): number {
  let lo = 0;
  let hi = plan.folderStart.length - 1;
  // Last folder whose block starts at or before `index`.
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if ((plan.folderStart[mid] as number) <= index) lo = mid;
    else hi = mid - 1;
  }
  // An empty folder's block starts where the next one does, so it is never the answer.
  return lo;
}

function buildMessage(ctx: Ctx, index: number): CorpusMessage {
  const plan = ctx.plan;
  const traits = plan.traits[index] as number;
  if (traits & T_DUP_COPY) {
    const orig = ctx.last && ctx.last.index === index - 1 ? ctx.last.msg : buildMessage(ctx, index - 1);
    // Same bytes, flags and internal date: two messages the migration must keep as two.
    return { folder: [...orig.folder], raw: Buffer.from(orig.raw), flags: [...orig.flags], internalDate: new Date(orig.internalDate.getTime()) };
  }
  let msg = buildFresh(ctx, index, traits, 0);
  const target = plan.size[index] as number;
  if (traits & T_EXACT && msg.raw.length !== target) {
    // Second pass from the same random stream: everything up to the attachments comes out
    // identical, so shrinking them by the measured excess (plus room for the text hole) lands
    // exactly on target.
    msg = buildFresh(ctx, index, traits, msg.raw.length - target + 2000);
    if (msg.raw.length !== target) throw new Error(`corpus: could not build message ${index} at exactly ${target} bytes (got ${msg.raw.length})`);
  }
  // Keep it only when the next message is its copy, so a big message is not retained.
  ctx.last = index + 1 < plan.total && (plan.traits[index + 1] as number) & T_DUP_COPY ? { index, msg } : undefined;
  return msg;
}

/** `attShrink`: bytes to take off the attachments' planned size (exact-size second pass). */
function buildFresh(ctx: Ctx, index: number, traits: number, attShrink: number): CorpusMessage {
  const plan = ctx.plan;
  const rng = new Rng(ctx.seed, STREAM_MSG, index);
  const fi = folderIndexOf(plan, index);
  const folder = ctx.folders[fi] as CorpusFolder;
  const role = ctx.roles[fi] as Role;
  const target = plan.size[index] as number;
  const outgoing = role === 'sent' || role === 'drafts';

  // Dates ascend with the position in the folder, like UIDs do on a real server.
  const [lo, hi] = ctx.ranges[fi] as [number, number];
  const slot = index - (plan.folderStart[fi] as number);
  const n = plan.folderCount[fi] as number;
  const dateSec = Math.floor(lo + ((slot + rng.float()) / n) * (hi - lo - 3600));
  const contact = ctx.contacts[Math.min(ctx.contacts.length - 1, Math.floor(Math.pow(rng.float(), 2) * ctx.contacts.length))] as Person;
  const owner: Person = { ...ctx.owner, tz: europeTz(dateSec) };
  const from = outgoing ? owner : contact;
  const to = outgoing ? contact : owner;
  const delay = outgoing ? rng.range(0, 3) : rng.range(2, 600);
  const internalSec = dateSec + delay;
  const flags = chooseFlags(rng, role, ctx.includeDeleted);
  const internalDate = new Date(internalSec * 1000);

  if (traits & T_MINIMAL) {
    const variants = [
      `From: ${from.addr}\r\nSubject: hi\r\n\r\nhi\r\n`,
      `Date: ${rfc5322Date(dateSec, from.tz, false)}\r\nFrom: ${from.addr}\r\nTo: ${to.addr}\r\nSubject: test\r\n\r\ntest\r\n`,
      `Subject: ping\r\n\r\n.\r\n`,
      `From: ${from.addr}\r\nTo: ${to.addr}\r\n\r\nCall me.\r\n`,
    ];
    let raw = Buffer.from(rng.pick(variants), 'ascii');
    if (traits & T_NO_FINAL_CRLF) raw = raw.subarray(0, raw.length - 2);
    return { folder: [...folder.path], raw, flags, internalDate };
  }

  const style = chooseStyle(rng, role, folder);
  const m: M = {
    ctx,
    rng,
    index,
    traits,
    style,
    from,
    to,
    dateSec,
    dateHeader: rfc5322Date(dateSec, from.tz, rng.chance(0.15)),
    blankBeforeBoundary: style === 'gmail' || style === 'thunderbird' || style === 'outlook',
    fold: style === 'outlook' || style === 'java' ? '\r\n\t' : '\r\n ',
  };
  const light = target < 3000 && !(traits & (T_LONG_HEADERS | T_EXACT | T_BIG));

  // ----- Subject and address phrases
  let subject: string;
  let subjHow: 'raw' | 'B' | 'Q-latin1' | 'auto';
  if (traits & T_ENC_Q) {
    subject = fillTemplate(rng.pick(SUBJECTS_LATIN1), m);
    subjHow = 'Q-latin1';
  } else if (traits & T_ENC_B) {
    subject = fillTemplate(rng.pick(SUBJECTS_UTF8), m);
    subjHow = 'B';
  } else if (traits & T_RAW8) {
    subject = fillTemplate(rng.pick(SUBJECTS_UTF8), m);
    subjHow = 'raw';
  } else {
    const list = role === 'junk' ? SUBJECTS_SPAM : style === 'newsletter' ? SUBJECTS_NEWS : /receipt|rechnung|überweisung/i.test(folder.path.join('/')) ? SUBJECTS_RECEIPT : rng.chance(0.2) ? SUBJECTS_UTF8 : SUBJECTS_ASCII;
    subject = fillTemplate(rng.pick(list), m);
    subjHow = 'auto';
  }
  const isReply = rng.chance(0.3) || (traits & T_LONG_HEADERS) !== 0;
  const prefix = isReply ? rng.pick(['Re: ', 'RE: ', 'AW: ', 'Re: Re: ']) : traits & T_FORWARD ? rng.pick(['Fwd: ', 'FW: ', 'WG: ']) : '';
  if (traits & T_LONG_HEADERS) subject += ' – ' + sentence(rng, W_EN, 20, 30).join(' ');
  const subjTokens = [...(prefix ? [prefix.trim()] : []), ...phraseTokens(subject, rng, subjHow)];
  const nameHow = traits & T_RAW8 ? 'raw' : traits & T_ENC_B ? 'B' : traits & T_ENC_Q ? 'Q-latin1' : 'auto';

  // ----- Body kind (decided before the headers, which announce attachments)
  const withReply = isReply && rng.chance(0.6);
  let kind: 'plain' | 'alt' | 'mixed';
  if (traits & (T_BIG | T_EXACT | T_ATTACH | T_FORWARD)) kind = 'mixed';
  else if (target < 3000) kind = rng.chance(0.75) ? 'plain' : 'alt';
  else if (target < 25_000) kind = (['plain', 'plain', 'alt', 'alt', 'alt', 'mixed', 'mixed'] as const)[rng.int(7)] ?? 'plain';
  else if (target < 120_000) kind = rng.chance(0.25) ? 'alt' : 'mixed';
  else kind = rng.chance(0.1) ? 'alt' : 'mixed';
  if (style === 'newsletter' && kind === 'plain' && target >= 3000) kind = 'alt';

  // ----- Header block
  const h: string[] = [];
  if (!outgoing) {
    if (rng.chance(0.7)) h.push(`Return-Path: <${from.addr}>`);
    if (rng.chance(0.4)) h.push(`Delivered-To: ${to.addr}`);
    h.push(...received(m, internalSec, light ? 1 : rng.range(2, 5)));
    if (!light) {
      const dom = from.addr.split('@')[1] as string;
      h.push(
        foldHeader(
          'Authentication-Results',
          `mx.${to.addr.split('@')[1]}; dkim=pass header.d=${dom} header.s=s${rng.range(1, 9)} header.b=${rng.alnum(8)}; spf=pass (${to.addr.split('@')[1]}: domain of ${from.addr} designates 192.0.2.${rng.range(1, 254)} as permitted sender) smtp.mailfrom=${from.addr}; dmarc=pass (p=NONE sp=NONE dis=NONE) header.from=${dom}`.split(' '),
          ' ',
          '\t',
        ),
      );
      if (rng.chance(0.6)) {
        const b = rng.bytes(256).toString('base64');
        const bh = rng.bytes(32).toString('base64');
        const sig = `v=1; a=rsa-sha256; c=relaxed/relaxed; d=${dom}; s=s2048; t=${dateSec}; bh=${bh}; h=From:To:Subject:Date:Message-ID:MIME-Version:Content-Type; b=`;
        const lines = [foldHeader('DKIM-Signature', sig.split(' '), ' ', '        ')];
        for (let i = 0; i < b.length; i += 70) lines.push('         ' + b.slice(i, i + 70));
        h.push(lines.join('\r\n'));
      }
      if (role === 'junk') h.push(`X-Spam-Flag: YES`, foldHeader('X-Spam-Status', `Yes, score=${rng.range(5, 30)}.${rng.range(0, 9)} required=5.0 tests=BAYES_99,HTML_MESSAGE,RDNS_NONE,URIBL_BLACK autolearn=no version=3.4.6`.split(' '), ' ', '\t'));
    }
  }
  h.push(foldHeader('From', [mailbox(from, rng, nameHow)]));
  const recipients = [mailbox(to, rng, nameHow)];
  if (traits & T_LONG_HEADERS) {
    const many = rng.range(25, 45);
    for (let i = 0; i < many; i++) {
      const p = rng.pick(ctx.contacts);
      recipients.push(mailbox({ ...p, addr: `${p.addr.split('@')[0]}+${i}@${p.addr.split('@')[1]}` }, rng, 'auto'));
    }
  }
  h.push(foldHeader('To', recipients, ', '));
  if (!light && rng.chance(0.2)) h.push(foldHeader('Cc', [mailbox(rng.pick(ctx.contacts), rng, 'auto'), mailbox(rng.pick(ctx.contacts), rng, 'auto')], ', '));
  h.push(foldHeader('Subject', subjTokens));
  h.push(`Date: ${m.dateHeader}`);
  if (!(traits & T_NO_MSGID)) h.push(`Message-ID: ${messageId(m)}`);
  if (isReply) {
    const refs: string[] = [];
    const nrefs = traits & T_LONG_HEADERS ? rng.range(12, 30) : rng.range(1, 5);
    for (let i = 0; i < nrefs; i++) refs.push(`<${rng.hex(16)}.${rng.hex(6)}@${rng.pick(ctx.contacts).addr.split('@')[1]}>`);
    h.push(`In-Reply-To: ${refs[refs.length - 1]}`);
    h.push(foldHeader('References', refs, ' ', m.fold.slice(2)));
  }
  if (style === 'outlook') {
    h.push(foldHeader('Thread-Topic', phraseTokens(subject, rng, subjHow === 'raw' ? 'raw' : 'auto')));
    h.push(`Thread-Index: ${rng.bytes(22).toString('base64')}`);
    h.push(`Content-Language: ${rng.pick(['de-DE', 'en-US', 'en-GB', 'fr-FR'])}`);
    if (!light) h.push(`X-MS-Has-Attach:${kind === 'mixed' ? ' yes' : ''}`, 'X-MS-TNEF-Correlator:');
    if (traits & T_LONG_HEADERS || (!light && !outgoing && rng.chance(0.3))) {
      // Exchange stamps kilobytes of folded base64 like this on every inbound message.
      const blob = rng.bytes(rng.range(900, 1600)).toString('base64');
      const lines = ['X-Microsoft-Antispam-Message-Info:'];
      for (let i = 0; i < blob.length; i += 76) lines.push('\t' + blob.slice(i, i + 76));
      h.push(lines.join('\r\n'));
    }
  } else if (style === 'thunderbird') {
    h.push('User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:102.0) Gecko/20100101' + m.fold + 'Thunderbird/102.8.0');
  } else if (style === 'apple') {
    h.push('X-Mailer: Apple Mail (2.3696.120.41.1.1)');
  } else if (style === 'newsletter') {
    const dom = from.addr.split('@')[1] as string;
    h.push(`List-Id: ${phraseTokens(from.name, rng, 'auto').join(' ')} <news.${dom}>`);
    h.push(foldHeader('List-Unsubscribe', [`<mailto:unsubscribe-${rng.hex(24)}@${dom}>,`, `<https://${dom}/unsubscribe?u=${rng.hex(32)}>`]));
    h.push('Precedence: bulk');
  } else if (style === 'java') {
    h.push(`X-Mailer: ${rng.pick(['JavaMail', 'PHPMailer 6.1.4 (https://github.com/PHPMailer/PHPMailer)', 'Microsoft CDO for Windows 2000'])}`);
  }
  if (traits & T_RAW8) h.push(`X-Sender-Name: ${from.name}`);
  h.push(style === 'apple' ? 'Mime-Version: 1.0 (Mac OS X Mail 16.0 \\(3696.120.41.1.1\\))' : 'MIME-Version: 1.0');

  // ----- Body structure

  const o = new Out();
  const writeTop = (entity: Entity): void => {
    o.s([...h, ...entity.headers].join('\r\n') + '\r\n\r\n');
    entity.write(o);
  };
  const partOverhead = 420; // generous estimate of one part's headers and delimiters

  if (kind === 'plain') {
    writeTop(textEntity(m, withReply));
  } else if (kind === 'alt') {
    const headerLen = h.reduce((s, x) => s + x.length + 2, 0);
    const body = Math.max(1200, target - headerLen);
    // Big alternatives are newsletters with an inline image (multipart/related).
    const imageBytes = body > 40_000 && rng.chance(0.5) ? Math.floor(body * 0.6) : 0;
    const htmlBytes = Math.floor((body - imageBytes) * (0.55 + rng.float() * 0.2));
    const cid = imageBytes ? `image001.png@01D${rng.hex(13, true)}` : undefined;
    const html = htmlEntity(m, htmlBytes, cid);
    const alt = multipart(m, 'alternative', [textEntity(m, withReply), cid ? multipart(m, 'related', [html, attachmentEntity(m, imageBytes, cid)], 2) : html], 0);
    writeTop(alt);
  } else {
    const headerLen = h.reduce((s, x) => s + x.length + 2, 0);
    const big = (traits & (T_BIG | T_EXACT)) !== 0;
    const useAlt = rng.chance(0.55);
    // Kept well below the target so exact-size messages have room to adjust.
    const textTarget = big ? Math.min(rng.range(1500, 6000), Math.floor(target / 10)) : rng.range(400, 3000);
    const htmlBytes = useAlt ? Math.min(rng.range(800, big ? 12_000 : 5000), big ? Math.floor(target / 10) : Infinity) : 0;
    const nAtt = big ? rng.range(1, 2) : (traits & T_FORWARD ? 0 : 1) + (rng.chance(0.25) ? 1 : 0) + (rng.chance(0.1) ? 1 : 0);
    const forwardEst = traits & T_FORWARD ? 5200 : 0;
    const overhead = 600 + partOverhead * (nAtt + (useAlt ? 3 : 1) + (traits & T_FORWARD ? 1 : 0));
    let attBudget = target - headerLen - textTarget - htmlBytes - overhead - forwardEst;
    if (attBudget < 1500 * Math.max(1, nAtt)) attBudget = rng.range(1500, 6000) * Math.max(1, nAtt);
    attBudget = Math.max(nAtt * 100, attBudget - attShrink);
    const children: Entity[] = [];
    const text = textEntity(m, withReply);
    children.push(useAlt ? multipart(m, 'alternative', [text, htmlEntity(m, htmlBytes)], 1) : text);
    if (traits & T_FORWARD) children.push(forwardEntity(m));
    if (nAtt > 0) {
      const weights = Array.from({ length: nAtt }, () => 0.2 + rng.float());
      const wsum = weights.reduce((s, x) => s + x, 0);
      for (const w of weights) children.push(attachmentEntity(m, Math.floor((attBudget * w) / wsum)));
    }
    writeTop(multipart(m, 'mixed', children, 0));
  }

  let raw = o.finish(target, 2);
  if (traits & T_NO_FINAL_CRLF) raw = raw.subarray(0, raw.length - 2);
  return { folder: [...folder.path], raw, flags, internalDate };
}
