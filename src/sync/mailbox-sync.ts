/**
 * Syncs one mailbox, source to target: the first run copies everything, later runs copy
 * what is new and mirror flag changes. Messages deleted on the source stay on the target.
 *
 * A run is a sequence of attempts. An attempt lists both servers, reconciles the journal
 * with the target (recovery.ts), scans changed source folders (scan.ts), copies
 * (copy-lanes.ts) and mirrors flags (flag-sync.ts). When a connection drops, the attempt
 * is abandoned and a new one starts after a backoff: the journal makes that safe.
 *
 * A folder whose LIST-STATUS (RFC 5819) answer matches what the last run recorded
 * (UIDVALIDITY, UIDNEXT, MESSAGES and, with CONDSTORE, HIGHESTMODSEQ) is not even opened:
 * a sync of an unchanged mailbox costs two logins and two LIST commands. A `receivedAfter`
 * cut-off keeps that: `found` then comes from the journal, not from the servers.
 */
import { readFileSync } from 'node:fs';
import type { ImapFlow, ListResponse } from 'imapflow';
import type { Kysely } from 'kysely';
import { type ImapLogin } from '../imap/endpoint.js';
import { ImapConnectError, isImapRefusal, isRetryable, saysNonexistent } from '../imap/errors.js';
import { openSession, withWatchdog } from '../imap/imapflow-session.js';
import { type CreatedFolders, type FolderToCreate, createFolders } from '../imap/create-folders.js';
import { RawFetchCommandError, RawFetcher } from '../imap/raw-fetch.js';
import { ensureFolders, ensurePair, establishedTargets, findPair, listFolders, updateFolder } from '../store/journal.js';
import type { Store } from '../store/open.js';
import type { Database, FolderRow, MessageRow, MessageState } from '../store/schema.js';
import { ByteBudget } from './byte-budget.js';
import { MemoryReclaimer } from './reclaim.js';
import { type IdleTask, JobQueue, planJobs, runCopyLanes } from './copy-lanes.js';
import { RunMemory } from './run-memory.js';
import { applyFlagChanges } from './flag-sync.js';
import { type FolderMapping, mapFolders, NothingSelectedError, patternsMatchingNothing, type ServerFolder, type ServerView } from './folder-map.js';
import type { FolderWork } from './folder-work.js';
import { DEFAULT_CHUNK_BYTES, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MEMORY_BUDGET, type MailboxSide, type SyncOptions, type SyncSummary } from './options.js';
import { emptyProgress, type SyncProgress } from './progress.js';
import { looseDigest } from './changed-copies.js';
import { ExistingCopies } from './existing-copies.js';
import { contentHasher } from '../store/content-key.js';
import { reconcileTargetFolder } from './recovery.js';
import { applyRenames, findRenames, type FolderRename, renamedListing } from './renamed-folders.js';
import { listMailboxFolders, serverView, useFullNames } from './server-view.js';
import { FolderUnreadableError, UNREADABLE_REASON } from './read-around-drops.js';
import { looseOrphanCopies, servesMboxFields } from './loose-orphans.js';
import { followTargetRenames } from './target-renames.js';
import { countNewInScope, isRetryable as isRetryableSkip, offerExpunged, offerOrphans, rowInScope, scanFolder } from './scan.js';
import { TargetFolder } from './target-folder.js';
import { chunkBySize } from './size-chunks.js';
import { oneAtATime } from './one-at-a-time.js';
import { uidSet } from './uid-set.js';

/** The mailbox a login lands in: the impersonated user, not the admin who logs in. */
function mailboxUser(login: ImapLogin): string {
  return login.method === 'login' ? login.username : (login.authzid ?? login.authcid);
}

/** The folder mappings the journal holds for this mailbox pair (establishedTargets), for verify to compare where sync copies; none for a pair never synced. */
export async function journalMappings(db: Kysely<Database>, sides: Pick<SyncOptions, 'source' | 'target'>): Promise<Map<string, string> | undefined> {
  const { sourceKey, targetKey } = pairKeys(sides);
  const pairId = await findPair(db, sourceKey, targetKey);
  return pairId === undefined ? undefined : establishedTargets(db, pairId);
}

export function pairKeys(opts: Pick<SyncOptions, 'source' | 'target'>): { sourceKey: string; targetKey: string } {
  const key = (side: { endpoint: { host: string; port: number }; login: ImapLogin; mailboxUser?: string }) =>
    `imap://${encodeURIComponent(side.mailboxUser ?? mailboxUser(side.login))}@${side.endpoint.host.toLowerCase()}:${side.endpoint.port}`;
  return {
    sourceKey: key(opts.source) + (opts.source.userRoot ? `#${opts.source.userRoot}` : ''),
    targetKey: key(opts.target),
  };
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const onAbort = () => (clearTimeout(t), resolve());
    // The listener goes when the timer fires: a run retrying many times added one per wait.
    const t = setTimeout(() => (signal?.removeEventListener('abort', onAbort), resolve()), ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });

/** What LIST-STATUS told of a source folder; empty when the server did not say. */
type FolderStatus = Partial<Pick<NonNullable<ListResponse['status']>, 'messages' | 'uidNext' | 'uidValidity' | 'highestModseq'>>;

interface AttemptResult {
  mappings: FolderMapping[];
  /** Messages in scope per source folder: LIST-STATUS MESSAGES, or inScopeCounts with a cut-off. */
  counts: Map<string, number>;
  found: number;
  flagsUpdated: number;
  dryRunToCopy: number;
  /** Source folder -> why it could not be migrated (the source or the target refused it). */
  failedFolders: ReadonlyMap<string, string>;
}

/** The largest folder (by STATUS MESSAGES) a copy lane scans when it has nothing to copy. */
const LANE_SCAN_MAX = 5000;
/** Why a folder is failed whose every reading lost the source connection. */
const FOLDER_DROPS = 'the source closed the connection each time this folder was read';
/** Why a folder is failed when the source refused the sessions it is read around drops on. */
const REFUSED_SESSION = 'it loses the connection when read whole, and the source refused another session to read it a few messages at a time';

/** The journal pair of each run that failed once its pair was known, by its error. */
const failedPairs = new WeakMap<object, number>();

/**
 * The journal pair of the run `err` ended, or null: what a failed run copied before it
 * failed (a mailbox over its quota, a folder the source cannot read…) is in the journal,
 * and the batch's counts must show it.
 */
