/**
 * Recovery's second look, for targets that change a message as they store it. Courier
 * turns bare LF into CRLF, drops bare CR and adds a final CRLF; Cyrus with its default
 * `munge8bit: yes` turns 8-bit bytes in headers into `X`. Such a copy never has the
 * content digest its journal row was written with, so after a crash recovery.ts would not
 * find it and the message would be copied a second time.
 *
 * So a pending row recovery could not match is compared once more, by a *loose* digest:
 * the message with every CR removed, every byte >= 0x80 of the header read as `X` (Cyrus
 * munges headers only: an edited body is another message), `>` before a line's
 * `From ` dropped (UW-IMAP's mbox quoting), the header fields of mbox bookkeeping left out
 * (MBOX_FIELDS) and header lines' trailing blanks too, and trailing line ends ignored, computed for the source message (read again from the source, only for
 * these rows) and for the target messages above the rows' UID floor that no journal row
 * claims and whose size is close. A loose digest is still a digest of the whole text, so
 * mail others delivered meanwhile is not mistaken for ours; what it ignores is only what
 * these servers change.
 */
import { createHash } from 'node:crypto';
import type { ImapFlow } from 'imapflow';
import { listTargetMessages, readTargetBodies } from './target-messages.js';

const CR = 0x0d;
const LF = 0x0a;
const X = 0x58;
const GT = 0x3e;
const FROM_ = Buffer.from('From ');

/**
 * Header fields mbox stores keep their bookkeeping in (UW-IMAP's and GNU Mailutils'
 * `Status`, `X-Status`, `X-UID`, `X-IMAP`/`X-IMAPbase`, `X-Keywords`; `Content-Length`
 * of Solaris-style mboxes). GNU Mailutils' imap4d serves them as part of the message, and
 * changes them as flags change.
 */
const MBOX_FIELDS = /^(status|x-status|x-uid|x-imap|x-imapbase|x-keywords|content-length)[ \t]*:/i;
const ANY_MBOX_FIELD = new RegExp(MBOX_FIELDS.source, 'im');

/**
 * The message's header as such a store serves it back: without the fields it adds
 * (MBOX_FIELDS, with their folded lines), and without the spaces it appends to an empty
 * field (imap4d writes `X-MS-TNEF-Correlator:` back as `X-MS-TNEF-Correlator: `).
 */
function normalizedHead(raw: Buffer): Buffer {
  let end = raw.indexOf('\n\n');
  const crlf = raw.indexOf('\r\n\r\n');
  if (crlf >= 0 && (end < 0 || crlf < end)) end = crlf;
  const head = (end < 0 ? raw : raw.subarray(0, end)).toString('latin1');
  if (!ANY_MBOX_FIELD.test(head) && !TRAILING_BLANK.test(head)) return raw;
  const kept: string[] = [];
  let dropping = false;
  for (const line of head.split('\n')) {
    // A folded line (RFC 5322 §2.2.3) belongs to the field before it.
    if (!/^[ \t]/.test(line)) dropping = MBOX_FIELDS.test(line);
    if (!dropping) kept.push(line.replace(/[ \t]+(\r?)$/, '$1'));
  }
  return Buffer.concat([Buffer.from(kept.join('\n'), 'latin1'), end < 0 ? Buffer.alloc(0) : raw.subarray(end)]);
}

const TRAILING_BLANK = /[ \t]\r?$/m;

export function looseDigest(message: Buffer): string {
  const raw = normalizedHead(message);
  const out = Buffer.allocUnsafe(raw.length);
  let n = 0;
  let inHead = true;
  for (let i = 0; i < raw.length; i++) {
    const b = raw[i]!;
    if (b === CR) continue;
    // The header ends at the first empty line (RFC 5322 §2.1), CRs already dropped.
    if (b === LF && inHead && (n === 0 || out[n - 1] === LF)) inHead = false;
    // An mbox store (UW-IMAP) quotes a line starting "From " as ">From " (and ">From " as
    // ">>From "): the '>'s at a line start before "From " are ignored.
    if (b === GT && (n === 0 || out[n - 1] === LF)) {
      let j = i;
      while (raw[j] === GT) j++;
      if (raw.subarray(j, j + FROM_.length).equals(FROM_)) {
        i = j - 1;
        continue;
      }
    }
    out[n++] = b >= 0x80 && inHead ? X : b;
  }
  while (n > 0 && out[n - 1] === LF) n--;
  return createHash('sha256').update(out.subarray(0, n)).digest('hex');
}

export interface ChangedCopyWanted {
  /** The caller's key for the row. */
  index: number;
  loose: string;
  /** Journaled size of the source message. */
  size: number;
  /** The INTERNALDATE the APPEND gave it (ms; 0 when unknown). */
  internalDate: number;
}

/** Whether a target message of `actual` bytes may be a changed copy of one of `size`:
 * line-end changes add or remove one byte per line (a message of short CR-only lines
 * loses a third of its size, one of empty LF lines doubles), munging changes none. */
function closeInSize(size: number, actual: number): boolean {
  return actual >= size / 2 - 64 && actual <= size * 2 + 64;
}

/**
 * Finds the wanted messages among the target folder's (selected) messages with UID >=
 * `fromUid` not in `taken`, by loose digest (same internal date preferred); returns target
 * UIDs by index.
 */
export async function findChangedCopies(target: ImapFlow, fromUid: number, wanted: readonly ChangedCopyWanted[], taken: ReadonlySet<number>, stallMs: number): Promise<Map<number, number>> {
  const found = new Map<number, number>();
  if (wanted.length === 0) return found;
  const listed = await listTargetMessages(target, fromUid, stallMs);
  const candidates = listed.filter((m) => !taken.has(m.uid) && wanted.some((w) => closeInSize(w.size, m.size)));
  // The listing's dates, so the bodies are fetched with nothing else.
  const dateOf = new Map(candidates.map((m) => [m.uid, m.internalDate >= 0 ? Math.floor(m.internalDate / 1000) : -1]));
  const byLoose = new Map<string, { uid: number; date: number }[]>();
  await readTargetBodies(target, candidates, stallMs, (uid, source) => {
    const key = looseDigest(source);
    const list = byLoose.get(key) ?? [];
    list.push({ uid, date: dateOf.get(uid) ?? -1 });
    byLoose.set(key, list);
  });
  const take = (fits: (w: ChangedCopyWanted, date: number) => boolean) => {
    for (const w of wanted) {
      if (found.has(w.index)) continue;
      const list = byLoose.get(w.loose);
      const at = list ? list.findIndex((c) => fits(w, c.date)) : -1;
      if (at >= 0) found.set(w.index, list!.splice(at, 1)[0]!.uid);
    }
  };
  take((w, date) => w.internalDate > 0 && date === Math.floor(w.internalDate / 1000));
  take(() => true);
  return found;
}
