/**
 * SIGKILL at any moment, then a re-run: still exact, no duplicates. The sync is killed
 * several times at random points while it copies (with many APPENDs in flight, so the
 * journal holds pending rows that recovery has to resolve), then run to the end.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { generateCorpus, loadCorpus } from '../src/lab/corpus.js';
import { CLI, env, runCli, syncArgs } from './helpers/cli.js';
import { digestAlgorithmCounts, journalCounts } from './helpers/journal.js';
import { expectedTargetPath, type LabPair, startPair } from './helpers/lab-pair.js';
import { compareMailboxes, connect, snapshot } from './helpers/mailbox-snapshot.js';

/**
 * Starts the CLI and SIGKILLs it once the journal shows `copiedAtLeast` copied messages
 * (plus `extraMs`), so the kill lands while APPENDs are in flight; resolves when it is gone.
 */
function killWhen(args: string[], environment: NodeJS.ProcessEnv, db: string, copiedAtLeast: number, extraMs: number): Promise<number | null> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: environment, stdio: 'ignore' });
    const poll = setInterval(() => {
      if (journalCounts(db).copied >= copiedAtLeast) {
        clearInterval(poll);
        setTimeout(() => child.kill('SIGKILL'), extraMs);
      }
    }, 10);
    child.on('close', (code) => {
      clearInterval(poll);
      resolve(code);
    });
  });
}

describe('sync: crash safety', () => {
  let lab: LabPair;
  let total = 0;

  before(async () => {
    lab = await startPair();
    const corpus = generateCorpus({ seed: 99, messages: 700, averageSize: 16_000, maxSize: 900_000 });
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    total = (await loadCorpus(c, corpus, { separator: '.' })).appended;
    await c.logout();
  });
  after(async () => lab?.stop());

  test('killed with SIGKILL repeatedly while copying, the re-run is still exact', async () => {
    const args = ['sync', ...syncArgs(lab, lab.db, ['--connections', '3'])];
    // Deterministic pseudo-random kill points (ms after start), so a failure can be replayed.
    let seed = 12345;
    const next = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed / 2 ** 31);
    let killsWithPending = 0;
    let progressed = 0;
    let lastCopied = 0;
    // Every other run writes SHA-256 digests (content-digest.ts), as versions before GMAC
    // digests did: recovery must match pending rows of either.
    const sha256Run = (i: number) => i % 2 === 0;
    const digestEnv = (i: number) => ({ ...env(lab), ...(sha256Run(i) ? { MAILFERRY_DIGEST: 'sha256' } : {}) });
    let runs = 0;
    let crossRecoveries = 0;
    for (let i = 0; i < 7; i++) {
      const threshold = lastCopied + 1 + Math.floor(next() * (total / 8));
      const code = await killWhen(args, digestEnv(runs++), lab.db, threshold, Math.floor(next() * 30));
      const counts = journalCounts(lab.db);
      if (code === 0) break; // finished before the kill
      if (counts.pending > 0) killsWithPending++;
      // Pending rows the next run, writing the other algorithm, must still find by content.
      const pending = digestAlgorithmCounts(lab.db, 'pending');
      crossRecoveries += sha256Run(runs) ? pending.gmac : pending.sha256;
      if (counts.copied > lastCopied) progressed++;
      lastCopied = counts.copied;
    }
    assert.ok(progressed >= 2, `the killed runs made progress (${progressed})`);
    assert.ok(killsWithPending >= 1, 'at least one kill left APPENDs in flight for recovery to resolve');

    const r = await runCli([...args, '--json'], digestEnv(runs++));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(journalCounts(lab.db).pending, 0);
    assert.ok(crossRecoveries >= 1, 'a run recovered pending rows digested in the algorithm it does not write');
    const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.deepEqual(compareMailboxes(src, tgt, (p) => expectedTargetPath(p)), []);
    const targetTotal = [...tgt.values()].reduce((n, m) => n + m.length, 0);
    assert.equal(targetTotal, total, 'no message lost or duplicated');
  });

  test('stopped with Ctrl-C: the messages in flight are settled, the admin is told how far it got, and the re-run finishes', async () => {
    // New mail on the source since the test above synced it all.
    const more = generateCorpus({ seed: 7, messages: 400, averageSize: 16_000, maxSize: 400_000 });
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    total += (await loadCorpus(c, more, { separator: '.' })).appended;
    await c.logout();
    const args = ['sync', ...syncArgs(lab, lab.db, ['--connections', '3'])];
    const before = journalCounts(lab.db).copied;
    const stopped = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [CLI, ...args], { env: env(lab), stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const poll = setInterval(() => {
        if (journalCounts(lab.db).copied < before + 40) return;
        clearInterval(poll);
        child.kill('SIGINT');
      }, 10);
      child.on('close', (code) => {
        clearInterval(poll);
        resolve({ code, stderr });
      });
    });
    assert.equal(stopped.code, 1, stopped.stderr);
    assert.match(stopped.stderr, /stopping once the messages in flight are stored/);
    assert.match(stopped.stderr, /sync stopped \(Ctrl-C\): \d+ of \d+ messages copied by this run; .*run the same command again/);
    assert.equal(journalCounts(lab.db).pending, 0, 'nothing left in flight for the next run to resolve');
    assert.ok(journalCounts(lab.db).copied < total, 'stopped before the end');

    const r = await runCli([...args, '--json'], env(lab));
    assert.equal(r.status, 0, r.stderr);
    const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.deepEqual(compareMailboxes(src, tgt, (p) => expectedTargetPath(p)), []);
    assert.equal([...tgt.values()].reduce((n, m) => n + m.length, 0), total, 'no message lost or duplicated');
  });
});