export function pairOfFailedRun(err: unknown): number | null {
  // Callers wrap the run's error (worker/mailbox-sides.ts scrubs secrets into a new one,
  // keeping the original as its cause).
  for (let e = err, depth = 0; typeof e === 'object' && e !== null && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    const pair = failedPairs.get(e);
    if (pair !== undefined) return pair;
  }
  return null;
}

export async function syncMailbox(store: Store, opts: SyncOptions): Promise<SyncSummary> {
  const started = Date.now();
  const progress = emptyProgress();
  const emit = () => opts.onProgress?.(progress);
  const { sourceKey, targetKey } = pairKeys(opts);
  const db = store.db;
  // The login check's session goes to the first attempt only (a later attempt after a lost
  // connection logs in anew); whatever happens, it is logged out (by the attempt, or below).
  let handedOver = opts.sourceSession;
  let pairId: number | undefined;
  try {
    pairId = opts.dryRun ? await findPair(db, sourceKey, targetKey) : await ensurePair(db, sourceKey, targetKey);
    const maxAttempts = opts.maxAttempts ?? 6;
    let result: AttemptResult | undefined;
    // Failed attempts in a row that copied nothing. Counting every failure of the run instead
    // made a long migration over a flaky link give up after its sixth drop even though each
    // attempt got further; a server that stays unreachable still ends the run.
    let failures = 0;
    const memory = new RunMemory();
    for (let attempt = 1; ; attempt++) {
      const copiedBefore = progress.copied;
      const lessonsBefore = memory.scanLessons;
      const session = handedOver;
      handedOver = undefined;
      try {
        result = await runAttempt(db, pairId, opts, progress, emit, memory, session);
        break;
      } catch (err) {
        const firstContact = attempt === 1 && progress.phase === 'connecting';
        if (firstContact && err instanceof ImapConnectError) throw err;
        if (!isRetryable(err) && !(err instanceof ImapConnectError)) throw err;
        failures = progress.copied > copiedBefore || memory.scanLessons > lessonsBefore ? 1 : failures + 1;
        if (failures >= maxAttempts || opts.signal?.aborted) throw err;
        progress.reconnects++;
        const wait = Math.min(30_000, 500 * 2 ** (failures - 1));
        opts.logger.warn({ err: (err as Error).message, attempt, retryInMs: wait }, 'connection lost; resuming');
        emit();
        await sleep(wait, opts.signal);
      }
    }
    progress.phase = 'done';
    emit();
    return await summarize(db, pairId, opts, result!, progress, started);
  } catch (err) {
    if (pairId !== undefined && typeof err === 'object' && err !== null) failedPairs.set(err, pairId);
    throw err;
  } finally {
    const unused = handedOver;
    if (unused) await unused.logout().catch(() => unused.close());
  }
}

async function summarize(db: Kysely<Database>, pairId: number | undefined, opts: SyncOptions, r: AttemptResult, progress: SyncProgress, started: number): Promise<SyncSummary> {
  const folderIds = new Map<number, string>();
  if (pairId !== undefined) {
    const rows = await listFolders(db, pairId);
    const wanted = new Set(r.mappings.map((m) => m.sourcePath));
    for (const f of rows) if (wanted.has(f.source_path)) folderIds.set(f.id, f.source_path);
  }
  // Skipped rows older than the cut-off (from a run without it) are outside the migration.
  const skippedRows = (
    folderIds.size
      ? await db.selectFrom('message').selectAll().where('folder_id', 'in', [...folderIds.keys()]).where('state', '=', 'skipped').orderBy('folder_id').orderBy('source_uid').execute()
      : []
  ).filter((row) => rowInScope(row, opts.receivedAfter));
  return {
    folders: r.mappings.length,
    found: r.found,
    copied: opts.dryRun ? 0 : progress.copied,
    alreadyOnTarget: progress.alreadyOnTarget,
    skipped: skippedRows.filter((s) => s.skip_kind !== 'unreadable').length,
    // The messages of folders that could not be migrated are failed too (as far as the
    // source said how many: one it cannot open does not).
    failed: skippedRows.filter((s) => s.skip_kind === 'unreadable').length + [...r.failedFolders.keys()].reduce((n, f) => n + (r.counts.get(f) ?? 0), 0),
    bytes: progress.copiedBytes,
    flagsUpdated: r.flagsUpdated,
    seconds: (Date.now() - started) / 1000,
    peakRssMb: peakRssMb(),
    reconnects: progress.reconnects,
    withoutSomeKeywords: progress.withoutSomeKeywords,
    dryRun: !!opts.dryRun,
    ...(opts.dryRun ? { toCopy: r.dryRunToCopy } : {}),
    skippedItems: skippedRows.map((s) => ({
      folder: folderIds.get(s.folder_id) ?? '',
      uid: s.source_uid,
      date: s.internal_date ? new Date(s.internal_date).toISOString() : '',
      subject: s.subject ?? '',
      size: s.size,
      reason: s.reason ?? '',
      ...(s.skip_kind === 'unreadable' ? { failed: true as const } : {}),
    })),
    folderList: r.mappings.map((m) => ({ source: m.sourcePath, target: m.targetPath, found: r.counts.get(m.sourcePath) ?? 0 })),
    // In the folders' order, not the order their scans ended in (lanes scan side by side).
    failedFolders: r.mappings.filter((m) => r.failedFolders.has(m.sourcePath)).map((m) => ({ folder: m.sourcePath, reason: r.failedFolders.get(m.sourcePath)! })),
  };
}

/**
 * Creates the target folders the mappings need and the target lacks, parents first (not
 * every server creates intermediate levels itself), pipelined (imap/create-folders.ts),
 * and returns their STATUS. Intermediate levels, and source folders that hold no mail
 * (\Noselect), are created as containers: an mbox-format target can then hold their
 * subfolders.
 */
