/**
 * A minimal read-only JSON API over the batch views, so `serve --listen` has something to
 * show until the full HTTP API and web page arrive: `GET /api/batches` and
 * `GET /api/batches/NAME`. The same objects as `batch list --json` and `batch status --json`.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Store } from '../store/open.js';
import { findBatch } from './store.js';
import { loadBatchDetail, loadBatchList } from './view.js';

export interface StatusApi {
  server: Server;
  url: string;
  close(): Promise<void>;
}

export async function startStatusApi(store: Store, host: string, port: number): Promise<StatusApi> {
  const server = createServer((req, res) => {
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
      res.end(JSON.stringify(body));
    };
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (req.method !== 'GET') return send(405, { error: 'only GET is served' });
    const one = /^\/api\/batches\/([A-Za-z0-9_-]{1,64})$/.exec(path);
    (async () => {
      if (path === '/api/batches') return send(200, await loadBatchList(store.db));
      if (one) {
        const b = await findBatch(store.db, one[1]!);
        return b ? send(200, await loadBatchDetail(store.db, b)) : send(404, { error: `no batch named "${one[1]}"` });
      }
      send(404, { error: 'not found' });
    })().catch((err: unknown) => send(500, { error: (err as Error).message }));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const shownHost = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return { server, url: `http://${shownHost}:${addr.port}`, close: () => new Promise((r) => server.close(() => r())) };
}
