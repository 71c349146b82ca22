/**
 * The state database, as Kysely sees it. Both dialects (SQLite, PostgreSQL) store the same
 * tables; 64-bit integers come back as JS numbers (IMAP UIDs and UIDVALIDITYs are 32-bit,
 * RFC 3501 §2.3.1.1), and MODSEQs (up to 63 bits, RFC 7162 §3.1.1) are kept as text.
 */
import type { ColumnType, Generated, Insertable, Selectable } from 'kysely';

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
  /** SHA-256 (hex) of the raw message; null only for messages skipped before download. */
  sha256: string | null;
  /** Source flags last applied to the target, space-separated and sorted. */
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

export interface Database {
  endpoint: EndpointTable;
  mailbox_pair: MailboxPairTable;
  folder: FolderTable;
  message: MessageTable;
}

export type FolderRow = Selectable<FolderTable>;
export type EndpointRow = Selectable<EndpointTable>;
export type NewEndpointRow = Insertable<EndpointTable>;
export type MessageRow = Selectable<MessageTable>;
export type NewMessageRow = Insertable<MessageTable>;
