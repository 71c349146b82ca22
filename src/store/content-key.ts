/**
 * The journal's content key (schema.ts ContentKeyTable), read once per database handle and
 * turned into the hasher every digest of that journal is made with.
 */
import type { Kysely } from 'kysely';
import { ContentHasher } from '../sync/content-digest.js';
import type { Database } from './schema.js';

const hashers = new WeakMap<Kysely<Database>, Promise<ContentHasher>>();

async function load(db: Kysely<Database>): Promise<ContentHasher> {
  const row = await db.selectFrom('content_key').select('key').where('id', '=', 1).executeTakeFirst();
  // Migration 0006 writes the key; a database without one has been tampered with, and a
  // new key would make every digest already journaled unmatchable.
  if (!row) throw new Error('the database has no content key (table content_key is empty): restore it from a backup');
  return new ContentHasher(Buffer.from(row.key, 'base64'));
}

export function contentHasher(db: Kysely<Database>): Promise<ContentHasher> {
  let h = hashers.get(db);
  if (!h) {
    h = load(db);
    hashers.set(db, h);
    h.catch(() => hashers.delete(db));
  }
  return h;
}