function createMissingFolders(target: MailboxSide, mappings: FolderMapping[], tgtView: ServerView, stallMs: number): Promise<CreatedFolders> {
  const name = (f: ServerFolder) => (f.path.toUpperCase() === 'INBOX' ? 'INBOX' : f.path);
  const existing = new Set(tgtView.folders.filter((f) => !f.flags.has('\\NonExistent')).map(name));
  // A target folder listed as \Noselect (RFC 3501 §7.2.2: a parent whose own mailbox was
  // deleted, or that the server made for a child) cannot hold messages: a folder to copy
  // into is created there all the same, which Dovecot and Courier allow.
  const holdsMail = new Set(tgtView.folders.filter((f) => !f.flags.has('\\NonExistent') && !f.flags.has('\\Noselect')).map(name));
  // In order, parents first (a Map keeps the order of first insertion): path → whether
  // messages go in it. A parent also copied into is a mailbox, wherever it came first.
  const wanted = new Map<string, boolean>();
  const d = tgtView.delimiter;
  for (const m of mappings) {
    if (m.selectable ? holdsMail.has(m.targetPath) : existing.has(m.targetPath)) continue;
    const segs = d ? m.targetPath.slice(tgtView.prefix.length).split(d) : [m.targetPath];
    for (let i = 1; i < segs.length; i++) {
      const p = tgtView.prefix + segs.slice(0, i).join(d ?? '');
      if (!existing.has(p) && !wanted.has(p)) wanted.set(p, false);
    }
    wanted.set(m.targetPath, m.selectable || wanted.get(m.targetPath) === true);
  }
  const folders = [...wanted].map(([path, mailbox]): FolderToCreate => (mailbox || !d ? path : { container: path, delimiter: d }));
  return createFolders(target.endpoint, target.login, folders, { idleTimeoutMs: stallMs });
}

