/**
 * Copies that are on the target already although this journal did not put them there.
 *
 * The journal knows what *it* copied. A target folder can hold the same mail for other
 * reasons: a run with another state database (a laptop's test run before the batch, a
 * lost or reinstalled database), the same server under another host name or address
 * (the journal's pair key changes), an earlier pass of another tool, mail delivered to
 * both servers. imapsync looks every message up by its headers on each run; the journal
 * makes that unnecessary later on, but on the *first* sync of a source folder into a
 * target folder that already holds messages, the journal cannot know. Copying everything
 * again doubles the mailbox.
 *
 * So before a first-synced folder's messages are copied, the target folder's messages no
 * journal row claims, and whose size equals that of a message about to be copied, are
 * read and digested, and offered to the copy lanes as orphans (copy-lanes.ts
 * journalAndSend): a source message with exactly the same bytes is linked to that copy
 * (journaled `copied` with its target UID, its flags mirrored) instead of appended. The
 * match is by content digest, so only identical messages are linked, and as a multiset,
 * so two identical source messages need two identical target messages. A copy whose
 * bytes the target server changed as it stored it (Courier's line ends) is not
 * recognised and is copied again, as before.
 *
 * The same after the first sync, for what arrived in the target folder from elsewhere
 * since the last pass (UIDs at or above the UIDNEXT it had then, `folder.target_uidnext`,
 * that the journal does not claim): another journal of the same mailbox (a hand-run sync
 * beside a batch, the server under another host name) copies new mail too, and each would
 * otherwise copy it a second time on every run. Only that range is listed: cheap.
 *
 * Only target messages below the UIDNEXT the target folder had when this attempt began
 * are offered: the lanes may already be appending to the folder (from another source
 * folder mapped to it), and a copy they just made, its APPENDUID not yet journaled, must
 * never be taken for an older one. On a target without UIDPLUS (RFC 4315) the journal
 * has no target UIDs for its copies, so they are told from others' by count: of the
 * target messages with one digest, as many as the journal has copies of it are ours.
 */
import type { ImapFlow } from 'imapflow';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import { withWatchdog } from '../imap/imapflow-session.js';
import { copiesWithoutUid, targetUidsOfTargetFolder } from '../store/journal.js';
import type { Database, MessageRow } from '../store/schema.js';
import { algorithmOf, type ContentHasher, type Digest } from './content-digest.js';
import type { MessageMeta } from './folder-work.js';
import type { TargetFolder } from './target-folder.js';
import { listTargetMessages, readTargetBodies, type TargetListed } from './target-messages.js';
import { MayBeCopies } from './may-be-copies.js';

/** An orphan made from a target message: no journal row behind it (source_uid 0). */
export const TARGET_ORPHAN_UID = 0;

/** The messages one target folder held before this attempt, offered to every first-synced source folder copied into it. */
export class ExistingCopies {
  /** Shared as FolderWork.existing by those source folders, so one copy is linked once. */
  readonly orphans = new Map<Digest, MessageRow[]>();
  private unclaimed: TargetListed[] = [];
  /** Target UIDs from here up are listed in `unclaimed` (Infinity: nothing listed yet). */
  private listedFrom = Infinity;
  private claimed: Set<number> | undefined;
  private readonly read = new Set<number>();
  /** The journal's copies here without a target UID, by digest, still to be told apart. */
  private ours = new Map<Digest, number>();

  constructor(readonly folder: TargetFolder) {}

  /**
   * Reads the target folder's unclaimed messages of the sizes or dates `toCopy` has (those not
   * read before in this attempt) and offers them as orphans. `fromUid`: 1 for a source
   * folder's first sync into this folder, else the UIDNEXT the folder had at the start of
   * its last pass; each range of UIDs is listed once per attempt.
   */
  async offer(args: { db: Kysely<Database>; pairId: number; target: ImapFlow; hasher: ContentHasher; toCopy: readonly MessageMeta[]; stallMs: number; log: Logger; fromUid?: number }): Promise<void> {
    const { target, stallMs } = args;
    const path = this.folder.path;
    const from = Math.max(1, args.fromUid ?? 1);
    if (from < this.listedFrom && from < this.folder.uidNextAtStart) {
      if (this.claimed === undefined) {
        this.ours = await copiesWithoutUid(args.db, args.pairId, path);
        this.claimed = await targetUidsOfTargetFolder(args.db, args.pairId, path);
      }
      const box = await withWatchdog(target, stallMs, `opening ${path} on the target`, () => target.mailboxOpen(path, { readOnly: true }));
      if (Number(box.uidValidity) !== this.folder.uidValidity || box.exists === 0) return;
      const below = Math.min(this.listedFrom, this.folder.uidNextAtStart);
      const claimed = this.claimed;
      this.unclaimed.push(...(await listTargetMessages(target, from, stallMs)).filter((m) => m.uid < below && !claimed.has(m.uid)));
      this.listedFrom = from;
    }
    const may = new MayBeCopies(args.toCopy);
    const wanted = this.unclaimed.filter((m) => !this.read.has(m.uid) && may.has(m.size, m.internalDate));
    if (wanted.length === 0) return;
    args.log.info({ folder: path, messages: wanted.length }, 'the target folder already holds messages this journal did not copy: reading those of matching size or date, so that none is copied twice');
    await withWatchdog(target, stallMs, `opening ${path} on the target`, () => target.mailboxOpen(path, { readOnly: true }));
    const byUid = new Map(wanted.map((m) => [m.uid, m]));
    const algorithms = [...new Set([args.hasher.preferred, ...[...this.ours.keys()].map(algorithmOf)])];
    await readTargetBodies(target, wanted, stallMs, (uid, source) => {
      const m = byUid.get(uid)!;
      const digests = args.hasher.digestsOf(source, algorithms);
      // One of the journal's own copies made without an APPENDUID: not offered.
      const mine = digests.find((d) => (this.ours.get(d) ?? 0) > 0);
      if (mine !== undefined) {
        this.ours.set(mine, this.ours.get(mine)! - 1);
        return;
      }
      const digest = digests[0]!;
      const list = this.orphans.get(digest) ?? [];
      list.push({
        folder_id: 0,
        source_uid: TARGET_ORPHAN_UID,
        state: 'orphan',
        size: m.size,
        // -1 is unknown (target-messages.ts); a real date before 1970 is kept.
        internal_date: m.internalDate === -1 ? 0 : m.internalDate,
        digest,
        flags: m.flags,
        target_uid: uid,
        uid_floor: null,
        skip_kind: null,
        reason: null,
        subject: null,
      });
      this.orphans.set(digest, list);
    });
    for (const m of wanted) this.read.add(m.uid);
  }
}
