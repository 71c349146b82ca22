/**
 * The source-side body reader (src/imap/raw-fetch.ts).
 *
 * Part 1 talks to a scripted fake server (net.createServer) to pin down what a real server
 * will not show on demand: attributes before and after the literal, a response split at
 * every byte, quoted-string and NIL bodies, unsolicited FETCH responses, NO/BAD, a drop in
 * the middle of a literal, a silent server. Part 2 compares with imapflow against a real
 * Dovecot (src/lab/dovecot.ts) and prints (does not assert) the client CPU of both.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import net from 'node:net';

import { ImapFlow } from 'imapflow';

import type { ImapEndpoint, ImapLogin } from '../src/imap/endpoint.js';
import { ImapConnectionLostError as SharedConnectionLostError } from '../src/imap/errors.js';
import { PipelinedAppender } from '../src/imap/append-pipeline.js';
import { parseInternalDate, RawFetchCommandError, RawFetcher } from '../src/imap/raw-fetch.js';
import { type DovecotServer, dovecotBinary, startDovecot } from '../src/lab/dovecot.js';
import { generateCorpus } from '../src/lab/corpus.js';
import { loadCorpusFast } from '../src/lab/fast-load.js';

const login: ImapLogin = { method: 'login', username: 'alice', password: 'pw' };

// =======================================================================================
// A scripted fake IMAP server
// =======================================================================================

/** Answers one `UID FETCH`: write whatever it likes on `sock` (including the tagged reply). */
type FetchScript = (tag: string, uids: string, sock: net.Socket) => void | Promise<void>;

interface Fake {
  endpoint: ImapEndpoint;
  commands: string[];
  close: () => Promise<void>;
}

