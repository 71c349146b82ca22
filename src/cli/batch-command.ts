/**
 * `mailferry batch …` (SPEC §4, §8): create a batch from a migration file, check its logins,
 * start / stop / sync-now / retry / delete it, show its status and report. Every command
 * works on the database alone, whether or not `serve` or `worker` runs; they pick the
 * change up at their next claim or heartbeat.
 */
import { open } from 'node:fs/promises';
import type { Command } from 'commander';
import { claimTask, runClaimed, runLoginCheck } from '../batch/background-task.js';
import { checkLogins } from '../batch/check-logins.js';
import { createBatch, type StartPlan } from '../batch/create.js';
import { updateBatch } from '../batch/update.js';
import { parseDuration, formatDuration } from '../batch/duration.js';
import { parseReceivedAfter, parseStartAt } from '../batch/time-input.js';
import { BatchError, DeleteTooEarlyError } from '../batch/errors.js';
import { continueRemoval, deleteBatch, retryMailboxes, startBatch, stopBatch, syncNow } from '../batch/lifecycle.js';
import { buildReport, reportCsv } from '../report/batch-report.js';
import { findBatch, requireBatch } from '../batch/store.js';
import { batchMxReport } from '../dns/mx-watch.js';
import { type MailboxVerification, verifyBatch } from '../batch/verify.js';
import { missingItemText } from '../sync/verify.js';
import { type BatchView, loadBatchDetail, loadBatchList, type MailboxView, verdictWords } from '../batch/view.js';
import { addressProblem } from '../csv/address.js';
import { fileTooLarge, MAX_FILE_BYTES, type Problem } from '../csv/index.js';
import { loadSecretKey, SecretKeyError } from '../secrets/index.js';
import { openStore, type Store } from '../store/open.js';
import { EXIT, UsageError } from './exit-codes.js';
import { cliLogger } from './logger.js';

type Run = (fn: () => Promise<number>) => Promise<void>;

// No default value: commander would print "(default: [])" in the help.
const collect = (v: string, prev: string[] | undefined) => [...(prev ?? []), v];

/** Opens the store for one command; batch refusals become usage errors (exit 2). */
async function withStore<T>(db: string | undefined, fn: (store: Store) => Promise<T>): Promise<T> {
  const store = await openStore(db);
  try {
    return await fn(store);
  } catch (err) {
    if (err instanceof BatchError || err instanceof SecretKeyError) throw new UsageError(err.message);
    throw err;
  } finally {
    await store.close();
  }
}

