/** `mailferry sync` and `mailferry verify`: one mailbox, from the command line. */
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { defaultDbUrl, openStore, sqlitePathOf } from '../store/open.js';
import { journalMappings, syncMailbox } from '../sync/mailbox-sync.js';
import { DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MEMORY_BUDGET, type SyncSummary } from '../sync/options.js';
import { folderPatternProblem } from '../sync/folder-map.js';
import type { SyncProgress } from '../sync/progress.js';
import { missingItemText, verifyMailbox, type VerifyResult } from '../sync/verify.js';
import { parseReceivedAfter } from '../batch/time-input.js';
import { addConnectionOptions, type ConnectionFlags, resolveSides } from './connection-options.js';
import { EXIT, UsageError } from './exit-codes.js';
import { cliLogger } from './logger.js';
import { progressView, verifyProgressView } from './progress-bar.js';

interface DateScopeFlags {
  receivedAfter?: string;
}

interface SyncFlags extends ConnectionFlags, DateScopeFlags {
  maxMessageSize: string;
  connections: string;
  memoryBudget: string;
  dryRun?: boolean;
  json?: boolean;
}

function positiveInt(v: string, flag: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${flag} must be a positive whole number, not "${v}"`);
  return n;
}

/** SPEC §4's "only messages received after a date", for one mailbox: the same option and parsing as `batch create`. */
const RECEIVED_AFTER_HELP = 'only messages that arrived (IMAP internal date) at or after this date: 2025-03-01 (midnight UTC) or 2025-03-01T18:00 (local time; add Z or +01:00), or -90d for the last 90 days';

function receivedAfterOf(flags: DateScopeFlags): { receivedAfter?: number } {
  return flags.receivedAfter === undefined ? {} : { receivedAfter: parseReceivedAfter(flags.receivedAfter, '--received-after') };
}

function scopeText(receivedAfter: number | undefined): string {
  return receivedAfter === undefined ? '' : ` received after ${new Date(receivedAfter).toISOString()}`;
}

function printSummary(s: SyncSummary, receivedAfter: number | undefined): void {
  const mb = (s.bytes / 1048576).toFixed(1);
  const rate = s.seconds > 0 ? (s.copied / s.seconds).toFixed(0) : '0';
  if (s.dryRun) {
    // What a run would do: the folders as they would be mapped, and how many messages are new.
    process.stderr.write(`dry run (nothing copied): ${s.folders} folders, ${s.found} messages found${scopeText(receivedAfter)}, ${s.toCopy ?? 0} to copy\n`);
    for (const f of s.folderList) process.stderr.write(`  ${f.source} -> ${f.target}: ${f.found} messages\n`);
    for (const f of s.failedFolders) process.stderr.write(`  FAILED folder ${f.folder}: ${f.reason}\n`);
    return;
  }
  process.stderr.write(
    `${s.dryRun ? 'dry run: ' : ''}${s.folders} folders, ${s.found} messages found${scopeText(receivedAfter)}, ${s.copied} copied (${mb} MB, ${rate} msg/s), ` +
      (s.alreadyOnTarget ? `${s.alreadyOnTarget} already on the target (not copied again), ` : '') +
      `${s.skipped} skipped, ${s.failed} failed, ${s.flagsUpdated} flag updates, ${s.seconds.toFixed(2)} s` +
      (s.reconnects ? `, ${s.reconnects} reconnects` : '') +
      (s.withoutSomeKeywords ? `, ${s.withoutSomeKeywords} without some keywords (refused by the target, or not IMAP atoms; each named in the log)` : '') +
      '\n',
  );
  for (const item of s.skippedItems.slice(0, 50)) {
    process.stderr.write(`  ${item.failed ? 'FAILED' : 'skipped'}: ${item.folder} uid ${item.uid} ${item.date.slice(0, 10)} "${item.subject}": ${item.reason}\n`);
  }
  if (s.skippedItems.length > 50) process.stderr.write(`  … and ${s.skippedItems.length - 50} more (see --json)\n`);
  for (const f of s.failedFolders) process.stderr.write(`  FAILED folder ${f.folder}: ${f.reason}\n`);
}

export function registerSyncCommands(program: Command, run: (fn: () => Promise<number>) => Promise<void>): void {
  addConnectionOptions(
    program
      .command('sync')
      .description(
        'Sync one mailbox now, then exit. The first run copies every folder and message (with flags and internal dates); ' +
          'later runs copy only new messages and mirror flag changes. Messages deleted on the source stay on the target. ' +
          'Exit status: 0 in sync, 1 some messages skipped or failed, 2 bad usage, 3 could not connect or log in.',
      ),
  )
    .option('--max-message-size <bytes>', 'skip and list messages larger than this', String(DEFAULT_MAX_MESSAGE_SIZE))
    .option('--connections <n>', 'parallel copy lanes (each one source and one target connection)', '4')
    .option('--received-after <date>', RECEIVED_AFTER_HELP)
    .option('--memory-budget <MB>', 'message bytes held in memory at once across all lanes (MiB); lower it on a small machine', String(DEFAULT_MEMORY_BUDGET / 1024 / 1024))
    .option('--dry-run', 'show what would be copied; change nothing')
    .option('--json', 'print a JSON summary as the last line of stdout')
    .action((flags: SyncFlags) =>
      run(async () => {
        const logger = cliLogger(flags.logLevel, { human: !flags.json && !!process.stderr.isTTY });
        const patternProblem = folderPatternProblem([], flags.exclude);
        if (patternProblem) throw new UsageError(patternProblem);
        // Parsed before anything connects: a bad date is a usage error (exit 2), not a failed sync.
        const scope = receivedAfterOf(flags);
        const limits = {
          maxMessageSize: positiveInt(flags.maxMessageSize, '--max-message-size'),
          connections: positiveInt(flags.connections, '--connections'),
          memoryBudget: positiveInt(flags.memoryBudget, '--memory-budget') * 1024 * 1024,
        };
        // The database opens while the source login is checked (that waits on the network).
        // The login check's session becomes the sync's first source session (one login less).
        const [sidesResult, storeResult] = await Promise.allSettled([resolveSides(flags, logger, { keepSourceSession: true }), openStore(flags.db)]);
        if (sidesResult.status === 'rejected' || storeResult.status === 'rejected') {
          if (storeResult.status === 'fulfilled') await storeResult.value.close();
          if (sidesResult.status === 'fulfilled') await sidesResult.value.sourceSession?.logout().catch(() => undefined);
          throw sidesResult.status === 'rejected' ? sidesResult.reason : (storeResult as PromiseRejectedResult).reason;
        }
        const sides = sidesResult.value;
        const store = storeResult.value;
        const bar = progressView(!flags.json && !!process.stderr.isTTY);
        const stop = new AbortController();
        // The first Ctrl-C lets the messages in flight finish (their journal rows settle);
        // a second one is Node's default, an immediate exit, which is as safe: the next
        // run resolves whatever was in flight (exactly once through crashes).
        const onSignal = () => {
          bar.stop();
          process.stderr.write('mailferry: stopping once the messages in flight are stored (Ctrl-C again to quit at once; nothing is lost or copied twice either way)\n');
          stop.abort();
        };
        process.once('SIGINT', onSignal);
        let last: SyncProgress | undefined;
        try {
          const summary = await syncMailbox(store, {
            ...sides,
            exclude: flags.exclude,
            ...scope,
            ...limits,
            dryRun: !!flags.dryRun,
            logger,
            onProgress: (p) => {
              last = p;
              bar.update(p);
            },
            signal: stop.signal,
          }).catch((err: unknown) => {
            // A run that stops early still says how far it got (--json: beside the error, SPEC §8).
            const partial = { copied: last?.copied ?? 0, toCopy: last?.toCopy ?? 0, bytes: last?.copiedBytes ?? 0, skipped: last?.skipped ?? 0, failed: last?.failed ?? 0, alreadyOnTarget: last?.alreadyOnTarget ?? 0 };
            if (!stop.signal.aborted) throw Object.assign(err as Error, { partial });
            const copied = last ? `${last.copied} of ${last.toCopy} messages copied by this run` : 'nothing copied by this run';
            throw Object.assign(new Error(`sync stopped (Ctrl-C): ${copied}; what is copied stays copied: run the same command again to go on`), { partial });
          });
          bar.stop();
          printSummary(summary, scope.receivedAfter);
          if (flags.json) process.stdout.write(JSON.stringify(summary) + '\n');
          // A dry run's skipped counts are the journal's from earlier runs: only a folder it could not read fails it.
          return summary.failedFolders.length > 0 || (!summary.dryRun && (summary.skipped > 0 || summary.failed > 0)) ? EXIT.incomplete : EXIT.ok;
        } finally {
          bar.stop();
          process.off('SIGINT', onSignal);
          await store.close();
        }
      }),
    );

  addConnectionOptions(program.command('verify').description('Compare source and target folder by folder; "in sync" only when every source message is on the target. Exit 0 in sync, 1 not.'))
    .option('--content', 'compare full message contents (a digest of each message) instead of size, date and Message-ID')
    .option('--connections <n>', 'folders compared at once (each one source and one target connection)', '4')
    .option('--received-after <date>', `${RECEIVED_AFTER_HELP}; older source messages are not expected on the target`)
    .option('--json', 'print a JSON result as the last line of stdout')
    .action((flags: ConnectionFlags & DateScopeFlags & { content?: boolean; json?: boolean; connections: string }) =>
      run(async () => {
        const logger = cliLogger(flags.logLevel, { human: !flags.json && !!process.stderr.isTTY });
        const patternProblem = folderPatternProblem([], flags.exclude);
        if (patternProblem) throw new UsageError(patternProblem);
        const scope = receivedAfterOf(flags);
        const sides = await resolveSides(flags, logger);
        const connections = positiveInt(flags.connections, '--connections');
        const bar = verifyProgressView(!flags.json && !!process.stderr.isTTY);
        const established = await journalOf(flags.db, sides, logger);
        const result: VerifyResult = await verifyMailbox({ ...sides, exclude: flags.exclude, ...scope, content: !!flags.content, connections, logger, established, onProgress: (p) => bar.update(p) }).finally(() => bar.stop());
        for (const f of result.folders) {
          if (f.error !== undefined) {
            process.stderr.write(`FAILED  ${f.sources.join(' + ')} -> ${f.target}: could not be read: ${f.error}\n`);
            continue;
          }
          const mark = f.missing === 0 ? 'ok     ' : 'MISSING';
          process.stderr.write(`${mark} ${f.sources.join(' + ')} -> ${f.target}: source ${f.sourceCount}, target ${f.targetCount}${f.missing ? `, ${f.missing} missing` : ''}${f.extra ? `, ${f.extra} extra on target${f.duplicates ? ` (${f.duplicates} of them duplicates of source messages)` : ''}` : ''}${f.flagDifferences ? `, ${f.flagDifferences} with other flags` : ''}${f.dateDifferences ? `, ${f.dateDifferences} with another internal date` : ''}${f.changedCopies ? `, ${f.changedCopies} stored with other bytes by the target's server (line ends, 8-bit header bytes, mbox header fields; the text is the same)` : ''}${f.sizesInexact ? '; a server lists sizes (RFC822.SIZE) that are not those of its messages, so copies were paired by Message-ID and date (--content compares bytes)' : ''}\n`);
          for (const m of f.missingItems) process.stderr.write(`        missing: ${missingItemText(m)}\n`);
        }
        // What was left out is said with the verdict: "in sync" is about the folders compared.
        const scoped = scopeText(scope.receivedAfter) + (flags.exclude.length ? ` (excluded, not compared: ${flags.exclude.join(', ')})` : '');
        const unread = result.folders.filter((f) => f.error !== undefined).length;
        const dups = result.folders.reduce((n, f) => n + f.duplicates, 0);
        process.stderr.write(
          result.inSync
            ? `in sync: all ${result.sourceMessages} source messages${scoped} are on the target${dups ? `; ${dups} of them ${dups === 1 ? 'is' : 'are'} there more than once (duplicates, by folder above)` : ''}\n`
            : `NOT in sync: ${result.missing} of ${result.sourceMessages} source messages${scoped} are missing on the target${unread ? `, and ${unread} folder${unread === 1 ? '' : 's'} could not be read` : ''}\n`,
        );
        if (flags.json) process.stdout.write(JSON.stringify(result) + '\n');
        return result.inSync ? EXIT.ok : EXIT.incomplete;
      }),
    );
}

/**
 * Where earlier syncs of this mailbox put each folder (verify compares there), read from
 * the state database when it exists: verify runs without one too, comparing where a first
 * sync would copy.
 */
async function journalOf(url: string | undefined, sides: Parameters<typeof journalMappings>[1], logger: ReturnType<typeof cliLogger>): Promise<Map<string, string> | undefined> {
  const dbUrl = url ?? process.env.MAILFERRY_DB ?? defaultDbUrl();
  const file = sqlitePathOf(dbUrl);
  if (file !== undefined && !existsSync(file)) return undefined;
  try {
    const store = await openStore(dbUrl);
    try {
      return await journalMappings(store.db, sides);
    } finally {
      await store.close();
    }
  } catch (err) {
    logger.warn({ err: (err as Error).message }, 'the state database could not be read: folders are compared where a first sync would copy them');
    return undefined;
  }
}

