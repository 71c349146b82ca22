/**
 * The state database, as Kysely sees it. Both dialects (SQLite, PostgreSQL) store the same
 * tables; 64-bit integers come back as JS numbers (IMAP UIDs and UIDVALIDITYs are 32-bit,
 * RFC 3501 §2.3.1.1), and MODSEQs (up to 63 bits, RFC 7162 §3.1.1) are kept as text.
 */
import type { ColumnType, Generated, Insertable, Selectable } from 'kysely';
import type { Digest } from '../sync/content-digest.js';

/** One source mailbox paired with one target mailbox: the unit `mailferry sync` works on. */
export interface MailboxPairTable {
  id: Generated<number>;
  /** `imap://user@host:port[/userRoot]` of the source: identifies the pair with target_key. */
  source_key: string;
  target_key: string;
  created_at: ColumnType<number, number, never>;
}

/** One source folder and where it goes on the target. */
export interface FolderTable {
  id: Generated<number>;
  pair_id: number;
  /** Source folder path in UTF-8 with the source's hierarchy separator. */
  source_path: string;
  /** Target folder path in UTF-8 with the target's hierarchy separator. */
  target_path: string;
  /** UIDVALIDITY of the source folder the message rows' source_uid values belong to. */
  source_uidvalidity: number | null;
  /** Every source UID below this has been handled (copied or recorded as skipped). */
  synced_uidnext: number;
  /** HIGHESTMODSEQ seen at the start of the last complete pass (RFC 7162), or null. */
  source_highestmodseq: string | null;
  /** MESSAGES count seen at the start of the last complete pass. */
  source_messages: number | null;
  /** UIDVALIDITY of the target folder the message rows' target_uid values belong to. */
  target_uidvalidity: number | null;
  last_synced_at: number | null;
  /**
   * The `receivedAfter` cut-off (ms) the watermark was reached under: below synced_uidnext,
   * every message received at or after it was handled; older ones may have been passed
   * over. Null: every message. A later run with an earlier cut-off, or none, rescans.
   */
  covered_from: ColumnType<number | null, number | null | undefined, number | null>;
  /** The target folder's UIDNEXT when the last complete pass began (migration 0011); null before. */
  target_uidnext: ColumnType<number | null, number | null | undefined, number | null>;
}

/**
 * The journal state of one source message:
 * - `pending`: about to be (or being) appended; `uid_floor` is a lower bound of the UID the
 *   target will give it, so crash recovery only inspects target UIDs >= uid_floor;
 * - `copied`: on the target (target_uid known when the server offers UIDPLUS);
 * - `skipped`: not on the target, with `skip_kind` and `reason`: too large (by policy),
 *   refused by the target, or unreadable on the source; the last two are retried each run;
 * - `orphan`: copied under a source UIDVALIDITY that has since changed (RFC 3501 §2.3.1.1);
 *   source_uid is negated so it cannot collide with the new UIDs, and the row waits to be
 *   adopted by the same content under its new UID instead of being copied twice.
 */
export type MessageState = 'pending' | 'copied' | 'skipped' | 'orphan';
export type SkipKind = 'too-large' | 'refused' | 'unreadable';

export interface MessageTable {
  folder_id: number;
  source_uid: number;
  state: MessageState;
  size: number;
  /** Internal date, ms since the epoch. */
  internal_date: number;
  /**
   * Content digest of the raw message (sync/content-digest.ts). Null for messages skipped
   * before download, and for a streamed message's pending row until its last byte was read
   * (sync/copy-lanes.ts readLarge): such a row cannot be on the target.
   */
  digest: Digest | null;
  /**
   * Source flags last applied to the target, space-separated and sorted; or, while a change
   * is in flight, `%before%after` (sync/flags.ts uncertainFlags: the target's flags are
   * then read again by the next run).
   */
  flags: string;
  target_uid: number | null;
  uid_floor: number | null;
  skip_kind: SkipKind | null;
  reason: string | null;
  subject: string | null;
}

/** `source`: a migration endpoint (SPEC §3); `target`: where mailboxes go, with its admin login. */
export type EndpointRole = 'source' | 'target';

export interface EndpointTable {
  id: Generated<number>;
  role: EndpointRole;
  name: string;
  host: string;
  port: number;
  tls: 'implicit' | 'starttls' | 'none';
  auth: 'plain' | 'login';
  /** 0 or 1 (portable boolean). */
  accept_untrusted_cert: number;
  max_concurrent_migrations: number;
  max_concurrent_incremental_syncs: number;
  /** Target only: the admin (master) login, and how it acts as each user. */
  admin_user: string | null;
  impersonation: 'sasl' | 'separator' | null;
  separator: string | null;
  /** AES-256-GCM ciphertext (src/secrets); never the password itself. */
  password_enc: string | null;
  created_at: ColumnType<number, number, never>;
}

