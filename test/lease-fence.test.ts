/**
 * A worker's lease fence (SyncOptions.mayWrite), wired through the engine to the APPEND
 * connections, against real Dovecot servers: once it closes, no message more reaches the
 * target, and the next holder's run ends exact, with nothing copied twice.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { generateCorpus, loadCorpus } from '../src/lab/corpus.js';
import { openStore } from '../src/store/open.js';
import { syncMailbox } from '../src/sync/mailbox-sync.js';
import { expectedTargetPath, type LabPair, startPair } from './helpers/lab-pair.js';
import { compareMailboxes, connect, snapshot } from './helpers/mailbox-snapshot.js';

describe('sync: the lease fence', () => {
  let lab: LabPair;
  let total = 0;
  before(async () => {
    lab = await startPair();
    const corpus = generateCorpus({ seed: 5150, messages: 600, averageSize: 6_000, maxSize: 60_000 });
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    total = (await loadCorpus(c, corpus, { separator: '.' })).appended;
    await c.logout();
  });
  after(async () => lab?.stop());

  const sides = () => ({
    source: { endpoint: lab.source.endpoint(), login: { method: 'login' as const, username: lab.sourceUser, password: lab.sourcePass } },
    target: { endpoint: lab.target.endpoint(), login: { method: 'login' as const, username: lab.targetUser, password: lab.targetPass } },
    logger: pino({ level: 'silent' }),
  });
  const onTarget = async () => [...(await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass)).values()].reduce((n, m) => n + m.length, 0);

  test('once closed, nothing more reaches the target; the next run copies the rest, none twice', async () => {
    const store = await openStore(`sqlite:${lab.db}`);
    try {
      let open = true;
      await assert.rejects(
        syncMailbox(store, {
          ...sides(),
          connections: 2,
          mayWrite: () => open,
          onProgress: (p) => {
            // Closed mid-copy, as a worker's clock finds its lease gone after a pause.
            if (p.copied >= 100) open = false;
          },
        }),
      );
      const stopped = await onTarget();
      assert.ok(stopped >= 100 && stopped < total, `the copy stopped part-way (${stopped} of ${total})`);
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(await onTarget(), stopped, 'no APPEND arrived after the fence closed');

      const summary = await syncMailbox(store, sides());
      assert.equal(summary.failed, 0);
      const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
      const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
      assert.deepEqual(compareMailboxes(src, tgt, (p) => expectedTargetPath(p)), []);
      assert.equal(await onTarget(), total, 'every message once');
    } finally {
      await store.close();
    }
  });
});
