/**
 * When a batch's report e-mail is due, and who sends it (SPEC §6: "when the initial sync
 * finishes and after each daily sync").
 *
 * - The **initial** report is due once the batch's initial sync is over (every mailbox
 *   synced or failed: `batch.initial_synced_at`).
 * - A **daily** report is due once a round of incremental syncs is over: every mailbox of a
 *   running batch, except those failing (a wrong password must not hold every report
 *   back; the report lists it), has finished a sync since the last report. Mailboxes
 *   sync on their own clocks (24 hours after their own last sync), so a round ends about
 *   a day after the last one; should a mailbox never finish (a sync that runs for days),
 *   the report goes anyway once 1.5 intervals have passed. Never more often than every
 *   half interval (a `sync-now` round right after a report waits), and when every mailbox
 *   is failing, once per interval (their hourly retries are no round).
 *
 * Sending is claimed like a lease, so several `serve` processes on one PostgreSQL send
 * each report once: a conditional UPDATE sets `report_claim_until`; the claimer sends and
 * records the report, or on failure leaves the claim as the retry wait. A sender that dies
 * mid-send leaves a claim that expires and the report is sent again (at least once: a
 * duplicate report is better than a lost one).
 */
import { sql } from 'kysely';
import type { Store } from '../store/open.js';
import type { BatchRow } from '../store/schema.js';
import type { ReportKind } from './compose.js';

/** How long a claimed report may take to build and send before another sender may try. */
export const REPORT_CLAIM_MS = 5 * 60_000;

/** Retry waits after failed sends: 1, 2, 4 … minutes, at most an hour. */
export function reportRetryMs(failures: number): number {
  return Math.min(3_600_000, 60_000 * 2 ** Math.min(Math.max(0, failures - 1), 10));
}

export interface DueReport {
  batch: BatchRow;
  kind: ReportKind;
  /** The report covers syncs that ended after this (null: from the start). */
  since: number | null;
}

/** Of the mailboxes that are not failing: how many, and how many have not finished a run since `since`. */
async function healthyMailboxes(store: Store, batchId: number, since: number): Promise<{ healthy: number; behind: number }> {
  const r = await store.db
    .selectFrom('batch_mailbox as m')
    .select((eb) => [
      eb.fn.countAll<number>().as('healthy'),
      eb.fn
        .sum<number>(
          eb
            .case()
            .when(
              eb.not(
                eb.exists(
                  eb
                    .selectFrom('sync_run as r')
                    .select(sql`1`.as('one'))
                    .whereRef('r.mailbox_id', '=', 'm.id')
                    .where('r.ended_at', '>', since)
                    .where('r.outcome', 'in', ['synced', 'failed']),
                ),
              ),
            )
            .then(1)
            .else(0)
            .end(),
        )
        .as('behind'),
    ])
    .where('m.batch_id', '=', batchId)
    .where('m.status', '!=', 'Failed')
    .executeTakeFirstOrThrow();
  return { healthy: Number(r.healthy), behind: Number(r.behind ?? 0) };
}

/** Runs of the batch's mailboxes that finished (synced or failed) since `since`. */
async function runsSince(store: Store, batchId: number, since: number): Promise<number> {
  const r = await store.db
    .selectFrom('sync_run')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('batch_id', '=', batchId)
    .where('ended_at', '>', since)
    .where('outcome', 'in', ['synced', 'failed'])
    .executeTakeFirstOrThrow();
  return Number(r.n);
}

export async function dueReports(store: Store, now: number, incrementalEveryMs: number): Promise<DueReport[]> {
  const batches = await store.db
    .selectFrom('batch')
    .selectAll()
    .where('state', 'in', ['Running', 'Stopped'])
    .where('initial_synced_at', 'is not', null)
    .where((eb) => eb.or([eb('report_claim_until', 'is', null), eb('report_claim_until', '<', now)]))
    .execute();
  const due: DueReport[] = [];
  for (const b of batches) {
    if (b.initial_report_at === null) {
      due.push({ batch: b, kind: 'initial', since: null });
      continue;
    }
    if (b.state !== 'Running') continue;
    const since = b.last_report_at ?? b.initial_report_at;
    if (now - since < incrementalEveryMs / 2) continue;
    if ((await runsSince(store, b.id, since)) === 0) continue;
    const { healthy, behind } = await healthyMailboxes(store, b.id, since);
    // Every mailbox failing (say, the source accounts were closed after the switch): their
    // retries every hour are no round; one report per interval says they still fail.
    const roundOver = healthy > 0 ? behind === 0 : now - since >= incrementalEveryMs;
    if (roundOver || now - since >= 1.5 * incrementalEveryMs) due.push({ batch: b, kind: 'daily', since });
  }
  return due;
}

/**
 * Takes the report for this sender: true when no one else holds it and it is still the
 * same report (no other sender sent it since it was found due).
 */
export async function claimReport(store: Store, due: DueReport, now: number): Promise<boolean> {
  const r = await store.db
    .updateTable('batch')
    .set({ report_claim_until: now + REPORT_CLAIM_MS })
    .where('id', '=', due.batch.id)
    .where((eb) => eb.or([eb('report_claim_until', 'is', null), eb('report_claim_until', '<', now)]))
    .where((eb) =>
      due.kind === 'initial'
        ? eb('initial_report_at', 'is', null)
        : eb.and([eb('initial_report_at', 'is not', null), due.batch.last_report_at === null ? eb('last_report_at', 'is', null) : eb('last_report_at', '=', due.batch.last_report_at)]),
    )
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** The report went out (or had nobody to go to, `note` says why): the next one covers the syncs from `coveredUntil`. */
export async function recordReportSent(store: Store, due: DueReport, coveredUntil: number, note: string | null): Promise<void> {
  await store.db
    .updateTable('batch')
    .set((eb) => ({
      initial_report_at: eb.fn.coalesce('initial_report_at', eb.val(coveredUntil)),
      last_report_at: coveredUntil,
      report_claim_until: null,
      report_error: note,
      report_failures: 0,
    }))
    .where('id', '=', due.batch.id)
    .execute();
}

/** Sending failed: keep the claim as the wait before the next attempt, and say why. */
export async function recordReportFailed(store: Store, due: DueReport, now: number, error: string): Promise<void> {
  const failures = due.batch.report_failures + 1;
  await store.db
    .updateTable('batch')
    .set({ report_claim_until: now + reportRetryMs(failures), report_error: error, report_failures: failures })
    .where('id', '=', due.batch.id)
    .execute();
}
