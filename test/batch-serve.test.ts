/**
 * Batches under `mailferry serve`, against real Dovecot servers, on SQLite and on
 * PostgreSQL: a batch with one wrong password ends SyncedWithErrors with the right
 * per-mailbox statuses, and its report e-mail arrives at a real SMTP listener; `batch
 * verify` finds a message missing on the target; later incremental syncs copy only new
 * mail, and the report after them says so; a `kill -9` of the service in the middle of a
 * batch, then a restart, still ends with every mailbox exact.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { findBatch } from '../src/batch/store.js';
import { type BatchDetail, loadBatchDetail } from '../src/batch/view.js';
import type { Store } from '../src/store/open.js';
import { runCli, type Service, startService } from './helpers/cli.js';
import { type BatchLab, type DialectName, type LabUser, loadMailbox, postgresUnavailable, startBatchLab, until } from './helpers/batch-lab.js';
import { expectedTargetPath } from './helpers/lab-pair.js';
import { compareMailboxes, connect, snapshot } from './helpers/mailbox-snapshot.js';
import { type CapturedMail, type SmtpCapture, startSmtpCapture } from './helpers/smtp-capture.js';

async function exact(lab: BatchLab, u: LabUser): Promise<{ problems: string[]; sourceCount: number; targetCount: number }> {
  const src = await snapshot(lab.source.endpoint(), u.user, u.password);
  const tgt = await snapshot(lab.target.endpoint(), u.address, 'unused-Target-Pw1');
  const count = (s: Map<string, unknown[]>) => [...s.values()].reduce((n, m) => n + m.length, 0);
  return { problems: compareMailboxes(src, tgt, (p) => expectedTargetPath(p)), sourceCount: count(src), targetCount: count(tgt) };
}

for (const dialect of ['sqlite', 'postgres'] as DialectName[]) {
  describe(`batches under serve (${dialect})`, async () => {
    const skip = dialect === 'postgres' ? await postgresUnavailable() : null;
    if (skip) process.stderr.write(`# skipping PostgreSQL batch tests: ${skip}\n`);
    let lab: BatchLab;
    let store: Store;
    let loaded: number[] = [];
    let smtp: SmtpCapture;
    const services: Service[] = [];
    const serve = (extra: string[]) => {
      // Several services run at once: no fixed port (the web page is tested in web-page.test.ts).
      const s = startService(['serve', '--lease-ttl', '3s', '--log-level', 'warn', ...(extra.includes('--listen') ? [] : ['--no-listen']), ...extra], lab.env);
      services.push(s);
      return s;
    };
    const detail = async (name: string): Promise<BatchDetail> => {
      const b = await findBatch(store.db, name);
      assert.ok(b, `batch ${name} exists`);
      return loadBatchDetail(store.db, b);
    };

    before(async () => {
      if (skip) return;
      lab = await startBatchLab({ dialect, users: 9 });
      // users 1–4: the lifecycle batch (user4's CSV password is wrong); 5–8: the crash batch,
      // larger; 9: added to the lifecycle batch by `batch update`.
      loaded = await Promise.all(lab.users.map((u, i) => loadMailbox(lab, u, i < 4 ? 100 : i < 8 ? 600 : 40, 1000 + i)));
      store = await lab.db.open();
      smtp = await startSmtpCapture();
      Object.assign(lab.env, { MAILFERRY_SMTP_URL: smtp.url, MAILFERRY_ADMIN_EMAIL: 'admin@example.org', MAILFERRY_REPORT_FROM: 'Migration <mailferry@example.org>' });
    });
    after(async () => {
      for (const s of services) if (s.child.exitCode === null) s.child.kill('SIGKILL');
      await smtp?.stop();
      await store?.close();
      await lab?.stop();
    });

    test('create checks the name, the endpoints and the migration file', { skip: skip ?? false }, async () => {
      const ok = lab.csv(lab.users.slice(0, 4).map((u, i) => ({ user: u, ...(i === 3 ? { password: 'Wrong-Pass-1' } : {}) })));
      const badName = await runCli(['batch', 'create', 'bad name', '--csv', ok, '--endpoint', 'src', '--target', 'tgt'], lab.env);
      assert.equal(badName.status, 2);
      assert.match(badName.stderr, /letters, digits/);
      const noEndpoint = await runCli(['batch', 'create', 'x', '--csv', ok, '--endpoint', 'nope', '--target', 'tgt'], lab.env);
      assert.equal(noEndpoint.status, 2);
      assert.match(noEndpoint.stderr, /no migration endpoint named "nope"/);
      const both = await runCli(['batch', 'create', 'x', '--csv', ok, '--endpoint', 'src', '--target', 'tgt', '--autostart', '--start-at', '+1h'], lab.env);
      assert.equal(both.status, 2);

      const created = await runCli(['batch', 'create', 'first', '--csv', ok, '--endpoint', 'src', '--target', 'tgt', '--exclude', 'Nothing', '--notify', 'boss@example.org', '--json'], lab.env);
      assert.equal(created.status, 0, created.stderr);
      assert.equal(created.json?.status, 'Created');
      assert.equal(created.json?.mailboxes, 4);
      const inUse = await runCli(['endpoint', 'delete', 'src'], lab.env);
      assert.equal(inUse.status, 2, inUse.stderr);
      assert.match(inUse.stderr, /used by batch "first"/);
      const again = await runCli(['batch', 'create', 'second', '--csv', lab.csv([{ user: lab.users[0]! }]), '--endpoint', 'src', '--target', 'tgt', '--json'], lab.env);
      assert.equal(again.status, 2);
      assert.match(again.stderr, /already in another active batch \("first"\) \[in-active-batch\]/);
      assert.equal((again.json?.errors as { line: number }[])[0]!.line, 2);
      // Passwords are stored encrypted, and shown nowhere.
      const row = await store.db.selectFrom('batch_mailbox').select('password_enc').where('email_key', '=', 'user4@example.org').executeTakeFirstOrThrow();
      assert.ok(!row.password_enc.includes('Wrong-Pass-1'));
    });

    test('check-logins names the mailbox whose password is wrong', { skip: skip ?? false }, async () => {
      const r = await runCli(['batch', 'check-logins', 'first', '--json'], lab.env);
      assert.equal(r.status, 3, r.stderr);
      const boxes = r.json?.mailboxes as { emailAddress: string; source: { ok: boolean; error?: string }; target: { ok: boolean } }[];
      assert.deepEqual(boxes.map((b) => [b.emailAddress, b.source.ok, b.target.ok]), [
        ['user1@example.org', true, true],
        ['user2@example.org', true, true],
        ['user3@example.org', true, true],
        ['user4@example.org', false, true],
      ]);
      assert.match(boxes[3]!.source.error!, /user4/);
      assert.ok(!(r.stdout + r.stderr).includes('Wrong-Pass-1'));
      // The run is recorded for the web page, and its claim given back.
      const row = await store.db.selectFrom('batch').select(['id', 'login_check_json', 'login_check_until']).where('name', '=', 'first').executeTakeFirstOrThrow();
      assert.equal(row.login_check_until, null);
      const shown = JSON.parse(row.login_check_json!) as { running: boolean; ok: boolean; mailboxes: { emailAddress: string }[] };
      assert.deepEqual([shown.running, shown.ok, shown.mailboxes.length], [false, false, 4]);
      assert.ok(!row.login_check_json!.includes('Wrong-Pass-1'));
      // While the page's run holds the claim, the CLI refuses rather than trying every password twice.
      await store.db.updateTable('batch').set({ login_check_until: Date.now() + 60_000, verify_until: Date.now() + 60_000 }).where('id', '=', row.id).execute();
      try {
        const busy = await runCli(['batch', 'check-logins', 'first'], lab.env);
        assert.equal(busy.status, 2, busy.stderr);
        assert.match(busy.stderr, /logins of batch "first" are being checked already/);
        const verifying = await runCli(['batch', 'verify', 'first'], lab.env);
        assert.equal(verifying.status, 2, verifying.stderr);
        assert.match(verifying.stderr, /already being verified/);
      } finally {
        await store.db.updateTable('batch').set({ login_check_until: null, verify_until: null }).where('id', '=', row.id).execute();
      }
    });

    test('serve runs the batch to SyncedWithErrors, each mailbox with its own status', { skip: skip ?? false }, async () => {
      const service = serve(['--incremental-every', '2s', '--listen', '127.0.0.1:0']);
      const start = await runCli(['batch', 'start', 'first', '--json'], lab.env);
      assert.equal(start.status, 0, start.stderr);
      assert.equal(start.json?.started, true);
      const d = await until('batch "first" to finish its initial sync', 120_000, async () => {
        const x = await detail('first');
        return x.batch.status === 'SyncedWithErrors' && x;
      });
      assert.ok(d.batch.initialSyncedAt);
      const by = new Map(d.mailboxes.map((m) => [m.emailAddress, m]));
      for (const [i, u] of lab.users.slice(0, 3).entries()) {
        const m = by.get(u.address)!;
        assert.ok(m.status === 'Synced' || m.status === 'IncrementalSyncing', `${u.address}: ${m.status} ${m.lastError ?? ''}`);
        assert.equal(m.copied, loaded[i], `${u.address} copied`);
        assert.equal(m.found, loaded[i]);
        assert.equal(m.lastError, null);
        assert.ok(m.lastSyncAt);
        const e = await exact(lab, u);
        assert.deepEqual(e.problems, [], `${u.address} is exact`);
      }
      const bad = by.get('user4@example.org')!;
      assert.equal(bad.status, 'Failed');
      assert.match(bad.lastError!, /user4/);
      assert.match(bad.lastError!, /fail|refused|invalid/i);
      assert.equal(bad.copied, 0);
      assert.equal(bad.nextSyncAt, null, 'a refused password is not tried again on a timer (lockout policies count the tries)');
      assert.match(bad.lastError!, /not retried automatically.*batch update/);

      const status = await runCli(['batch', 'status', 'first'], lab.env);
      assert.equal(status.status, 0, status.stderr);
      assert.match(status.stdout, /first: SyncedWithErrors/);
      assert.match(status.stdout, /user4@example\.org\tFailed/);
      const report = await runCli(['batch', 'report', 'first', '--csv'], lab.env);
      assert.equal(report.status, 0, report.stderr);
      assert.match(report.stdout, /^Type,EmailAddress,Status/);
      assert.match(report.stdout, /mailbox,user4@example\.org,Failed/);
      for (const u of lab.users) assert.ok(!(status.stdout + report.stdout).includes(u.password));
      assert.ok(!(status.stdout + report.stdout + service.output()).includes('Wrong-Pass-1'));

      // The report of the initial sync, e-mailed to the admin and the batch's --notify address.
      assert.match(service.output(), /report e-mail through smtp:\/\/127\.0\.0\.1:\d+/);
      const mail = await smtp.waitFor('the initial-sync report of "first"', (m) => /batch first: initial sync finished/.test(m.parsed.subject ?? ''));
      assert.match(mail.parsed.subject!, /SyncedWithErrors \(1 mailbox failed\)/);
      assert.deepEqual(mail.rcptTo.sort(), ['admin@example.org', 'boss@example.org']);
      assert.equal(mail.mailFrom, 'mailferry@example.org');
      const text = mail.parsed.text ?? '';
      assert.match(text, /Failed mailboxes \(1\)[\s\S]*user4@example\.org\s+.*user4/);
      for (const [i, u] of lab.users.slice(0, 3).entries()) assert.match(text, new RegExp(`${u.address.replace('.', '\\.')}\\s+(Synced|IncrementalSyncing)\\s+${loaded[i]}\\s+${loaded[i]}\\s`));
      assert.match(mail.parsed.html || '', /<td>user4@example\.org<\/td><td>Failed<\/td>/);
      const csv = mail.parsed.attachments.find((a) => a.filename?.endsWith('.csv'));
      assert.ok(csv, 'the CSV report is attached');
      const csvText = csv.content.toString('utf8');
      assert.equal(csvText.split('\r\n').filter((l) => l.startsWith('mailbox,')).length, 4);
      const json = JSON.parse(mail.parsed.attachments.find((a) => a.filename?.endsWith('.json'))!.content.toString('utf8')) as { batch: { status: string } };
      assert.equal(json.batch.status, 'SyncedWithErrors');
      for (const u of lab.users) assert.ok(!mail.raw.includes(u.password), 'no password in the report e-mail');
      assert.ok(!mail.raw.includes('Wrong-Pass-1') && !mail.raw.includes('unused-Target-Pw1'));
      // Recorded once the SMTP server has said 250, a moment after the listener has the mail.
      const sent = await until('the report to be recorded as sent', 15_000, async () => {
        const x = await detail('first');
        return x.batch.reports.initialSentAt !== null && x;
      });
      assert.equal(sent.batch.reports.error, null);

      const url = /web page and HTTP API at (http:\/\/\S+)\//.exec(service.output())?.[1];
      assert.ok(url, service.output());
      assert.equal((await fetch(`${url}/api/batches/first`)).status, 401, 'the API answers only with the admin token');
      const token = readFileSync(join(lab.dir, 'admin-token'), 'utf8').trim();
      const api = (await (await fetch(`${url}/api/batches/first`, { headers: { authorization: `Bearer ${token}` } })).json()) as BatchDetail;
      assert.equal(api.batch.status, 'SyncedWithErrors');
    });

    test('batch verify: in sync, a message missing on the target, and a mailbox that cannot log in', { skip: skip ?? false }, async () => {
      const all = await runCli(['batch', 'verify', 'first', '--json'], lab.env);
      assert.equal(all.status, 3, all.stderr);
      assert.match(all.stderr, /NOT verified: 0 of 4 mailboxes are not in sync, 1 could not be checked/);
      type Row = { emailAddress: string; kind: 'verified' | 'error'; result?: { inSync: boolean; sourceMessages: number; missing: number }; error?: string };
      const rows = (all.json as { verified: boolean; mailboxes: Row[] }).mailboxes;
      assert.equal((all.json as { verified: boolean }).verified, false);
      for (const [i, u] of lab.users.slice(0, 3).entries()) {
        const r = rows.find((x) => x.emailAddress === u.address)!;
        assert.equal(r.kind, 'verified', JSON.stringify(r));
        assert.equal(r.result!.inSync, true);
        assert.equal(r.result!.sourceMessages, loaded[i]);
      }
      const bad = rows.find((x) => x.emailAddress === 'user4@example.org')!;
      assert.equal(bad.kind, 'error');
      // Its password was refused at its sync: not tried again (one more failed login on a live account).
      assert.match(bad.error!, /not verified: the source refused the password of user4 at its last sync, and it is not tried again/);
      assert.ok(!(all.stdout + all.stderr).includes('Wrong-Pass-1'));

      // A message lost on the target (deleted there by someone) is found missing, in its folder.
      const u = lab.users[1]!;
      const c = await connect(lab.target.endpoint(), u.address, 'unused-Target-Pw1');
      await c.mailboxOpen('INBOX');
      const victim = (await c.search({ all: true }, { uid: true })) as number[];
      assert.ok(victim.length > 0);
      await c.messageDelete(String(victim[0]), { uid: true });
      await c.logout();
      const one = await runCli(['batch', 'verify', 'first', '--user', u.address.toUpperCase()], lab.env);
      assert.equal(one.status, 1, one.stderr);
      assert.match(one.stderr, new RegExp(`MISSING line \\d+ ${u.address.replace('.', '\\.')}: ${loaded[1]} source messages, ${loaded[1]! - 1} on the target, 1 missing`));
      assert.match(one.stderr, /INBOX -> INBOX: source \d+, target \d+, 1 missing/);
      assert.match(one.stderr, /missing: INBOX uid \d+ ("[^"]*"|\(no subject\)), .*\d+ bytes/, 'named as an admin can find it');
      const good = await runCli(['batch', 'verify', 'first', '--user', lab.users[0]!.address], lab.env);
      assert.equal(good.status, 0, good.stderr);
      assert.match(good.stderr, /verified: the mailbox is in sync/);
      // Kept for status and reports.
      const d = await detail('first');
      const v = (addr: string) => d.mailboxes.find((m) => m.emailAddress === addr)!.verification;
      assert.deepEqual([v(lab.users[0]!.address)?.inSync, v(u.address)?.inSync, v(u.address)?.missing, v('user4@example.org')?.inSync], [true, false, 1, false]);
      assert.match(v('user4@example.org')!.error!, /user4/);
      const status = await runCli(['batch', 'status', 'first'], lab.env);
      assert.match(status.stdout, new RegExp(`${u.address.replace('.', '\\.')}\\t.*\\t1 missing \\(INBOX 1\\) `));
      // The message copied and then lost is not copied again (the journal has it): put it back by hand.
      const src = await connect(lab.source.endpoint(), u.user, u.password);
      await src.mailboxOpen('INBOX', { readOnly: true });
      const first = await src.fetchOne('1', { source: true, flags: true, internalDate: true });
      await src.logout();
      assert.ok(first && first.source);
      const tgt = await connect(lab.target.endpoint(), u.address, 'unused-Target-Pw1');
      await tgt.append('INBOX', first.source, [...(first.flags ?? [])], first.internalDate);
      await tgt.logout();
      const fixed = await runCli(['batch', 'verify', 'first', '--user', u.address], lab.env);
      assert.equal(fixed.status, 0, fixed.stderr);

      // Put there twice: still in sync (nothing is missing), but the duplicate is said.
      const again = await connect(lab.target.endpoint(), u.address, 'unused-Target-Pw1');
      const dup = await again.append('INBOX', first.source, [...(first.flags ?? [])], first.internalDate);
      const twice = await runCli(['batch', 'verify', 'first', '--user', u.address], lab.env);
      assert.equal(twice.status, 0, twice.stderr);
      assert.match(twice.stderr, new RegExp(`ok +line \\d+ ${u.address.replace('.', '\\.')}: .*, 1 there twice \\(duplicates of source messages\\)`));
      assert.match(twice.stderr, /INBOX -> INBOX: source \d+, target \d+, 1 duplicate$/m);
      assert.match((await runCli(['batch', 'status', 'first'], lab.env)).stdout, new RegExp(`${u.address.replace('.', '\\.')}\\t.*\\tin sync, 1 duplicate `));
      await again.mailboxOpen('INBOX');
      assert.ok(dup && typeof dup === 'object' && dup.uid, 'the duplicate\'s UID (UIDPLUS)');
      await again.messageDelete(String(dup.uid), { uid: true });
      await again.logout();
    });

    test('a later incremental sync copies only the new mail', { skip: skip ?? false }, async () => {
      const u = lab.users[0]!;
      const before = (await detail('first')).mailboxes.find((m) => m.emailAddress === u.address)!;
      const c = await connect(lab.source.endpoint(), u.user, u.password);
      await c.append('INBOX', Buffer.from('From: a@example.org\r\nSubject: after the initial sync\r\nMessage-ID: <inc1@x>\r\n\r\nnew\r\n'), ['\\Seen'], new Date('2025-01-02T03:04:05Z'));
      await c.append('INBOX', Buffer.from('From: a@example.org\r\nSubject: and another\r\nMessage-ID: <inc2@x>\r\n\r\nnew too\r\n'), [], new Date('2025-01-02T03:05:05Z'));
      await c.logout();
      const appendedAt = Date.now();
      await until(`${u.address} to copy the 2 new messages`, 60_000, async () => {
        const m = (await detail('first')).mailboxes.find((x) => x.emailAddress === u.address)!;
        return m.copied === before.copied + 2 && m.lastSyncAt !== null && Date.parse(m.lastSyncAt) > appendedAt;
      });
      const mailboxId = (await store.db.selectFrom('batch_mailbox').select('id').where('email_key', '=', u.address).executeTakeFirstOrThrow()).id;
      // Let at least one more incremental sync pass (every 2 s), which must copy nothing.
      await until('another incremental sync', 30_000, async () => {
        const runs = await store.db.selectFrom('sync_run').selectAll().where('mailbox_id', '=', mailboxId).where('outcome', '=', 'synced').orderBy('id').execute();
        const afterNew = runs.findIndex((r) => r.copied === 2);
        return afterNew >= 0 && runs.length > afterNew + 1;
      });
      const runs = await store.db.selectFrom('sync_run').selectAll().where('mailbox_id', '=', mailboxId).where('outcome', '=', 'synced').orderBy('id').execute();
      assert.equal(runs[0]!.kind, 'initial');
      assert.equal(runs[0]!.copied, loaded[0]);
      assert.ok(runs.length >= 3);
      assert.deepEqual(runs.slice(1).map((r) => r.kind), runs.slice(1).map(() => 'incremental'));
      assert.deepEqual(runs.slice(1).map((r) => r.copied).sort(), [...runs.slice(1).map(() => 0).slice(1), 2].sort(), 'only the new mail was copied, once');
      assert.deepEqual((await exact(lab, u)).problems, []);
      const d = await detail('first');
      assert.ok(d.batch.lastIncrementalAt);
      // Runs of one mailbox never overlap.
      const all = await store.db.selectFrom('sync_run').selectAll().orderBy('started_at').execute();
      const byMailbox = new Map<number, typeof all>();
      for (const r of all) byMailbox.set(r.mailbox_id, [...(byMailbox.get(r.mailbox_id) ?? []), r]);
      for (const rs of byMailbox.values()) for (let i = 1; i < rs.length; i++) assert.ok(rs[i]!.started_at >= rs[i - 1]!.ended_at!, 'runs of one mailbox overlap');
      // After a round of incremental syncs, a report says what it copied.
      const isDaily = (m: CapturedMail) => /batch first: incremental syncs/.test(m.parsed.subject ?? '');
      const daily = await smtp.waitFor('a report after incremental syncs that copied the 2 new messages', (m) => isDaily(m) && /Since the last report .*: 2 new messages copied/.test(m.parsed.text ?? ''));
      assert.match(daily.parsed.text ?? '', new RegExp(`${u.address.replace('.', '\\.')}\\s+(Synced|IncrementalSyncing)\\s+${loaded[0]! + 2}\\s+${loaded[0]! + 2}\\s+0\\s+\\S+ MB\\s+2\\s`));
      assert.ok(smtp.mails.filter((m) => /batch first: initial sync finished/.test(m.parsed.subject ?? '')).length === 1, 'the initial report is sent once');
    });

    test('update: a corrected password syncs at once, an added user is migrated, an invalid file changes nothing', { skip: skip ?? false }, async () => {
      const [u1, , , u4, , , , , u9] = lab.users;
      const invalid = lab.csv([{ user: u4!, password: '' }]);
      const refused = await runCli(['batch', 'update', 'first', '--csv', invalid, '--json'], lab.env);
      assert.equal(refused.status, 2, refused.stderr);
      assert.match(refused.stderr, /NOT valid; batch first was not changed/);
      assert.equal((await detail('first')).mailboxes.length, 4);

      const fixedAt = Date.now();
      const r = await runCli(['batch', 'update', 'first', '--csv', lab.csv([{ user: u1! }, { user: u4! }, { user: u9! }]), '--json'], lab.env);
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(r.json, { changed: [u4!.address], added: [u9!.address], unchanged: 1, notInFile: 2 });
      assert.ok(!(r.stdout + r.stderr).includes(u4!.password));
      // user4 failed with a backoff of minutes; the correction makes it due at once.
      const d = await until('user4 and user9 to be synced', 90_000, async () => {
        const x = await detail('first');
        const ok = (a: string) => {
          const m = x.mailboxes.find((y) => y.emailAddress === a);
          return m && m.lastSyncAt !== null && Date.parse(m.lastSyncAt) >= fixedAt && m.lastError === null;
        };
        return ok(u4!.address) && ok(u9!.address) && x;
      });
      assert.equal(d.mailboxes.find((m) => m.emailAddress === u4!.address)!.copied, loaded[3]);
      assert.equal(d.mailboxes.find((m) => m.emailAddress === u9!.address)!.copied, loaded[8]);
      for (const u of [u4!, u9!]) assert.deepEqual((await exact(lab, u)).problems, [], `${u.address} is exact`);
      // Nothing stored says the new password.
      const row = await store.db.selectFrom('batch_mailbox').select('password_enc').where('email_key', '=', u4!.address).executeTakeFirstOrThrow();
      assert.ok(!row.password_enc.includes(u4!.password));
    });

    test('stop and delete: warned and refused without --force, then removed', { skip: skip ?? false }, async () => {
      const stop = await runCli(['batch', 'stop', 'first', '--json'], lab.env);
      assert.equal(stop.status, 0, stop.stderr);
      assert.equal(stop.json?.stopped, true);
      await until('every mailbox of "first" to be Stopped', 20_000, async () => (await detail('first')).mailboxes.every((m) => m.status === 'Stopped'));
      assert.equal((await detail('first')).batch.status, 'Stopped');
      const early = await runCli(['batch', 'delete', 'first', '--json'], lab.env);
      assert.equal(early.status, 2);
      assert.match(early.stderr, /warning: .*less than 72 hours.*--force/s);
      assert.equal(early.json?.removed, false);
      assert.match(String(early.json?.warning), /less than 72 hours/);
      const del = await runCli(['batch', 'delete', 'first', '--force', '--json'], lab.env);
      assert.equal(del.status, 0, del.stderr);
      assert.match(del.stderr, /deleted/);
      assert.deepEqual(del.json, { removed: true, remaining: 0 });
      const list = await runCli(['batch', 'list', '--json'], lab.env);
      assert.deepEqual(list.json, [] as unknown);
      // SIGTERM: a graceful stop.
      const s = services.at(-1)!;
      s.child.kill('SIGTERM');
      assert.equal(await s.exited, 0, s.output());
    });

    test('SIGTERM, then kill -9 of serve in the middle of a batch, then a restart: every mailbox exact', { skip: skip ?? false }, async () => {
      const users = lab.users.slice(4, 8);
      const total = loaded.slice(4).reduce((a, b) => a + b, 0);
      // Progress as the journal records it, chunk by chunk (the status columns only move with heartbeats).
      const journalCopied = async () => {
        const r = await store.db
          .selectFrom('message')
          .innerJoin('folder', 'folder.id', 'message.folder_id')
          .innerJoin('mailbox_pair', 'mailbox_pair.id', 'folder.pair_id')
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .where('message.state', '=', 'copied')
          .where('mailbox_pair.target_key', 'in', users.map((u) => `imap://${encodeURIComponent(u.address)}@127.0.0.1:${lab.target.port}`))
          .executeTakeFirstOrThrow();
        return Number(r.n);
      };
      const file = lab.csv(users.map((u) => ({ user: u })));
      const created = await runCli(['batch', 'create', 'crash', '--csv', file, '--endpoint', 'src', '--target', 'tgt', '--autostart'], lab.env);
      assert.equal(created.status, 0, created.stderr);
      let copied = 0;
      for (let round = 0; round < 2; round++) {
        const victim = serve(['--concurrency', '4', '--connections', '1']);
        // Stop it once another quarter of what is left is copied: syncs are running then.
        const threshold = copied + Math.ceil((total - copied) / 4);
        await until('the batch to be well under way', 120_000, async () => (await journalCopied()) >= threshold, 5);
        const mid = await detail('crash');
        if (round === 0) {
          // First a graceful stop: syncs abandoned, mailboxes given back at once, no lease left.
          const t = Date.now();
          victim.child.kill('SIGTERM');
          assert.equal(await victim.exited, 0, victim.output());
          const took = Date.now() - t;
          process.stderr.write(`# graceful stop of serve mid-batch took ${took} ms\n`);
          assert.ok(took < 15_000, `stopped within seconds (${took} ms)`);
          const rows = await store.db.selectFrom('batch_mailbox').select(['status', 'lease_owner']).where('email_key', 'in', users.map((u) => u.address)).execute();
          assert.ok(rows.every((r) => r.lease_owner === null && r.status !== 'Syncing'), JSON.stringify(rows));
        } else {
          victim.child.kill('SIGKILL');
          await victim.exited;
        }
        copied = await journalCopied();
        assert.ok(copied < total, `stopped before the end (${copied} of ${total} copied): the test needs larger mailboxes`);
        assert.ok(mid.mailboxes.some((m) => m.status === 'Syncing'), 'stopped mid-sync');
      }
      const after = serve(['--concurrency', '4']);
      const d = await until('batch "crash" to be Synced after the restarts', 180_000, async () => {
        const x = await detail('crash');
        return x.batch.status === 'Synced' && x;
      });
      for (const [i, u] of users.entries()) {
        const e = await exact(lab, u);
        assert.deepEqual(e.problems, [], `${u.address} is exact`);
        assert.equal(e.targetCount, loaded[4 + i], `${u.address}: no message lost or duplicated`);
        assert.equal(d.mailboxes.find((m) => m.emailAddress === u.address)!.copied, loaded[4 + i]);
      }
      const runs = await store.db.selectFrom('sync_run').selectAll().where('batch_id', '=', (await findBatch(store.db, 'crash'))!.id).execute();
      assert.ok(runs.some((r) => r.outcome === 'interrupted'), 'the gracefully stopped runs were recorded as interrupted');
      assert.ok(runs.some((r) => r.outcome === 'abandoned'), 'the killed runs were closed as abandoned');
      after.child.kill('SIGTERM');
      assert.equal(await after.exited, 0, after.output());
    });
  });
}
