/**
 * Orphans found by loose digest, for sources whose message bytes change under them.
 *
 * After a source folder's UIDVALIDITY changes, its copied messages are orphans, adopted by
 * a new message of the same content digest instead of copied again (scan.ts, copy-lanes.ts).
 * GNU Mailutils' imap4d serves its mbox bookkeeping fields (`X-IMAPbase`, `X-UID`,
 * `Status`) as part of every message and rewrites them when flags change, and it gives a
 * folder a new UIDVALIDITY when mail was delivered into the mbox file and a client then
 * touched it: every message then has other bytes than when it was copied, no exact digest
 * matches, and the whole folder was copied a second time.
 *
 * So for a source that serves such fields (asked once per folder with orphans, on one
 * message's header), the orphans' target copies are read and keyed by loose digest
 * (changed-copies.ts, which leaves those fields out); a message no exact digest adopts is
 * matched by its loose digest. Other sources pay one small FETCH, and only after a
 * UIDVALIDITY change.
 */
import type { ImapFlow } from 'imapflow';
import { isImapRefusal } from '../imap/errors.js';
import { withWatchdog } from '../imap/imapflow-session.js';
import type { MessageRow } from '../store/schema.js';
import { looseDigest } from './changed-copies.js';
import type { Digest } from './content-digest.js';
import { readTargetBodies } from './target-messages.js';

const MBOX_FIELDS = ['x-uid', 'x-imapbase', 'x-imap', 'status', 'x-status', 'x-keywords'];

/** Whether message `uid` of `path` on the source comes with mbox bookkeeping fields. */
export async function servesMboxFields(src: ImapFlow, path: string, uid: number, stallMs: number): Promise<boolean> {
  await withWatchdog(src, stallMs, `opening ${path}`, () => src.mailboxOpen(path, { readOnly: true }));
  // A message the server will not read (a refusal) answers nothing: taken as no.
  const m = await withWatchdog(src, stallMs, `reading ${path}`, () => src.fetchOne(String(uid), { uid: true, headers: MBOX_FIELDS }, { uid: true })).catch((err: unknown) => {
    if (isImapRefusal(err)) return false as const;
    throw err;
  });
  return !!m && !!m.headers && /^[a-z-]+[ \t]*:/im.test(m.headers.toString('latin1'));
}

/** The orphans whose copies are on the target (UID known), by the loose digest of their copy. */
export async function looseOrphanCopies(tgt: ImapFlow, path: string, orphans: ReadonlyMap<Digest, MessageRow[]>, stallMs: number): Promise<Map<string, MessageRow[]>> {
  const byUid = new Map<number, MessageRow>();
  for (const list of orphans.values()) for (const o of list) if (o.target_uid !== null) byUid.set(o.target_uid, o);
  const out = new Map<string, MessageRow[]>();
  if (byUid.size === 0) return out;
  await withWatchdog(tgt, stallMs, `opening ${path} on the target`, () => tgt.mailboxOpen(path, { readOnly: true }));
  await readTargetBodies(tgt, [...byUid.values()].map((o) => ({ uid: o.target_uid!, size: o.size })), stallMs, (uid, source) => {
    const row = byUid.get(uid);
    if (!row) return;
    const key = looseDigest(source);
    const list = out.get(key);
    if (list) list.push(row);
    else out.set(key, [row]);
  });
  return out;
}
