/**
 * The test lab itself: real Dovecot servers as tests, the benchmark and the demo expect
 * them, and the delay/fault proxy.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { existsSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { ImapFlow, type ImapFlowOptions } from 'imapflow';
import { startDovecot, dovecotBinary, type DovecotServer } from '../src/lab/dovecot.js';
import { TcpProxy } from '../src/lab/proxy.js';

const noDovecot = dovecotBinary() === null ? 'dovecot is not installed' : false;

const ALICE = { username: 'alice', password: 'alice:pw' }; // ':' must survive the passwd-file
const BOB = { username: 'bob', password: 'bob-pw' };
const MASTER = { username: 'admin', password: 'master-pw' };
const MAX_MAIL = 4096;

function message(subject: string, bodyBytes = 100): string {
  return `From: a@example.org\r\nTo: b@example.org\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@lab>\r\n\r\n${'x'.repeat(bodyBytes)}\r\n`;
}

async function connect(opts: Partial<ImapFlowOptions> & Pick<ImapFlowOptions, 'port'>): Promise<ImapFlow> {
  // doSTARTTLS false: imapflow would otherwise upgrade whenever STARTTLS is offered and
  // then reject the self-signed certificate.
  const client = new ImapFlow({ host: '127.0.0.1', secure: false, doSTARTTLS: false, logger: false, disableAutoIdle: true, ...opts });
  // Without a listener an 'error' event would crash the test process instead of failing a test.
  client.on('error', () => {});
  await client.connect();
  return client;
}

/** Minimal raw IMAP session, to see exactly what the server answers. */
class RawImap {
  private buf = '';
  private waiters: Array<() => void> = [];
  private constructor(private readonly sock: net.Socket) {
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      this.buf += d;
      for (const w of this.waiters.splice(0)) w();
    });
  }
  static async open(port: number): Promise<RawImap> {
    const sock = net.connect({ host: '127.0.0.1', port });
    await new Promise<void>((res, rej) => sock.once('connect', res).once('error', rej));
    const raw = new RawImap(sock);
    await raw.until(/^\* OK.*\r\n/m);
    return raw;
  }
  /** Waits until the received text matches, returns the match and consumes up to it. */
  async until(re: RegExp, timeoutMs = 5000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.buf);
      if (m) {
        this.buf = this.buf.slice(m.index + m[0].length);
        return m[0];
      }
      if (Date.now() > deadline) throw new Error(`timeout waiting for ${re}; have ${JSON.stringify(this.buf)}`);
      await new Promise<void>((res) => {
        this.waiters.push(res);
        setTimeout(res, 50);
      });
    }
  }
  write(s: string): void {
    this.sock.write(s, 'latin1');
  }
  /** Sends a command and returns its tagged response line. */
  async command(tag: string, cmd: string): Promise<string> {
    this.write(`${tag} ${cmd}\r\n`);
    return this.until(new RegExp(`^${tag} .*\\r\\n`, 'm'));
  }
  close(): void {
    this.sock.destroy();
  }
}

