/**
 * What the web page costs `serve`: a batch of many mailboxes (default 50,000, the migration
 * file's limit), created through the API, then the requests the page repeats every two
 * seconds — the dashboard (`GET /api/batches`) and a batch's page (`GET /api/batches/NAME`,
 * 200 mailboxes at a time) — and the whole detail as a script would fetch it. Prints each
 * request's median time and size. Reproduce with:
 *   npm run bench:api -- [--mailboxes 50000] [--db sqlite|postgres]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { loadAdminToken } from '../src/http/admin-token.js';
import { buildHttpApp } from '../src/http/app.js';
import { encryptSecret, loadSecretKey } from '../src/secrets/index.js';
import { insertEndpoint } from '../src/store/endpoints.js';
import { freshDb } from '../test/helpers/batch-lab.js';

const { values } = parseArgs({ options: { mailboxes: { type: 'string', default: '50000' }, db: { type: 'string', default: 'sqlite' }, repeat: { type: 'string', default: '5' } } });
const n = Number(values.mailboxes);
const repeat = Number(values.repeat);
const dir = mkdtempSync(join(tmpdir(), 'mailferry-api-bench-'));
const TOKEN = 'bench-admin-token-0123456789';
// A throwaway database: a SQLite file, or one of its own on the PostgreSQL server (as the tests make them).
const db = await freshDb(values.db === 'postgres' ? 'postgres' : 'sqlite', dir);
const store = await db.open();
try {
  const key = loadSecretKey({ keyFile: join(dir, 'secret.key') });
  const common = { port: 1, tls: 'none' as const, auth: 'plain' as const, accept_untrusted_cert: 0, max_concurrent_migrations: 20, max_concurrent_incremental_syncs: 10, created_at: Date.now() };
  const tag = Date.now().toString(36);
  await insertEndpoint(store.db, { ...common, role: 'source', name: `src-${tag}`, host: '127.0.0.1', admin_user: null, impersonation: null, separator: null, password_enc: null });
  await insertEndpoint(store.db, { ...common, role: 'target', name: `tgt-${tag}`, host: '127.0.0.1', admin_user: 'admin', impersonation: 'sasl', separator: null, password_enc: encryptSecret(key, 'x') });
  const app = await buildHttpApp({ store, key: () => key, token: loadAdminToken({ MAILFERRY_ADMIN_TOKEN: TOKEN }), logger: pino({ level: 'silent' }) });
  const rows = Array.from({ length: n }, (_, i) => `user${i}-${tag}@bench.example,user${i},Pass-${i}-word`);
  const csv = Buffer.from(['EmailAddress,UserName,Password', ...rows].join('\r\n') + '\r\n').toString('base64');
  const call = (method: 'GET' | 'POST', path: string, payload?: Record<string, unknown>) =>
    app.inject({ method, url: path, headers: { authorization: `Bearer ${TOKEN}` }, ...(payload ? { payload } : {}) });
  const name = `bench-${tag}`;
  let t = performance.now();
  const created = await call('POST', '/api/batches', { name, endpoint: `src-${tag}`, target: `tgt-${tag}`, csvBase64: csv, start: 'manual' });
  if (created.statusCode !== 201) throw new Error(`batch create: ${created.statusCode} ${created.body.slice(0, 300)}`);
  console.log(`create a batch of ${n} mailboxes through the API: ${((performance.now() - t) / 1000).toFixed(2)} s`);
  // As started (not run: no server behind the endpoints), so the page also works out where
  // the cut-over stands for its one mail domain, as it does for every batch in use.
  await store.db.updateTable('batch').set({ started_at: Date.now() }).where('name', '=', name).execute();
  const time = async (what: string, path: string) => {
    const ms: number[] = [];
    let bytes = 0;
    for (let i = 0; i < repeat; i++) {
      t = performance.now();
      const r = await call('GET', path);
      ms.push(performance.now() - t);
      if (r.statusCode !== 200) throw new Error(`${path}: ${r.statusCode}`);
      bytes = r.rawPayload.length;
    }
    ms.sort((a, b) => a - b);
    console.log(`${what.padEnd(44)} median ${ms[Math.floor(ms.length / 2)]!.toFixed(0).padStart(6)} ms, ${(bytes / 1024).toFixed(0).padStart(7)} KB`);
  };
  await time('dashboard: GET /api/batches', '/api/batches');
  await time('batch page: GET /api/batches/NAME (200 shown)', `/api/batches/${name}?offset=0&limit=200`);
  await time('batch page, failed ones: ?status=problems', `/api/batches/${name}?status=problems&limit=200`);
  await time('whole detail: GET /api/batches/NAME', `/api/batches/${name}`);
  console.log(`(the page repeats the first two every 2 s while shown) reproduce: npm run bench:api -- --mailboxes ${n} --db ${values.db}`);
  await app.close();
} finally {
  await store.close();
  await db.drop();
  rmSync(dir, { recursive: true, force: true });
}
