/**
 * Folders the user renamed on the *target*. After the MX switch users work on the new
 * server and reorganise it; a folder they renamed there is gone under the name the journal
 * copied to, and a sync that made that name again would copy the whole folder a second
 * time, beside the renamed one, for the user to sort out.
 *
 * A rename keeps a folder's UIDVALIDITY and UIDs (RFC 3501 §6.3.5 only asks that the old
 * name's UIDs not be reused; Dovecot and Cyrus keep them), so a target folder the journal
 * copied to that is no longer listed, and one listed folder with its UIDVALIDITY, are one
 * folder once sampled copies are in the new one at the journal's target UIDs with the
 * journal's sizes or dates, or, where the journal has no target UIDs (no UIDPLUS), once the
 * new one's first messages are the journal's copies by content (UIDVALIDITY values are not
 * unique across folders everywhere: Cyrus takes the time of creation). The journal then follows it: later copies and flag changes go to
 * the folder under its new name (mapFolders keeps established mappings).
 *
 * A folder the user deleted on the target is made again and copied again, as before: the
 * journal cannot tell a deletion from a mistake, and losing mail is worse than a second copy.
 */
import type { ImapFlow, ListResponse } from 'imapflow';
import type { Kysely } from 'kysely';
import { withWatchdog } from '../imap/imapflow-session.js';
import { canonicalAttributes } from '../imap/mailbox-attributes.js';
import { listFolders } from '../store/journal.js';
import type { Database } from '../store/schema.js';
import type { SyncOptions } from './options.js';
import { uidSet } from './uid-set.js';
import { mayBeSame } from './may-be-copies.js';
import { amongCopies, oldestDigests } from './renamed-folders.js';
import { internalDateMs } from './scan.js';

interface Context {
  db: Kysely<Database>;
  pairId: number;
  stallMs: number;
  log: SyncOptions['logger'];
}

/** Copies sampled per folder: the first and the last ones. */
const SAMPLE = 20;

const normalized = (path: string) => (path.toUpperCase() === 'INBOX' ? 'INBOX' : path);

/**
 * Moves the journal's target folders the user renamed on the target to their new names.
 * Returns the renames followed (old name, new name); the caller maps the folders again.
 */
export async function followTargetRenames(ctx: Context, tgt: ImapFlow, tgtList: readonly ListResponse[]): Promise<[string, string][]> {
  const rows = await listFolders(ctx.db, ctx.pairId);
  const holding = tgtList.filter((f) => {
    const a = canonicalAttributes(f.flags);
    return !a.has('\\Noselect') && !a.has('\\NonExistent');
  });
  const listed = new Set(holding.map((f) => normalized(f.path)));
  const journaled = new Set(rows.map((r) => normalized(r.target_path)));
  const gone = new Map<string, number>();
  for (const r of rows) if (r.target_uidvalidity !== null && !listed.has(normalized(r.target_path))) gone.set(r.target_path, r.target_uidvalidity);
  const followed: [string, string][] = [];
  for (const [oldPath, uidValidity] of gone) {
    // A folder that is the journal's own elsewhere (another source folder's copy) is not a candidate.
    const candidates = holding.filter((f) => Number(f.status?.uidValidity ?? -1) === uidValidity && !journaled.has(normalized(f.path)));
    if (candidates.length !== 1) continue;
    const newPath = candidates[0]!.path;
    if (!(await holdsCopies(ctx, tgt, oldPath, newPath))) continue;
    await ctx.db.updateTable('folder').set({ target_path: newPath }).where('pair_id', '=', ctx.pairId).where('target_path', '=', oldPath).execute();
    journaled.add(normalized(newPath));
    followed.push([oldPath, newPath]);
    ctx.log.info({ from: oldPath, to: newPath }, 'a target folder was renamed on the target: its copies are followed there, not made again');
  }
  return followed;
}

/** Whether sampled copies the journal made into `oldPath` are in `newPath` at their target UIDs, with their sizes or internal dates (may-be-copies.ts). */
async function holdsCopies(ctx: Context, tgt: ImapFlow, oldPath: string, newPath: string): Promise<boolean> {
  const folderIds = (await listFolders(ctx.db, ctx.pairId)).filter((r) => r.target_path === oldPath).map((r) => r.id);
  if (folderIds.length === 0) return false;
  const base = ctx.db.selectFrom('message').select(['target_uid', 'size', 'internal_date']).where('folder_id', 'in', folderIds).where('state', 'in', ['copied', 'orphan']).where('target_uid', 'is not', null);
  const sample = [...(await base.orderBy('target_uid').limit(SAMPLE / 2).execute()), ...(await base.orderBy('target_uid', 'desc').limit(SAMPLE / 2).execute())];
  const expected = new Map(sample.map((r) => [r.target_uid!, { size: r.size, internalDate: r.internal_date }]));
  if (expected.size === 0) return holdsCopiesByContent(ctx, tgt, folderIds, newPath);
  const mb = await withWatchdog(tgt, ctx.stallMs, `opening ${newPath} on the target`, () => tgt.mailboxOpen(newPath, { readOnly: true }));
  if (mb.exists === 0) return false;
  const found = await withWatchdog(tgt, ctx.stallMs, `reading ${newPath} on the target`, () => tgt.fetchAll(uidSet([...expected.keys()]), { uid: true, size: true, internalDate: true }, { uid: true }));
  // The user may have deleted some since; those that are there must be the copies, and
  // most must be there.
  return found.length * 2 >= expected.size && found.every((m) => expected.has(m.uid) && mayBeSame(expected.get(m.uid)!, { size: m.size ?? -1, internalDate: internalDateMs(m.internalDate) ?? 0 }));
}

/**
 * holdsCopies for copies without target UIDs (a target without UIDPLUS, RFC 4315, gives
 * none): the first few messages of `newPath` must all be copies the journal made into the
 * old folder, by content digest (as renamed-folders.ts confirms a source rename). Mail the
 * user filed there later comes after them.
 */
async function holdsCopiesByContent(ctx: Context, tgt: ImapFlow, folderIds: readonly number[], newPath: string): Promise<boolean> {
  const digests = await oldestDigests(ctx, tgt, newPath);
  return digests !== null && (await amongCopies(ctx, folderIds, digests));
}
