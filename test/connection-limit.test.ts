/**
 * A source that allows fewer sessions per user than a sync would open (hosters allow 4 or
 * 5; Dovecot 10, Gmail 15): the sessions over the limit are turned away at the greeting
 * (`* BYE`, as Courier does), and the sync copies on the connections it got instead of
 * failing (copy-lanes.ts runLane). With many folders, where idle lanes scan folders too
 * (mailbox-sync.ts).
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { env, runCli, syncArgs } from './helpers/cli.js';
import { type LabPair, startPair } from './helpers/lab-pair.js';
import { compareMailboxes, connect, snapshot } from './helpers/mailbox-snapshot.js';

/** A relay to `port` that greets the session over `limit` open at once with BYE and closes it. */
async function startLimiter(port: number, limit: number): Promise<{ port: number; turnedAway: () => number; stop: () => Promise<void> }> {
  let open = 0;
  let refused = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    if (open >= limit) {
      refused++;
      client.end('* BYE Too many connections from your user and IP address\r\n');
      return;
    }
    open++;
    const upstream = net.connect(port, '127.0.0.1');
    sockets.add(upstream);
    let closed = false;
    const done = () => {
      if (!closed) open--;
      closed = true;
      client.destroy();
      upstream.destroy();
    };
    client.pipe(upstream).on('error', done);
    upstream.pipe(client).on('error', done);
    client.on('close', done).on('error', done);
    upstream.on('close', done).on('error', done);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    turnedAway: () => refused,
    stop: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

describe('sync: a source that allows few sessions per user', () => {
  let lab: LabPair;
  let limiter: Awaited<ReturnType<typeof startLimiter>>;

  before(async () => {
    lab = await startPair({ extraTargetUsers: ['bob'] });
    const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    for (let f = 0; f < 30; f++) {
      await c.mailboxCreate(`F${f}`);
      for (let n = 0; n < 3; n++) await c.append(`F${f}`, Buffer.from(`Subject: ${f}/${n}\r\nMessage-ID: <l${f}.${n}@example.org>\r\n\r\n${'x'.repeat(300 * (n + 1))}\r\n`), ['\\Seen'], new Date(Date.UTC(2022, 0, f + 1)));
    }
    await c.logout();
    // Its own session, the scan's and the lanes' four would be six.
    limiter = await startLimiter(lab.source.port, 4);
  });
  after(async () => {
    await limiter?.stop();
    await lab?.stop();
  });

  test('the sync copies on the sessions it gets, exactly, and says so', async () => {
    const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json', '--connections', '4'], { sourcePort: limiter.port })], env(lab));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 90);
    assert.ok(limiter.turnedAway() > 0, 'sessions over the limit were turned away');
    assert.match(r.stderr, /copying on fewer connections/);
    const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.deepEqual(compareMailboxes(src, tgt, (p) => p), []);
  });

  test('a source allowing two sessions per user: one lane copies once the scan is done', async () => {
    // The mailbox's own session and the scan's take both; every lane is turned away until
    // the scan's connection is closed.
    const two = await startLimiter(lab.source.port, 2);
    try {
      // Into another target mailbox: the first test's copies are in alice's.
      const toBob = { ...lab, targetUser: 'bob' };
      const db = `${lab.db}-two`;
      const r = await runCli(['sync', ...syncArgs(toBob, db, ['--json', '--connections', '4'], { sourcePort: two.port })], env(lab));
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.json?.copied, 90);
      assert.ok(two.turnedAway() >= 4, `every lane was turned away first (${two.turnedAway()})`);
      assert.match(r.stderr, /trying again when it is done/);
      const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
      const tgt = await snapshot(lab.target.endpoint(), 'bob', lab.targetPass);
      assert.deepEqual(compareMailboxes(src, tgt, (p) => p), []);
      const again = await runCli(['sync', ...syncArgs(toBob, db, ['--json'], { sourcePort: two.port })], env(lab));
      assert.equal(again.status, 0, again.stderr);
      assert.equal(again.json?.copied, 0);
    } finally {
      await two.stop();
    }
  });
});

describe("sync: Dovecot's own limit of sessions per user (mail_max_userip_connections)", () => {
  for (const limit of [2, 1]) {
    test(`limit ${limit}: ${limit === 2 ? 'copied exactly on one lane' : 'said plainly, exit 3'}`, async () => {
      const lab = await startPair({ source: { extraConfig: `protocol imap {\n  mail_max_userip_connections = ${limit}\n}\n` } });
      try {
        const c = await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
        await c.mailboxCreate('Work');
        for (let n = 0; n < 12; n++) await c.append(n % 2 ? 'Work' : 'INBOX', Buffer.from(`Subject: ${n}\r\nMessage-ID: <d${n}@example.org>\r\n\r\n${'x'.repeat(500)}\r\n`));
        await c.logout();
        const r = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
        if (limit === 2) {
          assert.equal(r.status, 0, r.stderr);
          assert.equal(r.json?.copied, 12);
          const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
          const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
          assert.deepEqual(compareMailboxes(src, tgt, (p) => p), []);
        } else {
          assert.equal(r.status, 3, r.stderr);
          assert.match(r.stderr, /refused another session for this user \(it limits sessions per user; a sync needs at least two\).*\[LIMIT\]/);
        }
      } finally {
        await lab.stop();
      }
    });
  }
});
