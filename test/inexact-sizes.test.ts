/**
 * Servers whose RFC822.SIZE is not the size of the bytes they send, as Microsoft
 * Exchange's is (an estimate; RFC 3501 §6.4.5 asks for the exact size): a relay rewrites
 * every size a real Dovecot lists, some up, some down. Size then says nothing across servers,
 * nor against the length the journal recorded, and nothing may be copied twice because
 * of it: a message moved out of a folder and back, a renamed folder on either side, a
 * second journal, a dropped APPEND on a target without UIDPLUS, flag changes on such a
 * target (may-be-copies.ts).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { ImapFlow } from 'imapflow';
import { type CorpusFolder, generateCorpus, loadCorpus } from '../src/lab/corpus.js';
import { env, runCli, syncArgs } from './helpers/cli.js';
import { expectedTargetPath, type LabPair, startPair } from './helpers/lab-pair.js';
import { compareMailboxes, connect, type MailboxSnapshot, snapshot } from './helpers/mailbox-snapshot.js';
import { type Relay, startRelay } from './helpers/relay.js';

const FOLDERS: CorpusFolder[] = [
  { path: ['INBOX'], weight: 4 },
  { path: ['Projects & Plans'], weight: 2 },
  { path: ['Projects & Plans', 'Q3 Review'], weight: 2 },
  { path: ['Sent Items'], specialUse: '\\Sent', weight: 1 },
];

/** Every listed RFC822.SIZE made wrong: even sizes 1,000 bytes larger, odd ones 5 smaller. */
function inexactSizes(counter: { rewritten: number }): (text: string) => string {
  return (text) =>
    text.replace(/RFC822\.SIZE (\d+)/g, (_, n: string) => {
      counter.rewritten++;
      const size = Number(n);
      return `RFC822.SIZE ${size % 2 === 0 ? size + 1000 : Math.max(0, size - 5)}`;
    });
}

const count = (s: MailboxSnapshot) => [...s.values()].reduce((n, m) => n + m.length, 0);

async function withClient<T>(lab: LabPair, side: 'source' | 'target', fn: (c: ImapFlow) => Promise<T>): Promise<T> {
  const c = side === 'source' ? await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass) : await connect(lab.target.endpoint(), lab.targetUser, lab.targetPass);
  try {
    return await fn(c);
  } finally {
    await c.logout().catch(() => c.close());
  }
}

async function load(lab: LabPair, seed: number, messages: number): Promise<number> {
  const corpus = generateCorpus({ seed, messages, averageSize: 8_000, maxSize: 100_000, folders: FOLDERS });
  return withClient(lab, 'source', async (c) => (await loadCorpus(c, corpus, { separator: '.' })).appended);
}

async function assertExact(lab: LabPair, total: number, mapPath: (p: string) => string = (p) => expectedTargetPath(p)): Promise<MailboxSnapshot> {
  const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
  const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
  assert.deepEqual(compareMailboxes(src, tgt, mapPath), []);
  assert.equal(count(tgt), total, 'no message lost or duplicated');
  return tgt;
}

