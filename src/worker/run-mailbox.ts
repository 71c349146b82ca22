/**
 * One claimed mailbox, synced: the batch's CSV row and endpoints turned into SyncOptions
 * (the source login resolved and checked by src/auth, the target reached through its
 * admin credential) and handed to the engine.
 */
import type { Logger } from 'pino';
import { resolveSourceLogin, SourceLoginCache } from '../auth/source-login.js';
import { scrubSecrets } from '../auth/errors.js';
import { type Impersonation, targetLogin } from '../endpoint/target-login.js';
import type { ImapEndpoint } from '../imap/endpoint.js';
import { decryptSecret, type SecretKey } from '../secrets/index.js';
import { findPair } from '../store/journal.js';
import type { Store } from '../store/open.js';
import type { BatchMailboxRow, BatchRow, EndpointRow } from '../store/schema.js';
import { pairKeys, syncMailbox } from '../sync/mailbox-sync.js';
import type { SyncOptions, SyncSummary } from '../sync/options.js';
import type { SyncProgress } from '../sync/progress.js';
import type { Claim } from './lease.js';

/** Everything a run needs, read once after the claim. */
export interface Job {
  claim: Claim;
  batch: BatchRow;
  mailbox: BatchMailboxRow;
  source: EndpointRow;
  target: EndpointRow;
}

export async function loadJob(store: Store, claim: Claim): Promise<Job | null> {
  const mailbox = await store.db.selectFrom('batch_mailbox').selectAll().where('id', '=', claim.mailboxId).executeTakeFirst();
  const batch = await store.db.selectFrom('batch').selectAll().where('id', '=', claim.batchId).executeTakeFirst();
  if (!mailbox || !batch) return null;
  const source = await store.db.selectFrom('endpoint').selectAll().where('id', '=', batch.endpoint_id).executeTakeFirst();
  const target = await store.db.selectFrom('endpoint').selectAll().where('id', '=', batch.target_id).executeTakeFirst();
  if (!source || !target) return null;
  return { claim, batch, mailbox, source, target };
}

export interface RunControl {
  signal: AbortSignal;
  onProgress: (p: Readonly<SyncProgress>) => void;
}

/** What a worker calls to sync one mailbox; replaceable in tests of the leasing alone. */
export type MailboxRunner = (job: Job, control: RunControl) => Promise<{ summary: SyncSummary; pairId: number | null }>;

/** Thrown for a mailbox whose sync failed: the message is safe to store and show (no password). */
export class MailboxSyncError extends Error {
  override name = 'MailboxSyncError';
}

export function imapEndpointOf(row: EndpointRow): ImapEndpoint {
  return { host: row.host, port: row.port, tls: row.tls, acceptUntrustedCert: row.accept_untrusted_cert === 1 };
}

export function impersonationOf(row: Pick<EndpointRow, 'impersonation' | 'separator'>): Impersonation {
  return row.impersonation === 'separator' ? { kind: 'separator', separator: row.separator ?? '*' } : { kind: 'sasl' };
}

export interface RunnerOptions {
  store: Store;
  secretKey: SecretKey;
  logger: Logger;
  /** Parallel copy lanes per mailbox (each one source and one target connection). */
  connections: number;
  stallMs?: number;
}

function parseList(json: string | null): string[] | undefined {
  if (json === null) return undefined;
  const v = JSON.parse(json) as unknown;
  return Array.isArray(v) ? v.map(String) : undefined;
}

/** The engine, fed from the batch: the runner `serve` and `worker` use. */
export function engineRunner(opts: RunnerOptions): MailboxRunner {
  // Capability probes and admin fingerprints are shared by a batch's mailboxes (see resolve.ts).
  const loginCache = new SourceLoginCache();
  return async (job, control) => {
    const { mailbox, batch, source, target } = job;
    const log = opts.logger.child({ batch: batch.name, mailbox: mailbox.email_address, kind: job.claim.kind });
    const password = decryptSecret(opts.secretKey, mailbox.password_enc);
    if (target.password_enc === null || target.admin_user === null) throw new MailboxSyncError(`target "${target.name}" has no stored admin login`);
    const adminPassword = decryptSecret(opts.secretKey, target.password_enc);
    const secrets = [password, adminPassword];
    try {
      const sourceEndpoint = imapEndpointOf(source);
      const resolved = await resolveSourceLogin(sourceEndpoint, mailbox.user_name, password, {
        userRoot: mailbox.user_root ?? undefined,
        // The endpoint's `plain` forces SASL PLAIN; its default `login` leaves the choice to
        // SPEC §2 (LOGIN, or PLAIN with an authorization identity for `user*admin`).
        auth: source.auth === 'plain' ? 'plain' : 'auto',
        cache: loginCache,
        logger: log,
        ...(opts.stallMs ? { stallMs: opts.stallMs } : {}),
      });
      const exclude = parseList(batch.exclude_json);
      const include = parseList(batch.include_json);
      const syncOptions: SyncOptions = {
        source: { endpoint: sourceEndpoint, login: resolved.login, ...(resolved.userRoot ? { userRoot: resolved.userRoot } : {}) },
        target: { endpoint: imapEndpointOf(target), login: targetLogin(target.admin_user, adminPassword, impersonationOf(target), mailbox.email_address) },
        ...(exclude?.length ? { exclude } : {}),
        ...(include?.length ? { include } : {}),
        connections: opts.connections,
        ...(opts.stallMs ? { stallMs: opts.stallMs } : {}),
        logger: log,
        onProgress: control.onProgress,
        signal: control.signal,
      };
      const summary = await syncMailbox(opts.store, syncOptions);
      const { sourceKey, targetKey } = pairKeys(syncOptions);
      return { summary, pairId: (await findPair(opts.store.db, sourceKey, targetKey)) ?? null };
    } catch (err) {
      // Whatever the layer below says, no password leaves this function.
      const e = err as Error;
      throw Object.assign(new MailboxSyncError(scrubSecrets(e?.message ?? String(err), secrets)), { cause: err });
    }
  };
}
