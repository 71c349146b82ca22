/**
 * The README's first command: a real migration on this machine with nothing else set up.
 * Starts two throwaway Dovecot servers (source with '.' separator, target with '/' and
 * special-use folders), writes a realistic mailbox into the source, runs `mailferry sync`
 * with its progress bar, runs it again (incremental: nothing to copy), then proves the
 * result with `mailferry verify --content`. Prints every command so it can be re-run.
 *
 *   bash scripts/demo.sh [--messages N]
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ImapFlow } from 'imapflow';
import { generateCorpus, loadCorpus } from '../src/lab/corpus.js';
import { startDovecot } from '../src/lab/dovecot.js';

const CLI = fileURLToPath(new URL('../mailferry.mjs', import.meta.url));
const argIndex = process.argv.indexOf('--messages');
const messages = argIndex > 0 ? Number(process.argv[argIndex + 1]) : 1500;

const dir = mkdtempSync(join(tmpdir(), 'mailferry-demo-'));
const source = await startDovecot({ name: 'demo-source', separator: '.', users: [{ username: 'alberta', password: 'demo-source-pw' }] });
const target = await startDovecot({
  name: 'demo-target',
  separator: '/',
  users: [{ username: 'alberta@example.org', password: 'demo-target-pw' }],
  specialUse: { '\\Sent': 'Sent', '\\Drafts': 'Drafts', '\\Trash': 'Trash', '\\Junk': 'Junk', '\\Archive': 'Archive' },
});
try {
  console.log(`source Dovecot on 127.0.0.1:${source.port} ('.' separator), target Dovecot on 127.0.0.1:${target.port} ('/' separator)`);
  const corpus = generateCorpus({ seed: 2026, messages });
  process.stdout.write(`writing a realistic mailbox (${corpus.count} messages, ${corpus.folders.length} folders) into the source… `);
  const client = new ImapFlow({ host: '127.0.0.1', port: source.port, secure: false, auth: { user: 'alberta', pass: 'demo-source-pw' }, logger: false });
  await client.connect();
  const loaded = await loadCorpus(client, corpus, { separator: '.' });
  await client.logout();
  console.log(`${(loaded.bytes / 1048576).toFixed(1)} MB`);

  const env = { ...process.env, MAILFERRY_SOURCE_PASSWORD: 'demo-source-pw', MAILFERRY_TARGET_PASSWORD: 'demo-target-pw' };
  const common = [
    '--source', `127.0.0.1:${source.port}`, '--source-user', 'alberta', '--source-tls', 'none',
    '--target', `127.0.0.1:${target.port}`, '--target-user', 'alberta@example.org', '--target-tls', 'none',
  ];
  const db = ['--db', `sqlite:${join(dir, 'state.sqlite')}`];
  const run = (title: string, args: string[]) => {
    console.log(`\n== ${title}\n$ mailferry ${args.join(' ')}`);
    const r = spawnSync(process.execPath, [CLI, ...args], { env, stdio: 'inherit' });
    return r.status;
  };
  run('first sync: copies every folder and message', ['sync', ...common, ...db]);
  run('second sync: incremental, nothing new to copy', ['sync', ...common, ...db]);
  const status = run('verify: every source message on the target, byte for byte', ['verify', ...common, '--content']);
  console.log(status === 0 ? '\ndemo: migration verified.' : '\ndemo: verification FAILED.');
  process.exitCode = status ?? 1;
} finally {
  await Promise.allSettled([source.stop(), target.stop()]);
  rmSync(dir, { recursive: true, force: true });
}
