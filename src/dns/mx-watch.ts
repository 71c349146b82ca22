/**
 * The 72 hours of SPEC §7, kept in the state database: per domain and target, when
 * mailferry first saw every MX point at the target (`switched_seen_at`). mailferry cannot
 * know when the admin changed the zone, only when a check first saw the change, so the
 * switch happened *at or before* that time and 72 hours from it are a safe wait.
 *
 * Batch deletion (src/batch/lifecycle.ts) asks here about its mailboxes' domains.
 */
import type { Kysely } from 'kysely';
import { roughDuration } from '../batch/duration.js';
import { writeTx } from '../batch/tx.js';
import type { Store } from '../store/open.js';
import type { Database, MxWatchRow } from '../store/schema.js';
import type { SwitchState } from './mx-verdict.js';

/** SPEC §4/§7: wait 72 hours after the MX change before deleting the batch. */
export const MX_GRACE_MS = 72 * 3_600_000;
/**
 * A recorded check older than this is not trusted for deleting a batch: MX may have been
 * changed back since (a roll-back), and deleting would then lose the mail going to the old
 * server again. Checking again is one command.
 */
export const MX_CHECK_FRESH_MS = 6 * 3_600_000;

export interface MxWatchOutcome {
  /** When every MX was first seen pointing at the target (ms), or null when this check did not see it. */
  switchedSeenAt: number | null;
  /** A switch time this check forgot: MX pointed at the target before and no longer does. */
  forgottenSwitch: number | null;
}