describe('sync: a source whose RFC822.SIZE is not the size of its messages (Exchange)', () => {
  let lab: LabPair;
  let relay: Relay;
  let total = 0;
  const sizes = { rewritten: 0 };
  const run = (db = lab.db) => runCli(['sync', ...syncArgs(lab, db, ['--json'], { sourcePort: relay.port })], env(lab));

  before(async () => {
    lab = await startPair();
    relay = await startRelay(lab.source.port, { rewrite: inexactSizes(sizes) });
    total = await load(lab, 4242, 80);
  });
  after(async () => {
    await relay?.stop();
    await lab?.stop();
  });

  test('copies exactly; a message moved out of INBOX and back, and a renamed folder, are not copied again', async () => {
    const first = await run();
    assert.equal(first.status, 0, first.stderr);
    assert.equal(first.json?.copied, total);
    assert.ok(sizes.rewritten >= total, `the source listed wrong sizes (${sizes.rewritten} rewritten)`);
    await assertExact(lab, total);

    await withClient(lab, 'source', async (c) => {
      await c.mailboxOpen('INBOX');
      const uid = (await c.fetchAll('1:*', { uid: true }, { uid: true }))[0]!.uid;
      const moved = await c.messageMove(String(uid), 'Projects & Plans', { uid: true });
      assert.ok(moved, 'moved out');
      await c.mailboxOpen('Projects & Plans');
      const back = (await c.fetchAll('1:*', { uid: true }, { uid: true })).at(-1)!.uid;
      await c.messageMove(String(back), 'INBOX', { uid: true });
      await c.mailboxRename('Projects & Plans.Q3 Review', 'Projects & Plans.Q4 Review');
    });
    const second = await run();
    assert.equal(second.status, 0, second.stderr);
    assert.equal(second.json?.copied, 0, 'the message back in INBOX and the renamed folder\'s mail are on the target already');
    const tgt = await assertExact(lab, total);
    assert.ok(!tgt.has('Projects & Plans/Q3 Review'), 'the renamed folder was followed, not left beside a new copy');
  });

  test('a second journal (another --db) finds every message on the target and copies none', async () => {
    const r = await run(join(lab.dir, 'second.sqlite'));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 0);
    await assertExact(lab, total);
  });

  test('verify says in sync, without calling the copies changed, and says why sizes were not used', async () => {
    const r = await runCli(['verify', ...syncArgs(lab, lab.db, ['--json'], { sourcePort: relay.port })], env(lab));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.inSync, true);
    assert.doesNotMatch(r.stderr, /stored with other bytes/);
    assert.match(r.stderr, /INBOX -> INBOX: .*a server lists sizes \(RFC822\.SIZE\) that are not those of its messages/);
  });

  test('verify still finds a copy cut short on the target, beyond what the estimates explain', async () => {
    // The largest INBOX copy, past the three pairs verify reads first, cut after 600 bytes of body.
    const cut = await withClient(lab, 'target', async (c) => {
      await c.mailboxOpen('INBOX');
      const all = await c.fetchAll('1:*', { uid: true, size: true }, { uid: true });
      const big = all.slice(3).reduce((a, b) => ((b.size ?? 0) > (a.size ?? 0) ? b : a));
      assert.ok((big.size ?? 0) > 20_000, `a large message to cut (${big.size} bytes)`);
      const m = await c.fetchOne(String(big.uid), { source: true, internalDate: true, flags: true }, { uid: true });
      assert.ok(m && m.source);
      await c.messageDelete(String(big.uid), { uid: true });
      // Its header kept whole, so it is still paired by Message-ID and date: only its size tells.
      await c.append('INBOX', m.source.subarray(0, m.source.indexOf('\r\n\r\n') + 604), [...(m.flags ?? [])], m.internalDate);
      return big.uid;
    });
    const r = await runCli(['verify', ...syncArgs(lab, lab.db, ['--json'], { sourcePort: relay.port })], env(lab));
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.json?.inSync, false);
    assert.match(r.stderr, /MISSING INBOX -> INBOX: .*1 missing/);
    assert.match(r.stderr, /has other content: cut short or changed/);
    assert.ok(cut > 0);
  });
});

describe('sync: a target without UIDPLUS whose RFC822.SIZE is not the size of its messages', () => {
  let lab: LabPair;
  let relay: Relay;
  let total = 0;
  const sizes = { rewritten: 0 };
  // Dovecot answers APPENDUID even with UIDPLUS left out of its capabilities: removed too.
  const rewrite = (text: string) => inexactSizes(sizes)(text.replace(/^(\S+ OK )\[APPENDUID \d+ [\d:,]+\] /gm, '$1'));
  const run = (db = lab.db) => runCli(['sync', ...syncArgs(lab, db, ['--json'], { targetPort: relay.port })], env(lab));

  before(async () => {
    lab = await startPair({ target: { disableCapabilities: ['UIDPLUS'] } });
    relay = await startRelay(lab.target.port, { rewrite });
    total = await load(lab, 4343, 60);
  });
  after(async () => {
    await relay?.stop();
    await lab?.stop();
  });

  test('flag changes reach the copies, found on the target by content', async () => {
    const first = await run();
    assert.equal(first.status, 0, first.stderr);
    assert.equal(first.json?.copied, total);
    await withClient(lab, 'source', async (c) => {
      await c.mailboxOpen('INBOX');
      const uids = (await c.fetchAll('1:*', { uid: true }, { uid: true })).map((m) => m.uid);
      await c.messageFlagsAdd(String(uids[0]), ['\\Flagged', '$Label1'], { uid: true });
      await c.messageFlagsRemove(String(uids[1]), ['\\Seen'], { uid: true });
      await c.messageFlagsAdd(String(uids[1]), ['\\Answered'], { uid: true });
    });
    const second = await run();
    assert.equal(second.status, 0, second.stderr);
    assert.equal(second.json?.copied, 0);
    assert.ok(sizes.rewritten > 0, 'the target listed wrong sizes');
    assert.doesNotMatch(second.stderr, /no longer on the target/);
    // The snapshot compares flags too.
    await assertExact(lab, total);
  });

  test('a second journal (another --db) finds every message on the target and copies none', async () => {
    const r = await run(join(lab.dir, 'second.sqlite'));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 0);
    await assertExact(lab, total);
  });

  test('a folder the user renamed on the target is followed, not made again', async () => {
    await withClient(lab, 'target', (c) => c.mailboxRename('Projects & Plans/Q3 Review', 'Projects & Plans/Q3 Renamed'));
    const r = await run();
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 0);
    const tgt = await assertExact(lab, total, (p) => (p === 'Projects & Plans.Q3 Review' ? 'Projects & Plans/Q3 Renamed' : expectedTargetPath(p)));
    assert.ok(!tgt.has('Projects & Plans/Q3 Review'), 'the old name was not made again');
  });
});