async function readCsv(path: string): Promise<Buffer | { problem: string; tooLarge?: number }> {
  try {
    const handle = await open(path, 'r');
    try {
      const stat = await handle.stat();
      if (!stat.isFile()) return { problem: `cannot read ${path}: it is not a regular file` };
      // Checked before reading: a huge upload is refused without being loaded.
      if (stat.size > MAX_FILE_BYTES) return { problem: '', tooLarge: stat.size };
      return await handle.readFile();
    } finally {
      await handle.close();
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { problem: `cannot read ${path}: ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (err as Error).message}` };
  }
}

/** The migration file's bytes; a file that cannot be read (or is too large) is a usage error, also as JSON with --json. */
async function readCsvOrFail(path: string, json: boolean | undefined): Promise<Buffer> {
  const file = await readCsv(path);
  if (Buffer.isBuffer(file)) return file;
  const message = file.tooLarge !== undefined ? (fileTooLarge(file.tooLarge) as { errors: Problem[] }).errors[0]!.message : file.problem;
  if (json) process.stdout.write(JSON.stringify({ valid: false, errors: [{ line: null, message }] }) + '\n');
  throw new UsageError(message);
}

/** An invalid migration file: every problem on stderr, and with --json the validation result on stdout. */
function printInvalid(path: string, v: { rows: number; errors: Problem[] }, outcome: string, json: boolean | undefined): void {
  process.stderr.write(v.errors.map((p) => problemLine(p) + '\n').join('') + `${path}: NOT valid; ${outcome}\n`);
  if (json) process.stdout.write(JSON.stringify({ valid: false, rows: v.rows, errors: v.errors.map((e) => ({ line: e.line ?? null, ...(e.column ? { column: e.column } : {}), check: e.check, message: e.message })) }) + '\n');
}

function problemLine(p: Problem): string {
  const where = p.line === undefined ? '' : p.column === undefined ? `line ${p.line}: ` : `line ${p.line}, column ${p.column}: `;
  return p.check === 'truncated' ? p.message : `${where}${p.message} [${p.check}]`;
}

const mb = (bytes: number) => (bytes / 1048576).toFixed(1);
const when = (iso: string | null) => (iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-');

function batchLine(b: BatchView): string {
  const counts = Object.entries(b.counts)
    .filter(([, n]) => n > 0)
    .map(([s, n]) => `${n} ${s}`)
    .join(', ');
  return `${b.name}: ${b.status} (${b.endpoint} -> ${b.target}), ${b.mailboxes} mailbox${b.mailboxes === 1 ? '' : 'es'}${counts ? `: ${counts}` : ''}`;
}

function verifiedText(m: MailboxView): string {
  const v = m.verification;
  if (!v) return '-';
  return `${verdictWords(v)} ${when(v.at)}`;
}

function printStatus(b: BatchView, mailboxes: readonly MailboxView[]): void {
  const out: string[] = [batchLine(b)];
  const facts = [
    b.startAt && b.status === 'Created' ? `starts at ${when(b.startAt)}` : null,
    b.startedAt ? `started ${when(b.startedAt)}` : null,
    b.initialSyncedAt ? `initial sync finished ${when(b.initialSyncedAt)}${b.initialSync ? ` (${formatDuration(b.initialSync.seconds * 1000)}, ${b.initialSync.messagesPerSecond} msg/s, ${b.initialSync.megabytesPerSecond} MB/s)` : ''}` : null,
    b.lastIncrementalAt ? `last incremental sync ${when(b.lastIncrementalAt)}` : null,
    `${b.totals.copied}/${b.totals.found} messages copied (${mb(b.totals.bytes)} MB), ${b.totals.skipped} skipped, ${b.totals.failed} failed`,
    b.messagesPerSecond > 0 ? `now ${b.messagesPerSecond} msg/s, ${b.megabytesPerSecond} MB/s` : null,
    b.etaSeconds !== null && b.etaSeconds > 0 ? `about ${formatDuration(b.etaSeconds * 1000)} left` : null,
    b.reports.lastSentAt ? `last report ${when(b.reports.lastSentAt)}` : null,
    b.reports.error ? `report e-mail: ${b.reports.error}` : null,
  ].filter(Boolean);
  out.push(`  ${facts.join('; ')}`);
  out.push(['LINE', 'MAILBOX', 'STATUS', 'FOLDERS', 'FOUND', 'COPIED', 'SKIPPED', 'FAILED', 'MB', 'LAST SYNC', 'NEXT SYNC', 'VERIFIED'].join('\t'));
  for (const m of mailboxes) {
    out.push([m.line, m.emailAddress, m.status, m.folders, m.found, m.copied, m.skipped, m.failed, mb(m.bytes), when(m.lastSyncAt), when(m.nextSyncAt), verifiedText(m)].join('\t'));
    if (m.syncing) {
      const s = m.syncing;
      const eta = s.etaSeconds !== null ? `, about ${formatDuration(s.etaSeconds * 1000)} left` : '';
      const already = s.alreadyOnTarget ? `, ${s.alreadyOnTarget} found on the target already` : '';
      out.push(`\t  ${s.kind} sync by ${s.worker}: ${s.phase ?? ''} ${s.copied}${s.toCopy ? `/${s.toCopy}` : ''} copied, ${s.messagesPerSecond} msg/s, ${s.megabytesPerSecond} MB/s${eta}${already}${s.stale ? ' (worker not responding; will be resumed)' : ''}`);
    }
    if (m.lastError) out.push(`\t  last error: ${m.lastError}`);
  }
  process.stdout.write(out.join('\n') + '\n');
}

/** One mailbox's verification as the admin reads it: a line, then the folders that are short. */
/** Missing messages listed per folder in `batch verify`'s output. */
const MISSING_SHOWN = 10;

function verificationLines(v: MailboxVerification): string {
  if (v.kind === 'error') return `FAIL   line ${v.line} ${v.emailAddress}: could not verify: ${v.error}\n`;
  const r = v.result;
  const duplicates = r.folders.reduce((n, f) => n + f.duplicates, 0);
  const out = [
    `${r.inSync ? 'ok    ' : 'MISSING'} line ${v.line} ${v.emailAddress}: ${r.sourceMessages} source messages, ${r.targetMessages} on the target${r.missing ? `, ${r.missing} missing` : ''}${duplicates ? `, ${duplicates} there twice (duplicates of source messages)` : ''}${v.syncing ? ' (a sync was running meanwhile)' : ''}`,
  ];
  for (const f of r.folders.filter((x) => x.missing > 0 || x.duplicates > 0 || x.error !== undefined)) {
    out.push(
      f.error !== undefined
        ? `         ${f.sources.join(' + ')} -> ${f.target}: could not be read: ${f.error}`
        : `         ${f.sources.join(' + ')} -> ${f.target}: source ${f.sourceCount}, target ${f.targetCount}${f.missing ? `, ${f.missing} missing` : ''}${f.duplicates ? `, ${f.duplicates} duplicate${f.duplicates === 1 ? '' : 's'}` : ''}`,
    );
    // Each by what an admin can look it up by (subject, Message-ID); the first few per folder.
    for (const m of f.missingItems.slice(0, MISSING_SHOWN)) out.push(`           missing: ${missingItemText(m)}`);
    if (f.missing > MISSING_SHOWN) out.push(`           … and ${f.missing - MISSING_SHOWN} more (see --json)`);
  }
  return out.join('\n') + '\n';
}

export function registerBatchCommands(program: Command, run: Run): void {
  const batch = program.command('batch').description('Migration batches: a migration file, a source endpoint, a target and options (SPEC §4).');
  const dbOption = ['--db <url>', 'state database: a SQLite file (PATH or sqlite:PATH) or postgres://… (default MAILFERRY_DB or ~/.mailferry/mailferry.sqlite)'] as const;

  batch
    .command('create <name>')
    .description('Check the migration file (as `csv check` does, and that no address is in another batch) and store the batch. Passwords are stored encrypted.')
    .requiredOption('--csv <file>', 'the migration file: EmailAddress,UserName,Password[,UserRoot]')
    .requiredOption('--endpoint <name>', 'the source endpoint (mailferry endpoint create)')
    .requiredOption('--target <name>', 'the target (mailferry target create)')
    .option('--exclude <folder>', 'leave this folder out (repeatable), e.g. Junk, "Deleted Items", public folders', collect)
    .option('--include <folder>', 'migrate only these folders (repeatable); aliases #Inbox# #SentItems# #Drafts# #DeletedItems# #JunkEmail# #Archive#', collect)
    .option('--received-after <date>', 'only messages received at or after this date (2025-03-01) or in the last DURATION (-90d)')
    .option('--bad-item-limit <n>', 'more skipped or failed messages than this make a mailbox Failed (default: none does)')
    .option('--notify <address>', 'also send the reports to this address (repeatable)', collect)
    .option('--autostart', 'start syncing at once')
    .option('--start-at <time>', 'start automatically at this time (ISO 8601, or +DURATION)')
    .option(...dbOption)
    .option('--json', 'print the batch (or the validation problems) as JSON on the last line of stdout')
    .action(
      (
        name: string,
        f: { csv: string; endpoint: string; target: string; exclude?: string[]; include?: string[]; receivedAfter?: string; badItemLimit?: string; notify?: string[]; autostart?: boolean; startAt?: string; db?: string; json?: boolean },
      ) =>
        run(async () => {
          if (f.autostart && f.startAt) throw new UsageError('--autostart and --start-at exclude each other');
          const start: StartPlan = f.autostart ? { kind: 'now' } : f.startAt ? { kind: 'at', at: parseStartAt(f.startAt, '--start-at') } : { kind: 'manual' };
          let badItemLimit: number | null = null;
          if (f.badItemLimit !== undefined) {
            badItemLimit = Number(f.badItemLimit);
            if (!Number.isInteger(badItemLimit) || badItemLimit < 0) throw new UsageError(`--bad-item-limit must be a whole number (0 or more), not "${f.badItemLimit}"`);
          }
          const exclude = f.exclude ?? [];
          const include = f.include ?? [];
          const notify = f.notify ?? [];
          for (const a of notify) {
            const problem = addressProblem(a);
            if (problem) throw new UsageError(`--notify "${a}" is not an e-mail address: it ${problem}`);
          }
          const receivedAfter = f.receivedAfter !== undefined ? parseReceivedAfter(f.receivedAfter, '--received-after') : null;
          const file = await readCsvOrFail(f.csv, f.json);
          return withStore(f.db, async (store) => {
            const key = loadSecretKey();
            const r = await createBatch(store, { name, csv: file, endpoint: f.endpoint, target: f.target, exclude, include, notify, receivedAfter, badItemLimit, start }, key);
            if (!r.created) {
              printInvalid(f.csv, r.validation, `batch ${name} was not created`, f.json);
              return EXIT.usage;
            }
            const detail = await loadBatchDetail(store.db, r.batch);
            process.stderr.write(`batch ${name} created with ${r.mailboxes} mailbox${r.mailboxes === 1 ? '' : 'es'}: ${detail.batch.status}${detail.batch.startAt ? `, starts at ${when(detail.batch.startAt)}` : start.kind === 'manual' ? ` (start it with: mailferry batch start ${name})` : ''}\n`);
            if (f.json) process.stdout.write(JSON.stringify(detail.batch) + '\n');
            return EXIT.ok;
          });
        }),
    );

  batch
    .command('update <name>')
    .description(
      'Correct or extend a batch with a migration file: rows whose EmailAddress is in the batch replace its UserName, Password and UserRoot ' +
        '(a changed mailbox of a running batch syncs again at once, failure backoff reset); rows with a new address are added; ' +
        'mailboxes the file does not list are left as they are. Checked like batch create; nothing changes when the file is not valid.',
    )
    .requiredOption('--csv <file>', 'the migration file (it may hold only the rows to correct or add)')
    .option(...dbOption)
    .option('--json', 'print { changed, added, unchanged, notInFile } (or the validation problems) as JSON on the last line of stdout')
    .action((name: string, f: { csv: string; db?: string; json?: boolean }) =>
      run(async () => {
        const file = await readCsvOrFail(f.csv, f.json);
        return withStore(f.db, async (store) => {
          const r = await updateBatch(store, name, file, loadSecretKey());
          if (!r.updated) {
            printInvalid(f.csv, r.validation, `batch ${name} was not changed`, f.json);
            return EXIT.usage;
          }
          const list = (addresses: string[]) => (addresses.length ? `: ${addresses.slice(0, 20).join(', ')}${addresses.length > 20 ? ', …' : ''}` : '');
          process.stderr.write(
            `batch ${name}: ${r.changed.length} mailbox${r.changed.length === 1 ? '' : 'es'} changed${list(r.changed)}\n` +
              `batch ${name}: ${r.added.length} added${list(r.added)}\n` +
              `batch ${name}: ${r.unchanged} unchanged, ${r.notInFile} not in this file (left as they are)\n`,
          );
          if (f.json) process.stdout.write(JSON.stringify({ changed: r.changed, added: r.added, unchanged: r.unchanged, notInFile: r.notInFile }) + '\n');
          return EXIT.ok;
        });
      }),
    );

  batch
    .command('check-logins <name>')
    .description("Try every mailbox's source login and the target's admin login as its address, copying nothing. Exit 0 all logins work, 3 some fail.")
    .option(...dbOption)
    .option('--json', 'print the results as JSON on the last line of stdout')
    .action((name: string, f: { db?: string; json?: boolean }) =>
      run(() =>
        withStore(f.db, async (store) => {
          const b = await requireBatch(store.db, name);
          const key = loadSecretKey({ create: false });
          if (!(await claimTask(store, b.id, 'login_check'))) throw new UsageError(`the logins of batch "${name}" are being checked already (from the web page or another command); wait for that run to finish`);
          const results = await runLoginCheck(store, b.id, () => checkLogins(store, b, { key, logger: cliLogger('silent') }));
          const failed = results.filter((r) => !r.source.ok || !r.target.ok);
          // The failures last, beside the summary: in a file of 500 rows they are what to read.
          for (const r of [...results.filter((x) => x.source.ok && x.target.ok), ...failed]) {
            const side = (what: string, s: (typeof r)['source']) => (s.ok ? '' : `\n      ${what}: ${s.error}`);
            process.stderr.write(`${r.source.ok && r.target.ok ? 'ok  ' : 'FAIL'} line ${r.line} ${r.emailAddress}${side('source', r.source)}${side('target', r.target)}\n`);
          }
          const boxes = `${results.length} mailbox${results.length === 1 ? '' : 'es'}`;
          process.stderr.write(failed.length ? `${failed.length} of ${boxes} cannot log in\n` : results.length === 1 ? 'the mailbox can log in\n' : `all ${boxes} can log in\n`);
          if (f.json) process.stdout.write(JSON.stringify({ ok: failed.length === 0, mailboxes: results }) + '\n');
          return failed.length ? EXIT.connect : EXIT.ok;
        }),
      ),
    );

  batch
    .command('verify <name>')
    .description(
      'Compare each mailbox folder by folder, source against target (size, date and Message-ID; --content: full contents). ' +
        'A mailbox is verified when every source message is on the target. The result is kept for status and reports. ' +
        'Exit 0 every mailbox verified, 1 some not in sync, 3 some could not be reached or logged in to.',
    )
    .option(...dbOption)
    .option('--user <address>', 'only this mailbox')
    .option('--content', 'compare a digest of full message contents (downloads every message from both servers)')
    .option('--concurrency <n>', "mailboxes verified at once (default: the endpoint's incremental-sync limit, at most 10)")
    .option('--json', 'print the results as JSON on the last line of stdout')
    .action((name: string, f: { db?: string; user?: string; content?: boolean; concurrency?: string; json?: boolean }) =>
      run(() =>
        withStore(f.db, async (store) => {
          const b = await requireBatch(store.db, name);
          let concurrency: number | undefined;
          if (f.concurrency !== undefined) {
            concurrency = Number(f.concurrency);
            if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 100) throw new UsageError(`--concurrency must be a whole number from 1 to 100, not "${f.concurrency}"`);
          }
          const key = loadSecretKey({ create: false });
          if (!(await claimTask(store, b.id, 'verify'))) throw new UsageError(`batch "${name}" is already being verified (from the web page or another command)`);
          const results = await runClaimed(store, b.id, 'verify', () => verifyBatch(store, b, {
            key,
            logger: cliLogger('silent'),
            ...(f.user !== undefined ? { user: f.user } : {}),
            ...(concurrency !== undefined ? { concurrency } : {}),
            content: !!f.content,
            onMailbox: (v) => process.stderr.write(verificationLines(v)),
          }));
          if (f.user !== undefined && results.length === 0) throw new UsageError(`batch "${name}" has no mailbox ${f.user}`);
          const verified = results.filter((r) => r.kind === 'verified' && r.result.inSync).length;
          const unchecked = results.filter((r) => r.kind === 'error').length;
          process.stderr.write(
            verified === results.length
              ? `verified: ${results.length === 1 ? 'the mailbox is' : `all ${results.length} mailboxes are`} in sync\n`
              : `NOT verified: ${results.length - verified - unchecked} of ${results.length} mailboxes are not in sync${unchecked ? `, ${unchecked} could not be checked` : ''}\n`,
          );
          if (f.json) process.stdout.write(JSON.stringify({ verified: verified === results.length, mailboxes: results }) + '\n');
          // SPEC §8: 3 when a mailbox could not be reached or logged in to (as check-logins), else 1 when one is not in sync.
          return unchecked ? EXIT.connect : verified === results.length ? EXIT.ok : EXIT.incomplete;
        }),
      ),
    );

  batch
    .command('start <name>')
    .description('Start (or restart) a batch: mailboxes not yet synced are queued, a restart continues where it stopped.')
    .option(...dbOption)
    .option('--json', 'print { started } as JSON on the last line of stdout')
    .action((name: string, f: { db?: string; json?: boolean }) =>
      run(() =>
        withStore(f.db, async (store) => {
          const r = await startBatch(store, name);
          process.stderr.write(r.started ? `batch ${name} started\n` : `batch ${name} is already running\n`);
          if (f.json) process.stdout.write(JSON.stringify(r) + '\n');
          return EXIT.ok;
        }),
      ),
    );

  batch
    .command('stop <name>')
    .description('Stop a batch: running syncs are abandoned within seconds (what they copied stays copied); start it again to continue.')
    .option(...dbOption)
    .option('--json', 'print { stopped, stillSyncing } as JSON on the last line of stdout')
    .action((name: string, f: { db?: string; json?: boolean }) =>
      run(() =>
        withStore(f.db, async (store) => {
          const r = await stopBatch(store, name);
          if (f.json) process.stdout.write(JSON.stringify(r) + '\n');
          if (!r.stopped) process.stderr.write(`batch ${name} is already stopped\n`);
          else process.stderr.write(`batch ${name} stopped${r.stillSyncing ? ` (${r.stillSyncing} running sync${r.stillSyncing === 1 ? '' : 's'} will stop at the next heartbeat)` : ''}\n`);
          return EXIT.ok;
        }),
      ),
    );

  batch
    .command('sync-now <name>')
    .description('Sync every mailbox of the batch as soon as a worker is free (e.g. right after the MX switch).')
    .option(...dbOption)
    .option('--json', 'print { mailboxes } as JSON on the last line of stdout')
    .action((name: string, f: { db?: string; json?: boolean }) =>
      run(() =>
        withStore(f.db, async (store) => {
          const n = await syncNow(store, name);
          if (f.json) process.stdout.write(JSON.stringify({ mailboxes: n }) + '\n');
          process.stderr.write(`batch ${name}: ${n} mailbox${n === 1 ? '' : 'es'} will sync now\n`);
          return EXIT.ok;
        }),
      ),
    );

  batch
    .command('retry <name>')
    .description('Retry the failed mailboxes of a batch now (or one mailbox, whatever its status, with --user).')
    .option('--user <address>', 'only this mailbox (its EmailAddress)')
    .option(...dbOption)
    .option('--json', 'print { retrying: [{ emailAddress, status }] } as JSON on the last line of stdout')
    .action((name: string, f: { user?: string; db?: string; json?: boolean }) =>
      run(() =>
        withStore(f.db, async (store) => {
          const rows = await retryMailboxes(store, name, f.user);
          if (f.json) process.stdout.write(JSON.stringify({ retrying: rows }) + '\n');
          process.stderr.write(rows.length ? `batch ${name}: retrying ${rows.map((r) => r.emailAddress).join(', ')}\n` : `batch ${name} has no failed mailbox\n`);
          return EXIT.ok;
        }),
      ),
    );

  batch
    .command('status <name>')
    .description('Show the batch and each mailbox: status, counts, last sync, last error, and live msg/s and time left while syncing.')
    .option(...dbOption)
    .option('--json', 'print { batch, mailboxes } as JSON on the last line of stdout')
    .action((name: string, f: { db?: string; json?: boolean }) =>
      run(() =>
        withStore(f.db, async (store) => {
          const d = await loadBatchDetail(store.db, await requireBatch(store.db, name));
          if (f.json) process.stdout.write(JSON.stringify(d) + '\n');
          else printStatus(d.batch, d.mailboxes);
          return EXIT.ok;
        }),
      ),
    );

  batch
    .command('report <name>')
    .description('The batch report: per mailbox status, counts, durations, throughput, errors and skipped items (folder, date, subject, reason).')
    .option('--csv', 'print the report as CSV')
    .option('--json', 'print the report as JSON on the last line of stdout')
    .option(...dbOption)
    .action((name: string, f: { db?: string; json?: boolean; csv?: boolean }) =>
      run(() =>
        withStore(f.db, async (store) => {
          if (f.csv && f.json) throw new UsageError('--csv and --json exclude each other');
          const r = await buildReport(store.db, await requireBatch(store.db, name));
          if (f.csv) process.stdout.write(reportCsv(r));
          else if (f.json) process.stdout.write(JSON.stringify(r) + '\n');
          else {
            printStatus(r.batch, r.mailboxes);
            for (const m of r.mailboxes) for (const s of m.skippedItems) process.stdout.write(`skipped\t${m.emailAddress}\t${s.folder}\t${s.date.slice(0, 10)}\t"${s.subject}"\t${s.size} bytes\t${s.reason}\n`);
          }
          return EXIT.ok;
        }),
      ),
    );

  batch
    .command('delete <name>')
    .description(
      'Stop the batch and remove it and its mailboxes from the dashboard. Warns, and needs --force, before 72 hours after its initial sync, and ' +
        'for a mail domain whose recorded MX check (mailferry dns check DOMAIN --target-mx HOST) says MX does not point at the target yet, switched less ' +
        'than 72 hours ago, or switched after some mailboxes last synced (those are named).',
    )
    .option('--force', 'delete even though the 72 hours after the initial sync (or the MX switch) are not over')
    .option('--wait <duration>', 'how long to wait for running syncs to stop', '90s')
    .option(...dbOption)
    .option('--json', 'print { removed, remaining } (or { removed: false, warning }) as JSON on the last line of stdout')
    .action((name: string, f: { force?: boolean; wait: string; db?: string; json?: boolean }) =>
      run(() =>
        withStore(f.db, async (store) => {
          const waitMs = parseDuration(f.wait);
          if (waitMs === null) throw new UsageError(`--wait must be a duration like 30s or 2m, not "${f.wait}"`);
          const found = await findBatch(store.db, name);
          if (found) {
            // Deletion checks the MX switch only for domains a `dns check --target-mx` has recorded: say how to have it check the others.
            for (const d of (await batchMxReport(store.db, found.id, Date.now())).unwatched.slice(0, 5)) {
              process.stderr.write(`mailferry: note: no MX check recorded for ${d}; to have deletion wait for the switch, run: mailferry dns check ${d} --target-mx HOST\n`);
            }
          }
          let r;
          try {
            r = await deleteBatch(store, name, { force: !!f.force });
          } catch (err) {
            if (err instanceof DeleteTooEarlyError) {
              process.stderr.write(`mailferry: warning: ${err.message}\n`);
              if (f.json) process.stdout.write(JSON.stringify({ removed: false, warning: err.message }) + '\n');
              return EXIT.usage;
            }
            throw err;
          }
          // Mailboxes a worker holds go when it notices, at its next heartbeat (or when its lease expires).
          const deadline = Date.now() + waitMs;
          while (!r.removed && Date.now() < deadline) {
            await new Promise((res) => setTimeout(res, 500));
            r = { ...r, ...(await continueRemoval(store, r.batchId)) };
          }
          process.stderr.write(r.removed ? `batch ${name} deleted\n` : `batch ${name} is being deleted; ${r.remaining} mailbox${r.remaining === 1 ? '' : 'es'} still syncing will be removed when their workers stop\n`);
          if (f.json) process.stdout.write(JSON.stringify({ removed: r.removed, remaining: r.remaining }) + '\n');
          return EXIT.ok;
        }),
      ),
    );

  batch
    .command('list')
    .description('List the batches with their status.')
    .option(...dbOption)
    .option('--json', 'print JSON')
    .action((f: { db?: string; json?: boolean }) =>
      run(() =>
        withStore(f.db, async (store) => {
          const list = await loadBatchList(store.db);
          if (f.json) process.stdout.write(JSON.stringify(list) + '\n');
          else for (const b of list) process.stdout.write(batchLine(b) + '\n');
          return EXIT.ok;
        }),
      ),
    );
}