/**
 * What the admin last asked of a batch (SPEC §4). The status shown (`BatchStatus`) is
 * derived from this and the mailboxes' statuses (src/batch/status.ts), never stored, so it
 * cannot disagree with them:
 * - `Created`: not started yet (by hand, or automatically at `start_at`);
 * - `Running`: started; shown as Syncing / Synced / SyncedWithErrors;
 * - `Stopped`: stopped by the admin; workers abandon its syncs at their next heartbeat;
 * - `Removing`: being deleted; workers abandon its syncs, and rows go as leases end.
 */
export type BatchState = 'Created' | 'Running' | 'Stopped' | 'Removing';

/**
 * One mailbox's status (SPEC §4):
 * - `Queued`: its initial sync has not finished and no worker holds it (due at next_sync_at);
 * - `Syncing`: a worker holds it for its initial sync (or held it and crashed: the lease
 *   then expires and another worker resumes it);
 * - `Synced`: the last sync succeeded; the next one is due at next_sync_at;
 * - `IncrementalSyncing`: a worker holds it for an incremental sync;
 * - `Failed`: the last sync failed (last_error); retried at next_sync_at, after a backoff;
 * - `Stopped`: its batch is stopped.
 */
export type MailboxStatus = 'Queued' | 'Syncing' | 'Synced' | 'IncrementalSyncing' | 'Failed' | 'Stopped';

/** An initial sync copies a whole mailbox; an incremental one what changed since. Endpoint limits differ by kind. */
export type SyncKind = 'initial' | 'incremental';

/** A migration batch: one CSV, one source endpoint, one target, options (SPEC §4). */
export interface BatchTable {
  id: Generated<number>;
  /** Letters, digits, '-', '_'; at most 64; unique. */
  name: string;
  endpoint_id: number;
  target_id: number;
  state: BatchState;
  /** JSON array of folder names to leave out. */
  exclude_json: string;
  /** JSON array of the only folders to migrate (aliases like #Inbox# allowed), or null for all. */
  include_json: string | null;
  /** JSON array of extra report recipients (the admin always gets reports). */
  notify_json: string;
  /** Only messages received after this (ms since the epoch), or null. */
  received_after: number | null;
  /** More skipped/failed messages than this turn a mailbox Failed; null: never. */
  bad_item_limit: number | null;
  /** While Created: start automatically at this time (ms); --autostart starts at once instead. */
  start_at: number | null;
  created_at: ColumnType<number, number, never>;
  /** When it was first started. */
  started_at: number | null;
  /** When every mailbox had first finished its initial sync (or failed it): the 72-hour clock starts here. */
  initial_synced_at: number | null;
  /** When an incremental sync of one of its mailboxes last succeeded. */
  last_incremental_at: number | null;
  stopped_at: number | null;
  /** When the report of the initial sync went out (SPEC §6); null until then. */
  initial_report_at: number | null;
  /** When the last report went out: the next daily report covers the syncs since. */
  last_report_at: number | null;
  /**
   * A sender holds the due report until then (a crashed sender's claim expires and another
   * one sends it); after a failed attempt, the wait before the next one.
   */
  report_claim_until: number | null;
  /** Why the last report could not be sent (never a password); cleared once one goes out. */
  report_error: string | null;
  /** Failed attempts in a row, for the retry backoff. */
  report_failures: number;
  /** A check-logins run's claim (ms; null: none running) and its last state (src/batch/background-task.ts). */
  login_check_until: number | null;
  login_check_json: string | null;
  /** A background verify's claim (ms; null: none running). */
  verify_until: number | null;
}

