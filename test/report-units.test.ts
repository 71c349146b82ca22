/** The report e-mail's pure pieces: the SMTP settings from the environment, the composed message, the retry waits. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type BatchView, batchView, type MailboxView } from '../src/batch/view.js';
import type { BatchRow } from '../src/store/schema.js';
import type { BatchReport, ReportMailbox } from '../src/report/batch-report.js';
import { composeReportEmail } from '../src/report/compose.js';
import { hideUrlPassword, reportMailSetting } from '../src/report/mail-config.js';
import { reportRetryMs } from '../src/report/schedule.js';
import { tooLargeReason } from '../src/sync/scan.js';

test('SMTP settings: off without a URL, refused when they cannot be right, never showing the password', () => {
  assert.deepEqual(reportMailSetting({}), { kind: 'off', why: 'MAILFERRY_SMTP_URL is not set' });
  const on = reportMailSetting({ MAILFERRY_SMTP_URL: 'smtps://relay:S3cret%21@mail.example.org:465', MAILFERRY_ADMIN_EMAIL: 'a@example.org, b@example.org', MAILFERRY_REPORT_FROM: 'Migrations <m@example.org>' });
  assert.equal(on.kind, 'on');
  if (on.kind !== 'on') return;
  assert.deepEqual(on.config.admins, ['a@example.org', 'b@example.org']);
  assert.equal(on.config.from, 'Migrations <m@example.org>');
  assert.equal(on.config.display, 'smtps://mail.example.org:465');
  assert.equal(hideUrlPassword('smtp://token:token@h:587/?auth.pass=x'), 'smtp://h:587');
  assert.ok(!on.config.display.includes('S3cret'));
  assert.throws(() => reportMailSetting({ MAILFERRY_SMTP_URL: 'http://x' }), /smtp:\/\/ or smtps:\/\//);
  assert.throws(() => reportMailSetting({ MAILFERRY_SMTP_URL: 'not a url' }), /must be a URL/);
  assert.throws(() => reportMailSetting({ MAILFERRY_SMTP_URL: 'smtp://h', MAILFERRY_ADMIN_EMAIL: 'admin' }), /MAILFERRY_ADMIN_EMAIL: "admin" is not an e-mail address/);
  assert.throws(() => reportMailSetting({ MAILFERRY_SMTP_URL: 'smtp://h', MAILFERRY_REPORT_FROM: 'Name <nope>' }), /MAILFERRY_REPORT_FROM/);
  assert.equal(hideUrlPassword('smtp://h:25'), 'smtp://h:25');
  assert.equal(hideUrlPassword('::'), '(an unparsable URL)');
});

test('report retries back off from a minute to an hour', () => {
  assert.deepEqual([1, 2, 3, 7, 50].map(reportRetryMs), [60_000, 120_000, 240_000, 3_600_000, 3_600_000]);
});

function mailbox(over: Partial<ReportMailbox>): ReportMailbox {
  return {
    line: 2, emailAddress: 'a@example.org', userName: 'a', userRoot: null, status: 'Synced', folders: 3, found: 10, copied: 10, skipped: 0, failed: 0, bytes: 2 * 1048576,
    syncSeconds: 4, lastDurationSeconds: 4, messagesPerSecond: 2.5, megabytesPerSecond: 0.5, initialSyncedAt: '2026-01-01T10:00:00.000Z', lastSyncAt: '2026-01-01T10:00:00.000Z',
    nextSyncAt: null, syncRequested: false, lastError: null, attempts: 0, syncing: null, verification: null, skippedItems: [], period: null,
    ...over,
  };
}

function report(mailboxes: ReportMailbox[], status: BatchView['status']): BatchReport {
  const counts = { Queued: 0, Syncing: 0, Synced: 0, IncrementalSyncing: 0, Failed: 0, Stopped: 0 };
  for (const m of mailboxes) counts[m.status]++;
  const batch = {
    name: 'pilot', status, endpoint: 'old', target: 'new', mailboxes: mailboxes.length, counts,
    totals: { folders: 6, found: 20, copied: 15, skipped: 1, failed: 0, bytes: 4 * 1048576 }, messagesPerSecond: 0, megabytesPerSecond: 0, etaSeconds: null,
    initialSync: { seconds: 3600, messagesPerSecond: 0, megabytesPerSecond: 0 },
    options: { exclude: [], include: null, notify: [], receivedAfter: null, badItemLimit: null }, createdAt: '2026-01-01T09:00:00.000Z', startAt: null,
    startedAt: '2026-01-01T09:00:00.000Z', initialSyncedAt: '2026-01-01T10:00:00.000Z', lastIncrementalAt: null, stoppedAt: null,
    deleteWarning: 'it finished its initial sync 1h ago, less than 72 hours', reports: { initialSentAt: null, lastSentAt: null, error: null },
  } satisfies BatchView;
  return { generatedAt: '2026-01-01T10:00:05.000Z', period: { since: null, until: '2026-01-01T10:00:05.000Z' }, batch, mailboxes };
}

test('the initial report: outcome in the subject, failures and skipped messages first, HTML escaped, full report attached', () => {
  const r = report(
    [
      mailbox({ skipped: 1, skippedItems: [{ folder: 'Archiv/2019', uid: 7, date: '2019-05-01T08:00:00.000Z', subject: 'Scan <big> & "huge"', size: 40 * 1048576, reason: 'over the 35 MB limit' }] }),
      mailbox({ line: 3, emailAddress: 'b@example.org', status: 'Failed', copied: 0, found: 0, lastError: 'source login failed for b: authentication failed' }),
    ],
    'SyncedWithErrors',
  );
  const mail = composeReportEmail(r, 'initial');
  assert.equal(mail.subject, '[mailferry] batch pilot: initial sync finished, SyncedWithErrors (1 mailbox failed, 1 message skipped or failed)');
  const failed = mail.text.indexOf('Failed mailboxes (1)');
  const skipped = mail.text.indexOf('Skipped messages (1)');
  const all = mail.text.indexOf('\nMailboxes\n');
  assert.ok(failed > 0 && skipped > failed && all > skipped, mail.text);
  assert.match(mail.text, /b@example\.org\s+source login failed for b: authentication failed/);
  assert.match(mail.text, /a@example\.org\s+Archiv\/2019\s+2019-05-01\s+Scan <big> & "huge"\s+40\.0 MB\s+over the 35 MB limit/);
  assert.match(mail.text, /less than 72 hours/);
  // The pilot batch's figure for planning the rest (SPEC §6).
  assert.match(mail.text, /initial sync finished 2026-01-01 10:00Z \(1h: 0 msg\/s, 0 MB\/s\)/);
  assert.ok(mail.html.includes('Scan &#60;big&#62; &#38; &#34;huge&#34;'));
  assert.ok(!mail.html.includes('<big>'));
  assert.deepEqual(mail.attachments.map((a) => a.filename), ['mailferry-pilot-20260101T1000Z.csv', 'mailferry-pilot-20260101T1000Z.json'], 'named with the time, in UTC and saying so');
  // With a byte order mark, for Excel; the mail is marked as a machine's (RFC 3834).
  assert.match(mail.attachments[0]!.content, /^\ufeffType,EmailAddress,Status/);
  assert.equal(mail.headers['Auto-Submitted'], 'auto-generated');
  assert.equal((JSON.parse(mail.attachments[1]!.content) as BatchReport).batch.name, 'pilot');
});

test('messages of a folder that could not be migrated are counted as failed and said, not an empty list', () => {
  const r = report([mailbox({ status: 'Failed', failed: 6, lastError: 'a folder could not be migrated: Archive.2019 (the source could not read it: …)' })], 'SyncedWithErrors');
  const mail = composeReportEmail(r, 'initial');
  assert.match(mail.text, /Skipped or failed messages \(6\)/);
  assert.match(mail.text, /6 of them are not listed one by one: messages of folders that could not be migrated/);
  assert.match(mail.text, /Archive\.2019/);
});

test('a daily report says what the round copied, per mailbox', () => {
  const r = report(
    [mailbox({ period: { synced: 1, failed: 0, copied: 3, bytes: 3000 } }), mailbox({ line: 3, emailAddress: 'b@example.org', period: { synced: 1, failed: 0, copied: 0, bytes: 0 } })],
    'Synced',
  );
  r.period = { since: '2026-01-01T10:00:05.000Z', until: '2026-01-02T10:00:05.000Z' };
  const mail = composeReportEmail(r, 'daily');
  assert.equal(mail.subject, '[mailferry] batch pilot: incremental syncs, Synced (2 mailboxes synced, 1 message skipped or failed)');
  assert.match(mail.text, /Since the last report \(2026-01-01 10:00Z\): 3 new messages copied/);
  assert.match(mail.text, /New/);
  assert.match(mail.text, /a@example\.org\s+Synced\s+10\s+10\s+0\s+2\.0 MB\s+3\s/);
  assert.doesNotMatch(mail.text, /Failed mailboxes|Skipped messages/);
});

test('a mailbox verify could not check is said so, not "not in sync", in the e-mail and the CSV', () => {
  const at = '2026-01-01T11:00:00.000Z';
  const r = report(
    [
      mailbox({ verification: { at, inSync: false, missing: 0, error: 'source login failed for a: wrong user name or password', stale: false, missingIn: [], duplicates: 0 } }),
      mailbox({ line: 3, emailAddress: 'b@example.org', verification: { at, inSync: false, missing: 4, error: null, stale: false, missingIn: [{ folder: 'INBOX', missing: 3 }, { folder: 'Lists.Rust', missing: 1 }], duplicates: 0 } }),
      // Verified, then synced again: how it stood then, said so.
      mailbox({ line: 4, emailAddress: 'c@example.org', verification: { at, inSync: false, missing: 12, error: null, stale: true, missingIn: [{ folder: 'INBOX', missing: 12 }], duplicates: 0 } }),
      // In sync, but some copied twice: said, not hidden by the verdict.
      mailbox({ line: 5, emailAddress: 'd@example.org', verification: { at, inSync: true, missing: 0, error: null, stale: false, missingIn: [], duplicates: 264 } }),
    ],
    'Synced',
  );
  const mail = composeReportEmail(r, 'initial');
  assert.match(mail.text, /a@example\.org\s.*could not check/);
  // Where they are missing, so the admin knows which folder to look at.
  assert.match(mail.text, /b@example\.org\s.*4 missing \(INBOX 3, Lists\.Rust 1\)/);
  const csv = mail.attachments[0]!.content.replace(/^\ufeff/, '').split('\r\n');
  const head = csv[0]!.split(',');
  const cells = (email: string) => csv.find((l) => l.includes(email))!.split(',');
  assert.equal(cells('a@example.org')[head.indexOf('InSync')], 'unknown');
  assert.equal(cells('a@example.org')[head.indexOf('Missing')], '');
  assert.match(csv.find((l) => l.includes('a@example.org'))!, /verify could not check it: source login failed/);
  assert.equal(cells('b@example.org')[head.indexOf('InSync')], 'no');
  assert.equal(cells('b@example.org')[head.indexOf('Missing')], '4');
  assert.equal(cells('b@example.org')[head.indexOf('MissingIn')], 'INBOX: 3; Lists.Rust: 1');
  assert.equal(cells('b@example.org')[head.indexOf('VerifiedBeforeLastSync')], 'no');
  assert.match(mail.text, /c@example\.org\s.*12 missing \(INBOX 12\) \(before the last sync\), 2026-01-01 11:00/);
  assert.equal(cells('c@example.org')[head.indexOf('VerifiedBeforeLastSync')], 'yes');
  assert.match(mail.text, /d@example\.org\s.*in sync, 264 duplicates, 2026-01-01 11:00/);
  assert.equal(cells('d@example.org')[head.indexOf('Duplicates')], '264');
  assert.equal(cells('b@example.org')[head.indexOf('Duplicates')], '0');
});

/** A started batch's row, as the database holds it. */
function runningBatch(t0: number): BatchRow {
  return {
    id: 1, name: 'pilot', endpoint_id: 1, target_id: 1, state: 'Running', exclude_json: null, include_json: null, notify_json: null, received_after: null, bad_item_limit: null,
    start_at: null, created_at: t0, started_at: t0, initial_synced_at: null, last_incremental_at: null, stopped_at: null, initial_report_at: null, last_report_at: null,
    report_claim_until: null, report_error: null, report_failures: 0,
  } as unknown as BatchRow;
}