/** `handedOver`: the login check's source session (SyncOptions.sourceSession), for the first attempt; logged out like its own. */
async function runAttempt(db: Kysely<Database>, pairId: number | undefined, opts: SyncOptions, progress: SyncProgress, emit: () => void, memory: RunMemory, handedOver?: ImapFlow): Promise<AttemptResult> {
  const log = opts.logger;
  const stallMs = opts.stallMs ?? 120_000;
  const maxMessageSize = opts.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE;
  progress.phase = 'connecting';
  emit();
  // Both sessions at once: each login is a few round trips. The source's failure is the one
  // reported when both fail (it names the mailbox the admin is migrating).
  if (handedOver && !handedOver.usable) handedOver.close();
  const [srcOpen, tgtOpen] = await Promise.allSettled([
    handedOver?.usable ? handedOver : openSession({ endpoint: opts.source.endpoint, login: opts.source.login, logger: log, stallMs, side: 'source' }),
    openSession({ endpoint: opts.target.endpoint, login: opts.target.login, logger: log, stallMs, side: 'target' }),
  ]);
  if (srcOpen.status === 'rejected' || tgtOpen.status === 'rejected') {
    await Promise.allSettled([srcOpen, tgtOpen].map((r) => (r.status === 'fulfilled' ? r.value.logout() : undefined)));
    throw srcOpen.status === 'rejected' ? srcOpen.reason : (tgtOpen as PromiseRejectedResult).reason;
  }
  const src = srcOpen.value;
  if (opts.source.userRoot) useFullNames(src);
  const tgt: ImapFlow = tgtOpen.value;
  // The scan's own source connection (scan.ts), opened when a folder needs scanning: an
  // unchanged mailbox never logs in a third time.
  let lister: RawFetcher | undefined;
  const connectSource = (): Promise<RawFetcher> => RawFetcher.connect({ endpoint: opts.source.endpoint, login: opts.source.login, idleTimeoutMs: stallMs });
  // Settled once `lister` is closed for good: a lane the source turned away tries again then.
  let freeSource!: () => void;
  const sourceFreed = new Promise<void>((resolve) => (freeSource = resolve));
  try {
    progress.phase = 'listing';
    emit();
    const [srcList, tgtListed] = await Promise.all([
      withWatchdog(src, stallMs, 'listing source folders', () => listMailboxFolders(src, { statusQuery: { messages: true, uidNext: true, uidValidity: true, highestModseq: true } }, opts.source.userRoot)),
      withWatchdog(tgt, stallMs, 'listing target folders', () => tgt.list({ statusQuery: { uidNext: true, uidValidity: true } })),
    ]);
    let tgtList = tgtListed;
    const srcView = serverView(src, srcList);
    let tgtView = serverView(tgt, tgtList);
    const mapOptions = { ...(opts.exclude ? { exclude: opts.exclude } : {}), ...(opts.include ? { include: opts.include } : {}), ...(opts.source.userRoot ? { userRoot: opts.source.userRoot } : {}) };
    const established = async () => (pairId === undefined ? undefined : await establishedTargets(db, pairId));
    let mappings = mapFolders(srcView, tgtView, { ...mapOptions, established: await established() });
    const unmatched = patternsMatchingNothing(srcView, mapOptions);
    // An include that selects no folder to copy would migrate nothing and call the mailbox
    // synced (and verify it in sync): a mistyped name must be seen (verify.ts asks the same).
    // One pattern of several matching nothing is normal in a batch (not every user has every folder).
    if (opts.include?.length && !mappings.some((m) => m.selectable)) {
      const names = srcView.folders.filter((f) => !f.flags.has('\\NonExistent') && !f.flags.has('\\Noselect')).map((f) => f.path);
      throw new NothingSelectedError(`nothing to migrate: no folder of this mailbox matches --include ${opts.include.join(', ')} (its folders: ${names.slice(0, 20).join(', ')}${names.length > 20 ? ', …' : ''})`);
    }
    for (const pattern of unmatched) log.warn({ pattern }, `no source folder matches ${opts.exclude?.includes(pattern) ? '--exclude' : '--include'} ${pattern}: it changes nothing for this mailbox`);
    // Before anything is created under the new names (renamed-folders.ts). A dry run only
    // counts renamed folders as the folders they were.
    const renameCtx = pairId === undefined ? undefined : { db, pairId, stallMs, log, target: tgt };
    const renames = renameCtx ? await findRenames(renameCtx, src, srcList, mappings) : [];
    if (renameCtx && !opts.dryRun) {
      const done = renames.length ? await applyRenames(renameCtx, tgt, tgtList, mappings, renames) : [];
      if (done.length) {
        tgtList = renamedListing(tgtList, done, tgtView.delimiter);
        tgtView = serverView(tgt, tgtList);
        mappings = mapFolders(srcView, tgtView, { ...mapOptions, established: await established() });
      }
    }
    if (renameCtx && !opts.dryRun && (await followTargetRenames(renameCtx, tgt, tgtList)).length) {
      mappings = mapFolders(srcView, tgtView, { ...mapOptions, established: await established() });
    }
    warnMerged(mappings, log);
    warnAllMail(srcView, mappings, log);
    // A folder LIST shows but whose STATUS failed is left out of LIST-STATUS's answer
    // (RFC 5819 §2 lets the server send a NO for it instead), or carries the error of the
    // STATUS imapflow sent for it alone: its status is then unknown (`{}`) and the scan
    // opens it, which either works or names the folder and the server's reason.
    const srcStatus = new Map<string, FolderStatus>(srcList.map((f) => [f.path, f.status && !('error' in f.status) ? f.status : {}]));
    // Source folders that could not be migrated in this attempt, with the reason.
    const failedFolders = new Map<string, string>();
    let selectable = mappings.filter((m) => m.selectable);
    progress.foldersTotal = selectable.length;
    const statusCounts = new Map(selectable.map((m) => [m.sourcePath, srcStatus.get(m.sourcePath)?.messages ?? 0]));

    if (opts.dryRun) {
      if (opts.receivedAfter !== undefined) {
        const plan = await dryRunInScope(db, pairId, renames, src, selectable, srcStatus, opts.receivedAfter, stallMs);
        return { mappings, counts: plan.counts, found: sum(plan.counts), flagsUpdated: 0, dryRunToCopy: plan.toCopy, failedFolders };
      }
      return { mappings, counts: statusCounts, found: sum(statusCounts), flagsUpdated: 0, dryRunToCopy: await dryRunCount(db, pairId, renames, selectable, srcStatus), failedFolders };
    }
    const pid = pairId!;
    // Creating thousands of folders takes a while on some servers: said, not shown as 'listing'.
    progress.phase = 'creating';
    emit();
    const { created, refused } = await createMissingFolders(opts.target, mappings, tgtView, stallMs);
    if (refused.size) {
      // One folder the target cannot hold (a name it refuses, too deep a path) is that
      // folder's failure, not the mailbox's: the rest is copied.
      const d = tgtView.delimiter ?? '';
      for (const m of selectable) {
        const [path, reason] = [...refused].find(([p]) => m.targetPath === p || (d !== '' && m.targetPath.startsWith(p + d))) ?? [];
        if (path !== undefined) failedFolders.set(m.sourcePath, `the target refused to create ${path}: ${reason}`);
      }
      selectable = selectable.filter((m) => !failedFolders.has(m.sourcePath));
      progress.foldersTotal = selectable.length;
    }
    const tgtStatus = new Map<string, { uidValidity?: number | bigint; uidNext?: number } | undefined>(tgtList.map((f) => [f.path.toUpperCase() === 'INBOX' ? 'INBOX' : f.path, f.status]));
    for (const [path, st] of created) tgtStatus.set(path, st);
    const targets = new Map<string, TargetFolder>();
    const unusable = new Map<string, string>();
    for (const m of selectable) {
      if (targets.has(m.targetPath) || unusable.has(m.targetPath)) continue;
      let st = tgtStatus.get(m.targetPath) || undefined;
      try {
        if (!st?.uidValidity || !st.uidNext) st = await targetFolderStatus(tgt, m.targetPath, stallMs);
      } catch (err) {
        // A folder the target has only as a container (\Noselect, which an mbox-format
        // server cannot turn into a mailbox) fails its own source folders, not the mailbox.
        if (!isImapRefusal(err)) throw err;
        unusable.set(m.targetPath, `the target folder ${m.targetPath} cannot hold messages: ${err.responseText || err.message}`);
        continue;
      }
      if (!st?.uidValidity) throw new Error(`target folder ${m.targetPath} reports no UIDVALIDITY`);
      targets.set(m.targetPath, new TargetFolder(m.targetPath, Number(st.uidValidity), st.uidNext ?? 1));
    }
    if (unusable.size) {
      for (const m of selectable) if (unusable.has(m.targetPath)) failedFolders.set(m.sourcePath, unusable.get(m.targetPath)!);
      selectable = selectable.filter((m) => !failedFolders.has(m.sourcePath));
      progress.foldersTotal = selectable.length;
    }
    const allRows = await ensureFolders(db, pid, selectable);
    let rows = new Map<string, FolderRow>(selectable.map((m) => [m.sourcePath, allRows.get(m.sourcePath)!]));

    // Pending messages recovery did not find by content, read again from the source for a
    // looser comparison (changed-copies.ts), through the scan's connection.
    const readSource = async (folder: FolderRow, pending: readonly MessageRow[]): Promise<Map<number, string>> => {
      const out = new Map<number, string>();
      lister ??= await connectSource();
      try {
        const mb = await lister.examine(folder.source_path);
        if (folder.source_uidvalidity !== null && mb.uidValidity !== folder.source_uidvalidity) return out;
        for (const rows of chunkBySize(pending, (r) => r.size, 8 * 1024 * 1024)) {
          for (const m of (await lister.fetch(uidSet(rows.map((r) => r.source_uid)))).messages) out.set(m.uid, looseDigest(m.raw));
        }
      } catch (err) {
        // The source cannot give them now: they are copied again, as before.
        if (!(err instanceof RawFetchCommandError)) throw err;
      }
      return out;
    };
    // Recovery: pending rows from an interrupted run, or a target UIDVALIDITY change.
    progress.phase = 'recovering';
    emit();
    const ids = [...rows.values()].map((r) => r.id);
    const pendingFolders = new Set(ids.length ? (await db.selectFrom('message').select('folder_id').distinct().where('folder_id', 'in', ids).where('state', '=', 'pending').execute()).map((r) => r.folder_id) : []);
    let reconciled = false;
    const rowsByTarget = new Map<string, FolderRow[]>();
    for (const r of rows.values()) {
      const group = rowsByTarget.get(r.target_path);
      if (group) group.push(r);
      else rowsByTarget.set(r.target_path, [r]);
    }
    for (const tf of targets.values()) {
      const group = rowsByTarget.get(tf.path) ?? [];
      if (!group.some((r) => pendingFolders.has(r.id) || (r.target_uidvalidity !== null && r.target_uidvalidity !== tf.uidValidity))) continue;
      await withWatchdog(tgt, stallMs, `opening ${tf.path} on the target`, () => tgt.mailboxOpen(tf.path, { readOnly: true }));
      const { recovered } = await reconcileTargetFolder({ db, pairId: pid, target: tgt, targetPath: tf.path, uidValidity: tf.uidValidity, folders: group, stallMs, log, readSource });
      // APPENDs whose answer was lost with the connection are found on the target here; they
      // were copied all the same, so `copied` must count them (else a first run that had a
      // dropped connection reports fewer copied than it put on the target).
      progress.copied += recovered;
      reconciled = true;
    }
    if (reconciled) rows = new Map((await listFolders(db, pid)).map((r) => [r.source_path, r]));

    // Scan what changed.
    progress.phase = 'scanning';
    emit();
    const toRetry = ids.length
      ? (await db.selectFrom('message').select(['folder_id', 'source_uid', 'skip_kind', 'size', 'state', 'internal_date', 'reason']).where('folder_id', 'in', ids).where('state', '=', 'skipped').execute())
          // An out-of-scope skipped message is not retried (scan.ts), so it must not make
          // the folder miss the fast path on every run either.
          .filter((r) => isRetryableSkip(r, maxMessageSize) && rowInScope(r, opts.receivedAfter) && !memory.skippedInThisRun(r.folder_id, r.source_uid))
      : [];
    const retryFolders = new Set(toRetry.map((r) => r.folder_id));
    // A folder an earlier run could only list around messages that drop the connection
    // (read-around-drops.ts) is listed that way again at once, rather than after two
    // attempts lost finding it out anew.
    for (const r of toRetry) if (r.skip_kind === 'unreadable' && r.reason === UNREADABLE_REASON) memory.noteScanDrop(r.folder_id, true);
    // Copy lanes start with the first folder that has something to copy, while the rest
    // is still being scanned; an unchanged mailbox never opens a lane at all.
    const queue = new JobQueue();
    const copyCtx = { db, adoptedRows: new Set<string>(), source: opts.source, target: opts.target, budget: new ByteBudget(opts.memoryBudget ?? DEFAULT_MEMORY_BUDGET), reclaimer: new MemoryReclaimer(opts.memoryBudget ?? DEFAULT_MEMORY_BUDGET), memory, sourceFreed, progress, emit, log, stallMs, ...(opts.signal ? { signal: opts.signal } : {}), ...(opts.mayWrite ? { mayWrite: opts.mayWrite } : {}) };
    let lanes: Promise<void> | null = null;
    let laneFailed = false;
    const startLanes = (): void => {
      if (lanes) return;
      lanes = runCopyLanes(copyCtx, queue, opts.connections ?? 4, () => (laneFailed = true));
      // Awaited after the scan; until then a lane failure must not count as unhandled.
      lanes.catch(() => undefined);
    };
    const works: FolderWork[] = [];
    // Target folders' messages from before this attempt, by target path (existing-copies.ts).
    const existing = new Map<string, ExistingCopies>();
    // Counted afresh by each attempt's scan.
    progress.toCopy = progress.copied;
    progress.toCopyBytes = progress.copiedBytes;
    progress.foldersScanned = 0;
    // Which folders need a look at all; the others are scanned as far as this run goes.
    const toScan: { m: FolderMapping; row: FolderRow; st: FolderStatus; tf: TargetFolder; widened: boolean }[] = [];
    for (const m of selectable) {
      let row = rows.get(m.sourcePath)!;
      const st = srcStatus.get(m.sourcePath)!;
      const tf = targets.get(m.targetPath)!;
      // An earlier run under a later cut-off passed older messages by; this run wants some
      // of them: list the folder from its first UID again (the journal keeps what was
      // copied from being copied twice).
      const widened = row.covered_from !== null && (opts.receivedAfter === undefined || opts.receivedAfter < row.covered_from);
      if (widened) row = { ...row, synced_uidnext: 1 };
      const unchanged =
        !widened &&
        st.uidValidity !== undefined &&
        row.source_uidvalidity === Number(st.uidValidity) &&
        row.synced_uidnext === st.uidNext &&
        row.source_messages === st.messages &&
        st.highestModseq !== undefined &&
        row.source_highestmodseq === st.highestModseq.toString() &&
        row.target_uidvalidity === tf.uidValidity &&
        !retryFolders.has(row.id);
      if (unchanged) progress.foldersScanned++;
      else toScan.push({ m, row, st, tf, widened });
    }
    emit();
    // The imapflow sessions, shared by the folders scanned at once.
    const srcUse = oneAtATime();
    const tgtUse = oneAtATime();
    // Jobs queued by folders scanned alone (below), whose lanes start after them.
    let queuedAlone = false;
    const queueWork = (work: FolderWork, alone: boolean): void => {
      const jobs = planJobs([work], opts.chunkBytes ?? DEFAULT_CHUNK_BYTES, undefined, (f, u) => memory.sourceSuspects.isSuspect(f, u));
      if (jobs.length === 0) return;
      progress.toCopy += jobs.reduce((n, j) => n + j.items.length, 0);
      progress.toCopyBytes += jobs.reduce((n, j) => n + j.items.reduce((b, i) => b + i.size, 0), 0);
      queue.add(jobs);
      // Copying from here on, while the scan of the remaining folders goes on
      // (foldersScanned/foldersTotal tell how far that is).
      progress.phase = 'copying';
      if (alone) queuedAlone = true;
      else startLanes();
    };
    // Source folders copied into one target folder (`Sent` and `Sent Items` into the
    // target's Sent) and scanned in this run: mail the user moved from one to the other has
    // its copy in that target folder already. Each of them is copied once all of them are
    // scanned (scan.ts offerExpunged), not as its own scan ends.
    const merged = new Map<string, { left: number; held: FolderWork[]; scanned: FolderWork[] }>();
    {
      const sharing = new Map<string, number>();
      for (const p of toScan) sharing.set(p.tf.path, (sharing.get(p.tf.path) ?? 0) + 1);
      for (const [path, n] of sharing) if (n > 1) merged.set(path, { left: n, held: [], scanned: [] });
    }
    const scanOne = async ({ m, row, st, tf, widened }: (typeof toScan)[number], fetcher: RawFetcher, alone = false): Promise<void> => {
      // A connection opened for this folder alone (below), closed whatever happens.
      let own: RawFetcher | undefined;
      try {
        // A folder whose scan lost the source connection even when scanned alone is read
        // around the messages that make the source drop it (read-around-drops.ts), on a
        // connection of its own; if even that fails, it is failed, named, so the other
        // folders are copied (the next run tries it again).
        const carefully = memory.scanFailed(row.id);
        if (carefully) {
          try {
            fetcher = await connectSource();
            own = fetcher;
          } catch (err) {
            failedFolders.set(m.sourcePath, isRetryable(err) ? FOLDER_DROPS : `${REFUSED_SESSION}: ${(err as Error).message}`);
            return;
          }
        }
        // STATUS says new messages arrived (or the folder was never synced): connect the
        // lanes now, while this folder is scanned, not after (a lane is two logins).
        if (!alone && (st.messages ?? 0) > 0 && (st.uidNext === undefined || st.uidNext > row.synced_uidnext || row.source_uidvalidity !== Number(st.uidValidity))) startLanes();
        const work: FolderWork = { row, mapping: m, target: tf, toCopy: [], flagChanges: [], orphans: new Map(), ...(st.uidNext !== undefined ? { listedUidNext: st.uidNext } : {}) };
        try {
          const careful = carefully ? { carefully: { connect: connectSource, noteSkipped: (f: number, u: number) => memory.noteSkipped(f, u) } } : {};
          await scanFolder({ db, maxMessageSize, stallMs, dryRun: false, skippedInThisRun: (f, u) => memory.skippedInThisRun(f, u), ...careful, ...(opts.receivedAfter !== undefined ? { receivedAfter: opts.receivedAfter } : {}) }, { lister: fetcher, session: src, use: srcUse }, work);
        } catch (err) {
          if (carefully && !(err instanceof RawFetchCommandError) && !isImapRefusal(err) && !opts.signal?.aborted) {
            // Only this folder's: a lost connection, too many of them, or another session
            // the source refused (a limit of sessions per user) to read it with.
            failedFolders.set(m.sourcePath, err instanceof FolderUnreadableError ? err.message : isRetryable(err) ? FOLDER_DROPS : `${REFUSED_SESSION}: ${(err as Error).message}`);
            return;
          }
          // The source answered NO/BAD (it cannot open or list this folder: broken on
          // disk, permissions), on the raw connection or the imapflow session: this folder
          // fails, named, and the others go on. A lost connection fails the attempt (and is
          // retried), saying where.
          if (!(err instanceof RawFetchCommandError) && !isImapRefusal(err)) {
            if (!isRetryable(err)) throw err;
            memory.noteScanDrop(row.id, alone);
            throw Object.assign(new Error(`${(err as Error).message} (while scanning ${m.sourcePath})`), { retryable: true });
          }
          // Listed, without a STATUS, and not there when opened: only a node of the hierarchy
          // (Dovecot's Maildir++ lists `a` for a folder `a.b` whose parent was renamed or
          // deleted, with neither \Noselect nor \NonExistent). No mail to copy, nothing failed.
          const [code, text] = err instanceof RawFetchCommandError ? [err.code, err.serverText] : [undefined, err.responseText ?? err.message];
          if (st.uidValidity === undefined && saysNonexistent(code, text)) {
            log.debug({ folder: m.sourcePath, err: err.message }, 'listed folder does not exist: a hierarchy node');
            return;
          }
          failedFolders.set(m.sourcePath, `the source could not read it: ${err.message}`);
          return;
        }
        const anyOrphans = work.orphans.size > 0 || (work.toCopy.length > 0 && (await db.selectFrom('message').select('source_uid').where('folder_id', '=', row.id).where('state', '=', 'orphan').limit(1).executeTakeFirst()) !== undefined);
        if (anyOrphans && work.toCopy.length > 0 && (await srcUse(() => servesMboxFields(src, m.sourcePath, work.toCopy[0]!.uid, stallMs)))) {
          // The source's bytes change under its messages (loose-orphans.ts): its orphans,
          // whatever their sizes now, are keyed by the loose digest of their copies too.
          await offerOrphans(db, work, true);
          const byLoose = await tgtUse(() => looseOrphanCopies(tgt, tf.path, work.orphans, stallMs));
          work.looseOrphans = { byLoose, adopted: new Set() };
        }
        // Never synced into this target folder by this journal, or listed again from its
        // start for messages an earlier cut-off passed by: whatever is there may be this
        // mailbox's mail already. Synced before: what arrived there from elsewhere since
        // the last pass may be (another journal of this mailbox). existing-copies.ts.
        const firstSync = row.source_uidvalidity === null || widened;
        const arrivedSince = !firstSync && row.target_uidnext !== null && row.target_uidvalidity === tf.uidValidity && tf.uidNextAtStart > row.target_uidnext ? row.target_uidnext : null;
        if ((firstSync || arrivedSince !== null) && work.toCopy.length > 0) {
          let found = existing.get(tf.path);
          if (!found) existing.set(tf.path, (found = new ExistingCopies(tf)));
          work.existing = found.orphans;
          const hasher = await contentHasher(db);
          await tgtUse(() => found.offer({ db, pairId: pid, target: tgt, hasher, toCopy: work.toCopy, stallMs, log, fromUid: firstSync ? 1 : arrivedSince! }));
        }
        works.push(work);
        const group = merged.get(tf.path);
        if (group) {
          group.scanned.push(work);
          if (work.toCopy.length > 0) group.held.push(work);
        } else {
          queueWork(work, alone);
        }
      } finally {
        await own?.close().catch(() => undefined);
        const group = merged.get(tf.path);
        if (group && --group.left === 0) {
          // Every folder of the group is scanned: each is offered the copies the others
          // found expunged, then copied.
          for (const h of group.held) {
            for (const other of group.scanned) if (other !== h && other.expunged?.length) await offerExpunged(db, h, other.expunged, other);
            queueWork(h, alone);
          }
        }
      }
    };
    // The scan's own connection takes the folders in order; copy lanes with nothing to
    // copy take folders too, on their source connections (JobQueue.offerIdleWork): a first
    // sync of 300 small folders at a 20 ms round trip spent 12 of its 15 s scanning them
    // one after another (an EXAMINE and a UID FETCH each) while the lanes waited. Lanes
    // take only folders of up to LANE_SCAN_MAX messages (a scan holds its listing), and
    // no connection is opened for it (servers limit sessions per user).
    const taken = toScan.map(() => false);
    const scanned: Promise<void>[] = [];
    let firstUntaken = 0;
    let scanFailed = false;
    const takeScan = (maxMessages: number): IdleTask | undefined => {
      if (scanFailed || laneFailed || opts.signal?.aborted) return undefined;
      while (firstUntaken < toScan.length && taken[firstUntaken]) firstUntaken++;
      let i = firstUntaken;
      // A folder whose size STATUS did not tell is left to the scan's own connection.
      while (i < toScan.length && (taken[i] || (toScan[i]!.st.messages ?? Number.POSITIVE_INFINITY) > maxMessages)) i++;
      if (i >= toScan.length) return undefined;
      taken[i] = true;
      const p = toScan[i]!;
      let run!: IdleTask;
      scanned.push(
        new Promise<void>((resolve, reject) => {
          run = (fetcher) =>
            scanOne(p, fetcher).then(
              () => {
                progress.foldersScanned++;
                emit();
                resolve();
              },
              (err: unknown) => {
                scanFailed = true;
                reject(err);
                throw err;
              },
            );
        }),
      );
      // Awaited below; a failure must not count as unhandled meanwhile.
      scanned[scanned.length - 1]!.catch(() => undefined);
      return run;
    };
    try {
      queue.offerIdleWork(() => takeScan(LANE_SCAN_MAX));
      if (toScan.length > 0) lister ??= await connectSource();
      // Folders whose scan lost the connection in an earlier attempt go first, each alone
      // (RunMemory.noteScanDrop), before any lane is copying.
      for (const [i, p] of toScan.entries()) {
        if (!memory.scanSuspect(p.row.id)) continue;
        taken[i] = true;
        await scanOne(p, lister!, true);
        memory.clearScanSuspect(p.row.id);
        progress.foldersScanned++;
        emit();
      }
      if (queuedAlone) startLanes();
      for (let task = takeScan(Infinity); task; task = takeScan(Infinity)) await task(lister!);
      // Folders lanes took: their scans end (or fail) on their own.
      await Promise.all(scanned);
    } catch (err) {
      // The lanes finish what is queued; their own errors are secondary to this one.
      queue.close();
      freeSource();
      if (lanes) await (lanes as Promise<void>).catch(() => undefined);
      throw err;
    }
    queue.close();
    progress.phase = 'copying';
    emit();
    // The listing connection is done: servers limit connections per user (Dovecot's
    // mail_max_userip_connections is 10 by default), so it is not kept beside the lanes.
    await lister?.close();
    lister = undefined;
    freeSource();
    if (lanes) await lanes;
    if (opts.signal?.aborted) throw Object.assign(new Error('sync stopped'), { stopped: true });

    // Flags, then record what this pass saw so the next run can skip unchanged folders.
    progress.phase = 'flags';
    emit();
    // A server that gives an empty folder a new UIDVALIDITY each time it is opened (GNU
    // Mailutils' imap4d, mbox based) keeps the one it has when the first message is stored:
    // a folder this run filled from empty is asked again, or the next run would take the
    // UIDVALIDITY for changed and every copy in it for lost. Only on targets without UIDPLUS
    // (such servers have none; with it, each APPENDUID names the UIDVALIDITY, RFC 4315 §3),
    // so a first sync of many folders elsewhere costs no round trip more per folder.
    const settled = new Map<string, number>();
    const filled = tgt.capabilities.has('UIDPLUS') ? [] : works.filter((w) => w.toCopy.length > 0 && w.target.uidNextAtStart === 1).map((w) => w.target);
    for (const tf of new Set(filled)) {
      const current = Number((await targetFolderStatus(tgt, tf.path, stallMs)).uidValidity ?? tf.uidValidity);
      if (current !== tf.uidValidity) {
        log.debug({ folder: tf.path, before: tf.uidValidity, now: current }, 'target folder took another UIDVALIDITY as it was filled');
        settled.set(tf.path, current);
      }
    }
    const { applied: flagsUpdated, deferred, withoutSomeKeywords } = await applyFlagChanges(db, tgt, works, stallMs, log);
    progress.withoutSomeKeywords += withoutSomeKeywords;
    const now = Date.now();
    for (const w of works) {
      const s = w.snapshot;
      if (!s) continue;
      await updateFolder(db, w.row.id, {
        source_uidvalidity: s.uidValidity,
        synced_uidnext: Math.max(w.row.synced_uidnext, s.uidNext),
        source_messages: s.messages,
        source_highestmodseq: deferred.has(w.row.id) ? null : s.highestModseq,
        target_uidvalidity: settled.get(w.target.path) ?? w.target.uidValidity,
        // Not for a folder whose UIDVALIDITY settled only as it was filled (imap4d): its UIDs start again.
        target_uidnext: settled.has(w.target.path) ? null : w.target.uidNextAtStart,
        last_synced_at: now,
        // The scan handled every message at or after this run's cut-off, whatever earlier runs used.
        covered_from: opts.receivedAfter ?? null,
      });
    }
    // Without a cut-off, a folder scanned counts what its EXAMINE saw, not the listing's
    // STATUS from before: mail that arrived in between is copied, so it is found too.
    const scannedCounts = new Map(statusCounts);
    for (const w of works) if (w.snapshot) scannedCounts.set(w.mapping.sourcePath, w.snapshot.messages);
    const counts = opts.receivedAfter === undefined ? scannedCounts : await inScopeCounts(db, selectable.map((m) => rows.get(m.sourcePath)!), opts.receivedAfter);
    return { mappings, counts, found: sum(counts), flagsUpdated, dryRunToCopy: 0, failedFolders };
  } finally {
    freeSource();
    await Promise.allSettled([src.logout(), tgt.logout(), lister?.close()]);
  }
}

