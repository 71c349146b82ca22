/**
 * One claimed mailbox, synced: the batch's CSV row and endpoints turned into SyncOptions
 * (the source login resolved and checked by src/auth, the target reached through its
 * admin credential) and handed to the engine.
 */
import { checkTargetSession, TargetCheckCache } from '../auth/target-check.js';
import { CredentialBreaker, credentialKey } from './credential-breaker.js';
import type { Logger } from 'pino';
import { decryptSecret, type SecretKey } from '../secrets/index.js';
import { findPair } from '../store/journal.js';
import type { Store } from '../store/open.js';
import type { BatchMailboxRow, BatchRow, EndpointRow } from '../store/schema.js';
import { pairKeys, syncMailbox } from '../sync/mailbox-sync.js';
import type { SyncOptions, SyncSummary } from '../sync/options.js';
import type { SyncProgress } from '../sync/progress.js';
import type { Claim } from './lease.js';
import { batchScope, SourceLoginCache, withMailboxSides } from './mailbox-sides.js';

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
  /** The lease fence (SyncOptions.mayWrite). */
  mayWrite: () => boolean;
}

/** The target admin credential's breaker key (the password only as a hash). */
export function targetCredentialKey(target: Pick<Job['target'], 'host' | 'port' | 'admin_user' | 'password_enc'>, key: SecretKey): string {
  return credentialKey('target', target.host, target.port, target.admin_user ?? '', target.password_enc ? decryptSecret(key, target.password_enc) : '');
}

/** What a worker calls to sync one mailbox; replaceable in tests of the leasing alone. */
export type MailboxRunner = (job: Job, control: RunControl) => Promise<{ summary: SyncSummary; pairId: number | null }>;

export interface RunnerOptions {
  store: Store;
  secretKey: SecretKey;
  logger: Logger;
  /** Parallel copy lanes per mailbox (each one source and one target connection). */
  connections: number;
  stallMs?: number;
}

/** The engine, fed from the batch: the runner `serve` and `worker` use. */
export function engineRunner(opts: RunnerOptions): MailboxRunner {
  // Capability probes and admin fingerprints are shared by a batch's mailboxes (see resolve.ts).
  const loginCache = new SourceLoginCache();
  // Admin credentials refused again and again are not tried by every mailbox (credential-breaker.ts).
  const breaker = new CredentialBreaker();
  const targetChecks = new TargetCheckCache();
  return async (job, control) => {
    const { mailbox, batch, source, target } = job;
    const log = opts.logger.child({ batch: batch.name, mailbox: mailbox.email_address, kind: job.claim.kind });
    // The login check's session is the sync's first source session (one login less per run).
    const ctx = { source, target, key: opts.secretKey, loginCache, breaker, logger: log, keepSourceSession: true, ...(opts.stallMs ? { stallMs: opts.stallMs } : {}) };
    const adminKey = targetCredentialKey(target, opts.secretKey);
    return withMailboxSides(ctx, mailbox, async (sides) => {
      const leave = await breaker.enter(adminKey, `the target admin login "${target.admin_user}"`);
      const syncOptions: SyncOptions = {
        ...sides,
        // SPEC §4: the batch's excluded or only-these folders, and "only messages received after a date".
        ...batchScope(batch),
        connections: opts.connections,
        ...(opts.stallMs ? { stallMs: opts.stallMs } : {}),
        logger: log,
        onProgress: (p) => {
          // Past 'connecting', the target admin's login has worked (credential-breaker.ts).
          if (p.phase !== 'connecting') breaker.succeeded(adminKey);
          control.onProgress(p);
        },
        signal: control.signal,
        mayWrite: control.mayWrite,
      };

      let summary: SyncSummary;
      try {
        // Before a mailbox's first copy: its target session must be the user's mailbox, not
        // the target admin's own (auth/target-check.ts).
        if (mailbox.initial_synced_at === null && target.admin_user) {
          await checkTargetSession(sides.target.endpoint, sides.target.login, mailbox.email_address, target.admin_user, { logger: log, cache: targetChecks, ...(opts.stallMs ? { stallMs: opts.stallMs } : {}) });
        }
        summary = await syncMailbox(opts.store, syncOptions);
      } catch (err) {
        breaker.judgeTargetError(adminKey, err, mailbox.email_address);
        throw err;
      } finally {
        leave();
      }
      breaker.succeeded(adminKey);
      const { sourceKey, targetKey } = pairKeys(syncOptions);
      return { summary, pairId: (await findPair(opts.store.db, sourceKey, targetKey)) ?? null };
    });
  };
}
