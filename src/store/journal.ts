/**
 * The message journal: what the engine knows about each source message, written before
 * and after each APPEND so that a crash at any moment can be resolved without loss or
 * duplicate (see sync/recovery.ts). Queries only; the engine decides.
 */
import { type Kysely, sql, SqliteAdapter, type Transaction } from 'kysely';
import type { Database, FolderRow, MessageRow, NewMessageRow, SkipKind } from './schema.js';

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

export async function ensureFolder(db: Db, pairId: number, sourcePath: string, targetPath: string): Promise<FolderRow> {
  const existing = await db.selectFrom('folder').selectAll().where('pair_id', '=', pairId).where('source_path', '=', sourcePath).executeTakeFirst();
  if (existing) {
    if (existing.target_path === targetPath) return existing;
    // The mapping changed (e.g. the target gained a special-use folder). Messages already
    // copied stay where they are; new ones follow the new mapping.
    await db.updateTable('folder').set({ target_path: targetPath, target_uidvalidity: null }).where('id', '=', existing.id).execute();
    return { ...existing, target_path: targetPath, target_uidvalidity: null };
  }
  await db.insertInto('folder').values({ pair_id: pairId, source_path: sourcePath, target_path: targetPath, synced_uidnext: 1, source_uidvalidity: null, source_highestmodseq: null, source_messages: null, target_uidvalidity: null, last_synced_at: null }).execute();
  return db.selectFrom('folder').selectAll().where('pair_id', '=', pairId).where('source_path', '=', sourcePath).executeTakeFirstOrThrow();
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

/** Compact view for deciding what still needs copying. */
export async function knownMessages(db: Db, folderId: number): Promise<Map<number, Pick<MessageRow, 'state' | 'skip_kind' | 'size' | 'flags' | 'target_uid'>>> {
  const rows = await db.selectFrom('message').select(['source_uid', 'state', 'skip_kind', 'size', 'flags', 'target_uid']).where('folder_id', '=', folderId).execute();
  return new Map(rows.map((r) => [r.source_uid, r]));
}

/**
 * SQLite: the rows go as one JSON parameter, unpacked by json_each (SQLite's JSON1, built
 * into better-sqlite3). The copy path journals every chunk twice (pending, then copied):
 * building a 12-column × n-row statement with Kysely and preparing it anew each time cost
 * more CPU than the journal's own work, and made garbage per message; this statement's
 * text is the same every time. PostgreSQL keeps the portable Kysely form below.
 */
function isSqlite(db: Db): boolean {
  return db.getExecutor().adapter instanceof SqliteAdapter;
}

const MESSAGE_COLUMNS = ['folder_id', 'source_uid', 'state', 'size', 'internal_date', 'sha256', 'flags', 'target_uid', 'uid_floor', 'skip_kind', 'reason', 'subject'] as const;

// `where true`: SQLite's grammar needs it between a SELECT and its upsert clause.
const SQLITE_INSERT_HEAD = sql.raw(
  `insert into message (${MESSAGE_COLUMNS.join(', ')}) select ${MESSAGE_COLUMNS.map((_, i) => `json_extract(value, '$[${i}]')`).join(', ')} from json_each(`,
);
const SQLITE_INSERT_TAIL = sql.raw(`) where true on conflict (folder_id, source_uid) do update set ${MESSAGE_COLUMNS.slice(2).map((c) => `${c} = excluded.${c}`).join(', ')}`);
// An upsert rather than UPDATE … FROM json_each: SQLite's planner put the folder's own
// rows in the outer loop there (a scan of the folder per chunk); this way the chunk is the
// outer loop and each row is one primary-key lookup. Rows that do not exist are left
// out (`exists`), so like an UPDATE it never inserts.
const SQLITE_COPIED_HEAD = sql.raw(
  "insert into message (folder_id, source_uid, state, size, internal_date, flags, target_uid) select m.folder_id, m.source_uid, 'copied', 0, 0, '', json_extract(j.value, '$[1]') from json_each(",
);
const SQLITE_COPIED_MID = sql.raw(") as j cross join message as m on m.folder_id = "); // cross join: j is the outer loop
const SQLITE_COPIED_END = sql.raw(
  " and m.source_uid = json_extract(j.value, '$[0]') where true on conflict (folder_id, source_uid) do update set state = 'copied', uid_floor = null, skip_kind = null, reason = null, target_uid = excluded.target_uid",
);

export async function insertMessages(db: Db, rows: readonly NewMessageRow[]): Promise<void> {
  if (rows.length === 0) return;
  if (isSqlite(db)) {
    const json = JSON.stringify(rows.map((r) => MESSAGE_COLUMNS.map((c) => r[c] ?? null)));
    await sql`${SQLITE_INSERT_HEAD}${json}${SQLITE_INSERT_TAIL}`.execute(db);
    return;
  }
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
          sha256: eb.ref('excluded.sha256'),
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
 * One UPDATE per 500 messages (a CASE maps each source UID to its target UID): this runs
 * for every copied chunk, and a statement per message cost more than the copy itself.
 */
export async function markCopied(db: Db, folderId: number, copies: readonly { sourceUid: number; targetUid: number | null }[]): Promise<void> {
  if (copies.length === 0) return;
  if (isSqlite(db)) {
    // As insertMessages: one JSON parameter, one statement text.
    const json = JSON.stringify(copies.map((c) => [c.sourceUid, c.targetUid]));
    await sql`${SQLITE_COPIED_HEAD}${json}${SQLITE_COPIED_MID}${folderId}${SQLITE_COPIED_END}`.execute(db);
    return;
  }
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

export async function setFlags(db: Db, folderId: number, updates: readonly { sourceUid: number; flags: string }[]): Promise<void> {
  for (const u of updates) {
    await db.updateTable('message').set({ flags: u.flags }).where('folder_id', '=', folderId).where('source_uid', '=', u.sourceUid).execute();
  }
}

export async function setTargetUids(db: Db, folderId: number, updates: readonly { sourceUid: number; targetUid: number | null }[]): Promise<void> {
  for (const u of updates) {
    await db.updateTable('message').set({ target_uid: u.targetUid }).where('folder_id', '=', folderId).where('source_uid', '=', u.sourceUid).execute();
  }
}

/** Mapped target UIDs of a folder, to tell our own messages from others' on the target. */
export async function targetUidsOfTargetFolder(db: Db, pairId: number, targetPath: string): Promise<Set<number>> {
  const rows = await db
    .selectFrom('message')
    .innerJoin('folder', 'folder.id', 'message.folder_id')
    .select('message.target_uid')
    .where('folder.pair_id', '=', pairId)
    .where('folder.target_path', '=', targetPath)
    .where('message.target_uid', 'is not', null)
    .execute();
  return new Set(rows.map((r) => r.target_uid!));
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
export async function setDigest(db: Db, folderId: number, sourceUid: number, sha256: string): Promise<void> {
  await db.updateTable('message').set({ sha256 }).where('folder_id', '=', folderId).where('source_uid', '=', sourceUid).where('state', '=', 'pending').execute();
}
