/**
 * `mailferry serve` (scheduler, workers, the web page and HTTP API, in one process)
 * and `mailferry worker` (workers only, for more machines sharing one PostgreSQL).
 * SIGTERM or SIGINT stops them gracefully: running syncs are abandoned (what they copied
 * stays copied) and their mailboxes given back for the next worker; a second signal exits
 * at once, which is as safe as a crash — the leases expire and the journal resumes.
 */
import type { Command } from 'commander';
import { AdminTokenError, loadAdminToken } from '../http/admin-token.js';
import { listenHttp } from '../http/app.js';
import { parseDuration } from '../batch/duration.js';
import { MxWatcher } from '../dns/mx-watcher.js';
import { ReportMailConfigError, reportMailSetting } from '../report/mail-config.js';
import { ReportSender } from '../report/sender.js';
import { loadSecretKey, SecretKeyError } from '../secrets/index.js';
import { openStore } from '../store/open.js';
import { engineRunner } from '../worker/run-mailbox.js';
import { workerOwnerId } from '../worker/owner.js';
import { Scheduler } from '../worker/scheduler.js';
import { Worker } from '../worker/worker.js';
import { EXIT, UsageError } from './exit-codes.js';
import { cliLogger } from './logger.js';

type Run = (fn: () => Promise<number>) => Promise<void>;

interface ServiceFlags {
  incrementalEvery: string;
  concurrency: string;
  connections: string;
  leaseTtl: string;
  db?: string;
  logLevel: string;
  /** serve only: an address, or false for --no-listen. */
  listen?: string | false;
  /** serve only. */
  mxCheckEvery?: string;
}

/** How long a graceful stop waits for syncs to wind down before exiting anyway. */
const STOP_GRACE_MS = 20_000;

function duration(v: string, flag: string, minMs: number): number {
  const ms = parseDuration(v);
  if (ms === null) throw new UsageError(`${flag} must be a duration like 2s, 10m, 24h or 1d, not "${v}"`);
  if (ms < minMs) throw new UsageError(`${flag} must be at least ${minMs / 1000} s`);
  return ms;
}

function whole(v: string, flag: string, max: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new UsageError(`${flag} must be a whole number from 1 to ${max}, not "${v}"`);
  return n;
}

/** Only `HOST:PORT` (IPv6 in brackets); the port may be 0 for any free one. */
export function parseListen(v: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new UsageError(`--listen must be HOST:PORT, e.g. 127.0.0.1:8080, not "${v}"`);
  return { host: m[1] ?? m[2]!, port };
}