test('batch totals count what running syncs copied so far, and a finished initial sync gives its rate', () => {
  const t0 = Date.UTC(2026, 0, 1, 9, 0, 0);
  const row = runningBatch(t0);
  const live: MailboxView['syncing'] = {
    kind: 'initial', worker: 'w1', startedAt: new Date(t0).toISOString(), phase: 'copying', copied: 497, toCopy: 600, bytes: 5 * 1048576, toCopyBytes: 6 * 1048576, alreadyOnTarget: 0,
    messagesPerSecond: 88.6, megabytesPerSecond: 1, etaSeconds: 1, stale: false,
  };
  const syncing = mailbox({ status: 'Syncing', found: 0, copied: 0, bytes: 0, syncing: live });
  const done = mailbox({ line: 3, emailAddress: 'b@example.org' });
  const during = batchView(row, { endpoint: 'old', target: 'new' }, [syncing, done], t0 + 10_000);
  assert.deepEqual([during.totals.found, during.totals.copied, during.totals.bytes], [610, 507, 7 * 1048576]);
  assert.equal(during.initialSync, null);
  const after = batchView({ ...row, initial_synced_at: t0 + 20_000 }, { endpoint: 'old', target: 'new' }, [mailbox({ copied: 600, found: 600 }), done], t0 + 30_000);
  assert.deepEqual(after.initialSync, { seconds: 20, messagesPerSecond: 30.5, megabytesPerSecond: 0.2 });
});