// The tests touch disjoint users/folders, so they run concurrently: most of their time is
// Dovecot waiting (failed-login tick, shutdown), not work.
describe('dovecot lab', { skip: noDovecot, concurrency: true }, () => {
  let source: DovecotServer;
  let target: DovecotServer;

  before(async () => {
    // Started together: they must not share anything.
    [source, target] = await Promise.all([
      startDovecot({
        name: 'source',
        separator: '.',
        users: [ALICE],
        masterUsers: [MASTER],
        specialUse: { '\\Sent': 'Sent', '\\Trash': 'Trash', '\\Archive': 'Archive' },
        tls: 'selfsigned',
      }),
      startDovecot({
        name: 'target',
        separator: '/',
        users: [BOB],
        masterUsers: [MASTER],
        specialUse: { '\\Sent': 'Sent Items', '\\Junk': 'Junk E-mail', '\\Drafts': 'Drafts' },
        maxMailSize: MAX_MAIL,
        disableCapabilities: ['CONDSTORE', 'LITERAL+'],
      }),
    ]);
  });

  after(async () => {
    await Promise.all([source?.stop(), target?.stop()]);
  });

  test('two servers, separate dirs and ports', () => {
    assert.notEqual(source.port, target.port);
    assert.notEqual(source.dir, target.dir);
    assert.ok(existsSync(source.logPath));
    assert.equal(source.separator, '.');
    assert.equal(target.separator, '/');
    assert.deepEqual(target.endpoint(), { host: '127.0.0.1', port: target.port, tls: 'none', acceptUntrustedCert: false });
    assert.throws(() => target.endpoint('implicit'), /without tls/);
  });

  test('user login, hierarchy separators and special-use folders', async () => {
    const src = await connect({ port: source.port, auth: { user: ALICE.username, pass: ALICE.password } });
    const dst = await connect({ port: target.port, auth: { user: BOB.username, pass: BOB.password } });
    try {
      const srcList = await src.list();
      const dstList = await dst.list();
      assert.ok(srcList.length > 0 && srcList.every((m) => m.delimiter === '.'));
      assert.ok(dstList.length > 0 && dstList.every((m) => m.delimiter === '/'));
      const flagsOf = (list: typeof srcList, path: string) => list.find((m) => m.path === path)?.flags;
      assert.ok(flagsOf(srcList, 'Sent')?.has('\\Sent'));
      assert.ok(flagsOf(srcList, 'Trash')?.has('\\Trash'));
      assert.ok(flagsOf(srcList, 'Archive')?.has('\\Archive'));
      assert.ok(flagsOf(dstList, 'Sent Items')?.has('\\Sent'));
      assert.ok(flagsOf(dstList, 'Junk E-mail')?.has('\\Junk'));
      assert.ok(flagsOf(dstList, 'Drafts')?.has('\\Drafts'));
      assert.ok(dstList.find((m) => m.path === 'Sent Items')?.subscribed);

      // Nested folders use each server's own separator.
      await src.mailboxCreate(['Projects', 'Alpha']);
      await dst.mailboxCreate(['Projects', 'Alpha']);
      assert.ok((await src.list()).some((m) => m.path === 'Projects.Alpha'));
      assert.ok((await dst.list()).some((m) => m.path === 'Projects/Alpha'));
    } finally {
      await Promise.all([src.logout(), dst.logout()]);
    }
  });

  test('wrong password is refused, without the growing per-IP penalty', async () => {
    const t0 = Date.now();
    for (let i = 0; i < 4; i++) {
      await assert.rejects(connect({ port: source.port, auth: { user: ALICE.username, pass: 'nope' } }));
    }
    // Each failure takes ~0.5 s (Dovecot's failure queue tick). The per-IP auth penalty,
    // if it were on, would double the wait on every attempt (2 + 4 + 8 s here): the bound
    // separates the two cases by a wide margin, so a loaded machine does not matter.
    assert.ok(Date.now() - t0 < 10_000, `failed logins took ${Date.now() - t0} ms`);
  });

  test('master user: user*master LOGIN and SASL PLAIN authzid land in the user mailbox', async () => {
    const subject = `master-${Date.now()}`;
    const own = await connect({ port: source.port, auth: { user: ALICE.username, pass: ALICE.password } });
    await own.append('INBOX', message(subject));
    await own.logout();

    const viaSeparator = await connect({
      port: source.port,
      auth: { user: `${ALICE.username}*${MASTER.username}`, pass: MASTER.password, loginMethod: 'LOGIN' },
    });
    const viaSasl = await connect({
      port: source.port,
      auth: { user: MASTER.username, pass: MASTER.password, authzid: ALICE.username, loginMethod: 'AUTH=PLAIN' },
    });
    try {
      for (const c of [viaSeparator, viaSasl]) {
        const lock = await c.getMailboxLock('INBOX');
        try {
          const found = await c.search({ header: { subject } }, { uid: true });
          assert.equal(Array.isArray(found) ? found.length : 0, 1);
        } finally {
          lock.release();
        }
      }
    } finally {
      await Promise.all([viaSeparator.logout(), viaSasl.logout()]);
    }
    // A master password is no user password, and a master cannot impersonate unknown users.
    await Promise.all([
      assert.rejects(connect({ port: source.port, auth: { user: ALICE.username, pass: MASTER.password } })),
      assert.rejects(
        connect({ port: source.port, auth: { user: MASTER.username, pass: MASTER.password, authzid: 'ghost', loginMethod: 'AUTH=PLAIN' } }),
      ),
    ]);
  });

  test('capabilities: defaults on the source, disabled ones gone on the target', async () => {
    const src = await connect({ port: source.port, auth: { user: ALICE.username, pass: ALICE.password } });
    const dst = await connect({ port: target.port, auth: { user: BOB.username, pass: BOB.password } });
    try {
      for (const cap of ['CONDSTORE', 'QRESYNC', 'UIDPLUS', 'LITERAL+', 'SPECIAL-USE', 'LIST-STATUS', 'MULTIAPPEND']) {
        assert.ok(src.capabilities.has(cap), `source lacks ${cap}`);
      }
      for (const cap of ['CONDSTORE', 'QRESYNC', 'LITERAL+']) {
        assert.ok(!dst.capabilities.has(cap), `target still advertises ${cap}`);
      }
      for (const cap of ['UIDPLUS', 'SPECIAL-USE', 'MULTIAPPEND']) {
        assert.ok(dst.capabilities.has(cap), `target lost ${cap}`);
      }
    } finally {
      await Promise.all([src.logout(), dst.logout()]);
    }
  });

  test('maxMailSize: a bigger APPEND gets a tagged NO, a smaller one is stored', async () => {
    const raw = await RawImap.open(target.port);
    try {
      assert.match(await raw.command('a1', `LOGIN ${BOB.username} ${BOB.password}`), /^a1 OK/);
      const small = message('small', 100);
      const big = message('big', MAX_MAIL + 10);
      // Synchronizing literal: the server refuses before asking for the bytes.
      raw.write(`a2 APPEND INBOX {${Buffer.byteLength(big)}}\r\n`);
      assert.match(await raw.until(/^(\+ .*|a2 .*)\r\n/m), /^a2 NO \[LIMIT\]/);
      // Non-synchronizing literal: the bytes are sent anyway, then refused.
      raw.write(`a3 APPEND INBOX {${Buffer.byteLength(big)}+}\r\n${big}\r\n`);
      assert.match(await raw.until(/^a3 .*\r\n/m), /^a3 NO \[LIMIT\]/);
      raw.write(`a4 APPEND INBOX {${Buffer.byteLength(small)}}\r\n`);
      await raw.until(/^\+ .*\r\n/m);
      raw.write(`${small}\r\n`);
      assert.match(await raw.until(/^a4 .*\r\n/m), /^a4 OK \[APPENDUID \d+ \d+\]/);
      assert.match(await raw.command('a5', 'STATUS INBOX (MESSAGES)'), /^a5 OK/);
    } finally {
      raw.close();
    }
    const client = await connect({ port: target.port, auth: { user: BOB.username, pass: BOB.password } });
    try {
      await assert.rejects(client.append('INBOX', message('big2', MAX_MAIL + 10)));
      const status = await client.status('INBOX', { messages: true });
      assert.ok(status, 'STATUS failed');
      assert.equal(status.messages, 1);
    } finally {
      await client.logout();
    }
  });

  test('self-signed TLS: implicit port works when trusting it, fails verification otherwise', async () => {
    assert.ok(source.sslPort && source.certPath);
    assert.deepEqual(source.endpoint('implicit'), { host: '127.0.0.1', port: source.sslPort, tls: 'implicit', acceptUntrustedCert: true });
    const auth = { user: ALICE.username, pass: ALICE.password };
    const ok = await connect({ port: source.sslPort, secure: true, tls: { rejectUnauthorized: false }, auth });
    assert.equal(ok.secureConnection, true);
    await ok.logout();
    await assert.rejects(connect({ port: source.sslPort, secure: true, auth }), /self[- ]signed|certificate/i);
    // STARTTLS on the plain port.
    const upgraded = await connect({ port: source.port, doSTARTTLS: true, tls: { rejectUnauthorized: false }, auth });
    assert.equal(upgraded.secureConnection, true);
    await upgraded.logout();
  });

  test('proxy: delay adds about 2*delayMs per round trip, dropAll closes the client', async () => {
    const proxy = await TcpProxy.start({ targetHost: '127.0.0.1', targetPort: source.port, delayMs: 0 });
    try {
      const client = await connect({ port: proxy.port, auth: { user: ALICE.username, pass: ALICE.password } });
      const rtt = async () => {
        const t0 = performance.now();
        await client.noop();
        return performance.now() - t0;
      };
      const base = await rtt();
      proxy.setDelay(60);
      const delayed = Math.min(await rtt(), await rtt());
      assert.ok(delayed >= 115, `NOOP round trip with 60 ms one-way delay took only ${delayed.toFixed(1)} ms`);
      assert.ok(delayed < 115 + base + 250, `NOOP round trip took ${delayed.toFixed(1)} ms`);
      proxy.setDelay(0);

      const closed = new Promise<void>((res) => client.once('close', () => res()));
      proxy.dropAll();
      await closed;
      assert.equal(client.usable, false);
      await assert.rejects(client.noop().then(() => {
        if (!client.usable) throw new Error('not usable');
      }));
      assert.equal(proxy.activeConnections, 0);
    } finally {
      await proxy.stop();
    }
  });

  test('proxy: refuseNew and dropAfterBytes', async () => {
    const proxy = await TcpProxy.start({ targetHost: '127.0.0.1', targetPort: source.port });
    const auth = { user: ALICE.username, pass: ALICE.password };
    try {
      proxy.refuseNew(true);
      await assert.rejects(connect({ port: proxy.port, auth }));
      assert.equal(proxy.connectionsRefused, 1);
      proxy.refuseNew(false);

      // Cut in the middle of the first command the client sends.
      proxy.dropAfterBytes(5);
      await assert.rejects(connect({ port: proxy.port, auth }));
      proxy.dropAfterBytes(null);

      const ok = await connect({ port: proxy.port, auth });
      await ok.logout();
      assert.equal(proxy.connectionsOpened, 3);
    } finally {
      await proxy.stop();
    }
  });

  test('stop() is idempotent and frees port and dir', async () => {
    const extra = await startDovecot({ name: 'extra', separator: '/', users: [BOB] });
    const raw = await RawImap.open(extra.port);
    raw.close();
    await Promise.all([extra.stop(), extra.stop()]);
    await extra.stop();
    assert.equal(existsSync(extra.dir), false);
    await assert.rejects(RawImap.open(extra.port));
  });
});

