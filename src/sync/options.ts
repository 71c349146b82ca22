/** What one mailbox sync needs to know, and what it reports at the end. */
import type { ImapFlow } from 'imapflow';
import type { Logger } from 'pino';
import type { ImapEndpoint, ImapLogin } from '../imap/endpoint.js';
import type { SyncProgress } from './progress.js';

export const DEFAULT_MAX_MESSAGE_SIZE = 35 * 1024 * 1024;
/** Message bytes held at once across all lanes; with the process itself (~65 MB) this keeps one mailbox under 150 MB. */
export const DEFAULT_MEMORY_BUDGET = 16 * 1024 * 1024;
/** Largest batch of messages fetched with one UID FETCH. */
export const DEFAULT_CHUNK_BYTES = 2 * 1024 * 1024;

export interface MailboxSide {
  endpoint: ImapEndpoint;
  login: ImapLogin;
  /**
   * Whose mailbox this is, when the login name does not say it plainly (admin logins):
   * the journal is keyed by it, so switching between `user*admin` over LOGIN and SASL
   * PLAIN with authzid does not look like a new mailbox and copy everything again.
   */
  mailboxUser?: string;
}

export interface SyncOptions {
  source: MailboxSide & { userRoot?: string };
  target: MailboxSide;
  exclude?: readonly string[];
  include?: readonly string[];
  /** Messages larger than this are skipped and listed (default 35 MB). */
  maxMessageSize?: number;
  /** Parallel copy lanes, each one source and one target connection (default 4). */
  connections?: number;
  /** Message bytes held in memory at once across all lanes (default 16 MiB). */
  memoryBudget?: number;
  /** Largest batch of messages fetched from the source with one command (default 2 MiB). */
  chunkBytes?: number;
  /** Attempts in a row that copy nothing before the run gives up on a lost connection (default 6). */
  maxAttempts?: number;
  /** Close a connection whose command makes no progress for this long (default 120 s). */
  stallMs?: number;
  /**
   * Only messages received at or after this instant (ms since the epoch) are in scope
   * (SPEC §4, a batch's `--received-after`): "received" is the INTERNALDATE, the arrival
   * date the source server keeps (RFC 3501 §2.3.3), not the Date header the sender wrote.
   * Older messages are not copied, not counted in `found`, and not skipped or failed: they
   * are simply outside the migration. The watermark still moves past them, so later runs do
   * not list them again; a later run with an earlier cut-off, or none, sees from the
   * folder's recorded cut-off (`folder.covered_from`) that they were passed over and lists
   * the folder again from its first UID.
   */
  receivedAfter?: number;
  /** Plan only: list what would be copied, change nothing. */
  dryRun?: boolean;
  /**
   * An authenticated session of `source`'s login (the one the login check used,
   * auth/resolve.ts `keepSession`): the first attempt uses it instead of logging in again.
   * The sync logs it out.
   */
  sourceSession?: ImapFlow;
  logger: Logger;
  onProgress?: (p: Readonly<SyncProgress>) => void;
  signal?: AbortSignal;
  /**
   * A worker's lease fence (worker.ts): false once the mailbox may belong to another
   * worker. Asked before journaling messages to send and before any APPEND byte is written
   * (raw-connection.ts), so a paused worker that resumes after a takeover copies nothing
   * the new holder cannot know of. The CLI's `sync` has none.
   */
  mayWrite?: () => boolean;
}

export interface SkippedItem {
  folder: string;
  uid: number;
  date: string;
  subject: string;
  size: number;
  reason: string;
  /** Set for a message the source would not give (counted as failed, not skipped). */
  failed?: true;
}

export interface FolderSummary {
  source: string;
  target: string;
  found: number;
}

export interface SyncSummary {
  folders: number;
  /**
   * Messages in scope in the migrated source folders: all of them (LIST-STATUS MESSAGES),
   * or with `receivedAfter` those the journal knows at or after the cut-off (see
   * mailbox-sync.ts, `inScopeCounts`).
   */
  found: number;
  /** Copied by this run. */
  copied: number;
  /**
   * Found on the target already by this run, byte for byte, and linked instead of copied:
   * copies this journal does not know of (existing-copies.ts), or made under a source
   * folder's earlier UIDVALIDITY.
   */
  alreadyOnTarget: number;
  /** Messages not on the target on purpose: too large or refused by the target (all runs). */
  skipped: number;
  /** Messages that could not be copied for another reason (e.g. unreadable on the source). */
  failed: number;
  /** Bytes copied by this run. */
  bytes: number;
  /** Flag changes applied to existing target messages by this run. */
  flagsUpdated: number;
  seconds: number;
  /** Peak resident memory of this process, MB (for the benchmark's memory goal). */
  peakRssMb: number;
  reconnects: number;
  /** Messages copied or updated by this run without some of their keywords (SyncProgress). */
  withoutSomeKeywords: number;
  skippedItems: SkippedItem[];
  folderList: FolderSummary[];
  /**
   * Folders this run could not migrate at all: the source refused to open or list one
   * (broken on disk), or the target refused to create it (a name it does not allow). The
   * others are migrated; the run ends "incomplete" (exit 1) and the next run tries again.
   */
  failedFolders: { folder: string; reason: string }[];
  dryRun: boolean;
  /** With dryRun: how many messages a real run would copy. */
  toCopy?: number;
}