async function runService(f: ServiceFlags, role: 'serve' | 'worker'): Promise<number> {
  const incrementalEveryMs = duration(f.incrementalEvery, '--incremental-every', 1000);
  const leaseTtlMs = duration(f.leaseTtl, '--lease-ttl', 1000);
  const concurrency = whole(f.concurrency, '--concurrency', 1000);
  const connections = whole(f.connections, '--connections', 32);
  // Commander lets the last of --listen and --no-listen win silently: both is a mistake to say.
  if (role === 'serve' && process.argv.includes('--no-listen') && process.argv.some((a) => a === '--listen' || a.startsWith('--listen='))) {
    throw new UsageError('--listen and --no-listen exclude each other');
  }
  const listen = role === 'serve' && typeof f.listen === 'string' ? parseListen(f.listen) : undefined;
  const mxCheckEveryMs = duration(f.mxCheckEvery ?? '1h', '--mx-check-every', 1000);
  let key;
  try {
    // `serve` may be the first command on a fresh machine; a `worker` joins an existing
    // installation and must use its key, so it never makes one of its own.
    key = loadSecretKey({ create: role === 'serve' });
  } catch (err) {
    if (err instanceof SecretKeyError) throw new UsageError(err.message);
    throw err;
  }
  let mail;
  try {
    mail = role === 'serve' ? reportMailSetting() : undefined;
  } catch (err) {
    if (err instanceof ReportMailConfigError) throw new UsageError(err.message);
    throw err;
  }
  const logger = cliLogger(f.logLevel);
  const store = await openStore(f.db);
  const owner = workerOwnerId();
  const worker = new Worker(store, {
    owner,
    concurrency,
    incrementalEveryMs,
    leaseTtlMs,
    runner: engineRunner({ store, secretKey: key, logger, connections }),
    logger,
  });
  const reports = mail?.kind === 'on' ? new ReportSender({ store, config: mail.config, incrementalEveryMs, logger }) : undefined;
  if (mail?.kind === 'on') process.stderr.write(`mailferry: report e-mail through ${mail.config.display}${mail.config.admins.length ? ` to ${mail.config.admins.join(', ')} and` : ' to'} each batch's --notify addresses\n`);
  if (mail?.kind === 'off') process.stderr.write(`mailferry: report e-mail is off (${mail.why}); \`mailferry batch report\` shows reports\n`);
  const scheduler = role === 'serve' ? new Scheduler(store, logger) : undefined;
  const mxWatcher = role === 'serve' ? new MxWatcher(store, logger, mxCheckEveryMs) : undefined;
  let api;
  if (listen) {
    try {
      const token = loadAdminToken();
      // The routes use the workers' key: whatever they store, the workers can read.
      api = await listenHttp({ store, token, logger, key: () => key }, listen.host, listen.port);
      process.stderr.write(`mailferry: web page and HTTP API at ${api.url}/ (sign in with the admin token from ${token.where})\n`);
    } catch (err) {
      await store.close();
      if (err instanceof AdminTokenError) throw new UsageError(err.message);
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
        const why = code === 'EADDRINUSE' ? 'the address is in use (another mailferry serve?)' : code === 'EACCES' ? 'permission denied' : 'no such local address';
        throw new UsageError(`cannot listen on ${listen.host}:${listen.port}: ${why}; choose another with --listen HOST:PORT, or run without the web page and API with --no-listen`);
      }
      throw err;
    }
  }

  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      logger.warn({ signal: sig }, 'second signal: exiting now');
      process.exit(130);
    }
    logger.info({ signal: sig, running: worker.busy }, 'stopping: abandoning running syncs and giving their mailboxes back');
    worker.stop();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  logger.info({ owner, role, db: store.displayUrl, concurrency, incrementalEveryMs, leaseTtlMs }, `${role} started`);
  process.stderr.write(`mailferry: ${role} running as ${owner} on ${store.displayUrl} (Ctrl-C to stop)\n`);
  scheduler?.start();
  reports?.start();
  mxWatcher?.start();
  const done = worker.run();
  await done;
  // Once stopping, wind down within the grace period or give up (leases then expire on their own).
  reports?.stop();
  await Promise.race([Promise.all([scheduler?.stop(), api?.close(), mxWatcher?.stop()]), new Promise((r) => setTimeout(r, STOP_GRACE_MS).unref())]);
  await store.close();
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
  logger.info(`${role} stopped`);
  // Sockets of abandoned IMAP sessions may still be closing; nothing else is left to do.
  setTimeout(() => process.exit(), 1000).unref();
  return EXIT.ok;
}

function addServiceOptions(cmd: Command): Command {
  return cmd
    .option('--incremental-every <duration>', 'time between incremental syncs of each mailbox after its initial sync', '24h')
    .option('--concurrency <n>', 'mailboxes this process syncs at once (the endpoints\' limits hold on top, across all workers)', '20')
    .option('--connections <n>', 'copy lanes per mailbox, each one source and one target connection', '2')
    .option('--lease-ttl <duration>', 'a worker that stops heart-beating loses its mailboxes to others after this long', '60s')
    .option('--db <url>', 'state database: a SQLite file (PATH or sqlite:PATH) or postgres://… (default MAILFERRY_DB or ~/.mailferry/mailferry.sqlite); PostgreSQL to share with other machines')
    .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent', 'info');
}

export function registerServeCommands(program: Command, run: Run): void {
  addServiceOptions(
    program
      .command('serve')
      .description('Run the service: scheduler, workers, the web admin page and the HTTP API. Syncs every started batch until stopped.')
      .option('--listen <host:port>', 'serve the web page and HTTP API on this address (every /api/ request needs the admin token: MAILFERRY_ADMIN_TOKEN, else the admin-token file beside the secret key); plain HTTP, so keep it on loopback or behind a TLS proxy', '127.0.0.1:8080')
      .option('--no-listen', 'no web page or HTTP API (scheduler and workers only)')
      .option('--mx-check-every <duration>', 'repeat each recorded `dns check --target-mx` of a domain being migrated this often, so the MX switch (and a roll-back) is seen without checking by hand', '1h'),
  ).action((f: ServiceFlags) => run(() => runService(f, 'serve')));
  addServiceOptions(program.command('worker').description('Run workers only, e.g. on more machines sharing one PostgreSQL database with a `serve`.')).action((f: ServiceFlags) =>
    run(() => runService(f, 'worker')),
  );
}