/**
 * A target folder's UIDVALIDITY and UIDNEXT: STATUS, or where imapflow cannot read the
 * answer (GNU Mailutils' imap4d echoes the name unquoted, spaces and all) EXAMINE, whose
 * response codes say the same (RFC 3501 §6.3.1).
 */
async function targetFolderStatus(tgt: ImapFlow, path: string, stallMs: number): Promise<{ uidValidity?: number | bigint; uidNext?: number }> {
  const st = await withWatchdog(tgt, stallMs, `status of ${path}`, () => tgt.status(path, { uidNext: true, uidValidity: true }));
  if (st && st.uidValidity) return st;
  const mb = await withWatchdog(tgt, stallMs, `opening ${path}`, () => tgt.mailboxOpen(path, { readOnly: true }));
  return { uidValidity: mb.uidValidity, ...(mb.uidNext ? { uidNext: mb.uidNext } : {}) };
}

/**
 * This process's peak resident memory in MB. VmHWM from /proc where there is one:
 * getrusage's maxRSS (the fallback, in kilobytes) survives fork and exec on Linux, so a
 * sync started by a big parent (a benchmark holding its corpus) would report the parent's.
 */
function peakRssMb(): number {
  try {
    const hwm = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (hwm) return Math.round(Number(hwm[1]) / 1024);
  } catch {
    // not Linux
  }
  return Math.round(process.resourceUsage().maxRSS / 1024);
}