test('time left early in a first batch: queued mailboxes are guessed from the ones already scanned', () => {
  const t0 = Date.UTC(2026, 0, 1, 9, 0, 0);
  const row = runningBatch(t0);
  const live: MailboxView['syncing'] = {
    kind: 'initial', worker: 'w1', startedAt: new Date(t0).toISOString(), phase: 'copying', copied: 100, toCopy: 1000, bytes: 1048576, toCopyBytes: 10 * 1048576, alreadyOnTarget: 0,
    messagesPerSecond: 50, megabytesPerSecond: 1, etaSeconds: 18, stale: false,
  };
  const syncing = mailbox({ status: 'Syncing', found: 0, copied: 0, bytes: 0, initialSyncedAt: null, syncing: live });
  const queued = (line: number) => mailbox({ line, emailAddress: `q${line}@example.org`, status: 'Queued', found: 0, copied: 0, initialSyncedAt: null });
  const v = batchView(row, { endpoint: 'old', target: 'new' }, [syncing, queued(3), queued(4)], t0 + 2_000);
  // 900 left in the one syncing, and two more of its size (1,000) at 50 msg/s.
  assert.equal(v.etaSeconds, (900 + 2 * 1000) / 50);
});

test('time left stays unknown while the only mailboxes done were empty (an average of 0 tells nothing)', () => {
  const t0 = Date.UTC(2026, 0, 1, 9, 0, 0);
  const live: MailboxView['syncing'] = {
    kind: 'initial', worker: 'w1', startedAt: new Date(t0).toISOString(), phase: 'scanning', copied: 0, toCopy: 0, bytes: 0, toCopyBytes: 0, alreadyOnTarget: 0,
    messagesPerSecond: 0, megabytesPerSecond: 0, etaSeconds: null, stale: false,
  };
  const empty = mailbox({ found: 0, copied: 0, bytes: 0 });
  const queued = mailbox({ line: 3, emailAddress: 'q@example.org', status: 'Queued', found: 0, copied: 0, initialSyncedAt: null });
  const scanning = mailbox({ line: 4, emailAddress: 's@example.org', status: 'Syncing', found: 0, copied: 0, initialSyncedAt: null, syncing: live });
  assert.equal(batchView(runningBatch(t0), { endpoint: 'old', target: 'new' }, [empty, queued, scanning], t0 + 1000).etaSeconds, null);
});

