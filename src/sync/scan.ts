/**
 * Scans one source folder: what is new since the watermark, what is to be retried, which
 * flags changed (CHANGEDSINCE, RFC 7162 §3.1.4, when the server has CONDSTORE; a full
 * UID FLAGS listing otherwise), and what is too large to copy.
 */
import type { FetchMessageObject, ImapFlow } from 'imapflow';
import type { Kysely } from 'kysely';
import { withWatchdog } from '../imap/imapflow-session.js';
import { insertMessages, knownMessages } from '../store/journal.js';
import type { Database, MessageRow } from '../store/schema.js';
import { diffFlags, flagsKey } from './flags.js';
import type { FolderWork } from './folder-work.js';
import { uidSet } from './uid-set.js';

export interface ScanContext {
  db: Kysely<Database>;
  maxMessageSize: number;
  stallMs: number;
  dryRun: boolean;
}

function sizeText(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MB` : `${Math.ceil(bytes / 1024)} KB`;
}

/** True when a skipped message should be tried again in this run. */
export function isRetryable(row: Pick<MessageRow, 'state' | 'skip_kind' | 'size'>, maxMessageSize: number): boolean {
  if (row.state !== 'skipped') return false;
  return row.skip_kind !== 'too-large' || row.size <= maxMessageSize;
}

export async function scanFolder(ctx: ScanContext, src: ImapFlow, work: FolderWork): Promise<void> {
  const { db } = ctx;
  const path = work.mapping.sourcePath;
  const mailbox = await withWatchdog(src, ctx.stallMs, `opening ${path}`, () => src.mailboxOpen(path, { readOnly: true }));
  const snapshot = {
    uidValidity: Number(mailbox.uidValidity),
    uidNext: mailbox.uidNext,
    messages: mailbox.exists,
    highestModseq: mailbox.highestModseq !== undefined && !mailbox.noModseq ? mailbox.highestModseq.toString() : null,
  };
  work.snapshot = snapshot;
  let row = work.row;

  if (row.source_uidvalidity !== null && row.source_uidvalidity !== snapshot.uidValidity && !ctx.dryRun) {
    // RFC 3501 §2.3.1.1: the old UIDs mean nothing now. Keep what was copied as orphans
    // (negated UIDs) to be adopted by content, and scan the folder from the start.
    await db.transaction().execute(async (trx) => {
      await trx.updateTable('message').set((eb) => ({ state: 'orphan', source_uid: eb.neg(eb.ref('source_uid')) })).where('folder_id', '=', row.id).where('state', '=', 'copied').where('source_uid', '>', 0).execute();
      await trx.deleteFrom('message').where('folder_id', '=', row.id).where('state', 'in', ['pending', 'skipped']).execute();
      await trx.updateTable('folder').set({ source_uidvalidity: snapshot.uidValidity, synced_uidnext: 1, source_highestmodseq: null, source_messages: null }).where('id', '=', row.id).execute();
    });
    row = { ...row, source_uidvalidity: snapshot.uidValidity, synced_uidnext: 1, source_highestmodseq: null, source_messages: null };
    work.row = row;
  }
  if (!ctx.dryRun) {
    const orphanRows = await db.selectFrom('message').selectAll().where('folder_id', '=', row.id).where('state', '=', 'orphan').execute();
    for (const o of orphanRows) {
      const list = work.orphans.get(o.sha256 ?? '') ?? [];
      list.push(o);
      work.orphans.set(o.sha256 ?? '', list);
    }
  }
  if (snapshot.messages === 0) return;

  const known = await knownMessages(db, row.id);
  const watermark = row.synced_uidnext;
  const listed: FetchMessageObject[] = [];
  // `n:*` always includes the highest message even when its UID is below n (RFC 3501
  // §6.4.8), hence the filter.
  if (snapshot.uidNext > watermark || row.source_messages === null) {
    const fresh = await withWatchdog(src, ctx.stallMs, `listing ${path}`, () => src.fetchAll(`${watermark}:*`, { uid: true, size: true }, { uid: true }));
    listed.push(...fresh.filter((m) => m.uid >= watermark));
  }
  const retry = [...known].filter(([uid, r]) => uid < watermark && isRetryable(r, ctx.maxMessageSize)).map(([uid]) => uid);
  if (retry.length) {
    listed.push(...(await withWatchdog(src, ctx.stallMs, `listing ${path}`, () => src.fetchAll(uidSet(retry), { uid: true, size: true }, { uid: true }))));
  }

  const tooLarge: number[] = [];
  for (const m of listed) {
    const k = known.get(m.uid);
    if (k && !isRetryable(k, ctx.maxMessageSize)) continue;
    const size = m.size ?? 0;
    if (size > ctx.maxMessageSize) {
      if (!k) tooLarge.push(m.uid);
      continue;
    }
    work.toCopy.push({ uid: m.uid, size });
  }
  if (tooLarge.length && !ctx.dryRun) {
    const envelopes = await withWatchdog(src, ctx.stallMs, `reading ${path}`, () => src.fetchAll(uidSet(tooLarge), { uid: true, size: true, flags: true, internalDate: true, envelope: true }, { uid: true }));
    await insertMessages(
      db,
      envelopes.map((m) => ({
        folder_id: row.id,
        source_uid: m.uid,
        state: 'skipped' as const,
        size: m.size ?? 0,
        internal_date: m.internalDate ? new Date(m.internalDate).getTime() : 0,
        sha256: null,
        flags: flagsKey(m.flags),
        target_uid: null,
        uid_floor: null,
        skip_kind: 'too-large' as const,
        reason: `message is ${sizeText(m.size ?? 0)}, over the ${sizeText(ctx.maxMessageSize)} limit`,
        subject: m.envelope?.subject ?? '',
      })),
    );
  }

  // Flag changes on messages copied by earlier runs.
  if (watermark > 1) {
    const condstore = snapshot.highestModseq !== null && row.source_highestmodseq !== null;
    if (!condstore || snapshot.highestModseq !== row.source_highestmodseq) {
      const fetchOpts = condstore ? { uid: true, changedSince: BigInt(row.source_highestmodseq!) } : { uid: true };
      const flags = await withWatchdog(src, ctx.stallMs, `reading flags in ${path}`, () => src.fetchAll(`1:${watermark - 1}`, { uid: true, flags: true }, fetchOpts));
      for (const m of flags) {
        const k = known.get(m.uid);
        // A null target_uid (copied without UIDPLUS) is still a flag change to mirror:
        // skipping it here made such messages' flags never follow the source.
        if (!k || k.state !== 'copied') continue;
        const after = flagsKey(m.flags);
        if (diffFlags(k.flags, after)) work.flagChanges.push({ sourceUid: m.uid, targetUid: k.target_uid, before: k.flags, after });
      }
    }
  }
}
