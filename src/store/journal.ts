/**
 * The message journal: what the engine knows about each source message, written before
 * and after each APPEND so that a crash at any moment can be resolved without loss or
 * duplicate (see sync/recovery.ts). Queries only; the engine decides.
 */
import { type Kysely, sql, type Transaction } from 'kysely';
import { type StatementCache, withSqlite } from './sqlite-handle.js';
import type { Database, FolderRow, MessageRow, MessageState, NewMessageRow, SkipKind } from './schema.js';
import type { Digest } from '../sync/content-digest.js';

type Db = Kysely<Database> | Transaction<Database>;

// SQLite allows 32,766 bound parameters per statement; 12 columns × 500 rows stays far below.
const INSERT_CHUNK = 500;

export async function ensurePair(db: Db, sourceKey: string, targetKey: string): Promise<number> {
  const found = await db.selectFrom('mailbox_pair').select('id').where('source_key', '=', sourceKey).where('target_key', '=', targetKey).executeTakeFirst();
  if (found) return found.id;
  await db
    .insertInto('mailbox_pair')
    .values({ source_key: sourceKey, target_key: targetKey, created_at: Date.now() })
    .onConflict((oc) => oc.columns(['source_key', 'target_key']).doNothing())
    .execute();
  const row = await db.selectFrom('mailbox_pair').select('id').where('source_key', '=', sourceKey).where('target_key', '=', targetKey).executeTakeFirstOrThrow();
  return row.id;
}

export async function findPair(db: Db, sourceKey: string, targetKey: string): Promise<number | undefined> {
  const row = await db.selectFrom('mailbox_pair').select('id').where('source_key', '=', sourceKey).where('target_key', '=', targetKey).executeTakeFirst();
  return row?.id;
}

export function listFolders(db: Db, pairId: number): Promise<FolderRow[]> {
  return db.selectFrom('folder').selectAll().where('pair_id', '=', pairId).orderBy('id').execute();
}

/**
 * The journal rows of a mailbox pair's folders, created where missing, by source path.
 * One read of the pair's folders and one transaction for what is new (a first run has
 * every folder to create: a query or two per folder added tens of ms to every sync).
 */
export async function ensureFolders(db: Kysely<Database>, pairId: number, mappings: readonly { sourcePath: string; targetPath: string }[]): Promise<Map<string, FolderRow>> {
  const rows = new Map((await listFolders(db, pairId)).map((r) => [r.source_path, r]));
  const missing = mappings.filter((m) => !rows.has(m.sourcePath));
  const moved = mappings.filter((m) => {
    const r = rows.get(m.sourcePath);
    return r !== undefined && r.target_path !== m.targetPath;
  });
  if (missing.length === 0 && moved.length === 0) return rows;
  await db.transaction().execute(async (trx) => {
    for (const m of moved) {
      // The mapping changed (e.g. the target gained a special-use folder) for a folder with
      // no copy yet: a folder with copies keeps its mapping (establishedTargets), since its
      // rows' target UIDs are UIDs of that target folder.
      await trx.updateTable('folder').set({ target_path: m.targetPath, target_uidvalidity: null }).where('id', '=', rows.get(m.sourcePath)!.id).execute();
    }
    for (let i = 0; i < missing.length; i += INSERT_CHUNK) {
      await trx
        .insertInto('folder')
        .values(missing.slice(i, i + INSERT_CHUNK).map((m) => ({ pair_id: pairId, source_path: m.sourcePath, target_path: m.targetPath, synced_uidnext: 1, source_uidvalidity: null, source_highestmodseq: null, source_messages: null, target_uidvalidity: null, last_synced_at: null })))
        .onConflict((oc) => oc.columns(['pair_id', 'source_path']).doNothing())
        .execute();
    }
  });
  return new Map((await listFolders(db, pairId)).map((r) => [r.source_path, r]));
}

/**
 * Source folders whose messages are already in a target folder (copied, on their way, or
 * copied under an older UIDVALIDITY), with that folder's name: a mapping the next runs
 * keep (mapFolders `established`).
 */
