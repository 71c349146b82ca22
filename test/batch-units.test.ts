/** The small pure pieces of batches: durations, names, status derivation, backoff, the report's CSV. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatDuration, parseDuration } from '../src/batch/duration.js';
import { deleteWarning } from '../src/batch/lifecycle.js';
import { type BatchReport, reportCsv } from '../src/report/batch-report.js';
import { batchNameProblem, deriveBatchStatus, emptyCounts } from '../src/batch/status.js';
import { backoffMs } from '../src/worker/backoff.js';
import { credentialRefused } from '../src/imap/errors.js';
import { ImapAuthError as RawImapAuthError } from '../src/imap/raw-connection.js';

test('durations as admins write them', () => {
  assert.equal(parseDuration('2s'), 2000);
  assert.equal(parseDuration('10m'), 600_000);
  assert.equal(parseDuration('24h'), 86_400_000);
  assert.equal(parseDuration('1d'), 86_400_000);
  assert.equal(parseDuration('1h30m'), 5_400_000);
  assert.equal(parseDuration('500ms'), 500);
  assert.equal(parseDuration(' 1.5s '), 1500);
  for (const bad of ['', '10', 'h', '10x', '1h 30m', '-2s', '2s!']) assert.equal(parseDuration(bad), null, bad);
  assert.equal(formatDuration(90_000), '1m30s');
  assert.equal(formatDuration(3 * 86_400_000 + 3_600_000), '3d1h');
});

test('batch names: letters, digits, - and _, at most 64', () => {
  assert.equal(batchNameProblem('Finance_2025-a'), null);
  assert.equal(batchNameProblem('x'.repeat(64)), null);
  assert.match(batchNameProblem('x'.repeat(65))!, /64/);
  for (const bad of ['', 'has space', 'dots.no', 'ümlaut', 'semi;colon']) assert.ok(batchNameProblem(bad), bad);
});

test('the batch status is derived from what the admin asked and the mailboxes', () => {
  const c = (x: Partial<ReturnType<typeof emptyCounts>>) => ({ ...emptyCounts(), ...x });
  assert.equal(deriveBatchStatus('Created', c({ Queued: 3 })), 'Created');
  assert.equal(deriveBatchStatus('Running', c({ Queued: 1, Synced: 2 })), 'Syncing');
  assert.equal(deriveBatchStatus('Running', c({ Syncing: 1, Failed: 2 })), 'Syncing');
  assert.equal(deriveBatchStatus('Running', c({ Synced: 2, IncrementalSyncing: 1 })), 'Synced');
  assert.equal(deriveBatchStatus('Running', c({ Synced: 2, Failed: 1 })), 'SyncedWithErrors');
  assert.equal(deriveBatchStatus('Stopped', c({ Stopped: 3 })), 'Stopped');
  assert.equal(deriveBatchStatus('Removing', c({ Synced: 1 })), 'Removing');
});

test('backoff doubles up to its cap', () => {
  assert.deepEqual([1, 2, 3, 7, 8, 100].map((n) => backoffMs(n)), [60_000, 120_000, 240_000, 3_600_000, 3_600_000, 3_600_000]);
});

test('deleting warns until 72 hours after the initial sync', () => {
  const h = 3_600_000;
  assert.equal(deleteWarning({ name: 'b', started_at: null, initial_synced_at: null }, 0), null, 'never started: nothing migrated');
  assert.match(deleteWarning({ name: 'b', started_at: 1, initial_synced_at: null }, 2)!, /not finished its initial sync/);
  assert.match(deleteWarning({ name: 'b', started_at: 1, initial_synced_at: 0 }, 71 * h)!, /2d23h ago, less than 72 hours.*1h to go/);
  assert.equal(deleteWarning({ name: 'b', started_at: 1, initial_synced_at: 0 }, 72 * h), null);
});

test('report CSV: RFC 4180 quoting, and no formula from a subject', () => {
  const m = {
    line: 2, emailAddress: 'a@example.org', userName: 'a', userRoot: null, status: 'Synced' as const, folders: 1, found: 2, copied: 1, skipped: 1, failed: 0, bytes: 10,
    syncSeconds: 1, lastDurationSeconds: 1, messagesPerSecond: 1, megabytesPerSecond: 0, initialSyncedAt: null, lastSyncAt: null, nextSyncAt: null, syncRequested: false,
    lastError: 'a, "quoted"\nerror', attempts: 0, syncing: null, verification: null, period: null,
    skippedItems: [{ folder: 'INBOX', uid: 1, date: '2024-01-01T00:00:00.000Z', subject: '=HYPERLINK("x")', size: 5, reason: 'too large' }],
  };
  const csv = reportCsv({ generatedAt: '', period: null, batch: {} as BatchReport['batch'], mailboxes: [m] });
  const lines = csv.split('\r\n');
  assert.match(lines[1]!, /,"a, ""quoted""\nerror",/);
  assert.match(csv, /,"'=HYPERLINK\(""x""\)",/);
  assert.equal(lines.at(-1), '');
});

test('one admin credential: tried row by row until it works, and not after three refusals in a row', async () => {
  const { AdminGate } = await import('../src/batch/admin-gate.js');
  const tried: number[] = [];
  // Wrong admin password: every row is refused.
  const wrong = new AdminGate('the source admin login "admin"');
  const refuse = (line: number) => async () => {
    tried.push(line);
    await new Promise((r) => setTimeout(r, 5));
    return { check: { ok: false as const, error: 'Authentication failed' }, credential: 'refused' as const };
  };
  const results = await Promise.all([2, 3, 4, 5, 6, 7].map((line) => wrong.attempt(line, refuse(line))));
  assert.deepEqual(tried, [2, 3, 4], 'three logins, one at a time, then none');
  assert.deepEqual(results.slice(0, 3).map((r) => r.ok || r.error), ['Authentication failed', 'Authentication failed', 'Authentication failed']);
  for (const r of results.slice(3)) assert.match(r.ok ? '' : r.error, /^not tried: the source admin login "admin" was refused for lines 2, 3, 4 .*lock the admin account out/);

  // A good admin whose first rows are refused for their own reasons (no such user): once a row works, all go.
  tried.length = 0;
  const good = new AdminGate('the source admin login "admin"');
  let running = 0;
  let most = 0;
  const row = (line: number) => async () => {
    tried.push(line);
    most = Math.max(most, ++running);
    await new Promise((r) => setTimeout(r, 5));
    running--;
    // Line 2's user does not exist (the admin's password was right: AUTHORIZATIONFAILED);
    // line 3 is refused outright; from line 4 on they work.
    if (line === 2) return { check: { ok: false as const, error: 'Authorization failed' }, credential: 'accepted' as const };
    return line === 3 ? { check: { ok: false as const, error: 'Authentication failed' }, credential: 'refused' as const } : { check: { ok: true as const, detail: 'plain' }, credential: 'accepted' as const };
  };
  const good1 = await Promise.all([2, 3, 4].map((line) => good.attempt(line, row(line))));
  assert.deepEqual(good1.map((r) => r.ok), [false, false, true]);
  const good2 = await Promise.all([5, 6, 7, 8, 9].map((line) => good.attempt(line, row(line))));
  assert.ok(good2.every((r) => r.ok));
  assert.ok(most > 1, 'after a login worked, rows are tried at once');
});

test('a shared admin credential refused three times in a row is not tried again for an hour, then by one run', async () => {
  const { CredentialBreaker, credentialKey, OPEN_FOR_MS } = await import('../src/worker/credential-breaker.js');
  let now = 1_000_000;
  const b = new CredentialBreaker(() => now);
  const key = credentialKey('target', 'IMAP.example.org', 993, 'admin', 'Wr0ng-pw');
  assert.ok(!key.includes('Wr0ng-pw'), 'the key holds no password');
  const what = 'the target admin login "admin"';
  b.check(key, what);
  b.refused(key, 'a@x');
  b.refused(key, 'b@x');
  b.check(key, what); // two refusals: still tried
  b.refused(key, 'c@x');
  assert.throws(() => b.check(key, what), /not tried: the target admin login "admin" was refused for a@x, b@x, c@x .*locked out/);
  now += OPEN_FOR_MS - 1;
  assert.throws(() => b.check(key, what));
  now += 1;
  b.check(key, what); // one run tries again…
  assert.throws(() => b.check(key, what), /not tried/, '…and only one');
  b.succeeded(key);
  b.check(key, what);
  // A corrected password is another credential.
  b.refused(key, 'd@x');
  b.refused(key, 'e@x');
  b.refused(key, 'f@x');
  b.check(credentialKey('target', 'imap.example.org', 993, 'admin', 'Right-pw'), what);
  // A success between refusals (a row refused for its own reason) keeps it closed.
  const other = credentialKey('source', 'old.example.org', 993, 'admin', 'pw');
  b.refused(other, 'x@x');
  b.refused(other, 'y@x');
  b.succeeded(other);
  b.refused(other, 'z@x');
  b.check(other, 'the source admin login "admin"');
});

test('runs started together try an unproven admin credential one at a time, and all at once once it worked', async () => {
  const { CredentialBreaker, credentialKey } = await import('../src/worker/credential-breaker.js');
  const b = new CredentialBreaker();
  const what = 'the source admin login "admin"';
  // Twenty runs with a wrong admin password, as a batch starts them: three logins refused, not twenty.
  const wrong = credentialKey('source', 'old.example.org', 993, 'admin', 'Wr0ng-pw');
  let inFlight = 0;
  let most = 0;
  let tried = 0;
  const run = async (n: number) => {
    const leave = await b.enter(wrong, what);
    try {
      inFlight++;
      most = Math.max(most, inFlight);
      tried++;
      await new Promise((r) => setTimeout(r, 5));
      b.refused(wrong, `u${n}@x`);
    } finally {
      inFlight--;
      leave();
    }
  };
  const outcomes = await Promise.allSettled(Array.from({ length: 20 }, (_, n) => run(n)));
  assert.equal(tried, 3, 'three refusals, then the breaker is open');
  assert.equal(most, 1);
  assert.equal(outcomes.filter((o) => o.status === 'rejected' && /not tried/.test(String(o.reason))).length, 17);
  // A good one: the first run proves it, the rest go side by side; a lost connection (no verdict) lets the next try.
  const good = credentialKey('source', 'old.example.org', 993, 'admin', 'Right-pw');
  inFlight = 0;
  most = 0;
  let first = true;
  await Promise.all(
    Array.from({ length: 10 }, async () => {
      const leave = await b.enter(good, what);
      inFlight++;
      most = Math.max(most, inFlight);
      await new Promise((r) => setTimeout(r, 5));
      inFlight--;
      if (first) {
        first = false; // the connection was lost: no verdict
      } else b.succeeded(good);
      leave();
    }),
  );
  assert.ok(most > 1, 'once it worked, the runs went side by side');
});

test('a login turned away for the server\'s own state (LIMIT, UNAVAILABLE) does not count against the credential', () => {
  const refusal = (code?: string) => new RawImapAuthError(`authentication failed: NO${code ? ` [${code}]` : ''} …`, '…', code);
  assert.equal(credentialRefused(refusal('AUTHENTICATIONFAILED')), true);
  assert.equal(credentialRefused(refusal()), true, 'a NO without a code: the password, as far as anyone can tell');
  assert.equal(credentialRefused(refusal('LIMIT')), false, 'too many sessions for the user (a mail client holding many)');
  assert.equal(credentialRefused(refusal('UNAVAILABLE')), false);
  assert.equal(credentialRefused(refusal('AUTHORIZATIONFAILED')), false, 'the credential was right');
  assert.equal(credentialRefused(new Error('connection lost')), false);
});
