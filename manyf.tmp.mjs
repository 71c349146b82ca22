// Many small folders at 20 ms RTT: first sync, no-op, verify.
import { startDovecot } from '/work/main/dist/src/lab/dovecot.js';
import { TcpProxy } from '/work/main/dist/src/lab/proxy.js';
import { loadCorpusFast } from '/work/main/dist/src/lab/fast-load.js';
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
const N = Number(process.env.FOLDERS ?? 300), PER = 3, RTT = Number(process.env.RTT ?? 20);
const s = await startDovecot({ name: 'src', separator: '.', users: [{ username: 'alice', password: 'pw' }] });
const t = await startDovecot({ name: 'tgt', separator: '/', users: [{ username: 'alice', password: 'pw' }] });
const folders = Array.from({ length: N }, (_, i) => ({ path: ['Projects', `P${String(i).padStart(4, '0')}`] }));
const corpus = { folders: [{ path: ['Projects'] }, ...folders], *messages() { let k = 0; for (const f of folders) for (let j = 0; j < PER; j++) yield { folder: f.path, raw: Buffer.from(`Subject: m${k}\r\nMessage-ID: <m${k++}@x>\r\n\r\n${'x'.repeat(2000)}\r\n`), flags: ['\\Seen'], internalDate: new Date(Date.UTC(2020, 0, 1)) }; } };
await loadCorpusFast(s.endpoint(), { method: 'login', username: 'alice', password: 'pw' }, corpus, { separator: '.', connections: 2, oneConnectionPerFolder: true });
const sp = await TcpProxy.start({ targetHost: '127.0.0.1', targetPort: s.port, delayMs: RTT / 2 });
const tp = await TcpProxy.start({ targetHost: '127.0.0.1', targetPort: t.port, delayMs: RTT / 2 });
rmSync('/tmp/manyf/db.sqlite', { force: true });
const args = (cmd) => ['/work/main/dist/mailferry.mjs', cmd, '--source', `127.0.0.1:${sp.port}`, '--source-user', 'alice', '--source-tls', 'none', '--target', `127.0.0.1:${tp.port}`, '--target-user', 'alice', '--target-tls', 'none', '--db', 'sqlite:/tmp/manyf/db.sqlite', '--json'];
const env = { ...process.env, MAILFERRY_SOURCE_PASSWORD: 'pw', MAILFERRY_TARGET_PASSWORD: 'pw' };
const { spawn } = await import('node:child_process');
const run = (cmd) => new Promise((res) => { const t0 = Date.now(); const c = spawn('node', args(cmd), { env }); let out = ''; c.stdout.on('data', (d) => (out += d)); c.on('close', (code) => res({ code, s: (Date.now() - t0) / 1000, json: out.trim().split('\n').pop().slice(0, 120) })); });
for (const cmd of ['sync', 'sync', 'verify']) { const r = await run(cmd); console.log(cmd, r.code, r.s.toFixed(1) + 's', r.json); }
await sp.stop(); await tp.stop(); await s.stop(); await t.stop();