/**
 * Source folders that land in one target folder by accident, not by special use (`a.b`
 * and `a_b` when `.` cannot be in a target name): merged as intended for `Sent` and
 * `Sent Items`, but the admin should know, since it cannot be undone by name.
 */
function warnMerged(mappings: readonly FolderMapping[], log: SyncOptions['logger']): void {
  const byTarget = new Map<string, FolderMapping[]>();
  for (const m of mappings) if (m.selectable) byTarget.set(m.targetPath, [...(byTarget.get(m.targetPath) ?? []), m]);
  for (const [target, group] of byTarget) {
    if (group.length > 1 && group.filter((m) => m.specialUse === undefined && m.targetPath !== 'INBOX').length > 1) {
      log.warn({ target, sources: group.map((m) => m.sourcePath) }, 'these source folders are merged into one target folder');
    }
  }
}

/**
 * A source folder that shows all the mailbox's mail (RFC 6154 \All: Gmail's `All Mail`)
 * repeats every message of the other folders, and holds mail kept nowhere else (Gmail's
 * archived mail): it is copied, so nothing is lost, and the admin is told how to avoid
 * the second copies.
 */
function warnAllMail(source: ServerView, mappings: readonly FolderMapping[], log: SyncOptions['logger']): void {
  const migrated = new Set(mappings.filter((m) => m.selectable).map((m) => m.sourcePath));
  for (const f of source.folders) {
    if (f.flags.has('\\All') && migrated.has(f.path)) {
      log.warn({ folder: f.path }, 'this folder shows all mail of the mailbox (\\All): its messages are copied from the other folders too; exclude it (--exclude) unless mail is kept only there (archived)');
    }
  }
}