describe('tcp proxy', () => {
  /** A sink that hashes what it receives and answers with the hash when the client is done. */
  async function sink(opts: { read: boolean }): Promise<{ server: net.Server; port: number }> {
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      if (!opts.read) {
        s.pause();
        return;
      }
      const h = createHash('sha256');
      s.on('data', (d) => h.update(d));
      s.on('end', () => s.end(h.digest('hex')));
    });
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
    const addr = server.address() as net.AddressInfo;
    return { server, port: addr.port };
  }

  test('delay does not limit throughput, keeps order and forwards half-close', async () => {
    const { server, port } = await sink({ read: true });
    const proxy = await TcpProxy.start({ targetHost: '127.0.0.1', targetPort: port, delayMs: 25 });
    try {
      const data = randomBytes(24 * 1024 * 1024);
      const expected = createHash('sha256').update(data).digest('hex');
      const t0 = performance.now();
      const sock = net.connect({ host: '127.0.0.1', port: proxy.port, allowHalfOpen: true });
      let answer = '';
      sock.setEncoding('latin1');
      sock.on('data', (d: string) => (answer += d));
      const done = new Promise<void>((res, rej) => sock.on('end', () => res()).on('error', rej));
      // Many small writes: each chunk is delayed, none waits for the previous one.
      for (let off = 0; off < data.length; off += 64 * 1024) sock.write(data.subarray(off, off + 64 * 1024));
      sock.end();
      await done;
      const ms = performance.now() - t0;
      assert.equal(answer, expected);
      // 384 chunks at 25 ms each would take > 9 s if the delay were serialised.
      assert.ok(ms < 3000, `24 MiB through a 25 ms proxy took ${ms.toFixed(0)} ms`);
      assert.ok(ms >= 50, `round trip faster than 2 * delay: ${ms.toFixed(0)} ms`);
    } finally {
      await proxy.stop();
      server.close();
    }
  });

  test('backpressure: a receiver that does not read does not make the proxy buffer everything', async () => {
    const { server, port } = await sink({ read: false });
    const proxy = await TcpProxy.start({ targetHost: '127.0.0.1', targetPort: port, delayMs: 1 });
    const sock = net.connect({ host: '127.0.0.1', port: proxy.port });
    try {
      await new Promise<void>((res) => sock.once('connect', () => res()));
      const chunk = Buffer.alloc(1024 * 1024);
      for (let i = 0; i < 96; i++) sock.write(chunk);
      await new Promise((r) => setTimeout(r, 500));
      const held = proxy.bufferedBytes;
      // The rest stays in the sender's buffer (TCP pushes back).
      assert.ok(held < 40 * 1024 * 1024, `proxy holds ${held} bytes`);
      assert.ok(sock.writableLength > 40 * 1024 * 1024, `sender buffer ${sock.writableLength}`);
    } finally {
      sock.destroy();
      await proxy.stop();
      server.close();
    }
  });
});
