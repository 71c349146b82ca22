/**
 * The web admin page in a real browser (Debian's Chromium, driven by playwright-core)
 * against `mailferry serve --listen` and real Dovecot servers: sign in with the admin
 * token, create endpoints through the form (a failing test stores nothing), upload a
 * broken then a valid migration file, start the batch and watch it finish live (no reload),
 * check logins, verify, and delete with the 72-hour warning. No password ever on the page.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type Browser, chromium, type Page } from 'playwright-core';
import { type LabDnsServer, startDnsServer } from '../src/lab/dns-server.js';
import { type BatchLab, loadMailbox, startBatchLab, until } from './helpers/batch-lab.js';
import { type Service, startService } from './helpers/cli.js';
import { connect } from './helpers/mailbox-snapshot.js';

const CHROMIUM = '/usr/bin/chromium';
const HUGE_SUBJECT = '<b id="injected">Huge</b> scan';
const skip = existsSync(CHROMIUM) ? null : `${CHROMIUM} is not installed (scripts/setup.sh installs Debian's chromium)`;
if (skip) process.stderr.write(`# skipping the web page tests: ${skip}\n`);

describe('the web admin page', { skip: skip ?? false }, () => {
  let lab: BatchLab;
  let service: Service;
  let browser: Browser;
  let page: Page;
  let url: string;
  let token: string;
  let dns: LabDnsServer;
  const dialogs: string[] = [];
  const consoleErrors: string[] = [];

  before(async () => {
    lab = await startBatchLab({ dialect: 'sqlite', users: 3 });
    for (const [i, u] of lab.users.slice(0, 2).entries()) await loadMailbox(lab, u, 300 + 100 * i, 70 + i);
    // One message over the 35 MB limit, whose subject is markup: skipped, and listed as text.
    const c = await connect(lab.source.endpoint(), lab.users[0]!.user, lab.users[0]!.password);
    const head = `From: a@example.org\r\nTo: user1@example.org\r\nSubject: ${HUGE_SUBJECT}\r\nDate: Mon, 3 Mar 2025 10:00:00 +0000\r\nMessage-ID: <huge@example.org>\r\n\r\n`;
    await c.append('INBOX', Buffer.concat([Buffer.from(head), Buffer.alloc(36 * 1024 * 1024, 'A\r\n')]), [], new Date('2025-03-03T10:00:00Z'));
    await c.logout();
    service = startService(['serve', '--listen', '127.0.0.1:0', '--incremental-every', '1h', '--lease-ttl', '3s', '--log-level', 'warn'], lab.env);
    url = await until('serve to listen', 30_000, async () => /web page and HTTP API at (http:\/\/\S+?)\/? /.exec(service.output())?.[1]);
    token = readFileSync(join(lab.dir, 'admin-token'), 'utf8').trim();
    // The lab users' domain, its MX already moved to the new system (TTL 300 s).
    dns = await startDnsServer([
      { type: 'SOA', name: 'example.org', ttl: 3600, class: 'IN', data: { mname: 'ns1.example.org', rname: 'hostmaster.example.org', serial: 1, refresh: 3600, retry: 600, expire: 86400, minimum: 900 } },
      { type: 'MX', name: 'example.org', ttl: 300, class: 'IN', data: { preference: 10, exchange: 'mx.new.example' } },
      { type: 'A', name: 'mx.new.example', ttl: 300, class: 'IN', data: '192.0.2.10' },
    ]);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox'] });
    page = await browser.newPage();
    // Anything the browser refuses (a Content-Security-Policy violation, a script error) fails the last test.
    page.on('console', (m) => {
      if (m.type() === 'error' && !/401|Failed to load resource/.test(m.text())) consoleErrors.push(m.text());
    });
    page.on('pageerror', (e) => consoleErrors.push(e.message));
    page.on('dialog', (d) => {
      dialogs.push(d.message());
      void d.accept();
    });
  });

  after(async () => {
    await browser?.close();
    await dns?.stop();
    service?.child.kill('SIGKILL');
    await service?.exited;
    await lab?.stop();
  });

  /** With MAILFERRY_TEST_SCREENSHOTS=DIR, each step's page is saved there (to look at the layout). */
  const shot = async (name: string) => {
    const to = process.env.MAILFERRY_TEST_SCREENSHOTS;
    if (to) await page.screenshot({ path: join(to, `${name}.png`), fullPage: true });
  };
  /** Everything the page shows, for the "no password on the page" checks. */
  const pageText = () => page.locator('body').innerText();
  const passwords = () => [...lab.users.map((u) => u.password), 'Wr0ng-Pass-99', 'Adm1n-Target-Pw9', token];

  test('asks for the admin token, refuses a wrong one, then shows the dashboard', async () => {
    await page.goto(url);
    await page.locator('#token').fill('not-the-token-at-all');
    await page.locator('#sign-in button[type=submit]').click();
    await page.getByText('The admin token was refused').waitFor();
    await page.locator('#token').fill(token);
    await page.locator('#sign-in button[type=submit]').click();
    await page.getByRole('heading', { name: 'Migration batches' }).waitFor();
    await page.getByText('No batch yet').waitFor();
    await shot('1-dashboard-empty');
    // A second serve on the same address says so, and how to choose another.
    const second = startService(['serve', '--listen', new URL(url).host, '--log-level', 'warn'], lab.env);
    assert.equal(await second.exited, 2, second.output());
    assert.match(second.output(), /cannot listen on 127\.0\.0\.1:\d+: the address is in use .*--listen HOST:PORT.*--no-listen/);
  });

  test('endpoints: a server that cannot be reached is not stored; a good one is, and is listed', async () => {
    await page.goto(`${url}/#/endpoints`);
    await page.locator('#source-list tr[data-endpoint="src"]').waitFor();
    await page.locator('#target-list tr[data-endpoint="tgt"]').waitFor();
    // A port nothing listens on (the target's port + 1 is not the lab's).
    await page.locator('#source-name').fill('nowhere');
    await page.locator('#source-host').fill('127.0.0.1');
    await page.locator('#source-port').fill('9');
    await page.locator('#source-tls').selectOption('none');
    await page.locator('#source-create').click();
    await page.locator('#source-result [data-test=failed]').waitFor();
    assert.match(await page.locator('#source-result').innerText(), /connect/i);
    assert.match(await page.locator('#source-result').innerText(), /was not stored/);
    assert.equal(await page.locator('#source-list tr[data-endpoint="nowhere"]').count(), 0);

    await page.locator('#source-name').fill('src2');
    await page.locator('#source-port').fill(String(lab.source.port));
    // SPEC §3's choice of login method.
    await page.locator('#source-auth').selectOption('plain');
    await page.locator('#source-test-user').fill(lab.users[0]!.user);
    await page.locator('#source-test-password').fill(lab.users[0]!.password);
    await page.locator('#source-create').click();
    await page.locator('#source-result [data-test=passed]').waitFor();
    assert.match(await page.locator('#source-result').innerText(), /login/);
    await page.locator('#source-list tr[data-endpoint="src2"]').waitFor();
    assert.equal(await page.locator('#source-test-password').inputValue(), '', 'the password field is cleared once used');

    // Changing a stored one: tested first, kept as it was when the test fails.
    await page.locator('#target-list tr[data-endpoint="tgt"] button.edit').click();
    assert.equal(await page.locator('#target-name').inputValue(), 'tgt');
    await page.locator('#target-port').fill('9');
    await page.locator('#target-create').click();
    await page.locator('#target-result [data-test=failed]').waitFor();
    assert.match(await page.locator('#target-result').innerText(), /was not changed/);
    await page.locator('#target-cancel-edit').click();
    assert.match(await page.locator('#target-list tr[data-endpoint="tgt"]').innerText(), new RegExp(`:${lab.target.port}\\b`));
    await page.locator('#source-list tr[data-endpoint="src2"] button.edit').click();
    await page.locator('#source-max-migrations').fill('5');
    await page.locator('#source-create').click();
    await page.locator('#source-result [data-test=passed]').waitFor();
    await until('the changed limit to be listed', 5_000, async () => /5 migrations/.test(await page.locator('#source-list tr[data-endpoint="src2"]').innerText()));
    assert.match(await page.locator('#source-list tr[data-endpoint="src2"]').innerText(), /logs in with AUTHENTICATE PLAIN/, 'stored with the chosen login method, kept by the change');
    const text = await pageText();
    for (const p of passwords()) assert.ok(!text.includes(p), 'no password on the page');
    await shot('2-endpoints');
  });

  test('new batch: a broken file is refused with its lines named; a valid one creates and starts the batch', async () => {
    await page.goto(`${url}/#/new`);
    const broken = join(lab.dir, 'broken.csv');
    writeFileSync(broken, `EmailAddress,UserName,Password\r\n${lab.users[0]!.address},${lab.users[0]!.user},${lab.users[0]!.password}\r\nnot-an-address,bob,Secret-Bob-1\r\n${lab.users[0]!.address},x,y2-Secret\r\n`);
    await page.locator('#batch-csv').setInputFiles(broken);
    const problems = page.locator('#csv-problems');
    await problems.waitFor();
    const said = await problems.innerText();
    assert.match(said, /line 3, column EmailAddress/);
    assert.match(said, /line 4/);
    assert.ok(!said.includes('Secret-Bob-1') && !said.includes('y2-Secret'), said);
    await shot('3-new-batch-broken-file');

    // user3's password is wrong: that mailbox fails, the others sync.
    const good = lab.csv([{ user: lab.users[0]! }, { user: lab.users[1]! }, { user: lab.users[2]!, password: 'Wr0ng-Pass-99' }]);
    await page.locator('#batch-csv').setInputFiles(good);
    await page.locator('#csv-ok').waitFor();
    assert.match(await page.locator('#csv-ok').innerText(), /3 mailboxes/);
    // The first rows as the batch will hold them, never a password.
    const preview = await page.locator('#csv-preview').innerText();
    assert.match(preview, new RegExp(`2\\s+${lab.users[0]!.address.replace('.', '\\.')}\\s+${lab.users[0]!.user}`));
    for (const p of passwords()) assert.ok(!preview.includes(p), 'no password in the preview');
    await page.locator('#batch-name').fill('pilot');
    await page.locator('#batch-endpoint').selectOption('src');
    await page.locator('#batch-target').selectOption('tgt');
    await page.locator('#batch-exclude').fill('Junk');
    await page.locator('#batch-start').selectOption('now');
    await page.locator('#create-batch').click();
    await page.waitForURL(/#\/batch\/pilot$/);
  });

  test('the batch page follows the sync live to SyncedWithErrors, with the failed mailbox and its reason', async () => {
    const seen = new Set<string>();
    const badge = page.locator('h1 .status');
    const status = await until('the batch to finish its initial sync on the page', 120_000, async () => {
      const s = await badge.getAttribute('data-status');
      if (s && !seen.has(s)) await shot(`4-batch-${s}`);
      if (s) seen.add(s);
      return s === 'SyncedWithErrors' && s;
    }, 200);
    assert.equal(status, 'SyncedWithErrors');
    assert.ok(seen.size >= 2, `the page updated itself (saw ${[...seen].join(', ')})`);
    const row = (address: string) => page.locator(`tr[data-mailbox="${address}"]`);
    for (const u of lab.users.slice(0, 2)) assert.equal(await row(u.address).locator('[data-status]').getAttribute('data-status'), 'Synced');
    assert.equal(await row(lab.users[2]!.address).locator('[data-status]').getAttribute('data-status'), 'Failed');
    assert.match(await page.locator('tr.last-error').innerText(), /Last error: .*(authentication|password|log in)/i);
    assert.match(await page.locator('#facts').innerText(), /initial sync finished/);
    const fill = await page.locator('#facts + .bar > span').evaluate((e) => e.getBoundingClientRect().width);
    assert.ok(fill > 0, 'the progress bar shows what was copied');
    assert.match(await page.locator('#facts').innerText(), /excluded: Junk/);
    // Finding mailboxes in a big batch: the ones with problems, or by address.
    const listed = async () => page.locator('#mailboxes tbody tr[data-mailbox]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-mailbox')));
    await page.locator('#mailbox-filter').selectOption('problems');
    await until('only the failed mailbox to be listed', 5_000, async () => JSON.stringify(await listed()) === JSON.stringify([lab.users[2]!.address]));
    assert.match(await page.locator('#mailboxes-shown').innerText(), /1–1 of 1/);
    await page.locator('#mailbox-filter').selectOption('');
    await page.locator('#mailbox-search').fill('user2');
    await until('only user2 to be listed', 5_000, async () => JSON.stringify(await listed()) === JSON.stringify([lab.users[1]!.address]));
    await page.locator('#mailbox-search').fill('');
    await until('all three to be listed again', 5_000, async () => (await listed()).length === 3);
    const text = await pageText();
    for (const p of passwords()) assert.ok(!text.includes(p), 'no password on the page');
  });

  test('the report on screen: each mailbox, and the skipped message with its folder, date, subject (as text) and reason', async () => {
    await page.locator('#show-report').click();
    await page.waitForURL(/#\/batch\/pilot\/report$/);
    const skipped = page.locator('#skipped-items');
    await skipped.waitFor();
    const row = await skipped.locator('tbody tr').first().innerText();
    assert.match(row, /user1@example\.org\s+INBOX\s+2025-03-03\s+<b id="injected">Huge<\/b> scan\s+36\.0 MB\s+.*(too large|limit|35)/i);
    assert.equal(await page.locator('#injected').count(), 0, 'a subject is shown as text, never as markup');
    assert.match(await page.locator('#report-mailboxes').innerText(), /user3@example\.org\s+Failed/);
    await shot('5-report');
    await page.goBack();
    await page.locator('#check-logins').waitFor();
  });

  test('check logins names the mailbox that cannot log in; verify fills the Verified column', async () => {
    await page.locator('#check-logins').click();
    // It runs in the background (a big batch takes minutes); the button waits for it.
    await until('check logins to start', 5_000, async () => (await page.locator('#check-logins').isDisabled()) || (await page.locator('#login-results:not([data-running])').count()) > 0);
    const results = page.locator('#login-results:not([data-running])');
    await results.waitFor({ timeout: 60_000 });
    const said = await results.innerText();
    assert.match(said, /1 of 3 mailboxes could not log in/);
    assert.match(said, new RegExp(`line 4 ${lab.users[2]!.address.replace('.', '\\.')}: source:`));
    assert.ok(!said.includes('Wr0ng-Pass-99'));
    await shot('5-check-logins');

    await page.locator('#verify').click();
    const verified = (u: number) => page.locator(`tr[data-mailbox="${lab.users[u]!.address}"] td[data-verified]`);
    await until('the second mailbox to be verified on the page', 60_000, async () => (await verified(1).getAttribute('data-verified')) === 'in sync');
    // The first one's huge message was skipped, so it is not on the target: not verified.
    await until('the first mailbox to be found one message short', 60_000, async () => (await verified(0).getAttribute('data-verified')) === '1 missing');
    // …and where: the folder it is missing from.
    assert.match(await verified(0).innerText(), /^1 missing \(INBOX 1\) \(/);
    await until('the failed mailbox to be checked', 60_000, async () => (await page.locator(`tr[data-mailbox="${lab.users[2]!.address}"] td[data-verified]`).getAttribute('data-verified')) === 'could not check');
  });

  test('a corrected password uploaded on the batch page: that mailbox syncs again and the batch becomes Synced', async () => {
    const bad = join(lab.dir, 'fix-bad.csv');
    writeFileSync(bad, 'EmailAddress;UserName;Password\r\nuser3@example.org;user3;x\r\n');
    await page.locator('#update summary').click();
    await page.locator('#update-csv').setInputFiles(bad);
    await page.locator('#update-batch').click();
    await page.locator('#message #csv-problems').waitFor();
    const fix = lab.csv([{ user: lab.users[2]! }]);
    await page.locator('#update-csv').setInputFiles(fix);
    await page.locator('#update-batch').click();
    await until('the correction to be applied', 10_000, async () => /1 mailbox changed \(user3@example\.org\), 0 added, 0 unchanged, 2 not in the file/.test(await page.locator('#message').innerText()));
    await until('the corrected mailbox to sync', 60_000, async () => (await page.locator(`tr[data-mailbox="${lab.users[2]!.address}"] [data-status]`).getAttribute('data-status')) === 'Synced');
    await until('the batch to be Synced', 10_000, async () => (await page.locator('h1 .status').getAttribute('data-status')) === 'Synced');
    const text = await pageText();
    for (const p of passwords()) assert.ok(!text.includes(p), 'no password on the page');
  });

  test('the cut-over: the batch page asks for an MX check, the MX page records the switch, the batch page then counts the 72 hours', async () => {
    const batchUrl = page.url();
    await page.locator('#cut-over').waitFor();
    assert.match(await page.locator('#cut-over').innerText(), /MX not checked yet for example\.org/);
    await page.locator('#cut-over a[href="#/dns"]').click();
    await page.locator('#dns-domain').fill('example.org');
    await page.locator('#dns-target-mx').fill('mx.new.example');
    await page.locator('#dns-server').fill(dns.address);
    await page.locator('#dns-check').click();
    await page.locator('#dns-result').waitFor();
    assert.match(await page.locator('#dns-ttl').innerText(), /TTL 300 s: low enough/);
    assert.match(await page.locator('#dns-switched').innerText(), /all records/);
    await page.locator('#dns-72h').waitFor();
    await shot('6-mx-check');
    await page.goto(batchUrl);
    await until('the batch page to count the 72 hours', 10_000, async () => /points at mx\.new\.example since at least/.test(await page.locator('#cut-over').innerText()));
    assert.doesNotMatch(await page.locator('#cut-over').innerText(), /not checked yet/);
  });

  test('the report downloads as CSV; delete warns about the 72 hours, then deletes', async () => {
    const [download] = await Promise.all([page.waitForEvent('download'), page.locator('#report').click()]);
    assert.equal(download.suggestedFilename(), 'mailferry-pilot-report.csv');
    const csv = readFileSync((await download.path())!, 'utf8');
    assert.ok(csv.includes(lab.users[0]!.address), csv.slice(0, 300));
    for (const p of passwords()) assert.ok(!csv.includes(p), 'no password in the report');

    await page.locator('#delete').click();
    await page.locator('#delete-anyway').waitFor();
    const warning = await page.locator('#message').innerText();
    assert.match(warning, /less than 72 hours/);
    assert.match(warning, /the MX of example\.org points at mx\.new\.example since at least/);
    assert.ok(dialogs.some((d) => /Delete batch pilot\?/.test(d)), dialogs.join('\n'));
    await page.locator('#delete-anyway').click();
    await page.waitForURL(/#\/$/);
    await page.getByText('No batch yet').waitFor({ timeout: 30_000 });
    assert.deepEqual(consoleErrors, [], 'the browser reported no error on any page');
  });
});