export async function establishedTargets(db: Db, pairId: number): Promise<Map<string, string>> {
  const rows = await db
    .selectFrom('folder')
    .select(['source_path', 'target_path'])
    .where('pair_id', '=', pairId)
    .where((eb) => eb.exists(eb.selectFrom('message').select('message.source_uid').whereRef('message.folder_id', '=', 'folder.id').where('message.state', 'in', ['copied', 'pending', 'orphan'])))
    .execute();
  return new Map(rows.map((r) => [r.source_path, r.target_path]));
}

export async function updateFolder(db: Db, id: number, patch: Partial<Omit<FolderRow, 'id' | 'pair_id'>>): Promise<void> {
  await db.updateTable('folder').set(patch).where('id', '=', id).execute();
}

export function messagesInState(db: Db, folderId: number, state: MessageRow['state']): Promise<MessageRow[]> {
  return db.selectFrom('message').selectAll().where('folder_id', '=', folderId).where('state', '=', state).orderBy('source_uid').execute();
}

export function allMessages(db: Db, folderId: number): Promise<MessageRow[]> {
  return db.selectFrom('message').selectAll().where('folder_id', '=', folderId).orderBy('source_uid').execute();
}

type KnownRow = Pick<MessageRow, 'state' | 'skip_kind' | 'size' | 'flags' | 'target_uid'>;

/** The whole rows of these source UIDs (those the journal has); a few hundred per query. */
export async function rowsAmong(db: Db, folderId: number, sourceUids: readonly number[]): Promise<MessageRow[]> {
  const out: MessageRow[] = [];
  for (let i = 0; i < sourceUids.length; i += INSERT_CHUNK) {
    out.push(...(await db.selectFrom('message').selectAll().where('folder_id', '=', folderId).where('source_uid', 'in', sourceUids.slice(i, i + INSERT_CHUNK)).execute()));
  }
  return out;
}

/** The folder's skipped messages, by UID. */
export async function skippedOf(db: Db, folderId: number): Promise<Map<number, KnownRow>> {
  const rows = await db.selectFrom('message').select(['source_uid', 'state', 'skip_kind', 'size', 'flags', 'target_uid']).where('folder_id', '=', folderId).where('state', '=', 'skipped').execute();
  return new Map(rows.map((r) => [r.source_uid, r]));
}

/**
 * How many source messages with UIDs in [from, below) the journal holds as copied or
 * skipped (pending rows are left out: recovery has settled them before any scan).
 */
export async function journaledBelow(db: Db, folderId: number, below: number, from = 1): Promise<number> {
  const r = await db
    .selectFrom('message')
    .select((eb) => eb.fn.countAll<number | string>().as('n'))
    .where('folder_id', '=', folderId)
    .where('source_uid', '>=', Math.max(1, from))
    .where('source_uid', '<', below)
    .where('state', 'in', ['copied', 'skipped'])
    .executeTakeFirstOrThrow();
  // PostgreSQL returns COUNT(*) as a bigint string.
  return Number(r.n);
}

/**
 * The folder's rows in these states with source UIDs in [1, below), in UID order, a page
 * at a time: a folder of 150,000 messages is never held whole.
 */
export function journalPages(db: Db, folderId: number, below: number, states: readonly MessageState[], pageSize = 5000): AsyncGenerator<MessageRow[]> {
  return pages(pageSize, (after) => db.selectFrom('message').selectAll().where('folder_id', '=', folderId).where('source_uid', '>', after).where('source_uid', '<', below).where('state', 'in', [...states]).orderBy('source_uid').limit(pageSize).execute());
}

/** The same for the flag pass: copied rows, with only what it compares. */
export function copiedFlagPages(db: Db, folderId: number, below: number, pageSize: number): AsyncGenerator<(KnownRow & { source_uid: number })[]> {
  return pages(pageSize, (after) =>
    db
      .selectFrom('message')
      .select(['source_uid', 'state', 'skip_kind', 'size', 'flags', 'target_uid'])
      .where('folder_id', '=', folderId)
      .where('source_uid', '>', after)
      .where('source_uid', '<', below)
      .where('state', '=', 'copied')
      .orderBy('source_uid')
      .limit(pageSize)
      .execute(),
  );
}