/** One CSV row of a batch: a source mailbox, its target address, and its sync state. */
export interface BatchMailboxTable {
  id: Generated<number>;
  batch_id: number;
  /** The CSV line the row came from. */
  line: number;
  /** The target mailbox and its login there (through the target's admin credential). */
  email_address: string;
  /** email_address as csv/address.ts addressKey makes it (lower case; NFC local part and ASCII (xn--) domain for non-ASCII addresses); unique across all batches (no mailbox in two batches at once). Rows stored before hold the plain lower case. */
  email_key: string;
  /** The source login, or a SPEC §2 admin-credential string. */
  user_name: string;
  /** AES-256-GCM ciphertext (src/secrets) of the CSV password; never the password itself. */
  password_enc: string;
  user_root: string | null;
  status: MailboxStatus;
  /** The journal's mailbox_pair, once a sync created it: copied/bytes are counted from there. */
  pair_id: number | null;
  folders: number;
  found: number;
  /** Messages on the target from this mailbox (the journal's count, all runs). */
  copied: number;
  skipped: number;
  failed: number;
  /** Bytes of the copied messages. */
  bytes: number;
  /** Time spent syncing, all runs (for throughput). */
  sync_ms: number;
  /** Duration of the last finished run. */
  last_duration_ms: number | null;
  /** JSON array of SkippedItem (src/sync/options.ts), capped; null until a sync finished. */
  skipped_items_json: string | null;
  /** When its first sync succeeded; null while the initial sync is still to do. */
  initial_synced_at: number | null;
  /** When its last sync succeeded. */
  last_sync_at: number | null;
  /** When a worker should take it next (ms); null while its batch is Created. A failure's backoff is expressed here. */
  next_sync_at: number | null;
  /** `sync-now`: due at once, whatever next_sync_at says (cleared when a worker claims it). 0 or 1. */
  sync_requested: number;
  /** Why the last sync failed (never a password); cleared by a success. */
  last_error: string | null;
  /** Consecutive failures, for the backoff. */
  attempts: number;
  /** The lease: which worker holds the mailbox, since when, until when, for which kind of sync. All null or all set. */
  lease_owner: string | null;
  lease_kind: SyncKind | null;
  lease_started_at: number | null;
  lease_expires_at: number | null;
  /** Live progress of the run holding the lease, written with each heartbeat. */
  progress_phase: string | null;
  progress_copied: number;
  progress_to_copy: number;
  progress_bytes: number;
  progress_to_copy_bytes: number;
  /** Messages the running sync found on the target already (linked, not copied). */
  progress_already: number;
  progress_at: number | null;
  /** The last `batch verify` of this mailbox: when, whether every source message was on the target, how many were not. */
  verified_at: number | null;
  verify_in_sync: number | null;
  verify_missing: number | null;
  /** JSON array of that verification's per-folder counts (FolderCounts in src/batch/verify.ts). */
  verify_json: string | null;
}

/**
 * How a run ended: `synced`, `failed`, `stopped` (batch stopped or deleted), `interrupted`
 * (the worker shut down), `abandoned` (the worker vanished; closed by the next claimer).
 */
export type RunOutcome = 'synced' | 'failed' | 'stopped' | 'interrupted' | 'abandoned';

/** One sync of one mailbox by one worker: the history behind reports and overlap checks. */
export interface SyncRunTable {
  id: Generated<number>;
  batch_id: number;
  mailbox_id: number;
  owner: string;
  kind: SyncKind;
  started_at: number;
  /** Null while running. */
  ended_at: number | null;
  outcome: RunOutcome | null;
  copied: number;
  bytes: number;
  error: string | null;
}

export interface Database {
  endpoint: EndpointTable;
  mailbox_pair: MailboxPairTable;
  folder: FolderTable;
  message: MessageTable;
  batch: BatchTable;
  batch_mailbox: BatchMailboxTable;
  sync_run: SyncRunTable;
  content_key: ContentKeyTable;
  mx_watch: MxWatchTable;
}

/**
 * What `dns check DOMAIN --target-mx HOST` last saw (SPEC §7), one row per domain and
 * target (src/dns/mx-watch.ts). Batch deletion reads it for its mailboxes' domains.
 */
export interface MxWatchTable {
  /** ASCII (xn--), lower case, no trailing dot. */
  domain: string;
  /** The target as given: a host name (lower case, no trailing dot) or an IP address. */
  target_mx: string;
  /** At the last check: `all` MX records point at the target, `some`, or `none` (src/dns/mx-verdict.ts SwitchState). */
  state: 'all' | 'some' | 'none';
  /**
   * When a check first saw every MX point at the target (ms), kept while later checks see
   * the same; null when the last check did not (a move back forgets it). The switch
   * happened at or before this: the 72 hours are counted from here.
   */
  switched_seen_at: number | null;
  checked_at: number;
  /** The TTL the last check reported (configured or cached), or null. */
  ttl: number | null;
  /** The resolver the last check asked (`IP[:PORT]`), or null for the system's. */
  resolver: string | null;
  created_at: ColumnType<number, number, never>;
}

/**
 * The journal's one secret for content digests (sync/content-digest.ts), made at random
 * by migration 0006. Not encrypted: it only keeps mail senders from crafting look-alike
 * digests, and whoever reads the database reads the journal it protects anyway.
 */
export interface ContentKeyTable {
  /** Always 1: one key per database. */
  id: number;
  /** 32 bytes, base64. */
  key: string;
}

export type FolderRow = Selectable<FolderTable>;
export type EndpointRow = Selectable<EndpointTable>;
export type NewEndpointRow = Insertable<EndpointTable>;
export type MessageRow = Selectable<MessageTable>;
export type NewMessageRow = Insertable<MessageTable>;
export type BatchRow = Selectable<BatchTable>;
export type BatchMailboxRow = Selectable<BatchMailboxTable>;
export type NewBatchMailboxRow = Insertable<BatchMailboxTable>;
export type SyncRunRow = Selectable<SyncRunTable>;
export type MxWatchRow = Selectable<MxWatchTable>;