async function fakeServer(onFetch: FetchScript): Promise<Fake> {
  const commands: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    sock.write('* OK [CAPABILITY IMAP4rev1 LITERAL+] fake ready\r\n');
    let buf = '';
    let chain: Promise<void> = Promise.resolve();
    sock.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (let i = buf.indexOf('\r\n'); i >= 0; i = buf.indexOf('\r\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        commands.push(line);
        const [tag = '', name = '', ...rest] = line.split(' ');
        chain = chain.then(async () => {
          switch (name.toUpperCase()) {
            case 'LOGIN':
              sock.write(`${tag} OK [CAPABILITY IMAP4rev1 LITERAL+] logged in\r\n`);
              break;
            case 'EXAMINE': {
              // RFC 7162 §3.1.2: HIGHESTMODSEQ once CONDSTORE is enabled, NOMODSEQ for a
              // mailbox named "NoModseq" (no persistent mod-sequences).
              const condstore = line.endsWith(' (CONDSTORE)');
              const modseq = !condstore ? '' : line.includes('NoModseq') ? '* OK [NOMODSEQ] none\r\n' : '* OK [HIGHESTMODSEQ 0715194045007] ok\r\n';
              sock.write(`* 3 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 1234567] ok\r\n* OK [UIDNEXT 42] ok\r\n${modseq}${tag} OK [READ-ONLY] examined\r\n`);
              break;
            }
            case 'UID':
              await onFetch(tag, rest[1] ?? '', sock);
              break;
            case 'LOGOUT':
              sock.end(`* BYE bye\r\n${tag} OK done\r\n`);
              break;
            default:
              sock.write(`${tag} BAD unknown\r\n`);
          }
        });
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    endpoint: { host: '127.0.0.1', port, tls: 'none', acceptUntrustedCert: false },
    commands,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function withFetcher<T>(onFetch: FetchScript, fn: (f: RawFetcher, fake: Fake) => Promise<T>, idleTimeoutMs?: number): Promise<T> {
  const fake = await fakeServer(onFetch);
  const f = await RawFetcher.connect({ endpoint: fake.endpoint, login, ...(idleTimeoutMs !== undefined ? { idleTimeoutMs } : {}) });
  try {
    return await fn(f, fake);
  } finally {
    await f.close();
    await fake.close();
  }
}

/** A body with what could trip a parser: CRLF + `)`, a `{n}` at a line end, 8-bit bytes. */
const TRICKY = Buffer.concat([
  Buffer.from('From: a@example.org\r\nSubject: {5}\r\n\r\n)\r\n* 9 FETCH (UID 1)\r\nA1 OK\r\n{3}\r\n', 'latin1'),
  Buffer.from([0x00, 0xff, 0x80, 0xc3, 0x28, 0x0d, 0x0a]),
]);

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// =======================================================================================
// Part 1: fake server
// =======================================================================================

describe('RawFetcher against a scripted server', () => {
  it('EXAMINE sends modified UTF-7 and reads UIDVALIDITY, UIDNEXT, EXISTS', async () => {
    await withFetcher(() => {}, async (f, fake) => {
      assert.deepEqual(await f.examine('Archive/Ärger & Co'), { uidValidity: 1234567, uidNext: 42, exists: 3, highestModseq: null });
      assert.deepEqual(await f.examine('inbox'), { uidValidity: 1234567, uidNext: 42, exists: 3, highestModseq: null });
      assert.ok(fake.commands.some((c) => c.endsWith('EXAMINE "Archive/&AMQ-rger &- Co"')), fake.commands.join('\n'));
      assert.ok(fake.commands.some((c) => c.endsWith('EXAMINE "INBOX"')));
    });
  });

  it('EXAMINE with CONDSTORE reads HIGHESTMODSEQ (as a decimal string) and NOMODSEQ', async () => {
    await withFetcher(() => {}, async (f, fake) => {
      assert.deepEqual(await f.examine('INBOX', { condstore: true }), { uidValidity: 1234567, uidNext: 42, exists: 3, highestModseq: '715194045007' });
      assert.equal((await f.examine('NoModseq', { condstore: true })).highestModseq, null);
      assert.ok(fake.commands.some((c) => c.endsWith('EXAMINE "INBOX" (CONDSTORE)')), fake.commands.join('\n'));
    });
  });

  it('list: UID, RFC822.SIZE, FLAGS, INTERNALDATE in any order, split responses, CHANGEDSINCE', async () => {
    await withFetcher((tag, uids, sock) => {
      if (uids === '7:*') {
        sock.write('* 1 FETCH (RFC822.SIZE 1200 UID 7)\r\n');
        // One message's attributes over two responses, and an unsolicited update without UID.
        sock.write('* 2 FETCH (UID 9)\r\n* 5 FETCH (FLAGS (\\Deleted))\r\n* 2 FETCH (RFC822.SIZE 88 UID 9)\r\n');
        sock.write(`${tag} OK done\r\n`);
      } else {
        sock.write('* 2 FETCH (UID 9 MODSEQ (12) FLAGS (\\Seen $Forwarded))\r\n* 1 FETCH (FLAGS () UID 7 MODSEQ (11))\r\n');
        sock.write(`${tag} OK done\r\n`);
      }
    }, async (f, fake) => {
      assert.deepEqual(await f.list('7:*', { size: true }), [{ uid: 7, size: 1200 }, { uid: 9, size: 88 }]);
      assert.deepEqual(await f.list('1:9', { flags: true, changedSince: '10' }), [{ uid: 7, flags: [] }, { uid: 9, flags: ['\\Seen', '$Forwarded'] }]);
      assert.ok(fake.commands.some((c) => c.endsWith('UID FETCH 7:* (UID RFC822.SIZE)')), fake.commands.join('\n'));
      assert.ok(fake.commands.some((c) => c.endsWith('UID FETCH 1:9 (UID FLAGS) (CHANGEDSINCE 10)')), fake.commands.join('\n'));
      await assert.rejects(f.list('1:9 (UID) X', {}), TypeError);
      await assert.rejects(f.list('1', { changedSince: '1) X' }), TypeError);
    });
  });

  it('attributes before and after the literal, in any order; extras and unsolicited FETCHes', async () => {
    const b2 = Buffer.from('Subject: two\r\n\r\nbody two\r\n');
    await withFetcher((tag, uids, sock) => {
      assert.equal(uids, '5:6,9');
      sock.write(
        `* 1 FETCH (UID 5 FLAGS (\\Seen $Forwarded Junk) INTERNALDATE "17-Jul-1996 02:44:25 -0700" BODY[] {${TRICKY.length}}\r\n`,
      );
      sock.write(TRICKY);
      sock.write(')\r\n');
      // Unsolicited flag change for another message (no UID): ignored.
      sock.write('* 7 FETCH (FLAGS (\\Deleted))\r\n');
      // Literal first, then the rest; MODSEQ and RFC822.SIZE are skipped.
      sock.write(`* 2 FETCH (BODY[] {${b2.length}}\r\n${b2.toString('latin1')} MODSEQ (12345) UID 6 RFC822.SIZE ${b2.length} INTERNALDATE " 1-Feb-2020 23:59:59 +0100" FLAGS ())\r\n`);
      // A flag update for message 2 after its body: merged (later wins).
      sock.write('* 2 FETCH (FLAGS (\\Answered) UID 6)\r\n');
      // Attributes split over two responses for one message.
      sock.write('* 3 FETCH (UID 9 FLAGS (\\Flagged))\r\n');
      sock.write('* 3 FETCH (INTERNALDATE "31-Dec-2021 00:00:00 +0000" BODY[] {0}\r\n)\r\n');
      sock.write(`${tag} OK done\r\n`);
    }, async (f) => {
      await f.examine('INBOX');
      const { messages, unreadable } = await f.fetch('5:6,9');
      assert.deepEqual(unreadable, []);
      assert.deepEqual(messages.map((m) => m.uid), [5, 6, 9]);
      const [m5, m6, m9] = messages as [(typeof messages)[0], (typeof messages)[0], (typeof messages)[0]];
      assert.ok(m5.raw.equals(TRICKY));
      assert.deepEqual(m5.flags, ['\\Seen', '$Forwarded', 'Junk']);
      assert.equal(m5.internalDate?.toISOString(), '1996-07-17T09:44:25.000Z');
      assert.ok(m6.raw.equals(b2));
      assert.deepEqual(m6.flags, ['\\Answered']);
      assert.equal(m6.internalDate?.toISOString(), '2020-02-01T22:59:59.000Z');
      assert.equal(m9.raw.length, 0);
      assert.deepEqual(m9.flags, ['\\Flagged']);
      assert.equal(m9.internalDate?.toISOString(), '2021-12-31T00:00:00.000Z');
    });
  });

  it('one response split at every byte position', async () => {
    const head = `* 1 FETCH (UID 77 FLAGS (\\Seen) BODY[] {${TRICKY.length}}\r\n`;
    const resp = Buffer.concat([Buffer.from(head, 'latin1'), TRICKY, Buffer.from(' INTERNALDATE "05-Mar-2001 10:00:00 +0530")\r\n', 'latin1')]);
    await withFetcher(async (tag, uids, sock) => {
      const at = Number(uids);
      sock.write(resp.subarray(0, at));
      await sleep(2); // a separate TCP segment on loopback (nodelay), so a separate read
      sock.write(Buffer.concat([resp.subarray(at), Buffer.from(`${tag} OK done\r\n`)]));
    }, async (f) => {
      await f.examine('INBOX');
      for (let at = 1; at < resp.length; at++) {
        const { messages } = await f.fetch(String(at));
        assert.equal(messages.length, 1, `split at ${at}`);
        const m = messages[0]!;
        assert.equal(m.uid, 77);
        assert.ok(m.raw.equals(TRICKY), `split at ${at}`);
        assert.deepEqual(m.flags, ['\\Seen']);
        assert.equal(m.internalDate?.toISOString(), '2001-03-05T04:30:00.000Z');
      }
    });
  });

  it('a body sent as a quoted string, and NIL (reported unreadable)', async () => {
    await withFetcher((tag, _uids, sock) => {
      sock.write('* 1 FETCH (UID 1 FLAGS () INTERNALDATE "01-Jan-2000 00:00:00 +0000" BODY[] "Subject: q\\"x\\\\y")\r\n');
      sock.write('* 2 FETCH (UID 2 FLAGS () INTERNALDATE "01-Jan-2000 00:00:00 +0000" BODY[] NIL)\r\n');
      sock.write(`${tag} OK done\r\n`);
    }, async (f) => {
      await f.examine('INBOX');
      const r = await f.fetch('1:2');
      assert.equal(r.messages.length, 1);
      assert.equal(r.messages[0]!.raw.toString(), 'Subject: q"x\\y');
      assert.deepEqual(r.unreadable.map((u) => u.uid), [2]);
    });
  });

  it('a tagged NO or BAD rejects with responseStatus and the server text; the session goes on', async () => {
    let n = 0;
    await withFetcher((tag, _uids, sock) => {
      n += 1;
      if (n === 1) sock.write(`* 1 FETCH (UID 1 FLAGS ())\r\n${tag} NO [SERVERBUG] Internal error occurred\r\n`);
      else if (n === 2) sock.write(`${tag} BAD Error in IMAP command\r\n`);
      else sock.write(`* 1 FETCH (UID 1 BODY[] {2}\r\nhi INTERNALDATE "01-Jan-2000 00:00:00 +0000" FLAGS ())\r\n${tag} OK done\r\n`);
    }, async (f) => {
      await f.examine('INBOX');
      await assert.rejects(f.fetch('1'), (err: unknown) => {
        assert.ok(err instanceof RawFetchCommandError);
        assert.equal(err.responseStatus, 'NO');
        assert.equal(err.code, 'SERVERBUG');
        assert.equal(err.serverText, 'Internal error occurred');
        return true;
      });
      await assert.rejects(f.fetch('1'), (err: unknown) => err instanceof RawFetchCommandError && err.responseStatus === 'BAD');
      assert.equal((await f.fetch('1')).messages[0]!.raw.toString(), 'hi');
    });
  });

  it('rejects a UID set that is not one, without sending anything', async () => {
    await withFetcher(() => {}, async (f, fake) => {
      await assert.rejects(f.fetch('1:5 (BODY[])\r\nA9 DELETE INBOX'), TypeError);
      await assert.rejects(f.fetch(''), TypeError);
      assert.ok(!fake.commands.some((c) => c.includes('FETCH')));
    });
  });

  it('connection lost in the middle of a literal → ImapConnectionLostError', async () => {
    await withFetcher((_tag, _uids, sock) => {
      sock.write('* 1 FETCH (UID 1 BODY[] {1000}\r\nonly a few bytes');
      setTimeout(() => sock.destroy(), 20);
    }, async (f) => {
      await f.examine('INBOX');
      await assert.rejects(f.fetch('1'), (err: unknown) => err instanceof SharedConnectionLostError);
      assert.ok(f.closed);
    });
  });

  it('a silent server trips the idle watchdog', async () => {
    await withFetcher(() => {}, async (f) => {
      await f.examine('INBOX');
      const t0 = Date.now();
      await assert.rejects(f.fetch('1'), (err: unknown) => err instanceof SharedConnectionLostError && /no response/.test(err.message));
      assert.ok(Date.now() - t0 < 2000);
    }, 200);
  });

  it('parses INTERNALDATE with its zone; without one as UTC; years below 100 as written', () => {
    assert.equal(parseInternalDate('17-Jul-1996 02:44:25 -0700')?.toISOString(), '1996-07-17T09:44:25.000Z');
    assert.equal(parseInternalDate(' 7-jul-1996 02:44:25 +0000')?.toISOString(), '1996-07-07T02:44:25.000Z');
    assert.equal(parseInternalDate('07-Foo-1996 02:44:25 +0000'), null);
    assert.equal(parseInternalDate('07-Jul-1996 02:44:25')?.toISOString(), '1996-07-07T02:44:25.000Z');
    assert.equal(parseInternalDate('01-Feb-0099 10:00:00 +0000')?.getUTCFullYear(), 99);
    assert.equal(parseInternalDate('29-Feb-2024 23:30:00 -0100')?.toISOString(), '2024-03-01T00:30:00.000Z');
  });

  it('an unreadable, NIL or missing INTERNALDATE is that message\'s (null), not a failed FETCH', async () => {
    await withFetcher((tag, _uids, sock) => {
      sock.write('* 1 FETCH (UID 1 FLAGS () INTERNALDATE "01-Okt-2019 10:00:00 +0200" BODY[] {3}\r\nabc)\r\n');
      sock.write('* 2 FETCH (UID 2 FLAGS () INTERNALDATE NIL BODY[] {3}\r\ndef)\r\n');
      sock.write('* 3 FETCH (UID 3 FLAGS () INTERNALDATE "01-Oct-2019 10:00:00 +0200" BODY[] {3}\r\nghi)\r\n');
      sock.write('* 4 FETCH (UID 4 FLAGS () BODY[] {3}\r\njkl)\r\n');
      sock.write(`${tag} OK done\r\n`);
    }, async (f) => {
      await f.examine('INBOX');
      const r = await f.fetch('1:4');
      assert.deepEqual(r.messages.map((m) => [m.uid, m.raw.toString(), m.internalDate?.toISOString() ?? null]), [
        [1, 'abc', null],
        [2, 'def', null],
        [3, 'ghi', '2019-10-01T08:00:00.000Z'],
        [4, 'jkl', null],
      ]);
    });
  });
});

// =======================================================================================
// Part 2: real Dovecot, compared with imapflow
// =======================================================================================

const haveDovecot = dovecotBinary() !== null;
const alice = { username: 'alice', password: 'alice-pw' };
const aliceLogin: ImapLogin = { method: 'login', ...alice };

function flowClient(srv: DovecotServer): ImapFlow {
  const c = new ImapFlow({ host: '127.0.0.1', port: srv.port, secure: false, doSTARTTLS: false, auth: { user: alice.username, pass: alice.password }, logger: false });
  c.on('error', () => {});
  return c;
}

describe('RawFetcher against Dovecot', { skip: haveDovecot ? false : 'dovecot is not installed' }, () => {
  let srv: DovecotServer;
  before(async () => {
    srv = await startDovecot({ name: 'rawfetch', separator: '/', users: [alice] });
  });
  after(async () => {
    await srv?.stop();
  });

  it('300 varied messages: same bytes, flags and internal dates as imapflow', async () => {
    const corpus = generateCorpus({ seed: 11, messages: 300, maxSize: 2_000_000, includeDeleted: true });
    await loadCorpusFast(srv.endpoint(), aliceLogin, corpus, { separator: '/' });
    const flow = flowClient(srv);
    await flow.connect();
    const f = await RawFetcher.connect({ endpoint: srv.endpoint(), login: aliceLogin });
    let compared = 0;
    const got = new Map<string, number>();
    try {
      for (const folder of corpus.folders) {
        const path = folder.path.join('/');
        const mb = await flow.mailboxOpen(path, { readOnly: true });
        const ex = await f.examine(path);
        assert.equal(ex.uidValidity, Number(mb.uidValidity), path);
        assert.equal(ex.uidNext, mb.uidNext, path);
        assert.equal(ex.exists, mb.exists, path);
        if (mb.exists === 0) continue;
        const theirs = await flow.fetchAll('1:*', { uid: true, flags: true, internalDate: true, source: true }, { uid: true });
        const ours = await f.fetch('1:*');
        assert.equal(ours.messages.length, theirs.length, path);
        assert.deepEqual(ours.unreadable, []);
        theirs.sort((a, b) => a.uid - b.uid);
        ours.messages.forEach((m, i) => {
          const t = theirs[i]!;
          assert.equal(m.uid, t.uid);
          assert.equal(sha(m.raw), sha(t.source!), `${path} UID ${m.uid}`);
          assert.deepEqual([...m.flags].sort(), [...(t.flags ?? new Set<string>())].sort(), `${path} UID ${m.uid}`);
          assert.equal(m.internalDate?.getTime(), new Date(t.internalDate!).getTime(), `${path} UID ${m.uid}`);
          compared += 1;
          got.set(sha(m.raw), (got.get(sha(m.raw)) ?? 0) + 1);
        });
      }
      // And against the corpus itself: every generated message is there, byte for byte.
      const want = new Map<string, number>();
      for (const m of corpus.messages()) want.set(sha(m.raw), (want.get(sha(m.raw)) ?? 0) + 1);
      assert.equal(compared, corpus.count);
      assert.deepEqual([...got].sort(), [...want].sort());
      // Reading with BODY.PEEK[] after EXAMINE did not set \Seen anywhere.
      const unseen = async (): Promise<number | undefined> => {
        const st = await flow.status('INBOX', { unseen: true });
        return st ? st.unseen : undefined;
      };
      const unseenBefore = await unseen();
      assert.ok(unseenBefore !== undefined && unseenBefore > 0);
      const f2 = await RawFetcher.connect({ endpoint: srv.endpoint(), login: aliceLogin });
      await f2.examine('INBOX');
      await f2.fetch('1:*');
      await f2.close();
      assert.equal(await unseen(), unseenBefore);
    } finally {
      await f.close();
      await flow.logout();
    }
  });

  it('CPU: 2,000 × 30 KB, RawFetcher vs imapflow fetchAll (printed, not asserted)', async () => {
    const mailbox = 'CpuBench';
    const setup = flowClient(srv);
    await setup.connect();
    await setup.mailboxCreate(mailbox);
    await setup.logout();
    const app = await PipelinedAppender.connect({ endpoint: srv.endpoint(), login: aliceLogin });
    const body = (i: number): Buffer => {
      const head = `From: bench@example.org\r\nSubject: bench ${i}\r\nMessage-ID: <b${i}@example.org>\r\n\r\n`;
      const line = `line of message ${i} ${'x'.repeat(60)}\r\n`;
      return Buffer.from(head + line.repeat(Math.ceil((30 * 1024 - head.length) / line.length)));
    };
    const ps = [];
    for (let i = 0; i < 2000; i++) {
      await app.ready();
      ps.push(app.append({ mailbox, flags: i % 3 ? ['\\Seen'] : [], internalDate: new Date(1_600_000_000_000 + i * 1000), raw: body(i) }));
    }
    assert.ok((await Promise.all(ps)).every((r) => r.ok));
    await app.close();

    const sets: string[] = [];
    for (let i = 1; i <= 2000; i += 250) sets.push(`${i}:${i + 249}`);
    const measure = async (what: string, run: () => Promise<number>): Promise<string> => {
      const cpu0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      const n = await run();
      const secs = Number(process.hrtime.bigint() - t0) / 1e9;
      const cpu = process.cpuUsage(cpu0);
      assert.equal(n, 2000);
      return `${what}: ${n} msgs in ${secs.toFixed(2)} s, client CPU ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms ` +
        `(user ${(cpu.user / 1000).toFixed(0)}, system ${(cpu.system / 1000).toFixed(0)}) = ${((cpu.user + cpu.system) / 1000 / n).toFixed(3)} ms/msg`;
    };
    const rawRun = async (): Promise<number> => {
      const f = await RawFetcher.connect({ endpoint: srv.endpoint(), login: aliceLogin });
      await f.examine(mailbox);
      let n = 0;
      for (const s of sets) n += (await f.fetch(s)).messages.length;
      await f.close();
      return n;
    };
    const flowRun = async (): Promise<number> => {
      const c = flowClient(srv);
      await c.connect();
      await c.mailboxOpen(mailbox, { readOnly: true });
      let n = 0;
      for (const s of sets) n += (await c.fetchAll(s, { uid: true, flags: true, internalDate: true, size: true, source: true }, { uid: true })).length;
      await c.logout();
      return n;
    };
    // Warm up both (JIT, Dovecot's caches), then measure each twice, alternating.
    await rawRun();
    await flowRun();
    for (let round = 0; round < 2; round++) {
      console.log(await measure('RawFetcher      ', rawRun));
      console.log(await measure('imapflow fetchAll', flowRun));
    }
  });
});
