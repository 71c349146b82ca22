/**
 * Mirrors source flag changes onto messages copied by earlier runs. Changes are applied as
 * +FLAGS / -FLAGS (RFC 3501 §6.4.6) of the difference, not as a FLAGS replacement, so a
 * flag a user set on the target after the switch is not undone by the next sync.
 */
import type { ImapFlow } from 'imapflow';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import { withWatchdog } from '../imap/imapflow-session.js';
import { ImapConnectionLostError } from '../imap/errors.js';
import { contentHasher } from '../store/content-key.js';
import { setFlags, setTargetUids, targetUidsOfTargetFolder } from '../store/journal.js';
import type { Database } from '../store/schema.js';
import type { Digest } from './content-digest.js';
import { diffFlags, flagsKey, isUncertain, settleUncertain, uncertainFlags } from './flags.js';
import type { FlagChange, FolderWork } from './folder-work.js';
import { type Expected, findOnTarget } from './recovery.js';
import { reclaimIfGrown } from './reclaim.js';
import { uidSet } from './uid-set.js';

/**
 * A target without UIDPLUS (RFC 4315) never says which UID a copy got, so the journal has
 * none. Find those messages by content (only target messages of the same size are read),
 * once: the UIDs found are journaled. `target` has `path` selected.
 */
async function resolveTargetUids(db: Kysely<Database>, target: ImapFlow, path: string, group: readonly FolderWork[], stallMs: number, log: Logger): Promise<void> {
  const owners: FlagChange[] = [];
  const expected: Expected[] = [];
  for (const w of group) {
    const unmapped = w.flagChanges.filter((c) => c.targetUid === null);
    if (!unmapped.length) continue;
    const bySourceUid = new Map<number, { size: number; digest: Digest | null; internal_date: number; flags: string }>();
    for (let i = 0; i < unmapped.length; i += 500) {
      const uids = unmapped.slice(i, i + 500).map((c) => c.sourceUid);
      for (const r of await db.selectFrom('message').select(['source_uid', 'size', 'digest', 'internal_date', 'flags']).where('folder_id', '=', w.row.id).where('source_uid', 'in', uids).execute()) bySourceUid.set(r.source_uid, r);
    }
    for (const c of unmapped) {
      const r = bySourceUid.get(c.sourceUid);
      if (!r?.digest) continue;
      owners.push(c);
      expected.push({ folderId: w.row.id, sourceUid: c.sourceUid, size: r.size, digest: r.digest, internalDate: r.internal_date, flags: r.flags });
    }
  }
  if (!expected.length) return;
  const exclude = await targetUidsOfTargetFolder(db, group[0]!.row.pair_id, path);
  const found = await findOnTarget(await contentHasher(db), target, 1, expected, exclude, stallMs);
  const byFolder = new Map<number, { sourceUid: number; targetUid: number }[]>();
  expected.forEach((e, i) => {
    const uid = found.get(i);
    if (uid === undefined) return;
    owners[i]!.targetUid = uid;
    const list = byFolder.get(e.folderId);
    if (list) list.push({ sourceUid: e.sourceUid, targetUid: uid });
    else byFolder.set(e.folderId, [{ sourceUid: e.sourceUid, targetUid: uid }]);
  });
  await db.transaction().execute(async (trx) => {
    for (const [folderId, list] of byFolder) await setTargetUids(trx, folderId, list);
  });
  if (found.size < expected.length) log.warn({ folder: path, missing: expected.length - found.size }, 'messages to update flags on are no longer on the target');
}

/**
 * Copies the journal holds as uncertain (flags.ts uncertainFlags): their flags on the
 * target are read now, and the change is made from those the interrupted change explains.
 * A copy no longer on the target gets nothing to do.
 */
async function readUncertainFlags(target: ImapFlow, group: readonly FolderWork[], stallMs: number): Promise<void> {
  const uncertain = group.flatMap((w) => w.flagChanges.filter((c) => isUncertain(c.before) && c.targetUid !== null));
  if (uncertain.length === 0) return;
  const actual = new Map<number, string>();
  for (let i = 0; i < uncertain.length; i += 5000) {
    const uids = uncertain.slice(i, i + 5000).map((c) => c.targetUid!);
    for (const m of await withWatchdog(target, stallMs, 'reading flags on the target', () => target.fetchAll(uidSet(uids), { uid: true, flags: true }, { uid: true }))) actual.set(m.uid, flagsKey(m.flags));
  }
  for (const c of uncertain) {
    const onTarget = actual.get(c.targetUid!);
    c.before = onTarget === undefined ? c.after : settleUncertain(c.before, onTarget);
  }
}

