/** Stored migration endpoints and targets (SPEC §3): queries only. */
import type { Kysely } from 'kysely';
import type { Database, EndpointRole, EndpointRow, NewEndpointRow } from './schema.js';

export class EndpointExistsError extends Error {
  override name = 'EndpointExistsError';
}

export async function findEndpoint(db: Kysely<Database>, role: EndpointRole, name: string): Promise<EndpointRow | undefined> {
  return db.selectFrom('endpoint').selectAll().where('role', '=', role).where('name', '=', name).executeTakeFirst();
}

export async function listEndpoints(db: Kysely<Database>, role: EndpointRole): Promise<EndpointRow[]> {
  return db.selectFrom('endpoint').selectAll().where('role', '=', role).orderBy('name').execute();
}

export async function insertEndpoint(db: Kysely<Database>, row: NewEndpointRow): Promise<EndpointRow> {
  if (await findEndpoint(db, row.role, row.name)) throw new EndpointExistsError(`a ${row.role === 'source' ? 'migration endpoint' : 'target'} named "${row.name}" already exists`);
  await db.insertInto('endpoint').values(row).execute();
  return (await findEndpoint(db, row.role, row.name))!;
}

export class EndpointInUseError extends Error {
  override name = 'EndpointInUseError';
}

export async function deleteEndpoint(db: Kysely<Database>, role: EndpointRole, name: string): Promise<boolean> {
  const row = await findEndpoint(db, role, name);
  if (!row) return false;
  // Batches reference their endpoint and target: say which, rather than a foreign-key error.
  const users = await db.selectFrom('batch').select('name').where((eb) => eb.or([eb('endpoint_id', '=', row.id), eb('target_id', '=', row.id)])).execute();
  if (users.length) throw new EndpointInUseError(`${role === 'source' ? 'migration endpoint' : 'target'} "${name}" is used by batch ${users.map((u) => `"${u.name}"`).join(', ')}: delete the batch first`);
  const r = await db.deleteFrom('endpoint').where('role', '=', role).where('name', '=', name).executeTakeFirst();
  return Number(r.numDeletedRows) > 0;
}

/** Changes a stored endpoint's settings (the caller has tested them). */
export async function updateEndpoint(db: Kysely<Database>, id: number, patch: Partial<Omit<NewEndpointRow, 'role' | 'name' | 'created_at'>>): Promise<void> {
  await db.updateTable('endpoint').set(patch).where('id', '=', id).execute();
}