async function* pages<T extends { source_uid: number }>(pageSize: number, read: (after: number) => Promise<T[]>): AsyncGenerator<T[]> {
  let after = 0;
  for (;;) {
    const page = await read(after);
    if (page.length === 0) return;
    yield page;
    after = page.at(-1)!.source_uid;
    if (page.length < pageSize) return;
  }
}

const MESSAGE_COLUMNS = ['folder_id', 'source_uid', 'state', 'size', 'internal_date', 'digest', 'flags', 'target_uid', 'uid_floor', 'skip_kind', 'reason', 'subject'] as const;

// The copy path journals every chunk twice (pending, then copied). On SQLite that is one
// cached statement run per message inside the caller's transaction (sqlite-handle.ts):
// a fraction of the CPU of building, compiling and preparing a multi-row statement per
// chunk. PostgreSQL, where each statement is a round trip, keeps multi-row statements.
const SQLITE_UPSERT = `insert into message (${MESSAGE_COLUMNS.join(', ')}) values (${MESSAGE_COLUMNS.map(() => '?').join(', ')}) on conflict (folder_id, source_uid) do update set ${MESSAGE_COLUMNS.slice(2)
  .map((c) => `${c} = excluded.${c}`)
  .join(', ')}`;
const SQLITE_COPIED = "update message set state = 'copied', uid_floor = null, skip_kind = null, reason = null, target_uid = ? where folder_id = ? and source_uid = ?";
const SQLITE_SKIPPED = "update message set state = 'skipped', skip_kind = ?, reason = ?, subject = ?, uid_floor = null, target_uid = null where folder_id = ? and source_uid = ?";
const SQLITE_DELETE = 'delete from message where folder_id = ? and source_uid = ?';
// An adopted copy keeps the target's flags until the flag pass mirrors the source's; should
// the run end before that, the next run must compare every copy's flags, not only those
// changed since the last mod-sequence (scan.ts scanFlags).
const SQLITE_FORGET_MODSEQ = 'update folder set source_highestmodseq = null where id = ?';
const SQLITE_SET_FLAGS = 'update message set flags = ? where folder_id = ? and source_uid = ?';

/**
 * What the copy path journals before a chunk's APPENDs, in one transaction: the pending
 * rows, orphans adopted in place of a copy (their old row, if any, goes; the new one is copied),
 * and the messages the source could not deliver. On SQLite all of it runs as cached
 * statements (no query building per chunk); PostgreSQL uses the portable forms.
 */
export async function journalChunk(
  db: Kysely<Database>,
  folderId: number,
  chunk: { pending: readonly NewMessageRow[]; adopted: readonly { row: NewMessageRow; orphan: { folderId: number; uid: number } | null }[]; skipped: readonly NewMessageRow[] },
): Promise<void> {
  const direct = withSqlite(db, (s) => {
    upsertRows(s, chunk.pending);
    const del = s.get(SQLITE_DELETE);
    // The row adopted goes: it may be another folder's (a message moved between two source folders merged into one target folder).
    for (const a of chunk.adopted) if (a.orphan !== null) del.run(a.orphan.folderId, a.orphan.uid);
    upsertRows(s, chunk.adopted.map((a) => a.row));
    upsertRows(s, chunk.skipped);
    if (chunk.adopted.length) s.get(SQLITE_FORGET_MODSEQ).run(folderId);
  });
  if (direct) return direct;
  await db.transaction().execute(async (trx) => {
    await insertMessages(trx, chunk.pending);
    for (const a of chunk.adopted) if (a.orphan !== null) await trx.deleteFrom('message').where('folder_id', '=', a.orphan.folderId).where('source_uid', '=', a.orphan.uid).execute();
    await insertMessages(trx, [...chunk.adopted.map((a) => a.row), ...chunk.skipped]);
    if (chunk.adopted.length) await trx.updateTable('folder').set({ source_highestmodseq: null }).where('id', '=', folderId).execute();
  });
}