export async function applyFlagChanges(db: Kysely<Database>, target: ImapFlow, works: readonly FolderWork[], stallMs: number, log: Logger): Promise<{ applied: number; deferred: Set<number>; withoutSomeKeywords: number }> {
  let applied = 0;
  let withoutSomeKeywords = 0;
  // Source folders whose changes could not be applied now: the run must not record their
  // mod-sequence, or the next run's CHANGEDSINCE would never list those changes again.
  const deferred = new Set<number>();
  const byTarget = new Map<string, FolderWork[]>();
  for (const w of works) {
    if (!w.flagChanges.length) continue;
    const group = byTarget.get(w.target.path);
    if (group) group.push(w);
    else byTarget.set(w.target.path, [w]);
  }
  for (const [path, group] of byTarget) {
    const mailbox = await withWatchdog(target, stallMs, `opening ${path} on the target`, () => target.mailboxOpen(path));
    if (Number(mailbox.uidValidity) !== group[0]!.target.uidValidity) {
      log.warn({ folder: path }, 'target UIDVALIDITY changed; flag changes wait for the next run');
      for (const w of group) deferred.add(w.row.id);
      continue;
    }
    if (group.some((w) => w.flagChanges.some((c) => c.targetUid === null))) await resolveTargetUids(db, target, path, group, stallMs, log);
    await readUncertainFlags(target, group, stallMs);
    // Until every STORE is answered and recorded, the journal cannot say what the target
    // holds: a run stopped in between, followed by a source that changes the flags back,
    // would leave the target's for good. So the copies are marked uncertain first (and the
    // folder's mod-sequence forgotten, so the next run compares them all).
    await db.transaction().execute(async (trx) => {
      for (const w of group) {
        const uncertain = w.flagChanges.filter((c) => c.targetUid !== null).map((c) => ({ sourceUid: c.sourceUid, flags: uncertainFlags(c.before, c.after) }));
        if (uncertain.length === 0) continue;
        await setFlags(trx, w.row.id, uncertain);
        await trx.updateTable('folder').set({ source_highestmodseq: null }).where('id', '=', w.row.id).execute();
      }
    });
    // Group identical changes so one STORE covers many messages.
    const batches = new Map<string, { add: string[]; remove: string[]; uids: number[] }>();
    for (const w of group) {
      for (const c of w.flagChanges) {
        const diff = diffFlags(c.before, c.after);
        if (!diff || c.targetUid === null) continue;
        const key = `${diff.add.join(' ')}|${diff.remove.join(' ')}`;
        const b = batches.get(key) ?? { ...diff, uids: [] };
        b.uids.push(c.targetUid);
        batches.set(key, b);
      }
    }
    for (const b of batches.values()) {
      const set = uidSet(b.uids);
      // imapflow answers false when the server refused the STORE (NO/BAD): Dovecot for a
      // keyword over its length limit, Cyrus past its keywords per folder, Courier for
      // keywords it does not take (or any, with IMAP_KEYWORDS=0), for clearing as well as
      // setting. The flags are then stored apart (the system flags together, each keyword
      // alone), so one refused keyword costs only itself, and the refusal is logged, not
      // counted. The journal still takes the source's flags: sending a refused keyword on
      // every run would only be refused again.
      const store = async (op: 'add' | 'remove', flags: string[]): Promise<string[]> => {
        const what = `${op === 'add' ? 'setting' : 'clearing'} flags in ${path}`;
        const one = async (f: string[]): Promise<boolean> => {
          const ok = await withWatchdog(target, stallMs, what, () => (op === 'add' ? target.messageFlagsAdd(set, f, { uid: true, silent: true }) : target.messageFlagsRemove(set, f, { uid: true, silent: true })));
          // imapflow answers false for a lost connection too: that is no refusal, and the
          // changes stay uncertain in the journal for the next run to read (above).
          if (!ok && !target.usable) throw new ImapConnectionLostError(`${what}: the target connection was lost`);
          return ok;
        };
        if (flags.length === 0 || (await one(flags))) return [];
        const system = flags.filter((f) => f.startsWith('\\'));
        const parts = [...(system.length ? [system] : []), ...flags.filter((f) => !f.startsWith('\\')).map((k) => [k])];
        if (parts.length === 1) return flags;
        const refused: string[] = [];
        for (const part of parts) if (!(await one(part))) refused.push(...part);
        return refused;
      };
      let ok = true;
      for (const op of ['add', 'remove'] as const) {
        const refused = await store(op, op === 'add' ? b.add : b.remove);
        if (refused.length === 0) continue;
        ok = false;
        if (op === 'add' && refused.some((f) => !f.startsWith('\\'))) withoutSomeKeywords += b.uids.length;
        log.warn({ folder: path, flags: refused, messages: b.uids.length }, `the target refused to ${op === 'add' ? 'set' : 'clear'} these flags`);
      }
      if (ok) applied += b.uids.length;
    }
    await db.transaction().execute(async (trx) => {
      // Not found on the target (targetUid still null): its journaled flags stay as they were.
      for (const w of group) await setFlags(trx, w.row.id, w.flagChanges.filter((c) => c.targetUid !== null).map((c) => ({ sourceUid: c.sourceUid, flags: c.after })));
    });
    reclaimIfGrown();
  }
  return { applied, deferred, withoutSomeKeywords };
}
