/**
 * Leases, lifecycle and the worker loop against the database alone (no IMAP: a stand-in
 * runner), on SQLite and on PostgreSQL: claims never hand out a held mailbox, endpoint
 * limits hold across workers, expired leases are taken over, outcomes and lifecycle
 * commands move mailboxes and batches through their statuses as SPEC §4 says.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { createBatch, type StartPlan } from '../src/batch/create.js';
import { DeleteTooEarlyError } from '../src/batch/errors.js';
import { deleteBatch, retryMailboxes, startBatch, stopBatch, syncNow } from '../src/batch/lifecycle.js';
import { findBatch } from '../src/batch/store.js';
import { updateBatch } from '../src/batch/update.js';
import { buildReport } from '../src/report/batch-report.js';
import { loadBatchDetail, loadBatchView, loadMailboxPage } from '../src/batch/view.js';
import { generateSecretKeyText, loadSecretKey } from '../src/secrets/index.js';
import { insertEndpoint } from '../src/store/endpoints.js';
import { ensureFolders, ensurePair, insertMessages } from '../src/store/journal.js';
import type { Store } from '../src/store/open.js';
import type { BatchRow } from '../src/store/schema.js';
import type { SyncSummary } from '../src/sync/options.js';
import { emptyProgress } from '../src/sync/progress.js';
import { DEFAULT_BACKOFF } from '../src/worker/backoff.js';
import { claimNext, pulse, release } from '../src/worker/lease.js';
import type { MailboxRunner } from '../src/worker/run-mailbox.js';
import { Worker } from '../src/worker/worker.js';
import { type DialectName, freshDb, postgresUnavailable, type TestDb } from './helpers/batch-lab.js';

const key = loadSecretKey({ env: { MAILFERRY_SECRET_KEY: generateSecretKeyText() } });
const silent = pino({ level: 'silent' });
const TTL = 10_000;
const DAY = 86_400_000;

function summary(copied: number, extra: Partial<SyncSummary> = {}): SyncSummary {
  return { folders: 3, found: copied, copied, alreadyOnTarget: 0, skipped: 0, failed: 0, bytes: copied * 1000, flagsUpdated: 0, seconds: 0.1, peakRssMb: 0, reconnects: 0, withoutSomeKeywords: 0, skippedItems: [], folderList: [], failedFolders: [], dryRun: false, ...extra };
}

for (const dialect of ['sqlite', 'postgres'] as DialectName[]) {
  describe(`leases and lifecycle (${dialect})`, async () => {
    const skip = dialect === 'postgres' ? await postgresUnavailable() : null;
    if (skip) process.stderr.write(`# skipping PostgreSQL lease tests: ${skip}\n`);
    let dir: string;
    let db: TestDb;
    let store: Store;
    let n = 0;

    /** A started batch of `rows` mailboxes on a fresh source endpoint with these limits. */
    async function batchOf(rows: number, limits: { migrations?: number; incremental?: number } = {}, start: StartPlan = { kind: 'now' }, badItemLimit: number | null = null): Promise<BatchRow> {
      const id = ++n;
      // Earlier tests' batches would compete for claims: each test works on its own batch.
      await store.db.updateTable('batch').set({ state: 'Stopped' }).where('state', '=', 'Running').execute();
      await insertEndpoint(store.db, {
        role: 'source', name: `src${id}`, host: '127.0.0.1', port: 1, tls: 'none', auth: 'login', accept_untrusted_cert: 0,
        max_concurrent_migrations: limits.migrations ?? 20, max_concurrent_incremental_syncs: limits.incremental ?? 10,
        admin_user: null, impersonation: null, separator: null, password_enc: null, created_at: Date.now(),
      });
      const csv = ['EmailAddress,UserName,Password', ...Array.from({ length: rows }, (_, i) => `u${id}-${i}@example.org,u${id}-${i},pw-${i}`)].join('\n');
      const r = await createBatch(store, { name: `b${id}`, csv: Buffer.from(csv), endpoint: `src${id}`, target: 'tgt', exclude: ['Junk'], include: [], notify: [], receivedAfter: null, badItemLimit, start }, key);
      assert.ok(r.created, JSON.stringify(r));
      return r.batch;
    }
    const detail = async (b: BatchRow) => loadBatchDetail(store.db, (await findBatch(store.db, b.name))!);

    before(async () => {
      if (skip) return;
      dir = mkdtempSync(join(tmpdir(), 'mailferry-lease-'));
      db = await freshDb(dialect, dir);
      store = await db.open();
      await insertEndpoint(store.db, {
        role: 'target', name: 'tgt', host: '127.0.0.1', port: 1, tls: 'none', auth: 'plain', accept_untrusted_cert: 0,
        max_concurrent_migrations: 100, max_concurrent_incremental_syncs: 100, admin_user: 'admin', impersonation: 'sasl', separator: null, password_enc: null, created_at: Date.now(),
      });
    });
    after(async () => {
      if (skip) return;
      await store?.close();
      await db?.drop();
      rmSync(dir, { recursive: true, force: true });
    });

    test("a mailbox's copied count is the journal's, in the folders its run took", { skip: skip ?? false }, async () => {
      const b = await batchOf(1);
      const claim = await claimNext(store, { owner: 'A', ttlMs: TTL, now: Date.now() });
      assert.ok(claim);
      // Copies of an earlier, wider run of the same pair: INBOX 3, Archive 5.
      const pairId = await ensurePair(store.db, `src-${n}`, `tgt-${n}`);
      const folders = await ensureFolders(store.db, pairId, [{ sourcePath: 'INBOX', targetPath: 'INBOX' }, { sourcePath: 'Archive', targetPath: 'Archive' }]);
      const copied = (folder: string, uids: number[]) => insertMessages(store.db, uids.map((source_uid) => ({ folder_id: folders.get(folder)!.id, source_uid, state: 'copied' as const, size: 100, internal_date: 0, digest: null, flags: '', target_uid: source_uid, uid_floor: null, skip_kind: null, reason: null, subject: null })));
      await copied('INBOX', [1, 2, 3]);
      await copied('Archive', [1, 2, 3, 4, 5]);
      const inboxOnly = summary(0, { found: 3, folderList: [{ source: 'INBOX', target: 'INBOX', found: 3 }] });
      assert.ok(await release(store, claim, { kind: 'synced', summary: inboxOnly, pairId }, undefined, { incrementalEveryMs: DAY, backoff: DEFAULT_BACKOFF }));
      const m = (await detail(b)).mailboxes[0]!;
      assert.deepEqual([m.found, m.copied, m.bytes], [3, 3, 300]);
      // The planning rate counts what the runs copied (none here: the copies were on the
      // target already), not what is on the target.
      const row = (await findBatch(store.db, b.name))!;
      assert.ok(row.initial_synced_at !== null);
      await store.db.updateTable('batch').set({ started_at: row.initial_synced_at - 10_000 }).where('id', '=', b.id).execute();
      const at = Date.now();
      const again = await loadBatchDetail(store.db, (await findBatch(store.db, b.name))!, at);
      assert.deepEqual([again.batch.totals.copied, again.batch.initialSync?.messagesPerSecond], [3, 0]);
      assert.deepEqual(await loadBatchView(store.db, (await findBatch(store.db, b.name))!, at), again.batch);

      // Two source messages deleted since (their copies stay on the target) and one new one
      // refused: found 2, of which 1 copied, not "3 of 2".
      const next = (await claimNext(store, { owner: 'A', ttlMs: TTL, now: Date.now() + DAY + 1 }))!;
      assert.equal(next.mailboxId, claim.mailboxId);
      await release(store, next, { kind: 'synced', summary: summary(0, { found: 2, skipped: 1, folderList: [{ source: 'INBOX', target: 'INBOX', found: 2 }] }), pairId }, undefined, { incrementalEveryMs: DAY, backoff: DEFAULT_BACKOFF });
      assert.deepEqual((await detail(b)).mailboxes.map((x) => [x.found, x.copied]), [[2, 1]]);
      // A batch that migrates only recent mail counts only the copies in its scope (a copy
      // whose date the source did not give counts, as the scan counts it).
      await store.db.updateTable('message').set({ internal_date: Date.UTC(2020, 0, 1) }).where('folder_id', '=', folders.get('INBOX')!.id).where('source_uid', '=', 1).execute();
      await store.db.updateTable('message').set({ internal_date: Date.UTC(2024, 0, 1) }).where('folder_id', '=', folders.get('INBOX')!.id).where('source_uid', '=', 2).execute();
      await store.db.updateTable('batch').set({ received_after: Date.UTC(2023, 0, 1) }).where('id', '=', b.id).execute();
      const scoped = (await claimNext(store, { owner: 'A', ttlMs: TTL, now: Date.now() + 2 * DAY + 2 }))!;
      await release(store, scoped, { kind: 'synced', summary: summary(0, { found: 3, folderList: [{ source: 'INBOX', target: 'INBOX', found: 3 }] }), pairId }, undefined, { incrementalEveryMs: DAY, backoff: DEFAULT_BACKOFF });
      assert.deepEqual((await detail(b)).mailboxes.map((x) => [x.found, x.copied, x.bytes]), [[3, 2, 200]], 'uid 2 (2024) and uid 3 (no date); not uid 1 (2020)');
    });

    test('the batch view summed by the database (dashboard, batch page) equals the one added up over every mailbox; pages and filters of mailboxes', { skip: skip ?? false }, async () => {
      const b = await batchOf(6);
      const now = Date.now();
      // One synced, one failed (with progress), one held and copying, one stopped half-way later; two queued.
      const synced = (await claimNext(store, { owner: 'A', ttlMs: TTL, now }))!;
      await release(store, synced, { kind: 'synced', summary: summary(40, { found: 42, skipped: 2 }), pairId: null }, undefined, { incrementalEveryMs: DAY, backoff: DEFAULT_BACKOFF, now });
      const failed = (await claimNext(store, { owner: 'A', ttlMs: TTL, now }))!;
      await release(store, failed, { kind: 'failed', error: 'source login failed for x: wrong password', pairId: null }, { ...emptyProgress(), toCopy: 10, copied: 3 }, { incrementalEveryMs: DAY, backoff: DEFAULT_BACKOFF, now });
      const held = (await claimNext(store, { owner: 'B', ttlMs: TTL, now }))!;
      await pulse(store, held, { ...emptyProgress(), phase: 'copying', toCopy: 500, copied: 120, copiedBytes: 120_000, toCopyBytes: 500_000, alreadyOnTarget: 30 }, { ttlMs: TTL, now: now + 1000 });
      const row = (await findBatch(store.db, b.name))!;
      const whole = (await loadBatchDetail(store.db, row, now + 2000)).batch;
      assert.deepEqual(await loadBatchView(store.db, row, now + 2000), whole);
      assert.equal(whole.mailboxes, 6);
      // The held one's live figures: its copies, and what it found on the target already (counted as there, not as copied by its rate).
      const boxes = (await loadBatchDetail(store.db, row, now + 2000)).mailboxes;
      const live = boxes.find((m) => m.syncing)!.syncing!;
      assert.deepEqual([live.copied, live.alreadyOnTarget, live.messagesPerSecond], [120, 30, 120]);
      assert.equal(whole.totals.copied - boxes.reduce((n, m) => n + m.copied, 0), 120 + 30);
      assert.ok(whole.etaSeconds !== null && whole.totals.found > 500, JSON.stringify(whole));
      // Pages and filters, as the batch page asks for them.
      const all = await loadMailboxPage(store.db, b.id, {}, now);
      assert.equal(all.matching, 6);
      const page = await loadMailboxPage(store.db, b.id, { offset: 2, limit: 2 }, now);
      assert.deepEqual(page.mailboxes.map((m) => m.line), all.mailboxes.slice(2, 4).map((m) => m.line));
      assert.deepEqual((await loadMailboxPage(store.db, b.id, { status: 'problems' }, now)).mailboxes.map((m) => m.status), ['Failed']);
      assert.equal((await loadMailboxPage(store.db, b.id, { status: 'Queued' }, now)).matching, 3);
      const one = all.mailboxes[4]!.emailAddress;
      assert.deepEqual((await loadMailboxPage(store.db, b.id, { addressContains: one.toUpperCase() }, now)).mailboxes.map((m) => m.emailAddress), [one]);
      // LIKE's wildcards typed by the admin are letters, not patterns.
      assert.equal((await loadMailboxPage(store.db, b.id, { addressContains: '%' }, now)).matching, 0);
      assert.equal((await loadMailboxPage(store.db, b.id, { addressContains: '_' }, now)).matching, 0);
    });

    test('a claim takes one due mailbox, never a held one, within the endpoint limit', { skip: skip ?? false }, async () => {
      const b = await batchOf(4, { migrations: 2 });
      const now = Date.now();
      const a = await claimNext(store, { owner: 'A', ttlMs: TTL, now });
      const c = await claimNext(store, { owner: 'B', ttlMs: TTL, now });
      assert.ok(a && c);
      assert.notEqual(a.mailboxId, c.mailboxId);
      assert.equal(a.kind, 'initial');
      // Two initial syncs from this endpoint are live: the limit is reached.
      assert.equal(await claimNext(store, { owner: 'C', ttlMs: TTL, now }), null);
      const d = await detail(b);
      assert.equal(d.batch.status, 'Syncing');
      assert.equal(d.mailboxes.filter((m) => m.status === 'Syncing').length, 2);
      assert.deepEqual(new Set(d.mailboxes.filter((m) => m.syncing).map((m) => m.syncing!.worker)), new Set(['A', 'B']));
      // Releasing one frees a place.
      assert.ok(await release(store, a, { kind: 'synced', summary: summary(5), pairId: null }, undefined, { incrementalEveryMs: DAY, backoff: DEFAULT_BACKOFF, now }));
      const e = await claimNext(store, { owner: 'C', ttlMs: TTL, now });
      assert.ok(e);
      assert.ok(![a.mailboxId, c.mailboxId].includes(e.mailboxId));
    });

    test('an expired lease is taken over; the old holder then changes nothing', { skip: skip ?? false }, async () => {
      const b = await batchOf(1);
      const t0 = Date.now();
      const first = (await claimNext(store, { owner: 'dead', ttlMs: TTL, now: t0 }))!;
      assert.equal(first.batchId, b.id);
      // It had copied 40 messages when it died.
      await pulse(store, first, { ...emptyProgress(), phase: 'copying', toCopy: 100, copied: 40, copiedBytes: 4000 }, { ttlMs: TTL, now: t0 + 1 });
      assert.equal(await claimNext(store, { owner: 'other', ttlMs: TTL, now: t0 + TTL - 1 }).then((c) => c?.batchId === b.id), false, 'a live lease is not taken');
      const second = (await claimNext(store, { owner: 'other', ttlMs: TTL, now: t0 + 1 + TTL + 1 }))!;
      assert.equal(second.mailboxId, first.mailboxId);
      // Taken over: the mailbox still counts what the dead run copied (not "0 of 60" on the page).
      assert.deepEqual((await detail(b)).mailboxes.map((m) => [m.copied, m.bytes]), [[40, 4000]]);
      const p = await pulse(store, first, undefined, { ttlMs: TTL, now: t0 + TTL + 3 });
      assert.equal(p.owned, false);
      assert.equal(await release(store, first, { kind: 'synced', summary: summary(1), pairId: null }, undefined, { incrementalEveryMs: DAY, backoff: DEFAULT_BACKOFF }), false);
      const runs = await store.db.selectFrom('sync_run').selectAll().where('mailbox_id', '=', first.mailboxId).orderBy('id').execute();
      assert.deepEqual(runs.map((r) => [r.owner, r.outcome]), [['dead', 'abandoned'], ['other', null]]);
      assert.equal(runs[0]!.ended_at, t0 + 1 + TTL, 'the abandoned run ended when its lease (extended by its last pulse) expired');
      assert.ok(await pulse(store, second, undefined, { ttlMs: TTL }).then((r) => r.owned));
    });

    test('outcomes: synced, failed with backoff, bad-item limit; the batch status follows', { skip: skip ?? false }, async () => {
      const b = await batchOf(3);
      const now = Date.now();
      const claims = [await claimNext(store, { owner: 'W', ttlMs: TTL, now }), await claimNext(store, { owner: 'W', ttlMs: TTL, now }), await claimNext(store, { owner: 'W', ttlMs: TTL, now })];
      const mine = claims.filter((c) => c?.batchId === b.id);
      assert.equal(mine.length, 3);
      const policy = { incrementalEveryMs: DAY, backoff: DEFAULT_BACKOFF, now: now + 1000 };
      await release(store, mine[0]!, { kind: 'synced', summary: summary(7, { skippedItems: [{ folder: 'INBOX', uid: 3, date: '2024-01-01T00:00:00.000Z', subject: 'big', size: 9e7, reason: 'too large' }], skipped: 1 }), pairId: null }, undefined, policy);
      assert.equal((await detail(b)).batch.status, 'Syncing');
      await release(store, mine[1]!, { kind: 'synced', summary: summary(3), pairId: null }, undefined, policy);
      await release(store, mine[2]!, { kind: 'failed', error: 'login failed for u at h: [AUTHENTICATIONFAILED] Authentication failed.', pairId: null }, undefined, policy);
      const d = await detail(b);
      assert.equal(d.batch.status, 'SyncedWithErrors');
      assert.ok(d.batch.initialSyncedAt);
      const byId = new Map((await store.db.selectFrom('batch_mailbox').selectAll().where('batch_id', '=', b.id).execute()).map((m) => [m.id, m]));
      const ok = byId.get(mine[0]!.mailboxId)!;
      assert.equal(ok.status, 'Synced');
      assert.equal(ok.next_sync_at, now + 1000 + DAY);
      assert.equal(ok.skipped, 1);
      assert.match(ok.skipped_items_json ?? '', /too large/);
      const bad = byId.get(mine[2]!.mailboxId)!;
      assert.equal(bad.status, 'Failed');
      assert.equal(bad.attempts, 1);
      assert.equal(bad.next_sync_at, now + 1000 + DEFAULT_BACKOFF.baseMs);
      assert.match(bad.last_error!, /Authentication failed/);
      assert.equal(bad.lease_owner, null);
      // Stopping the batch keeps a failed mailbox Failed (the cut-over warning counts it); the others are Stopped.
      await stopBatch(store, b.name);
      assert.deepEqual((await detail(b)).mailboxes.map((m) => m.status).sort(), ['Failed', 'Stopped', 'Stopped']);
      await startBatch(store, b.name);
      await store.db.updateTable('batch_mailbox').set({ next_sync_at: bad.next_sync_at, attempts: 1 }).where('id', '=', bad.id).execute();

      // The failed one comes back after its backoff, not before; a second failure doubles it.
      assert.equal(await claimNext(store, { owner: 'W', ttlMs: TTL, now: now + 1000 + DEFAULT_BACKOFF.baseMs - 1 }).then((c) => c?.batchId === b.id), false);
      const again = (await claimNext(store, { owner: 'W', ttlMs: TTL, now: now + 1000 + DEFAULT_BACKOFF.baseMs }))!;
      assert.equal(again.mailboxId, bad.id);
      await release(store, again, { kind: 'failed', error: 'still wrong', pairId: null }, undefined, { ...policy, now: now + 100_000 });
      const bad2 = await store.db.selectFrom('batch_mailbox').selectAll().where('id', '=', bad.id).executeTakeFirstOrThrow();
      assert.equal(bad2.attempts, 2);
      assert.equal(bad2.next_sync_at, now + 100_000 + 2 * DEFAULT_BACKOFF.baseMs);
      // `retry` makes it due now and resets the backoff; success clears the error.
      assert.deepEqual((await retryMailboxes(store, b.name)).map((r) => r.status), ['Failed']);
      const r3 = (await claimNext(store, { owner: 'W', ttlMs: TTL, now: now + 100_001 }))!;
      assert.equal(r3.mailboxId, bad.id);
      assert.equal(r3.kind, 'initial');
      await release(store, r3, { kind: 'synced', summary: summary(2), pairId: null }, undefined, { ...policy, now: now + 100_002 });
      assert.equal((await detail(b)).batch.status, 'Synced');

      // Next syncs are incremental; their limit is separate.
      const inc = (await claimNext(store, { owner: 'W', ttlMs: TTL, now: now + 1000 + DAY }))!;
      assert.equal(inc.kind, 'incremental');
      const m = await store.db.selectFrom('batch_mailbox').select('status').where('id', '=', inc.mailboxId).executeTakeFirstOrThrow();
      assert.equal(m.status, 'IncrementalSyncing');
      assert.equal((await detail(b)).batch.status, 'Synced', 'an incremental sync does not make the batch Syncing again');
    });

    test('a report keeps each mailbox its own skipped messages and round figures when an update added one on a line already used', { skip: skip ?? false }, async () => {
      const b = await batchOf(2);
      // Line 2 of the update file: the batch's line 2 is another mailbox.
      const up = await updateBatch(store, b.name, Buffer.from(`EmailAddress,UserName,Password\nadded-${n}@example.org,added${n},pw-x\n`), key);
      assert.ok(up.updated, JSON.stringify(up));
      const rows = await store.db.selectFrom('batch_mailbox').select(['id', 'line', 'email_address']).where('batch_id', '=', b.id).execute();
      assert.equal(rows.filter((r) => r.line === 2).length, 2, 'two mailboxes on line 2');
      const now = Date.now();
      for (let i = 0; i < 3; i++) {
        const c = (await claimNext(store, { owner: 'W', ttlMs: TTL, now }))!;
        const address = rows.find((r) => r.id === c.mailboxId)!.email_address;
        const skippedItems = address.startsWith('added') ? [{ folder: 'INBOX', uid: 9, date: '2024-01-01T00:00:00.000Z', subject: 'the added one', size: 9e7, reason: 'too large' }] : [];
        await release(store, c, { kind: 'synced', summary: summary(address.startsWith('added') ? 5 : 1, { skippedItems, skipped: skippedItems.length }), pairId: null }, undefined, { incrementalEveryMs: DAY, backoff: DEFAULT_BACKOFF, now: now + 1 });
      }
      const report = await buildReport(store.db, (await findBatch(store.db, b.name))!, now + 2, { since: null, until: now + 2 });
      const byAddress = new Map(report.mailboxes.map((m) => [m.emailAddress, m]));
      assert.deepEqual(byAddress.get(`added-${n}@example.org`)!.skippedItems.map((i) => i.subject), ['the added one']);
      assert.deepEqual(report.mailboxes.filter((m) => !m.emailAddress.startsWith('added')).map((m) => m.skippedItems.length), [0, 0]);
      assert.deepEqual(report.mailboxes.map((m) => m.period?.synced), [1, 1, 1]);
    });

    test('stop, start, sync-now, delete', { skip: skip ?? false }, async () => {
      const b = await batchOf(3, {}, { kind: 'manual' });
      assert.equal((await detail(b)).batch.status, 'Created');
      assert.equal(await claimNext(store, { owner: 'W', ttlMs: TTL }).then((c) => c?.batchId === b.id), false, 'a batch not started is not synced');
      assert.deepEqual(await startBatch(store, b.name), { started: true, mailboxes: 3 });
      const held = (await claimNext(store, { owner: 'W', ttlMs: TTL }))!;
      assert.equal(held.batchId, b.id);
      const stop = await stopBatch(store, b.name);
      assert.deepEqual(stop, { stopped: true, stillSyncing: 1 });
      assert.equal((await pulse(store, held, undefined, { ttlMs: TTL })).batchState, 'Stopped');
      assert.equal(await claimNext(store, { owner: 'W', ttlMs: TTL }).then((c) => c?.batchId === b.id), false);
      // Stopped half-way: what the scan found still to copy stays in `found` (not "1573/1573").
      const halfWay = { ...emptyProgress(), phase: 'copying' as const, toCopy: 3000, copied: 1573 };
      await release(store, held, { kind: 'interrupted', why: 'stopped', pairId: null }, halfWay, { incrementalEveryMs: DAY, backoff: DEFAULT_BACKOFF });
      let d = await detail(b);
      const stoppedOne = d.mailboxes.find((m) => m.found > 0)!;
      assert.equal(stoppedOne.found - stoppedOne.copied, 3000 - 1573);
      assert.equal(d.batch.status, 'Stopped');
      assert.deepEqual(d.mailboxes.map((m) => m.status), ['Stopped', 'Stopped', 'Stopped']);
      // No next sync is shown while stopped.
      assert.deepEqual(d.mailboxes.map((m) => m.nextSyncAt), [null, null, null]);

      await startBatch(store, b.name);
      d = await detail(b);
      assert.equal(d.batch.status, 'Syncing');
      assert.deepEqual(d.mailboxes.map((m) => m.status), ['Queued', 'Queued', 'Queued']);
      // Sync everything once, then sync-now makes them due again before the interval.
      const now = Date.now();
      for (let i = 0; i < 3; i++) {
        const c = (await claimNext(store, { owner: 'W', ttlMs: TTL, now }))!;
        await release(store, c, { kind: 'synced', summary: summary(1), pairId: null }, undefined, { incrementalEveryMs: DAY, backoff: DEFAULT_BACKOFF, now });
      }
      assert.equal((await detail(b)).batch.status, 'Synced');
      assert.equal(await claimNext(store, { owner: 'W', ttlMs: TTL, now: now + 1 }).then((c) => c?.batchId === b.id), false);
      assert.equal(await syncNow(store, b.name), 3);
      const due = (await claimNext(store, { owner: 'W', ttlMs: TTL, now: now + 1 }))!;
      assert.equal(due.batchId, b.id);
      assert.equal(due.kind, 'incremental');

      // Deleting within 72 hours of the initial sync needs force; a held mailbox goes when its worker lets go.
      await assert.rejects(deleteBatch(store, b.name), DeleteTooEarlyError);
      const del = await deleteBatch(store, b.name, { force: true });
      assert.deepEqual({ removed: del.removed, remaining: del.remaining }, { removed: false, remaining: 1 });
      assert.equal((await pulse(store, due, undefined, { ttlMs: TTL })).batchState, 'Removing');
      await release(store, due, { kind: 'interrupted', why: 'removed', pairId: null }, undefined, { incrementalEveryMs: DAY, backoff: DEFAULT_BACKOFF });
      assert.equal(await findBatch(store.db, b.name), undefined);
      assert.equal((await store.db.selectFrom('batch_mailbox').select('id').where('batch_id', '=', b.id).execute()).length, 0);
      assert.equal((await store.db.selectFrom('sync_run').select('id').where('batch_id', '=', b.id).execute()).length, 0);
      // The addresses are free for a new batch again.
      assert.equal((await store.db.selectFrom('batch_mailbox').select('id').where('email_key', 'like', `u${n}-%`).execute()).length, 0);
    });

    test('a never-started batch is deleted without --force; a Created batch starts at --start-at', { skip: skip ?? false }, async () => {
      const b = await batchOf(2, {}, { kind: 'manual' });
      assert.deepEqual((({ removed, remaining }) => ({ removed, remaining }))(await deleteBatch(store, b.name)), { removed: true, remaining: 0 });
      const { startScheduledBatches } = await import('../src/batch/lifecycle.js');
      const at = Date.now() + 60_000;
      const s = await batchOf(1, {}, { kind: 'at', at });
      assert.deepEqual(await startScheduledBatches(store, at - 1), []);
      assert.deepEqual(await startScheduledBatches(store, at), [s.name]);
      assert.equal((await detail(s)).batch.status, 'Syncing');
    });

    test('a running sync is abandoned when its batch stops, or when another worker took its lease over', { skip: skip ?? false }, async () => {
      const b = await batchOf(2);
      const aborted: { mailbox: string; reason: unknown; at: number }[] = [];
      const started = new Map<number, number>();
      const runner: MailboxRunner = (job, control) =>
        new Promise((_, reject) => {
          started.set(job.mailbox.id, Date.now());
          control.signal.addEventListener('abort', () => {
            aborted.push({ mailbox: job.mailbox.email_address, reason: control.signal.reason, at: Date.now() });
            reject(new Error('sync stopped'));
          });
        });
      const w = new Worker(store, { owner: 'W1', concurrency: 2, incrementalEveryMs: DAY, leaseTtlMs: 3000, pulseMs: 200, pollMs: 20, runner, logger: silent });
      const running = w.run();
      try {
        const ids = (await store.db.selectFrom('batch_mailbox').select('id').where('batch_id', '=', b.id).orderBy('id').execute()).map((r) => r.id);
        const wait = async (what: string, ok: () => boolean | Promise<boolean>) => {
          for (const end = Date.now() + 5000; !(await ok()); await new Promise((r) => setTimeout(r, 20))) if (Date.now() > end) assert.fail(`timed out: ${what}`);
        };
        await wait('both syncs to start', () => started.size === 2);

        // Another worker takes the first mailbox over (as a claim does once W1 stalled past its lease).
        const now = Date.now();
        await store.db.updateTable('batch_mailbox').set({ lease_owner: 'W2', lease_started_at: now, lease_expires_at: now + TTL }).where('id', '=', ids[0]!).execute();
        await wait('W1 to give up the taken mailbox', () => aborted.length === 1);
        assert.equal(aborted[0]!.reason, 'lease-lost');
        await new Promise((r) => setTimeout(r, 100));
        const taken = await store.db.selectFrom('batch_mailbox').selectAll().where('id', '=', ids[0]!).executeTakeFirstOrThrow();
        assert.equal(taken.lease_owner, 'W2', 'the worker that lost the lease wrote nothing');
        assert.equal(taken.status, 'Syncing');

        // Stopping the batch stops the other within a heartbeat.
        await stopBatch(store, b.name);
        await wait('W1 to abandon the stopped batch', () => aborted.length === 2);
        assert.equal(aborted[1]!.reason, 'stopped');
        await wait('the mailbox to be given back as Stopped', async () => (await store.db.selectFrom('batch_mailbox').select('status').where('id', '=', ids[1]!).executeTakeFirstOrThrow()).status === 'Stopped');
        const run = await store.db.selectFrom('sync_run').selectAll().where('mailbox_id', '=', ids[1]!).executeTakeFirstOrThrow();
        assert.equal(run.outcome, 'stopped');
        await release(store, { mailboxId: ids[0]!, batchId: b.id, owner: 'W2', kind: 'initial', startedAt: now, expiresAt: now + TTL, runId: -1 }, { kind: 'interrupted', why: 'shutdown', pairId: null }, undefined, { incrementalEveryMs: DAY, backoff: DEFAULT_BACKOFF });
      } finally {
        w.stop();
        await running;
      }
    });

    test('a worker paused past its lease writes nothing once it resumes: the fence closes before any timer runs', { skip: skip ?? false }, async () => {
      await batchOf(1);
      const seen: { before: boolean; after: boolean; aborted: boolean; reason: unknown }[] = [];
      const runner: MailboxRunner = async (_job, control) => {
        // Given back as interrupted, the mailbox is due again at once: paused only the first time.
        if (seen.length > 0) throw new Error('sync stopped');
        const before = control.mayWrite();
        // A pause (SIGSTOP, a suspended VM): no timer, no heartbeat, for longer than the lease.
        const until = Date.now() + 1300;
        while (Date.now() < until) {
          /* the event loop is blocked, as in a stopped process */
        }
        // What a copy lane asks first on waking, before the heartbeat timer can run.
        const after = control.mayWrite();
        seen.push({ before, after, aborted: control.signal.aborted, reason: control.signal.reason });
        throw new Error('sync stopped');
      };
      const w = new Worker(store, { owner: 'W1', concurrency: 1, incrementalEveryMs: DAY, leaseTtlMs: 1000, pulseMs: 100, pollMs: 20, runner, logger: silent });
      const running = w.run();
      try {
        for (const end = Date.now() + 5000; seen.length === 0; await new Promise((r) => setTimeout(r, 20))) if (Date.now() > end) assert.fail('timed out waiting for the run');
        assert.deepEqual(seen[0], { before: true, after: false, aborted: true, reason: 'lease-lost' });
      } finally {
        w.stop();
        await running;
      }
    });

    test('a mailbox taken over from a run whose lease ran out starts a lease\'s time after that lease ended', { skip: skip ?? false }, async () => {
      await batchOf(1);
      const dying = (await claimNext(store, { owner: 'A', ttlMs: 300, now: Date.now() }))!;
      assert.equal(dying.tookOverAt, undefined, 'a fresh claim took nothing over');
      let startedAt = 0;
      const runner: MailboxRunner = async () => {
        startedAt ||= Date.now();
        throw new Error('sync stopped');
      };
      const w = new Worker(store, { owner: 'W1', concurrency: 1, incrementalEveryMs: DAY, leaseTtlMs: 1500, pulseMs: 100, pollMs: 20, runner, logger: silent });
      const running = w.run();
      try {
        for (const end = Date.now() + 6000; startedAt === 0; await new Promise((r) => setTimeout(r, 20))) if (Date.now() > end) assert.fail('timed out waiting for the run');
        // What A had sent before it vanished has had 1.5 s to land before the new run's recovery.
        assert.ok(startedAt >= dying.expiresAt + 1500 - 5, `started ${startedAt - dying.expiresAt} ms after the old lease ended`);
        const run = await store.db.selectFrom('sync_run').selectAll().where('id', '=', dying.runId).executeTakeFirstOrThrow();
        assert.equal(run.outcome, 'abandoned');
      } finally {
        w.stop();
        await running;
      }
    });

    test('a sync asked for early (sync now) whose worker died is taken again once its lease expires', { skip: skip ?? false }, async () => {
      const b = await batchOf(1);
      const now = Date.now();
      // Synced, next incremental a day away; then the admin asks for one now.
      await store.db.updateTable('batch_mailbox').set({ initial_synced_at: now - 1000, last_sync_at: now - 1000, status: 'Synced', next_sync_at: now + DAY, sync_requested: 1 }).where('batch_id', '=', b.id).execute();
      const dying = (await claimNext(store, { owner: 'A', ttlMs: TTL, now }))!;
      assert.equal(dying.kind, 'incremental');
      // Its heartbeats said 7 messages were copied; then worker A is SIGKILLed: nothing is
      // released. Once its lease has expired:
      await store.db.updateTable('batch_mailbox').set({ progress_copied: 7, progress_bytes: 7000 }).where('id', '=', dying.mailboxId).execute();
      const later = now + TTL + 1;
      const again = await claimNext(store, { owner: 'B', ttlMs: TTL, now: later });
      assert.equal(again?.mailboxId, dying.mailboxId, 'the request was not lost with the worker');
      const abandoned = await store.db.selectFrom('sync_run').selectAll().where('id', '=', dying.runId).executeTakeFirstOrThrow();
      assert.deepEqual([abandoned.outcome, abandoned.copied, abandoned.bytes], ['abandoned', 7, 7000], 'what the dead run copied counts in the run history');
      await release(store, again!, { kind: 'interrupted', why: 'shutdown', pairId: null }, undefined, { incrementalEveryMs: DAY, backoff: DEFAULT_BACKOFF, now: later });
    });

    test('the migrations limit caps every sync on the endpoint; incremental syncs also have their own', { skip: skip ?? false }, async () => {
      const b = await batchOf(5, { migrations: 3, incremental: 2 });
      const ids = (await store.db.selectFrom('batch_mailbox').select('id').where('batch_id', '=', b.id).orderBy('id').execute()).map((r) => r.id);
      const now = Date.now();
      // Mailboxes 3–5 are synced and due for an incremental sync; 1–2 still need their first.
      await store.db.updateTable('batch_mailbox').set({ initial_synced_at: now - 1000, status: 'Synced', next_sync_at: now - 1 }).where('id', 'in', ids.slice(2)).execute();
      const claims = [];
      for (let i = 0; i < 5; i++) {
        const c = await claimNext(store, { owner: `W${i}`, ttlMs: TTL, now });
        if (c) claims.push(c);
      }
      const kinds = claims.map((c) => c.kind).sort();
      assert.equal(claims.length, 3, `three syncs at once in all: ${kinds.join(', ')}`);
      assert.ok(kinds.filter((k) => k === 'incremental').length <= 2);
      for (const c of claims) await release(store, c, { kind: 'interrupted', why: 'shutdown', pairId: null }, undefined, { incrementalEveryMs: DAY, backoff: DEFAULT_BACKOFF, now });
    });

    test('a run the state database failed under is given back, due at once; a refused source password waits for the admin', { skip: skip ?? false }, async () => {
      const b = await batchOf(3);
      const ids = (await store.db.selectFrom('batch_mailbox').select('id').where('batch_id', '=', b.id).orderBy('id').execute()).map((r) => r.id);
      const runs = new Map<number, number>();
      const heldUntil = Date.now() + 3_600_000;
      const runner: MailboxRunner = async (job) => {
        runs.set(job.mailbox.id, (runs.get(job.mailbox.id) ?? 0) + 1);
        if (job.mailbox.id === ids[0]) {
          // What pg raises when an admin terminates the backend mid-run (SQLSTATE 57P01).
          throw Object.assign(new Error('terminating connection due to administrator command'), { severity: 'FATAL', code: '57P01' });
        }
        if (job.mailbox.id === ids[2]) {
          // An admin login the breaker holds back: nothing was refused for this mailbox.
          const { BreakerOpenError } = await import('../src/worker/credential-breaker.js');
          throw Object.assign(new BreakerOpenError('not tried: the target admin login "admin" was refused for a, b, c'), { retryAt: heldUntil });
        }
        const { ImapAuthError } = await import('../src/imap/errors.js');
        throw Object.assign(new ImapAuthError(`login failed for ${job.mailbox.email_address}: AUTHENTICATIONFAILED`), { code: 'AUTHENTICATIONFAILED' });
      };
      const w = new Worker(store, { owner: 'W1', concurrency: 2, incrementalEveryMs: DAY, leaseTtlMs: 3000, pulseMs: 200, pollMs: 20, runner, logger: silent });
      const running = w.run();
      try {
        for (const end = Date.now() + 5000; !runs.get(ids[0]!) || !runs.get(ids[1]!) || !runs.get(ids[2]!); await new Promise((r) => setTimeout(r, 20))) if (Date.now() > end) assert.fail(`timed out: ${JSON.stringify([...runs])}`);
        await new Promise((r) => setTimeout(r, 300));
      } finally {
        w.stop();
        await running;
      }
      assert.equal(runs.get(ids[1]!), 1, 'the refused password was tried once');
      const [db, refused, held] = await Promise.all(ids.map((id) => store.db.selectFrom('batch_mailbox').selectAll().where('id', '=', id).executeTakeFirstOrThrow()));
      assert.equal(held!.status, 'Failed');
      assert.equal(held!.next_sync_at, heldUntil, 'a login the breaker held back is due when the breaker lets it be tried, as its error says');
      assert.notEqual(db!.status, 'Failed', 'a database failure is not the mailbox\'s');
      assert.equal(db!.last_error, null);
      assert.equal(runs.get(ids[0]!), 1, 'taken again after a pause, not at once');
      assert.ok(db!.next_sync_at !== null && db!.next_sync_at > Date.now() && db!.next_sync_at <= Date.now() + 30_000, String(db!.next_sync_at));
      assert.equal(refused!.status, 'Failed');
      assert.equal(refused!.next_sync_at, null);
      assert.match(refused!.last_error!, /not retried automatically/);
    });

    test('workers in several processes never sync one mailbox twice at once, and keep the endpoint limit', { skip: skip ?? false }, async () => {
      const LIMIT = 3;
      const b = await batchOf(12, { migrations: LIMIT });
      // PostgreSQL: separate pools, as separate processes have. SQLite: one connection, as in
      // one process (better-sqlite3 is synchronous: a second connection in the same process
      // waiting on the write lock would block the event loop that holds it; separate
      // processes on SQLite are what the serve tests run).
      const stores = dialect === 'postgres' ? await Promise.all([db.open(), db.open(), db.open()]) : [store, store, store];
      const active = new Map<number, string>();
      let peak = 0;
      const overlaps: string[] = [];
      const syncs = new Map<number, number>();
      const runner = (owner: string): MailboxRunner => async (job) => {
        if (job.batch.id !== b.id) return { summary: summary(0), pairId: null };
        const id = job.mailbox.id;
        if (active.has(id)) overlaps.push(`${job.mailbox.email_address}: ${active.get(id)} and ${owner}`);
        active.set(id, owner);
        const mine = [...active.keys()].length;
        peak = Math.max(peak, mine);
        // Long enough for claims (serialised on the endpoint row) to keep all slots busy under load.
        await new Promise((r) => setTimeout(r, 250 + Math.random() * 250));
        active.delete(id);
        syncs.set(id, (syncs.get(id) ?? 0) + 1);
        return { summary: summary(1), pairId: null };
      };
      const workers = stores.map((s, i) => new Worker(s, { owner: `w${i}`, concurrency: 4, incrementalEveryMs: DAY, leaseTtlMs: 5000, pollMs: 20, runner: runner(`w${i}`), logger: silent }));
      const runs = workers.map((w) => w.run());
      const deadline = Date.now() + 60_000;
      while ((await detail(b)).batch.status !== 'Synced' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      for (const w of workers) w.stop();
      await Promise.all(runs);
      if (dialect === 'postgres') await Promise.all(stores.map((s) => s.close()));
      assert.equal((await detail(b)).batch.status, 'Synced');
      assert.deepEqual(overlaps, []);
      assert.ok(peak <= LIMIT, `at most ${LIMIT} at once, saw ${peak}`);
      assert.equal(peak, LIMIT, 'the limit was reached (the test exercised it)');
      assert.equal(syncs.size, 12);
      assert.ok([...syncs.values()].every((v) => v === 1), 'each mailbox synced once');
      const owners = await store.db.selectFrom('sync_run').select('owner').distinct().where('batch_id', '=', b.id).execute();
      assert.ok(owners.length >= 2, `several workers took part (${owners.map((o) => o.owner).join(', ')})`);
    });
  });
}
