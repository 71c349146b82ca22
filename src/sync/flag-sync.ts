/**
 * Mirrors source flag changes onto messages copied by earlier runs. Changes are applied as
 * +FLAGS / -FLAGS (RFC 3501 §6.4.6) of the difference, not as a FLAGS replacement, so a
 * flag a user set on the target after the switch is not undone by the next sync.
 */
import type { ImapFlow } from 'imapflow';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import { withWatchdog } from '../imap/imapflow-session.js';
import { setFlags } from '../store/journal.js';
import type { Database } from '../store/schema.js';
import { diffFlags } from './flags.js';
import type { FolderWork } from './folder-work.js';
import { uidSet } from './uid-set.js';

export async function applyFlagChanges(db: Kysely<Database>, target: ImapFlow, works: readonly FolderWork[], stallMs: number, log: Logger): Promise<number> {
  let applied = 0;
  const byTarget = new Map<string, FolderWork[]>();
  for (const w of works) if (w.flagChanges.length) byTarget.set(w.target.path, [...(byTarget.get(w.target.path) ?? []), w]);
  for (const [path, group] of byTarget) {
    const mailbox = await withWatchdog(target, stallMs, `opening ${path} on the target`, () => target.mailboxOpen(path));
    if (Number(mailbox.uidValidity) !== group[0]!.target.uidValidity) {
      log.warn({ folder: path }, 'target UIDVALIDITY changed; flag changes wait for the next run');
      continue;
    }
    // Group identical changes so one STORE covers many messages.
    const batches = new Map<string, { add: string[]; remove: string[]; uids: number[] }>();
    for (const w of group) {
      for (const c of w.flagChanges) {
        const diff = diffFlags(c.before, c.after);
        if (!diff) continue;
        const key = `${diff.add.join(' ')}|${diff.remove.join(' ')}`;
        const b = batches.get(key) ?? { ...diff, uids: [] };
        b.uids.push(c.targetUid);
        batches.set(key, b);
      }
    }
    for (const b of batches.values()) {
      const set = uidSet(b.uids);
      if (b.add.length) await withWatchdog(target, stallMs, `setting flags in ${path}`, () => target.messageFlagsAdd(set, b.add, { uid: true, silent: true }));
      if (b.remove.length) await withWatchdog(target, stallMs, `clearing flags in ${path}`, () => target.messageFlagsRemove(set, b.remove, { uid: true, silent: true }));
      applied += b.uids.length;
    }
    await db.transaction().execute(async (trx) => {
      for (const w of group) await setFlags(trx, w.row.id, w.flagChanges.map((c) => ({ sourceUid: c.sourceUid, flags: c.after })));
    });
  }
  return applied;
}
