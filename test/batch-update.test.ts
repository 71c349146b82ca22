/**
 * `batch update` on the database alone (the run under `serve` is in batch-serve.test.ts):
 * which rows change, which are added, how addresses are matched, what an invalid file does.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createBatch } from '../src/batch/create.js';
import { updateBatch } from '../src/batch/update.js';
import { decryptSecret, generateSecretKeyText, loadSecretKey } from '../src/secrets/index.js';
import { insertEndpoint } from '../src/store/endpoints.js';
import { openStore, type Store } from '../src/store/open.js';

const key = loadSecretKey({ env: { MAILFERRY_SECRET_KEY: generateSecretKeyText() } });
const NFC = 'josé@bücher.example';
const NFD = 'jose\u0301@xn--bcher-kva.example';
let dir: string;
let store: Store;

const endpoint = (role: 'source' | 'target', name: string) => ({
  role,
  name,
  host: '127.0.0.1',
  port: 993,
  tls: 'implicit' as const,
  auth: 'login' as const,
  accept_untrusted_cert: 0,
  max_concurrent_migrations: 20,
  max_concurrent_incremental_syncs: 10,
  admin_user: role === 'target' ? 'admin' : null,
  impersonation: role === 'target' ? ('sasl' as const) : null,
  separator: null,
  password_enc: null,
  created_at: Date.now(),
});

const csv = (rows: string[]) => Buffer.from(['EmailAddress,UserName,Password', ...rows].join('\r\n') + '\r\n');
const create = (name: string, rows: string[]) =>
  createBatch(store, { name, csv: csv(rows), endpoint: 'src', target: 'tgt', exclude: [], include: [], notify: [], receivedAfter: null, badItemLimit: null, start: { kind: 'manual' } }, key);
const mailboxes = (name: string) =>
  store.db.selectFrom('batch_mailbox').innerJoin('batch', 'batch.id', 'batch_mailbox.batch_id').selectAll('batch_mailbox').where('batch.name', '=', name).orderBy('batch_mailbox.id').execute();

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mailferry-update-'));
  store = await openStore(`sqlite:${join(dir, 'state.sqlite')}`);
  await insertEndpoint(store.db, endpoint('source', 'src'));
  await insertEndpoint(store.db, endpoint('target', 'tgt'));
  assert.equal((await create('spring', [`${NFC},jose,Old-Pw-1`, 'ann@example.org,ann,Ann-Pw-1', 'bob@example.org,bob,Bob-Pw-1'])).created, true);
  assert.equal((await create('summer', ['carl@example.org,carl,Carl-Pw-1'])).created, true);
});
after(async () => {
  await store?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('another spelling of an address in the batch is that mailbox (case, Unicode form, IDN): changed, not added', async () => {
  const r = await updateBatch(store, 'spring', csv([`${NFD},jose,New-Pw-2`, 'ANN@example.org,ann,Ann-Pw-1', 'dora@example.org,dora,Dora-Pw-1']), key);
  assert.ok(r.updated);
  assert.deepEqual(r, { updated: true, changed: [NFC], added: ['dora@example.org'], unchanged: 1, notInFile: 1 });
  const rows = await mailboxes('spring');
  assert.equal(rows.length, 4);
  const jose = rows.find((m) => m.email_address === NFC)!;
  assert.equal(decryptSecret(key, jose.password_enc), 'New-Pw-2');
  assert.equal(jose.line, 2, 'a changed mailbox keeps the line of the batch\u2019s own file');
  const dora = rows.find((m) => m.email_address === 'dora@example.org')!;
  assert.deepEqual([dora.status, dora.next_sync_at], ['Queued', null], 'added to a batch not started: queued for its start');
});

test('an address of another batch, in any spelling, is refused, and an invalid file changes nothing', async () => {
  const before = await mailboxes('spring');
  const taken = await updateBatch(store, 'spring', csv(['Carl@Example.org,carl,Carl-Pw-1']), key);
  assert.equal(taken.updated, false);
  assert.match(taken.updated ? '' : taken.validation.errors[0]!.message, /already in another active batch/);
  const invalid = await updateBatch(store, 'spring', csv(['ann@example.org,ann,New-Ann-Pw', 'not-an-address,x,y']), key);
  assert.equal(invalid.updated, false);
  assert.deepEqual(await mailboxes('spring'), before);
});
