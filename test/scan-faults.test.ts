/**
 * A source that fails the scan of one folder: refuses the envelope read of its too-large
 * messages, or drops the connection whenever the folder is opened. The folder is named
 * (or its messages listed by size alone), and every other folder is copied exactly.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { env, runCli, syncArgs } from './helpers/cli.js';
import { type LabPair, startPair } from './helpers/lab-pair.js';
import { startRelay } from './helpers/relay.js';
import { compareMailboxes, connect, snapshot } from './helpers/mailbox-snapshot.js';

function message(n: number, bodyBytes: number): Buffer {
  return Buffer.from(`From: a${n}@example.org\r\nSubject: message ${n}\r\nMessage-ID: <s${n}@example.org>\r\n\r\n${'y'.repeat(bodyBytes)}\r\n`);
}

describe('sync: a source that fails the scan of one folder', () => {
  let lab: LabPair;

  before(async () => {
    lab = await startPair();
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    for (const f of ['Work', 'Broken', 'Later']) {
      await c.mailboxCreate(f);
      for (let n = 0; n < 4; n++) await c.append(f, message(n + f.length * 10, n === 3 ? 5000 : 300), [], new Date(Date.UTC(2023, 0, n + 1)));
    }
    await c.logout();
  });
  after(async () => lab?.stop());

  const copiedExactlyBut = async (left: (folder: string, size: number) => boolean) => {
    const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    for (const [f, msgs] of src) src.set(f, msgs.filter((m) => !left(f, m.size)));
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    return compareMailboxes(src, tgt, (p) => p);
  };

  test('too-large messages whose envelopes the source refuses are listed by size, not the folder failed', async () => {
    const relay = await startRelay(lab.source.port, { refuseCommands: /ENVELOPE/ });
    try {
      const r = await runCli(['sync', ...syncArgs(lab, join(lab.dir, 'envelopes.sqlite'), ['--json', '--max-message-size', '2000'], { sourcePort: relay.port })], env(lab));
      assert.equal(r.status, 1, r.stderr);
      assert.deepEqual(r.json?.failedFolders, []);
      assert.equal(r.json?.copied, 9);
      const skipped = r.json?.skippedItems as { folder: string; reason: string }[];
      assert.deepEqual(skipped.map((s) => s.folder).sort(), ['Broken', 'Later', 'Work']);
      for (const s of skipped) assert.match(s.reason, /over the 2\.0 KB limit/);
      assert.deepEqual(await copiedExactlyBut((_f, size) => size > 2000), []);
    } finally {
      await relay.stop();
    }
  });

  test('a folder whose opening drops the connection every time is failed, named, and the rest copied', async () => {
    // The first test's copies of Broken go: this run must not copy it.
    const t = await connect(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    await t.mailboxDelete('Broken');
    await t.logout();
    let drops = 0;
    const relay = await startRelay(lab.source.port, { dropWhenSent: 'Broken', onDrop: () => drops++ });
    try {
      const r = await runCli(['sync', ...syncArgs(lab, join(lab.dir, 'drops.sqlite'), ['--json'], { sourcePort: relay.port })], env(lab));
      assert.equal(r.status, 1, r.stderr);
      assert.deepEqual(r.json?.failedFolders, [{ folder: 'Broken', reason: 'the source closed the connection each time this folder was read' }]);
      assert.ok(drops >= 2, `dropped ${drops} times`);
      assert.match(r.stderr, /while scanning Broken/);
      assert.deepEqual(await copiedExactlyBut((f) => f === 'Broken'), []);
      assert.equal((await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass)).get('Broken')?.length ?? 0, 0);
    } finally {
      await relay.stop();
    }
  });

  test('mail that arrives between the listing and the scan is found as well as copied', async () => {
    // Delivered when the scan opens Later, after the listing's STATUS counted its messages.
    let delivered = false;
    const relay = await startRelay(lab.source.port, {
      beforeCommand: async (line) => {
        if (delivered || !/ EXAMINE "?Later"?( |$)/.test(line)) return;
        delivered = true;
        const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
        await c.append('Later', message(99, 200), [], new Date(Date.UTC(2024, 0, 1)));
        await c.logout();
      },
    });
    try {
      const r = await runCli(['sync', ...syncArgs(lab, join(lab.dir, 'arrivals.sqlite'), ['--json'], { sourcePort: relay.port })], env(lab));
      assert.ok(delivered, 'the scan opened Later');
      assert.equal(r.status, 0, r.stderr);
      const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
      const total = [...src.values()].reduce((n, msgs) => n + msgs.length, 0);
      assert.equal(r.json?.found, total);
      assert.deepEqual(await copiedExactlyBut(() => false), []);
    } finally {
      await relay.stop();
    }
  });
});