/** What the target said to a chunk's APPENDs, in one transaction: copied (with target UIDs) and refused. */
export async function recordChunkOutcome(
  db: Kysely<Database>,
  folderId: number,
  copied: readonly { sourceUid: number; targetUid: number | null }[],
  refused: readonly { uid: number; kind: SkipKind; reason: string; subject: string | null }[],
): Promise<void> {
  const direct = withSqlite(db, (s) => {
    copiedRows(s, folderId, copied);
    const skip = s.get(SQLITE_SKIPPED);
    for (const r of refused) skip.run(r.kind, r.reason, r.subject, folderId, r.uid);
  });
  if (direct) return direct;
  await db.transaction().execute(async (trx) => {
    await markCopied(trx, folderId, copied);
    for (const r of refused) await markSkipped(trx, folderId, r.uid, r.kind, r.reason, r.subject);
  });
}

function copiedRows(s: StatementCache, folderId: number, copies: readonly { sourceUid: number; targetUid: number | null }[]): void {
  if (copies.length === 0) return;
  const update = s.get(SQLITE_COPIED);
  for (const c of copies) update.run(c.targetUid, folderId, c.sourceUid);
}

function upsertRows(s: StatementCache, rows: readonly NewMessageRow[]): void {
  if (rows.length === 0) return;
  const upsert = s.get(SQLITE_UPSERT);
  for (const r of rows) {
    upsert.run(r.folder_id, r.source_uid, r.state, r.size, r.internal_date, r.digest, r.flags, r.target_uid, r.uid_floor, r.skip_kind, r.reason, r.subject);
  }
}

export async function insertMessages(db: Db, rows: readonly NewMessageRow[]): Promise<void> {
  if (rows.length === 0) return;
  const direct = withSqlite(db, (s) => upsertRows(s, rows));
  if (direct) return direct;
  for (let i = 0; i < rows.length; i += INSERT_CHUNK) {
    const part = rows.slice(i, i + INSERT_CHUNK);
    // A row may exist from an earlier attempt (e.g. a skipped message retried): replace it.
    await db
      .insertInto('message')
      .values(part)
      .onConflict((oc) =>
        oc.columns(['folder_id', 'source_uid']).doUpdateSet((eb) => ({
          state: eb.ref('excluded.state'),
          size: eb.ref('excluded.size'),
          internal_date: eb.ref('excluded.internal_date'),
          digest: eb.ref('excluded.digest'),
          flags: eb.ref('excluded.flags'),
          target_uid: eb.ref('excluded.target_uid'),
          uid_floor: eb.ref('excluded.uid_floor'),
          skip_kind: eb.ref('excluded.skip_kind'),
          reason: eb.ref('excluded.reason'),
          subject: eb.ref('excluded.subject'),
        })),
      )
      .execute();
  }
}

/**
 * Marks a chunk's messages copied, with their target UIDs. SQLite: one cached UPDATE run
 * per message (see SQLITE_UPSERT). PostgreSQL: one UPDATE per 500 messages (a CASE maps
 * each source UID to its target UID), as a statement per message there is a round trip.
 */
export async function markCopied(db: Db, folderId: number, copies: readonly { sourceUid: number; targetUid: number | null }[]): Promise<void> {
  if (copies.length === 0) return;
  const direct = withSqlite(db, (s) => copiedRows(s, folderId, copies));
  if (direct) return direct;
  for (let i = 0; i < copies.length; i += INSERT_CHUNK) {
    const part = copies.slice(i, i + INSERT_CHUNK);
    // The explicit cast lets PostgreSQL type the parameters; SQLite accepts it as is.
    const mapping = sql.join(part.map((c) => sql`when ${c.sourceUid} then cast(${c.targetUid} as bigint)`), sql` `);
    await db
      .updateTable('message')
      .set({ state: 'copied', uid_floor: null, skip_kind: null, reason: null, target_uid: sql<number | null>`case source_uid ${mapping} end` })
      .where('folder_id', '=', folderId)
      .where('source_uid', 'in', part.map((c) => c.sourceUid))
      .execute();
  }
}

export async function markSkipped(db: Db, folderId: number, sourceUid: number, kind: SkipKind, reason: string, subject: string | null): Promise<void> {
  await db
    .updateTable('message')
    .set({ state: 'skipped', skip_kind: kind, reason, subject, uid_floor: null, target_uid: null })
    .where('folder_id', '=', folderId)
    .where('source_uid', '=', sourceUid)
    .execute();
}

