/** One selectable source folder's work in a run, from scan to finish. */
import type { FolderRow, MessageRow } from '../store/schema.js';
import type { Digest } from './content-digest.js';
import type { FolderMapping } from './folder-map.js';
import type { TargetFolder } from './target-folder.js';

export interface MessageMeta {
  uid: number;
  /** RFC822.SIZE as the source listed it (Exchange's is an estimate: may-be-copies.ts). */
  size: number;
  /** INTERNALDATE in ms, 0 when the source sent none. */
  internalDate: number;
}

/** The source folder as SELECTed (EXAMINE) at scan time: what the next run compares with. */
export interface SourceSnapshot {
  uidValidity: number;
  uidNext: number;
  messages: number;
  highestModseq: string | null;
}

export interface FlagChange {
  sourceUid: number;
  /** null: copied without an APPENDUID (target without UIDPLUS); flag-sync.ts finds it by content. */
  targetUid: number | null;
  before: string;
  after: string;
}

export interface FolderWork {
  row: FolderRow;
  mapping: FolderMapping;
  target: TargetFolder;
  snapshot?: SourceSnapshot;
  /** UIDNEXT from the folder listing's STATUS, for servers whose SELECT/EXAMINE leaves it out (scan.ts). */
  listedUidNext?: number;
  toCopy: MessageMeta[];
  flagChanges: FlagChange[];
  /**
   * Copies a new message with the same content is linked to instead of copied, by
   * digest: rows copied under an earlier source UIDVALIDITY (state `orphan`), and rows of
   * messages expunged from the source since they were copied (state `copied`; scan.ts).
   */
  orphans: Map<Digest, MessageRow[]>;
  /**
   * The same orphans by the loose digest of their target copies, for a source whose bytes
   * change under its messages (loose-orphans.ts); `adopted` keeps one orphan from being
   * linked through both maps.
   */
  looseOrphans?: { byLoose: Map<string, MessageRow[]>; adopted: Set<MessageRow> };
  /**
   * Target messages no journal row claims, offered the same way (existing-copies.ts;
   * `source_uid` 0, no row behind them); shared by the source folders copied into one
   * target folder, so one copy is linked once.
   */
  existing?: Map<Digest, MessageRow[]>;
  /** Source UIDs of copied messages the scan found expunged from the source (scan.ts handleExpunged). */
  expunged?: number[];
}