/** "2026-11-28 08:00 UTC": how times are shown to the admin. */
export function utc(ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

/** Records one check's outcome; keeps the first time the switch was seen, forgets it when MX moved away. */
export function recordMxCheck(store: Pick<Store, 'db' | 'dialect'>, check: { domain: string; targetMx: string; state: SwitchState; ttl: number | null; now: number; resolver?: string | null }): Promise<MxWatchOutcome> {
  return writeTx(store, async (tx) => {
    const key = { domain: check.domain, target_mx: check.targetMx };
    // Insert-if-missing first, so two checks at once on PostgreSQL meet at the row lock below instead of a key conflict.
    await tx
      .insertInto('mx_watch')
      .values({ ...key, state: check.state, switched_seen_at: null, checked_at: check.now, ttl: check.ttl, created_at: check.now, resolver: check.resolver ?? null })
      .onConflict((oc) => oc.columns(['domain', 'target_mx']).doNothing())
      .execute();
    let q = tx.selectFrom('mx_watch').selectAll().where('domain', '=', key.domain).where('target_mx', '=', key.target_mx);
    if (store.dialect === 'postgres') q = q.forUpdate();
    const row = await q.executeTakeFirstOrThrow();
    const switchedSeenAt = check.state === 'all' ? (row.switched_seen_at ?? check.now) : null;
    await tx
      .updateTable('mx_watch')
      .set({ state: check.state, switched_seen_at: switchedSeenAt, checked_at: check.now, ttl: check.ttl, resolver: check.resolver ?? null })
      .where('domain', '=', key.domain)
      .where('target_mx', '=', key.target_mx)
      .execute();
    return { switchedSeenAt, forgottenSwitch: check.state !== 'all' ? row.switched_seen_at : null };
  });
}

/** The latest check of each domain (whatever target it named: the admin's last word). */
export async function latestWatches(db: Kysely<Database>, domains: readonly string[]): Promise<Map<string, MxWatchRow>> {
  const latest = new Map<string, MxWatchRow>();
  for (let i = 0; i < domains.length; i += 500) {
    const rows = await db.selectFrom('mx_watch').selectAll().where('domain', 'in', domains.slice(i, i + 500)).execute();
    for (const r of rows) {
      const seen = latest.get(r.domain);
      if (!seen || r.checked_at > seen.checked_at) latest.set(r.domain, r);
    }
  }
  return latest;
}

export interface BatchMxReport {
  /** Reasons not to delete the batch yet, one per domain (and one per domain's unsynced mailboxes). */
  warnings: string[];
  /** Mail domains of the batch that no `dns check --target-mx` has recorded. */
  unwatched: string[];
}

/** The domain of a mailbox's email_key (already lower case, with an ASCII domain: csv/address.ts). */
const domainOf = (key: string) => key.slice(key.lastIndexOf('@') + 1).replace(/\.$/, '');

/**
 * What the recorded MX checks say against deleting batch `batchId` now: a domain whose MX
 * does not (fully) point at the target yet, or switched less than 72 hours ago; and, once
 * the switch time is known, the mailboxes whose last successful sync ended before it
 * (mail delivered to the old server in between is on no target). A domain never checked
 * says nothing here (`unwatched`): batches are deleted without DNS data too.
 */
export async function batchMxReport(db: Kysely<Database>, batchId: number, now: number): Promise<BatchMxReport> {
  const mailboxes = await db.selectFrom('batch_mailbox').select(['email_address', 'email_key', 'last_sync_at']).where('batch_id', '=', batchId).orderBy('line').execute();
  const byDomain = new Map<string, typeof mailboxes>();
  for (const m of mailboxes) {
    const d = domainOf(m.email_key);
    // Pushed, not copied: one domain of 50,000 mailboxes made a copy per mailbox (30 s).
    const list = byDomain.get(d);
    if (list) list.push(m);
    else byDomain.set(d, [m]);
  }
  const watches = await latestWatches(db, [...byDomain.keys()]);
  const warnings: string[] = [];
  const unwatched: string[] = [];
  for (const [domain, boxes] of byDomain) {
    const w = watches.get(domain);
    if (!w) {
      unwatched.push(domain);
      continue;
    }
    const checked = `last checked ${utc(w.checked_at)}`;
    if (now - w.checked_at > MX_CHECK_FRESH_MS) {
      warnings.push(`the last MX check of ${domain} is ${roughDuration(now - w.checked_at)} old: check it again (mailferry dns check ${domain} --target-mx ${w.target_mx}) before deleting, MX may have changed since.`);
    }
    if (w.state !== 'all' || w.switched_seen_at === null) {
      warnings.push(
        w.state === 'some'
          ? `the MX of ${domain} points at ${w.target_mx} only in part (${checked}): mail still reaches the old server through the other MX records.`
          : `the MX of ${domain} does not point at ${w.target_mx} yet (${checked}): mail still goes to the old server.`,
      );
      continue;
    }
    const age = now - w.switched_seen_at;
    if (age < MX_GRACE_MS) {
      warnings.push(
        `the MX of ${domain} points at ${w.target_mx} since at least ${utc(w.switched_seen_at)} (first seen by mailferry), ${roughDuration(Math.max(0, age))} ago, ` +
          `less than 72 hours (${roughDuration(MX_GRACE_MS - age)} to go): resolvers and sending servers may still deliver to the old server.`,
      );
    }
    // Mail reaches the old server for as long as resolvers and senders keep the old MX: the
    // 72 hours. Only a sync after they are over has copied all of it (SPEC §4: "every mailbox
    // synced at least once after" the change), so that is the sync each mailbox needs.
    const over = w.switched_seen_at + MX_GRACE_MS;
    const stale = boxes.filter((m) => m.last_sync_at === null || m.last_sync_at < (age < MX_GRACE_MS ? w.switched_seen_at! : over));
    if (stale.length > 0) {
      const examples = stale.slice(0, 3).map((m) => m.email_address).join(', ');
      const which = `${stale.length} mailbox${stale.length === 1 ? '' : 'es'}, e.g. ${examples}${stale.length > 3 ? ', …' : ''}`;
      warnings.push(
        age < MX_GRACE_MS
          ? `not synced since the MX switch of ${domain}: ${which} (mail delivered to the old server before the switch may be missing on the target).`
          : `not synced since the 72 hours after the MX switch of ${domain} ended (${utc(over)}): ${which}; sync them (sync now) and delete after that, so the mail that reached the old server meanwhile is copied.`,
      );
    }
  }
  return { warnings, unwatched };
}