export async function deleteMessages(db: Db, folderId: number, sourceUids: readonly number[]): Promise<void> {
  for (let i = 0; i < sourceUids.length; i += INSERT_CHUNK) {
    await db.deleteFrom('message').where('folder_id', '=', folderId).where('source_uid', 'in', sourceUids.slice(i, i + INSERT_CHUNK)).execute();
  }
}

/**
 * Records the flags now applied to these copies. SQLite: a cached UPDATE per message (a
 * "mark all as read" of 150,000 messages spent seconds building one Kysely query each).
 * PostgreSQL: one UPDATE per flag set and 500 messages, as a statement is a round trip.
 */
export async function setFlags(db: Db, folderId: number, updates: readonly { sourceUid: number; flags: string }[]): Promise<void> {
  if (updates.length === 0) return;
  const direct = withSqlite(db, (s) => {
    const update = s.get(SQLITE_SET_FLAGS);
    for (const u of updates) update.run(u.flags, folderId, u.sourceUid);
  });
  if (direct) return direct;
  const byFlags = new Map<string, number[]>();
  for (const u of updates) {
    const uids = byFlags.get(u.flags);
    if (uids) uids.push(u.sourceUid);
    else byFlags.set(u.flags, [u.sourceUid]);
  }
  for (const [flags, uids] of byFlags) {
    for (let i = 0; i < uids.length; i += INSERT_CHUNK) {
      await db.updateTable('message').set({ flags }).where('folder_id', '=', folderId).where('source_uid', 'in', uids.slice(i, i + INSERT_CHUNK)).execute();
    }
  }
}

export async function setTargetUids(db: Db, folderId: number, updates: readonly { sourceUid: number; targetUid: number | null }[]): Promise<void> {
  for (const u of updates) {
    await db.updateTable('message').set({ target_uid: u.targetUid }).where('folder_id', '=', folderId).where('source_uid', '=', u.sourceUid).execute();
  }
}

/** The journal's messages of one target folder (all source folders copied into it). */
function targetFolderMessages(db: Db, pairId: number, targetPath: string) {
  return db.selectFrom('message').innerJoin('folder', 'folder.id', 'message.folder_id').where('folder.pair_id', '=', pairId).where('folder.target_path', '=', targetPath);
}

/** Mapped target UIDs of a folder, to tell our own messages from others' on the target. */
export async function targetUidsOfTargetFolder(db: Db, pairId: number, targetPath: string): Promise<Set<number>> {
  const rows = await targetFolderMessages(db, pairId, targetPath).select('message.target_uid').where('message.target_uid', 'is not', null).execute();
  return new Set(rows.map((r) => r.target_uid!));
}

/**
 * Copies in this target folder the journal has no target UID for (made without an
 * APPENDUID: a target without UIDPLUS, RFC 4315), counted by content digest.
 */
export async function copiesWithoutUid(db: Db, pairId: number, targetPath: string): Promise<Map<Digest, number>> {
  const rows = await targetFolderMessages(db, pairId, targetPath).select('message.digest').where('message.state', '=', 'copied').where('message.target_uid', 'is', null).where('message.digest', 'is not', null).execute();
  const out = new Map<Digest, number>();
  for (const r of rows) out.set(r.digest!, (out.get(r.digest!) ?? 0) + 1);
  return out;
}

export async function skippedMessages(db: Db, pairId: number): Promise<(MessageRow & { source_path: string })[]> {
  return db
    .selectFrom('message')
    .innerJoin('folder', 'folder.id', 'message.folder_id')
    .selectAll('message')
    .select('folder.source_path')
    .where('folder.pair_id', '=', pairId)
    .where('message.state', '=', 'skipped')
    .orderBy('folder.source_path')
    .orderBy('message.source_uid')
    .execute();
}

/**
 * Records the digest of a pending message that was journaled without one because it is
 * streamed from source to target (sync/copy-lanes.ts `readLarge`): called after its
 * last byte was read and before the last byte of its APPEND literal is written, so a
 * message the target may have stored always has its digest journaled (recovery.ts).
 */
export async function setDigest(db: Db, folderId: number, sourceUid: number, digest: Digest): Promise<void> {
  await db.updateTable('message').set({ digest }).where('folder_id', '=', folderId).where('source_uid', '=', sourceUid).where('state', '=', 'pending').execute();
}