const sum = (counts: ReadonlyMap<string, number>): number => [...counts.values()].reduce((a, b) => a + b, 0);

/** Journal states of messages the engine took in: on the target, on their way, or skipped/failed. */
const TAKEN_IN: MessageState[] = ['copied', 'pending', 'skipped'];

/**
 * `found` with a cut-off: LIST-STATUS MESSAGES counts old messages too, and a folder on the
 * fast path is never opened, so the in-scope count comes from the journal. Every in-scope
 * message below the watermark has a row (copied, skipped, or pending), and after the scan
 * nothing in scope is above it; rows older than the cut-off (from a run without it) are
 * left out, unknown dates (0) are kept. One difference from the count without a cut-off:
 * messages deleted on the source since they were copied are still counted, as they are
 * in `copied` (the journal's, all runs), so found >= copied + skipped + failed holds.
 */
async function inScopeCounts(db: Kysely<Database>, folders: readonly FolderRow[], receivedAfter: number): Promise<Map<string, number>> {
  const counts = new Map(folders.map((f) => [f.source_path, 0]));
  if (!folders.length) return counts;
  const byId = new Map(folders.map((f) => [f.id, f.source_path]));
  const rows = await db
    .selectFrom('message')
    .select((eb) => ['folder_id', eb.fn.countAll<number | string>().as('n')])
    .where('folder_id', 'in', [...byId.keys()])
    // Orphans carry negated UIDs (scan.ts); they are counted once adopted under a new UID.
    .where('source_uid', '>', 0)
    .where('state', 'in', TAKEN_IN)
    .where((eb) => eb.or([eb('internal_date', '>=', receivedAfter), eb('internal_date', '=', 0)]))
    .groupBy('folder_id')
    .execute();
  // PostgreSQL returns COUNT(*) as a bigint string.
  for (const r of rows) counts.set(byId.get(r.folder_id)!, Number(r.n));
  return counts;
}

