/**
 * Schema migrations, in code so the package ships them. Each runs once per database
 * (Kysely's Migrator records them); the same migration serves SQLite and PostgreSQL,
 * with `idColumn` hiding the one difference that matters here (auto-increment keys).
 */
import { type Kysely, type Migration, type MigrationProvider, sql } from 'kysely';

export type Dialect = 'sqlite' | 'postgres';

function migrations(dialect: Dialect): Record<string, Migration> {
  const idType = dialect === 'postgres' ? 'bigserial' : 'integer';
  const bigint = dialect === 'postgres' ? 'bigint' : 'integer';
  return {
    '0001_sync_state': {
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable('mailbox_pair')
          .addColumn('id', idType, (c) => (dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()))
          .addColumn('source_key', 'text', (c) => c.notNull())
          .addColumn('target_key', 'text', (c) => c.notNull())
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addUniqueConstraint('mailbox_pair_keys', ['source_key', 'target_key'])
          .execute();
        await db.schema
          .createTable('folder')
          .addColumn('id', idType, (c) => (dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()))
          .addColumn('pair_id', bigint, (c) => c.notNull().references('mailbox_pair.id').onDelete('cascade'))
          .addColumn('source_path', 'text', (c) => c.notNull())
          .addColumn('target_path', 'text', (c) => c.notNull())
          .addColumn('source_uidvalidity', bigint)
          .addColumn('synced_uidnext', bigint, (c) => c.notNull().defaultTo(1))
          .addColumn('source_highestmodseq', 'text')
          .addColumn('source_messages', bigint)
          .addColumn('target_uidvalidity', bigint)
          .addColumn('last_synced_at', bigint)
          .addUniqueConstraint('folder_pair_path', ['pair_id', 'source_path'])
          .execute();
        await db.schema
          .createTable('message')
          .addColumn('folder_id', bigint, (c) => c.notNull().references('folder.id').onDelete('cascade'))
          .addColumn('source_uid', bigint, (c) => c.notNull())
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('size', bigint, (c) => c.notNull())
          .addColumn('internal_date', bigint, (c) => c.notNull())
          .addColumn('sha256', 'text')
          .addColumn('flags', 'text', (c) => c.notNull().defaultTo(''))
          .addColumn('target_uid', bigint)
          .addColumn('uid_floor', bigint)
          .addColumn('skip_kind', 'text')
          .addColumn('reason', 'text')
          .addColumn('subject', 'text')
          .addPrimaryKeyConstraint('message_pk', ['folder_id', 'source_uid'])
          .execute();
        // Recovery and reporting look messages up by state within a folder.
        await db.schema.createIndex('message_state').on('message').columns(['folder_id', 'state']).execute();
        await sql`select 1`.execute(db);
      },
    },
    '0002_endpoints': {
      async up(db: Kysely<unknown>) {
        // Source endpoints (SPEC §3) and migration targets, one table: they share every
        // connection field; `role` tells them apart and target-only fields stay null.
        await db.schema
          .createTable('endpoint')
          .addColumn('id', idType, (c) => (dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()))
          .addColumn('role', 'text', (c) => c.notNull())
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('host', 'text', (c) => c.notNull())
          .addColumn('port', bigint, (c) => c.notNull())
          .addColumn('tls', 'text', (c) => c.notNull())
          .addColumn('auth', 'text', (c) => c.notNull())
          .addColumn('accept_untrusted_cert', bigint, (c) => c.notNull())
          .addColumn('max_concurrent_migrations', bigint, (c) => c.notNull())
          .addColumn('max_concurrent_incremental_syncs', bigint, (c) => c.notNull())
          .addColumn('admin_user', 'text')
          .addColumn('impersonation', 'text')
          .addColumn('separator', 'text')
          .addColumn('password_enc', 'text')
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addUniqueConstraint('endpoint_role_name', ['role', 'name'])
          .execute();
      },
    },
  };
}

export function migrationProvider(dialect: Dialect): MigrationProvider {
  return { getMigrations: async () => migrations(dialect) };
}
