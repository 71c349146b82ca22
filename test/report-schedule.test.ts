/**
 * When report e-mails are due and who sends them (src/report/schedule.ts), against the
 * database alone, on SQLite and on PostgreSQL: the initial report once the initial sync is
 * over, claimed by exactly one of two senders, retried after a failed send; a daily report
 * once every mailbox that is not failing has synced again, or when overdue; none for a
 * stopped batch; one per interval for a batch whose every mailbox fails.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createBatch } from '../src/batch/create.js';
import { stopBatch, syncNow } from '../src/batch/lifecycle.js';
import { claimReport, dueReports, recordReportFailed, recordReportSent, reportRetryMs } from '../src/report/schedule.js';
import { generateSecretKeyText, loadSecretKey } from '../src/secrets/index.js';
import { insertEndpoint } from '../src/store/endpoints.js';
import type { Store } from '../src/store/open.js';
import type { SyncSummary } from '../src/sync/options.js';
import { DEFAULT_BACKOFF } from '../src/worker/backoff.js';
import { type Claim, claimNext, release } from '../src/worker/lease.js';
import { type DialectName, freshDb, postgresUnavailable, type TestDb } from './helpers/batch-lab.js';

const key = loadSecretKey({ env: { MAILFERRY_SECRET_KEY: generateSecretKeyText() } });
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

function summary(copied: number): SyncSummary {
  return { folders: 1, found: copied, copied, alreadyOnTarget: 0, skipped: 0, failed: 0, bytes: copied, flagsUpdated: 0, seconds: 1, peakRssMb: 0, reconnects: 0, withoutSomeKeywords: 0, skippedItems: [], folderList: [], failedFolders: [], dryRun: false };
}

for (const dialect of ['sqlite', 'postgres'] as DialectName[]) {
  describe(`report schedule (${dialect})`, async () => {
    const skip = dialect === 'postgres' ? await postgresUnavailable() : null;
    if (skip) process.stderr.write(`# skipping PostgreSQL report schedule tests: ${skip}\n`);
    let dir: string;
    let db: TestDb;
    let store: Store;
    /** The test's clock starts after the batch was created (its mailboxes are due from creation). */
    let t0 = 0;

    /** Claims every due mailbox at `now` and ends each run as `outcome(address)` says, at `now + 1 s`. */
    async function runAll(now: number, outcome: (address: string) => 'synced' | 'failed' | 'skip'): Promise<void> {
      const claims: Claim[] = [];
      for (let c = await claimNext(store, { owner: 'w', ttlMs: HOUR, now }); c; c = await claimNext(store, { owner: 'w', ttlMs: HOUR, now })) claims.push(c);
      for (const c of claims) {
        const m = await store.db.selectFrom('batch_mailbox').select('email_address').where('id', '=', c.mailboxId).executeTakeFirstOrThrow();
        const o = outcome(m.email_address);
        const result = o === 'synced' ? { kind: 'synced' as const, summary: summary(3), pairId: null } : { kind: 'failed' as const, error: 'login failed', pairId: null };
        if (o === 'skip') {
          // Given back unfinished (a shutdown): no finished run for this mailbox.
          await release(store, c, { kind: 'interrupted', why: 'shutdown', pairId: null }, undefined, { incrementalEveryMs: DAY, backoff: DEFAULT_BACKOFF, now: now + 1000 });
        } else {
          await release(store, c, result, undefined, { incrementalEveryMs: DAY, backoff: { baseMs: DAY, capMs: DAY }, now: now + 1000 });
        }
      }
    }

    before(async () => {
      if (skip) return;
      dir = mkdtempSync(join(tmpdir(), 'mailferry-report-'));
      db = await freshDb(dialect, dir);
      store = await db.open();
      for (const role of ['source', 'target'] as const) {
        await insertEndpoint(store.db, {
          role, name: role, host: '127.0.0.1', port: 1, tls: 'none', auth: 'login', accept_untrusted_cert: 0, max_concurrent_migrations: 20, max_concurrent_incremental_syncs: 10,
          admin_user: role === 'target' ? 'admin' : null, impersonation: role === 'target' ? 'sasl' : null, separator: null, password_enc: null, created_at: Date.now(),
        });
      }
      const csv = ['EmailAddress,UserName,Password', 'a@example.org,a,pw', 'b@example.org,b,pw', 'c@example.org,c,pw'].join('\n');
      const r = await createBatch(store, { name: 'rep', csv: Buffer.from(csv), endpoint: 'source', target: 'target', exclude: [], include: [], notify: [], receivedAfter: null, badItemLimit: null, start: { kind: 'now' } }, key);
      assert.ok(r.created);
      t0 = Date.now() + 1000;
    });
    after(async () => {
      if (skip) return;
      await store?.close();
      await db?.drop();
      rmSync(dir, { recursive: true, force: true });
    });

    test('the initial report: due once the initial sync is over, one sender, retried after a failure', { skip: skip ?? false }, async () => {
      // One mailbox given back unfinished: the initial sync is not over.
      await runAll(t0 + 10, (a) => (a === 'c@example.org' ? 'skip' : a === 'b@example.org' ? 'failed' : 'synced'));
      assert.deepEqual(await dueReports(store, t0 + 2000, DAY), []);
      await runAll(t0 + 3000, () => 'synced');
      const due = await dueReports(store, t0 + 5000, DAY);
      assert.deepEqual(due.map((d) => [d.batch.name, d.kind, d.since]), [['rep', 'initial', null]]);

      // Two senders found it due at once: one claim wins.
      assert.equal(await claimReport(store, due[0]!, t0 + 5000), true);
      assert.equal(await claimReport(store, due[0]!, t0 + 5001), false);
      assert.deepEqual(await dueReports(store, t0 + 6000, DAY), [], 'held by its sender');

      await recordReportFailed(store, due[0]!, t0 + 6000, 'SMTP refused');
      assert.deepEqual(await dueReports(store, t0 + 6000 + reportRetryMs(1) - 1, DAY), [], 'waiting for the retry');
      const again = await dueReports(store, t0 + 6000 + reportRetryMs(1) + 1, DAY);
      assert.equal(again[0]?.kind, 'initial');
      assert.equal(again[0]?.batch.report_error, 'SMTP refused');
      assert.equal(await claimReport(store, again[0]!, t0 + 70_000), true);
      await recordReportSent(store, again[0]!, t0 + 70_000, null);
      const b = await store.db.selectFrom('batch').selectAll().where('name', '=', 'rep').executeTakeFirstOrThrow();
      assert.deepEqual([b.initial_report_at, b.last_report_at, b.report_error, b.report_failures, b.report_claim_until], [t0 + 70_000, t0 + 70_000, null, 0, null]);
      assert.deepEqual(await dueReports(store, t0 + 80_000, DAY), [], 'sent: nothing due until incremental syncs ran');
    });

    test('a daily report waits for every mailbox that is not failing to sync again, or until overdue', { skip: skip ?? false }, async () => {
      const sent = t0 + 70_000;
      // A day later all three are due; only a's sync finishes (b's retry and c's are given back unfinished).
      await runAll(sent + DAY - 2000, (a) => (a === 'a@example.org' ? 'synced' : 'skip'));
      const states = await store.db.selectFrom('batch_mailbox').select(['email_address', 'status']).orderBy('line').execute();
      assert.deepEqual(states.map((s) => s.status), ['Synced', 'Failed', 'Synced']);
      assert.deepEqual(await dueReports(store, sent + DAY, DAY), [], 'c has not synced since the last report (b, failing, is not waited for)');
      await runAll(sent + DAY + 5000, () => 'synced');
      const due = await dueReports(store, sent + DAY + 10_000, DAY);
      assert.deepEqual(due.map((d) => [d.kind, d.since]), [['daily', sent]]);
      assert.equal(await claimReport(store, due[0]!, sent + DAY + 10_000), true);
      await recordReportSent(store, due[0]!, sent + DAY + 10_000, null);

      // Next day: c fails (and is not waited for), a syncs, b's sync never finishes: overdue after 1.5 days.
      const second = sent + DAY + 10_000;
      await runAll(second + DAY, (a) => (a === 'c@example.org' ? 'failed' : a === 'a@example.org' ? 'synced' : 'skip'));
      assert.deepEqual(await dueReports(store, second + DAY + 5000, DAY), [], 'b has not synced again');
      const overdue = await dueReports(store, second + 1.5 * DAY + 1, DAY);
      assert.deepEqual(overdue.map((d) => [d.kind, d.since]), [['daily', second]]);
      // A sender holding an old view cannot claim a report someone else already sent.
      assert.equal(await claimReport(store, overdue[0]!, second + 1.5 * DAY + 2), true);
      await recordReportSent(store, overdue[0]!, second + 1.5 * DAY + 2, null);
      assert.equal(await claimReport(store, overdue[0]!, second + 2 * DAY), false);
    });

    test('a stopped batch gets no daily report', { skip: skip ?? false }, async () => {
      const b = await store.db.selectFrom('batch').selectAll().where('name', '=', 'rep').executeTakeFirstOrThrow();
      await runAll(b.last_report_at! + DAY, () => 'synced');
      assert.equal((await dueReports(store, b.last_report_at! + DAY + 5000, DAY)).length, 1);
      await stopBatch(store, 'rep');
      assert.deepEqual(await dueReports(store, b.last_report_at! + DAY + 5000, DAY), []);
    });

    test('a batch whose every mailbox fails gets one report per interval, not one per retry', { skip: skip ?? false }, async () => {
      const csv = ['EmailAddress,UserName,Password', 'dead@example.org,dead,pw'].join('\n');
      const r = await createBatch(store, { name: 'dead', csv: Buffer.from(csv), endpoint: 'source', target: 'target', exclude: [], include: [], notify: [], receivedAfter: null, badItemLimit: null, start: { kind: 'now' } }, key);
      assert.ok(r.created);
      const t = Date.now() + 1000;
      await runAll(t, () => 'failed');
      const initial = await dueReports(store, t + 2000, DAY);
      assert.deepEqual(initial.map((d) => [d.batch.name, d.kind]), [['dead', 'initial']]);
      assert.ok(await claimReport(store, initial[0]!, t + 2000));
      await recordReportSent(store, initial[0]!, t + 2000, null);
      // Retries (here forced with sync-now) fail again and again: no report until an interval has passed.
      for (const at of [t + HOUR, t + 13 * HOUR]) {
        await syncNow(store, 'dead');
        await runAll(at, () => 'failed');
        assert.deepEqual(await dueReports(store, at + 5000, DAY), [], `no report after the retry at +${(at - t) / HOUR} h`);
      }
      await syncNow(store, 'dead');
      await runAll(t + DAY, () => 'failed');
      assert.deepEqual((await dueReports(store, t + DAY + 5000, DAY)).map((d) => [d.kind, d.since]), [['daily', t + 2000]]);
    });
  });
}