/**
 * A dry run with a cut-off: the LIST-STATUS arithmetic of dryRunCount cannot tell old
 * messages from new, so each folder with messages beyond its watermark is opened read-only
 * and its new messages' INTERNALDATEs compared. `counts` is then what a real run would
 * report as found: the journal's in-scope messages plus the new ones.
 */
async function dryRunInScope(
  db: Kysely<Database>,
  pairId: number | undefined,
  renames: readonly FolderRename[],
  src: ImapFlow,
  selectable: readonly FolderMapping[],
  status: Map<string, FolderStatus>,
  receivedAfter: number,
  stallMs: number,
): Promise<{ counts: Map<string, number>; toCopy: number }> {
  const rows = await journalFolders(db, pairId, renames);
  // Rows under another source UIDVALIDITY describe old UIDs: that folder is listed anew.
  const current = (m: FolderMapping) => rows.find((r) => r.source_path === m.sourcePath && r.source_uidvalidity === Number(status.get(m.sourcePath)?.uidValidity));
  const known = await inScopeCounts(db, selectable.map(current).filter((r): r is FolderRow => r !== undefined), receivedAfter);
  const counts = new Map<string, number>();
  let toCopy = 0;
  for (const m of selectable) {
    const st = status.get(m.sourcePath);
    const from = current(m)?.synced_uidnext ?? 1;
    const fresh = (st?.messages ?? 0) > 0 && (st?.uidNext === undefined || st.uidNext > from) ? await countNewInScope(src, m.sourcePath, from, receivedAfter, stallMs) : 0;
    counts.set(m.sourcePath, (known.get(m.sourcePath) ?? 0) + fresh);
    toCopy += fresh;
  }
  return { counts, toCopy };
}

/** The journal's folders as a dry run sees them: renamed ones under their new names. */
async function journalFolders(db: Kysely<Database>, pairId: number | undefined, renames: readonly FolderRename[]): Promise<FolderRow[]> {
  if (pairId === undefined) return [];
  const renamed = new Map(renames.map((r) => [r.row.id, r.sourcePath]));
  return (await listFolders(db, pairId)).map((r) => (renamed.has(r.id) ? { ...r, source_path: renamed.get(r.id)! } : r));
}

/** Without touching anything: how many messages a real run would copy (by UIDNEXT). */
async function dryRunCount(db: Kysely<Database>, pairId: number | undefined, renames: readonly FolderRename[], selectable: FolderMapping[], status: Map<string, FolderStatus>): Promise<number> {
  const rows = await journalFolders(db, pairId, renames);
  let n = 0;
  for (const m of selectable) {
    const st = status.get(m.sourcePath);
    const row = rows.find((r) => r.source_path === m.sourcePath);
    if (!row || row.source_uidvalidity !== Number(st?.uidValidity)) n += st?.messages ?? 0;
    else if ((st?.uidNext ?? 0) > row.synced_uidnext) n += Math.max(0, (st?.messages ?? 0) - (row.source_messages ?? 0));
  }
  return n;
}