test('the report says where the cut-over stands: what deleting would still wait for, or that no MX check is recorded', () => {
  const r = report([mailbox({})], 'Synced');
  const waiting = composeReportEmail({ ...r, cutOver: { deleteWarnings: ['Batch "pilot": the MX of example.org points at mx.new.example since at least 2026-01-01 08:00 UTC (first seen by mailferry), 2h ago, less than 72 hours (2d22h to go): resolvers may still deliver to the old server.'], uncheckedDomains: [] } }, 'daily');
  assert.match(waiting.text, /Before deleting the batch: the MX of example\.org points at mx\.new\.example since at least .* \(2d22h to go\)/);
  const unknown = composeReportEmail({ ...r, cutOver: { deleteWarnings: [], uncheckedDomains: ['example.org'] } }, 'daily');
  assert.match(unknown.text, /No MX check is recorded for example\.org: mailferry cannot tell whether MX points at the new system/);
  const done = composeReportEmail({ ...r, cutOver: { deleteWarnings: [], uncheckedDomains: [] } }, 'daily');
  assert.match(done.text, /The 72 hours after the MX switch are over and every mailbox synced since: the batch can be deleted/);
});

test("a big batch's mail lists the first 200 mailboxes in its body (the CSV has all), so it stays readable", () => {
  const many = Array.from({ length: 250 }, (_, i) => mailbox({ line: i + 2, emailAddress: `user${i}@example.org` }));
  const mail = composeReportEmail(report(many, 'Synced'), 'daily');
  assert.match(mail.text, /The first 200 of 250; the attached CSV lists them all\./);
  assert.ok(mail.text.includes('user199@example.org') && !mail.text.includes('user200@example.org'));
  assert.equal(mail.attachments[0]!.content.split('\r\n').filter((l) => l.startsWith('mailbox,')).length, 250);
});

test('a too-large message is named in MB or KB, in bytes when it and the limit round alike', () => {
  assert.equal(tooLargeReason(40 * 1048576, 35 * 1048576), 'message is 40.0 MB, over the 35.0 MB limit');
  assert.equal(tooLargeReason(35 * 1048576 + 1, 35 * 1048576), 'message is 36700161 bytes, over the 36700160-byte limit');
  assert.equal(tooLargeReason(2100, 2048), 'message is 2.1 KB, over the 2.0 KB limit');
});
