/**
 * Schema migrations, in code so the package ships them. Each runs once per database
 * (Kysely's Migrator records them); the same migration serves SQLite and PostgreSQL,
 * with `idColumn` hiding the one difference that matters here (auto-increment keys).
 */
import { randomBytes } from 'node:crypto';
import { type Kysely, type Migration, type MigrationProvider, sql } from 'kysely';
import { CONTENT_KEY_BYTES } from '../sync/content-digest.js';

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
    '0003_batches': {
      async up(db: Kysely<unknown>) {
        // Batches, their mailboxes and the history of their syncs (SPEC §4). Workers
        // coordinate only through these rows: see src/worker/lease.ts.
        await db.schema
          .createTable('batch')
          .addColumn('id', idType, (c) => (dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()))
          .addColumn('name', 'text', (c) => c.notNull().unique())
          .addColumn('endpoint_id', bigint, (c) => c.notNull().references('endpoint.id'))
          .addColumn('target_id', bigint, (c) => c.notNull().references('endpoint.id'))
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('exclude_json', 'text', (c) => c.notNull())
          .addColumn('include_json', 'text')
          .addColumn('notify_json', 'text', (c) => c.notNull())
          .addColumn('received_after', bigint)
          .addColumn('bad_item_limit', bigint)
          .addColumn('start_at', bigint)
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('started_at', bigint)
          .addColumn('initial_synced_at', bigint)
          .addColumn('last_incremental_at', bigint)
          .addColumn('stopped_at', bigint)
          .execute();
        await db.schema
          .createTable('batch_mailbox')
          .addColumn('id', idType, (c) => (dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()))
          .addColumn('batch_id', bigint, (c) => c.notNull().references('batch.id').onDelete('cascade'))
          .addColumn('line', bigint, (c) => c.notNull())
          .addColumn('email_address', 'text', (c) => c.notNull())
          // Unique across batches: the database itself refuses an address in two batches,
          // even when two `batch create` run at once.
          .addColumn('email_key', 'text', (c) => c.notNull().unique())
          .addColumn('user_name', 'text', (c) => c.notNull())
          .addColumn('password_enc', 'text', (c) => c.notNull())
          .addColumn('user_root', 'text')
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('pair_id', bigint)
          .addColumn('folders', bigint, (c) => c.notNull().defaultTo(0))
          .addColumn('found', bigint, (c) => c.notNull().defaultTo(0))
          .addColumn('copied', bigint, (c) => c.notNull().defaultTo(0))
          .addColumn('skipped', bigint, (c) => c.notNull().defaultTo(0))
          .addColumn('failed', bigint, (c) => c.notNull().defaultTo(0))
          .addColumn('bytes', bigint, (c) => c.notNull().defaultTo(0))
          .addColumn('sync_ms', bigint, (c) => c.notNull().defaultTo(0))
          .addColumn('last_duration_ms', bigint)
          .addColumn('skipped_items_json', 'text')
          .addColumn('initial_synced_at', bigint)
          .addColumn('last_sync_at', bigint)
          .addColumn('next_sync_at', bigint)
          .addColumn('sync_requested', bigint, (c) => c.notNull().defaultTo(0))
          .addColumn('last_error', 'text')
          .addColumn('attempts', bigint, (c) => c.notNull().defaultTo(0))
          .addColumn('lease_owner', 'text')
          .addColumn('lease_kind', 'text')
          .addColumn('lease_started_at', bigint)
          .addColumn('lease_expires_at', bigint)
          .addColumn('progress_phase', 'text')
          .addColumn('progress_copied', bigint, (c) => c.notNull().defaultTo(0))
          .addColumn('progress_to_copy', bigint, (c) => c.notNull().defaultTo(0))
          .addColumn('progress_bytes', bigint, (c) => c.notNull().defaultTo(0))
          .addColumn('progress_to_copy_bytes', bigint, (c) => c.notNull().defaultTo(0))
          .addColumn('progress_at', bigint)
          .execute();
        // Status counts per batch, and the claim's search for due mailboxes.
        await db.schema.createIndex('batch_mailbox_batch_status').on('batch_mailbox').columns(['batch_id', 'status']).execute();
        await db.schema.createIndex('batch_mailbox_due').on('batch_mailbox').columns(['next_sync_at']).execute();
        // Live leases per kind, counted against the endpoints' limits inside every claim.
        await db.schema.createIndex('batch_mailbox_lease').on('batch_mailbox').columns(['lease_kind', 'lease_expires_at']).execute();
        await db.schema
          .createTable('sync_run')
          .addColumn('id', idType, (c) => (dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()))
          .addColumn('batch_id', bigint, (c) => c.notNull().references('batch.id').onDelete('cascade'))
          .addColumn('mailbox_id', bigint, (c) => c.notNull().references('batch_mailbox.id').onDelete('cascade'))
          .addColumn('owner', 'text', (c) => c.notNull())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('started_at', bigint, (c) => c.notNull())
          .addColumn('ended_at', bigint)
          .addColumn('outcome', 'text')
          .addColumn('copied', bigint, (c) => c.notNull().defaultTo(0))
          .addColumn('bytes', bigint, (c) => c.notNull().defaultTo(0))
          .addColumn('error', 'text')
          .execute();
        await db.schema.createIndex('sync_run_mailbox').on('sync_run').columns(['mailbox_id', 'ended_at']).execute();
      },
    },
    '0004_reports_and_verification': {
      async up(db: Kysely<unknown>) {
        // Report e-mail bookkeeping (src/report/schedule.ts). One statement per column:
        // SQLite's ALTER TABLE adds one at a time.
        for (const [column, type] of [
          ['initial_report_at', bigint],
          ['last_report_at', bigint],
          ['report_claim_until', bigint],
          ['report_error', 'text'],
        ] as const) {
          await db.schema.alterTable('batch').addColumn(column, type).execute();
        }
        await db.schema.alterTable('batch').addColumn('report_failures', bigint, (c) => c.notNull().defaultTo(0)).execute();
        // Batches that finished their initial sync before reports existed: no belated
        // "initial sync finished" mail; their daily reports start from here.
        await sql`update batch set initial_report_at = initial_synced_at, last_report_at = initial_synced_at where initial_synced_at is not null`.execute(db);
        // dueReports (src/report/schedule.ts) asks for a batch's runs since the last report.
        await db.schema.createIndex('sync_run_batch_ended').on('sync_run').columns(['batch_id', 'ended_at']).execute();
        // The last `batch verify` of each mailbox (src/batch/verify.ts).
        for (const [column, type] of [
          ['verified_at', bigint],
          ['verify_in_sync', bigint],
          ['verify_missing', bigint],
          ['verify_json', 'text'],
        ] as const) {
          await db.schema.alterTable('batch_mailbox').addColumn(column, type).execute();
        }
      },
    },
    '0005_folder_cut_off': {
      async up(db: Kysely<unknown>) {
        // Null for every existing folder: they were all scanned without a cut-off.
        await db.schema.alterTable('folder').addColumn('covered_from', bigint).execute();
      },
    },
    '0006_message_digest': {
      async up(db: Kysely<unknown>) {
        // New content digests are keyed GMAC tags (sync/content-digest.ts); the values
        // already stored are SHA-256 in the form that algorithm keeps, so only the name changes.
        await db.schema.alterTable('message').renameColumn('sha256', 'digest').execute();
        await db.schema
          .createTable('content_key')
          .addColumn('id', bigint, (c) => c.primaryKey())
          .addColumn('key', 'text', (c) => c.notNull())
          .execute();
        await sql`insert into content_key (id, key) values (1, ${randomBytes(CONTENT_KEY_BYTES).toString('base64')})`.execute(db);
      },
    },
    '0007_mx_watch': {
      async up(db: Kysely<unknown>) {
        // `dns check --target-mx` remembers, per domain and target, when mailferry first saw
        // every MX point at the target: the 72 hours of SPEC §7 run from there, and batch
        // deletion asks (src/dns/mx-watch.ts). Plain columns, no dialect-specific type.
        await db.schema
          .createTable('mx_watch')
          .addColumn('domain', 'text', (c) => c.notNull())
          .addColumn('target_mx', 'text', (c) => c.notNull())
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('switched_seen_at', bigint)
          .addColumn('checked_at', bigint, (c) => c.notNull())
          .addColumn('ttl', bigint)
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addPrimaryKeyConstraint('mx_watch_pk', ['domain', 'target_mx'])
          .execute();
      },
    },
    '0008_mx_watch_resolver': {
      async up(db: Kysely<unknown>) {
        // The resolver a check asked (`--server`; null: the system's), so `serve` can check
        // again the same way on its own (src/dns/mx-watcher.ts).
        await db.schema.alterTable('mx_watch').addColumn('resolver', 'text').execute();
      },
    },
    '0009_progress_already': {
      async up(db: Kysely<unknown>) {
        // Live: messages a running sync found on the target already and linked instead of
        // copying (a mailbox migrated again), so the page does not read "copying 0 of …".
        await db.schema.alterTable('batch_mailbox').addColumn('progress_already', bigint, (c) => c.notNull().defaultTo(0)).execute();
      },
    },
    '0010_batch_tasks': {
      async up(db: Kysely<unknown>) {
        // Check logins and verify started from the web page run in the background of one
        // `serve`: claimed here (an expiry kept fresh while they run), so a second `serve` does
        // not start them again and every page shows their state (src/batch/background-task.ts).
        await db.schema.alterTable('batch').addColumn('login_check_until', bigint).execute();
        await db.schema.alterTable('batch').addColumn('login_check_json', 'text').execute();
        await db.schema.alterTable('batch').addColumn('verify_until', bigint).execute();
      },
    },
    '0011_folder_target_uidnext': {
      async up(db: Kysely<unknown>) {
        // The target folder's UIDNEXT when the last pass began: target messages at or above it
        // that the journal does not claim came from elsewhere since (another journal of the
        // same mailbox: another database, another host spelling), and are offered to the
        // messages about to be copied (sync/existing-copies.ts). Null: not recorded yet.
        await db.schema.alterTable('folder').addColumn('target_uidnext', bigint).execute();
      },
    },
  };
}

export function migrationProvider(dialect: Dialect): MigrationProvider {
  return { getMigrations: async () => migrations(dialect) };
}
