/**
 * `batch verify` (SPEC §6): each mailbox of a batch compared folder by folder, source
 * against target (src/sync/verify.ts); a mailbox is verified when every source message is
 * on the target. The outcome is stored with the mailbox, so status, reports and the API
 * show when it was last verified and what was missing.
 *
 * It logs in like the workers do (src/worker/mailbox-sides.ts) and runs beside them: a
 * mailbox syncing at that moment may show messages missing that are on their way, which
 * the output says.
 */
import { addressKey } from '../csv/address.js';
import type { Logger } from 'pino';
import type { Store } from '../store/open.js';
import type { BatchMailboxRow, BatchRow } from '../store/schema.js';
import { journalMappings } from '../sync/mailbox-sync.js';
import { verifyMailbox, type VerifyResult } from '../sync/verify.js';
import { batchScope, SourceLoginCache, withMailboxSides } from '../worker/mailbox-sides.js';
import { CredentialBreaker } from '../worker/credential-breaker.js';
import { targetCredentialKey } from '../worker/run-mailbox.js';
import type { SecretKey } from '../secrets/index.js';
import { pooled } from './pooled.js';
import { leaseIsLive } from './store.js';

/** Per folder, what `batch_mailbox.verify_json` keeps: the counts, not the message lists. */
export interface FolderCounts {
  target: string;
  sources: string[];
  sourceCount: number;
  targetCount: number;
  missing: number;
  extra: number;
  /** Target messages that repeat a source message already paired (FolderVerdict.duplicates); absent in results stored before it was kept. */
  duplicates?: number;
}

export type MailboxVerification =
  | { line: number; emailAddress: string; kind: 'verified'; result: VerifyResult; syncing: boolean }
  | { line: number; emailAddress: string; kind: 'error'; error: string };

export interface VerifyBatchOptions {
  key: SecretKey;
  logger: Logger;
  /** Only this mailbox (its address, any case). */
  user?: string;
  /** Compare a digest of full contents instead of size, date and Message-ID. */
  content?: boolean;
  /** Mailboxes verified at once (each holds one source and one target connection). */
  concurrency?: number;
  onMailbox?: (v: MailboxVerification) => void;
  now?: () => number;
}

async function record(store: Store, mailboxId: number, at: number, v: MailboxVerification): Promise<void> {
  const patch =
    v.kind === 'verified'
      ? {
          verified_at: at,
          verify_in_sync: v.result.inSync ? 1 : 0,
          verify_missing: v.result.missing,
          verify_json: JSON.stringify(
            v.result.folders.map((f): FolderCounts => ({ target: f.target, sources: f.sources, sourceCount: f.sourceCount, targetCount: f.targetCount, missing: f.missing, extra: f.extra, duplicates: f.duplicates })),
          ),
        }
      : { verified_at: at, verify_in_sync: 0, verify_missing: null, verify_json: JSON.stringify({ error: v.error }) };
  await store.db.updateTable('batch_mailbox').set(patch).where('id', '=', mailboxId).execute();
}

export async function verifyBatch(store: Store, batch: BatchRow, opts: VerifyBatchOptions): Promise<MailboxVerification[]> {
  const now = opts.now ?? Date.now;
  const source = await store.db.selectFrom('endpoint').selectAll().where('id', '=', batch.endpoint_id).executeTakeFirstOrThrow();
  const target = await store.db.selectFrom('endpoint').selectAll().where('id', '=', batch.target_id).executeTakeFirstOrThrow();
  let q = store.db.selectFrom('batch_mailbox').selectAll().where('batch_id', '=', batch.id).orderBy('line');
  if (opts.user !== undefined) q = q.where('email_key', 'in', [opts.user.trim().toLowerCase(), addressKey(opts.user.trim())]);
  const rows: BatchMailboxRow[] = await q.execute();
  // The workers' guard against admin lockouts (credential-breaker.ts): a wrong source or
  // target admin password is tried by one mailbox at a time, and by none after three refusals.
  const breaker = new CredentialBreaker();
  const ctx = { source, target, key: opts.key, loginCache: new SourceLoginCache(), breaker, logger: opts.logger };
  const adminKey = targetCredentialKey(target, opts.key);
  const scope = batchScope(batch);
  // Each mailbox verified holds a source session (one pair per mailbox: mailboxes are
  // compared side by side instead), like an incremental sync, on top of the workers' own:
  // by default no more of them than the endpoint allows incremental syncs.
  const limit = opts.concurrency ?? Math.max(1, Math.min(source.max_concurrent_incremental_syncs, 10));
  return pooled(rows, limit, async (m) => {
    let v: MailboxVerification;
    // A password the source refused at the last sync waits for the admin (worker/lease.ts):
    // a verification would be one more failed login on the user's live account.
    if (m.status === 'Failed' && m.next_sync_at === null) {
      v = { line: m.line, emailAddress: m.email_address, kind: 'error', error: `not verified: the source refused the password of ${m.user_name} at its last sync, and it is not tried again so that the account is not locked (correct it with batch update, or retry the mailbox)` };
      await record(store, m.id, now(), v);
      opts.onMailbox?.(v);
      return v;
    }
    try {
      const result = await withMailboxSides(ctx, m, async (sides) => {
        const leave = await breaker.enter(adminKey, `the target admin login "${target.admin_user}"`);
        try {
          // Proven at the target's login, not at the end of a verification that may take hours.
          const r = await verifyMailbox({ ...sides, ...scope, content: !!opts.content, connections: 1, logger: opts.logger, established: await journalMappings(store.db, sides), onTargetLogin: () => breaker.succeeded(adminKey) });
          breaker.succeeded(adminKey);
          return r;
        } catch (err) {
          breaker.judgeTargetError(adminKey, err, m.email_address);
          throw err;
        } finally {
          leave();
        }
      });
      const fresh = await store.db.selectFrom('batch_mailbox').select(['lease_owner', 'lease_expires_at']).where('id', '=', m.id).executeTakeFirst();
      v = { line: m.line, emailAddress: m.email_address, kind: 'verified', result, syncing: leaseIsLive(m, now()) || (!!fresh && leaseIsLive(fresh, now())) };
    } catch (err) {
      // withMailboxSides's errors hold no password.
      v = { line: m.line, emailAddress: m.email_address, kind: 'error', error: (err as Error)?.message ?? String(err) };
    }
    await record(store, m.id, now(), v);
    opts.onMailbox?.(v);
    return v;
  });
}
