/**
 * A mailbox of many small folders over a delay proxy: where per-folder round trips, not
 * bytes, set the time (the scan of a first sync, verify). Times the CLI (`sync`, a no-op
 * `sync`, `verify`) as an admin runs it, between two local Dovecots. Reproduce with:
 *   npm run bench:folders -- [--folders 300] [--per-folder 3] [--rtt-ms 20]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { startDovecot } from '../src/lab/dovecot.js';
import { loadCorpusFast } from '../src/lab/fast-load.js';
import { TcpProxy } from '../src/lab/proxy.js';

const CLI = fileURLToPath(new URL('../mailferry.mjs', import.meta.url));

const { values } = parseArgs({ options: { folders: { type: 'string', default: '300' }, 'per-folder': { type: 'string', default: '3' }, 'rtt-ms': { type: 'string', default: '20' } } });
const folders = Number(values.folders);
const perFolder = Number(values['per-folder']);
const rttMs = Number(values['rtt-ms']);

const dir = mkdtempSync(join(tmpdir(), 'mailferry-folders-bench-'));
const users = [{ username: 'alice', password: 'bench-pw-1' }];
const [source, target] = await Promise.all([startDovecot({ name: 'source', separator: '.', users }), startDovecot({ name: 'target', separator: '/', users })]);
try {
  const paths = Array.from({ length: folders }, (_, i) => ['Projects', `P${String(i).padStart(5, '0')}`]);
  let k = 0;
  const corpus = {
    folders: [{ path: ['Projects'] }, ...paths.map((path) => ({ path }))],
    *messages() {
      for (const folder of paths) {
        for (let j = 0; j < perFolder; j++, k++) {
          yield { folder, raw: Buffer.from(`Subject: message ${k}\r\nMessage-ID: <m${k}@bench.example>\r\n\r\n${'x'.repeat(2000)}\r\n`), flags: ['\\Seen'], internalDate: new Date(Date.UTC(2020, 0, 1 + (k % 300))) };
        }
      }
    },
  };
  await loadCorpusFast(source.endpoint(), { method: 'login', username: 'alice', password: 'bench-pw-1' }, corpus, { separator: '.', connections: 2, oneConnectionPerFolder: true });
  const proxies = await Promise.all([source, target].map((s) => TcpProxy.start({ targetHost: s.host, targetPort: s.port, delayMs: rttMs / 2 })));
  const args = (command: string) => [
    CLI, command,
    '--source', `127.0.0.1:${proxies[0]!.port}`, '--source-user', 'alice', '--source-tls', 'none',
    '--target', `127.0.0.1:${proxies[1]!.port}`, '--target-user', 'alice', '--target-tls', 'none',
    '--db', `sqlite:${join(dir, 'state.sqlite')}`, '--json',
  ];
  const run = (command: string) =>
    new Promise<{ status: number | null; seconds: number; json: string }>((resolve) => {
      const t0 = performance.now();
      const child = spawn(process.execPath, args(command), { env: { ...process.env, MAILFERRY_SOURCE_PASSWORD: 'bench-pw-1', MAILFERRY_TARGET_PASSWORD: 'bench-pw-1' }, stdio: ['ignore', 'pipe', 'ignore'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.on('close', (status) => resolve({ status, seconds: (performance.now() - t0) / 1000, json: out.trim().split('\n').pop() ?? '' }));
    });
  console.log(`mailferry folders bench: ${folders} folders of ${perFolder} messages, ${rttMs} ms round trip, whole commands`);
  for (const [label, command] of [['first sync', 'sync'], ['no-op sync', 'sync'], ['verify', 'verify']] as const) {
    const r = await run(command);
    const j = JSON.parse(r.json || '{}') as { copied?: number; inSync?: boolean };
    console.log(`  ${label.padEnd(11)} ${r.seconds.toFixed(1).padStart(6)} s  exit ${r.status}  ${command === 'verify' ? `inSync ${j.inSync}` : `copied ${j.copied}`}`);
  }
  console.log(`reproduce: npm run bench:folders -- --folders ${folders} --per-folder ${perFolder} --rtt-ms ${rttMs}`);
  await Promise.all(proxies.map((p) => p.stop()));
} finally {
  await Promise.allSettled([source.stop(), target.stop()]);
  rmSync(dir, { recursive: true, force: true });
}
