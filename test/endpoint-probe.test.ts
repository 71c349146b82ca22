/**
 * The endpoint connection test (src/endpoint): every step's plain failure reason, against
 * a real Dovecot with a self-signed certificate (implicit TLS and STARTTLS) and against
 * tiny scripted servers on loopback for what Dovecot will not do on demand (SMTP or HTTP
 * on the port, silence, BYE, LOGINDISABLED, expired or misnamed certificates).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls, { type PeerCertificate } from 'node:tls';

import { assessCapabilities } from '../src/endpoint/capabilities.js';
import { certificateProblems, explainConnectError, explainTlsHandshakeError } from '../src/endpoint/explain.js';
import { classifyGreeting } from '../src/endpoint/greeting.js';
import { probeEndpoint, type ProbeResult, type ProbeStep } from '../src/endpoint/index.js';
import { type DovecotServer, dovecotBinary, startDovecot } from '../src/lab/dovecot.js';

const HOST = '127.0.0.1';
const noDovecot = dovecotBinary() === null ? 'dovecot is not installed' : false;
const ALICE = { username: 'alice', password: 'Al1ce-s3cret-PW!' };

function step(r: ProbeResult, name: ProbeStep['step']): ProbeStep {
  const s = r.steps.find((x) => x.step === name);
  assert.ok(s, `no '${name}' step in ${JSON.stringify(r.steps, null, 1)}`);
  return s;
}

/** The steps' names and outcomes, e.g. "connect:ok tls:FAIL". */
function outline(r: ProbeResult): string {
  return r.steps.map((s) => `${s.step}:${s.ok ? 'ok' : 'FAIL'}`).join(' ');
}

/** A port on which nothing listens (bound once, then released). */
function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, HOST, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

interface Fake {
  port: number;
  close(): Promise<void>;
}

/** A loopback server running `onConnection` for each client. */
function fakeServer(onConnection: (sock: net.Socket) => void, server: net.Server = net.createServer()): Promise<Fake> {
  const sockets = new Set<net.Socket>();
  server.on(server instanceof tls.Server ? 'secureConnection' : 'connection', (sock: net.Socket) => {
    sockets.add(sock);
    sock.on('error', () => {});
    sock.on('close', () => sockets.delete(sock));
    onConnection(sock);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, HOST, () =>
      resolve({
        port: (server.address() as net.AddressInfo).port,
        close: () =>
          new Promise<void>((res) => {
            for (const s of sockets) s.destroy();
            server.close(() => res());
          }),
      }),
    );
  });
}

/** A minimal scripted IMAP server: greeting, CAPABILITY, LOGOUT; everything else NO. */
function fakeImap(greeting: string, caps: string): (sock: net.Socket) => void {
  return (sock) => {
    sock.write(`${greeting}\r\n`);
    let buf = '';
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        const [tag, cmd] = line.split(' ');
        if (cmd?.toUpperCase() === 'CAPABILITY') sock.write(`* CAPABILITY ${caps}\r\n${tag} OK done\r\n`);
        else if (cmd?.toUpperCase() === 'LOGOUT') sock.end(`* BYE bye\r\n${tag} OK done\r\n`);
        else sock.write(`${tag} NO not here\r\n`);
      }
    });
  };
}

/** Self-signed certificates made with openssl: one for another name, one long expired. */
function makeCerts(dir: string): { wrongName: { key: string; cert: string }; expired: { key: string; cert: string } } {
  const run = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  run(['req', '-x509', ...ec, '-keyout', 'wrong-key.pem', '-out', 'wrong-cert.pem', '-days', '30', '-subj', '/CN=mail.example.test', '-addext', 'subjectAltName=DNS:mail.example.test']);
  // `req -x509` cannot back-date; `ca -selfsign` takes explicit start and end dates.
  writeFileSync(path.join(dir, 'index.txt'), '');
  writeFileSync(path.join(dir, 'serial'), '01\n');
  writeFileSync(
    path.join(dir, 'ca.cnf'),
    '[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\ndefault_md = sha256\npolicy = p\ncopy_extensions = copy\nunique_subject = no\n[p]\ncommonName = supplied\n',
  );
  run(['req', '-new', ...ec, '-keyout', 'old-key.pem', '-out', 'old.csr', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost']);
  run(['ca', '-batch', '-config', 'ca.cnf', '-selfsign', '-keyfile', 'old-key.pem', '-in', 'old.csr', '-out', 'old-cert.pem', '-startdate', '20200101000000Z', '-enddate', '20200201000000Z', '-notext']);
  const read = (f: string) => readFileSync(path.join(dir, f), 'utf8');
  return {
    wrongName: { key: read('wrong-key.pem'), cert: read('wrong-cert.pem') },
    expired: { key: read('old-key.pem'), cert: read('old-cert.pem') },
  };
}

// =======================================================================================

describe('probeEndpoint against scripted servers', { concurrency: true }, () => {
  const fakes: Fake[] = [];
  let certDir = '';
  let certs: ReturnType<typeof makeCerts>;
  const start = async (handler: (sock: net.Socket) => void, server?: net.Server) => {
    const f = await fakeServer(handler, server);
    fakes.push(f);
    return f;
  };
  before(() => {
    certDir = mkdtempSync(path.join(os.tmpdir(), 'mailferry-probe-certs-'));
    certs = makeCerts(certDir);
  });
  after(async () => {
    await Promise.all(fakes.map((f) => f.close()));
    rmSync(certDir, { recursive: true, force: true });
  });

  it('a closed port fails "connect" with "connection refused"', async () => {
    const port = await closedPort();
    const r = await probeEndpoint({ host: HOST, port, tls: 'none' });
    assert.equal(r.ok, false);
    assert.equal(outline(r), 'connect:FAIL');
    assert.match(step(r, 'connect').detail, /^connection refused/);
  });

  it('an SMTP server on the port fails "greeting" with "not an IMAP server"', async () => {
    const smtp = await start((sock) => sock.write('220 smtp ready\r\n'));
    const r = await probeEndpoint({ host: HOST, port: smtp.port, tls: 'none' });
    assert.equal(outline(r), 'connect:ok greeting:FAIL');
    assert.match(step(r, 'greeting').detail, /^not an IMAP server: .*220 smtp ready.*SMTP/);
  });

  it('an HTTP server on the port fails "greeting" with "not an IMAP server"', async () => {
    const http = await start((sock) => sock.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'));
    const r = await probeEndpoint({ host: HOST, port: http.port, tls: 'none' });
    assert.equal(outline(r), 'connect:ok greeting:FAIL');
    assert.match(step(r, 'greeting').detail, /^not an IMAP server: .*HTTP/);
  });

  it('a server that accepts but never greets times out within timeoutMs', async () => {
    const silent = await start(() => {});
    const timeoutMs = 700;
    const t0 = Date.now();
    const r = await probeEndpoint({ host: HOST, port: silent.port, tls: 'none', timeoutMs });
    const elapsed = Date.now() - t0;
    assert.equal(outline(r), 'connect:ok greeting:FAIL');
    assert.match(step(r, 'greeting').detail, /^timed out after \d+ ms waiting for the greeting/);
    assert.ok(elapsed >= timeoutMs - 50 && elapsed < timeoutMs + 400, `took ${elapsed} ms for a ${timeoutMs} ms limit`);
  });

  it('a server that answers "* BYE" fails "greeting" with its text', async () => {
    const bye = await start((sock) => sock.end('* BYE Too many connections from your IP\r\n'));
    const r = await probeEndpoint({ host: HOST, port: bye.port, tls: 'none' });
    assert.equal(outline(r), 'connect:ok greeting:FAIL');
    assert.match(step(r, 'greeting').detail, /refused the connection: “\* BYE Too many connections from your IP”/);
  });

  it('a PREAUTH greeting fails the test, with or without a sample login: a sync cannot use it', async () => {
    const pre = await start(fakeImap('* PREAUTH IMAP4rev1 logged in as alice', 'IMAP4rev1'));
    for (const login of [undefined, { method: 'login' as const, username: 'bob', password: 'pw-1' }]) {
      const r = await probeEndpoint({ host: HOST, port: pre.port, tls: 'none', ...(login ? { login } : {}) });
      assert.equal(r.ok, false);
      assert.equal(outline(r), 'connect:ok greeting:ok capabilities:ok login:FAIL');
      assert.match(step(r, 'login').detail, /PREAUTH greeting.*cannot tell whose mailbox/);
    }
  });

  it('a server without STARTTLS fails "starttls" with a plain reason', async () => {
    const noTls = await start(fakeImap('* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi', 'IMAP4rev1 AUTH=PLAIN'));
    const r = await probeEndpoint({ host: HOST, port: noTls.port, tls: 'starttls' });
    assert.equal(outline(r), 'connect:ok greeting:ok starttls:FAIL');
    assert.match(step(r, 'starttls').detail, /does not offer STARTTLS/);
    // Also when the greeting carries no capability list (RawConnection asks and refuses).
    const noTls2 = await start(fakeImap('* OK hi', 'IMAP4rev1 AUTH=PLAIN'));
    const r2 = await probeEndpoint({ host: HOST, port: noTls2.port, tls: 'starttls' });
    assert.equal(outline(r2), 'connect:ok greeting:ok starttls:FAIL');
    assert.match(step(r2, 'starttls').detail, /does not offer STARTTLS/);
  });

  it('LOGINDISABLED fails "login" without sending LOGIN, and a server without IMAP4rev1 is warned about', async () => {
    const seen: string[] = [];
    const srv = await start((sock) => {
      sock.on('data', (d: Buffer) => seen.push(d.toString('latin1')));
      fakeImap('* OK hi', 'LOGINDISABLED STARTTLS')(sock);
    });
    const r = await probeEndpoint({ host: HOST, port: srv.port, tls: 'none', login: { method: 'login', username: 'bob', password: 'bob-password-123' } });
    assert.equal(outline(r), 'connect:ok greeting:ok capabilities:ok login:FAIL');
    assert.match(step(r, 'login').detail, /LOGINDISABLED.*encrypted connection first/);
    assert.ok(r.warnings.some((w) => /neither IMAP4rev1/.test(w)), r.warnings.join('\n'));
    assert.ok(r.warnings.some((w) => /no encryption/.test(w)));
    assert.ok(!seen.join('').includes('bob-password-123'), 'the password went to the server');
  });

  it('implicit TLS against a plain-text port fails "tls" with a hint to use STARTTLS/plain', async () => {
    const plain = await start(fakeImap('* OK plain server', 'IMAP4rev1'));
    const r = await probeEndpoint({ host: HOST, port: plain.port, tls: 'implicit' });
    assert.equal(outline(r), 'connect:ok tls:FAIL');
    assert.match(step(r, 'tls').detail, /does not speak TLS from the start/);
  });

  it('a certificate for another name fails "tls" naming both self-signed and the name mismatch', async () => {
    const srv = await start(fakeImap('* OK tls fake', 'IMAP4rev1'), tls.createServer(certs.wrongName));
    const r = await probeEndpoint({ host: HOST, port: srv.port, tls: 'implicit' });
    assert.equal(outline(r), 'connect:ok tls:FAIL');
    const d = step(r, 'tls').detail;
    assert.match(d, /self-signed/);
    assert.match(d, /is for mail\.example\.test, not for 127\.0\.0\.1 \(name mismatch\)/);
    // Accepted on request, but still reported.
    const ok = await probeEndpoint({ host: HOST, port: srv.port, tls: 'implicit', acceptUntrustedCert: true });
    assert.equal(outline(ok), 'connect:ok tls:ok greeting:ok capabilities:ok');
    assert.match(step(ok, 'tls').detail, /NOT trusted.*name mismatch.*accepted/);
    assert.ok(ok.warnings.some((w) => /untrusted TLS certificate accepted/.test(w)));
  });

  it('an expired certificate fails "tls" with its expiry date', async () => {
    const srv = await start(fakeImap('* OK tls fake', 'IMAP4rev1'), tls.createServer(certs.expired));
    const r = await probeEndpoint({ host: HOST, port: srv.port, tls: 'implicit' });
    assert.equal(outline(r), 'connect:ok tls:FAIL');
    assert.match(step(r, 'tls').detail, /expired on 2020-02-01/);
  });

  it('refuses nonsense input without touching the network', async () => {
    const r = await probeEndpoint({ host: HOST, port: 70000, tls: 'none' });
    assert.equal(outline(r), 'connect:FAIL');
    assert.match(step(r, 'connect').detail, /not a valid TCP port/);
  });
});

describe('probeEndpoint against Dovecot with a self-signed certificate', { skip: noDovecot, concurrency: true }, () => {
  let dovecot: DovecotServer;
  before(async () => {
    // A special-use folder makes Dovecot announce SPECIAL-USE (RFC 6154).
    dovecot = await startDovecot({ name: 'probe', separator: '/', users: [ALICE], tls: 'selfsigned', specialUse: { '\\Sent': 'Sent' } });
  });
  after(async () => {
    await dovecot?.stop();
  });

  it('implicit TLS without "accept untrusted" fails "tls" saying self-signed', async () => {
    const r = await probeEndpoint({ host: HOST, port: dovecot.sslPort!, tls: 'implicit' });
    assert.equal(r.ok, false);
    assert.equal(outline(r), 'connect:ok tls:FAIL');
    assert.match(step(r, 'tls').detail, /^the certificate is self-signed/);
  });

  it('implicit TLS with "accept untrusted" passes every step', async () => {
    const r = await probeEndpoint({ host: HOST, port: dovecot.sslPort!, tls: 'implicit', acceptUntrustedCert: true });
    assert.equal(outline(r), 'connect:ok tls:ok greeting:ok capabilities:ok');
    assert.equal(r.ok, true);
    assert.match(step(r, 'tls').detail, /TLSv1\.[23].*NOT trusted: the certificate is self-signed.*SHA-256 fingerprint/);
    assert.match(step(r, 'greeting').detail, /IMAP server ready/);
    assert.ok(r.capabilities.includes('IMAP4REV1'));
    for (const s of r.steps) assert.ok(s.ms >= 0 && s.ms < 5000);
  });

  it('STARTTLS without "accept untrusted" fails "starttls" saying self-signed', async () => {
    const r = await probeEndpoint({ host: HOST, port: dovecot.port, tls: 'starttls' });
    assert.equal(outline(r), 'connect:ok greeting:ok starttls:FAIL');
    assert.match(step(r, 'starttls').detail, /self-signed/);
  });

  it('STARTTLS with "accept untrusted" and a login passes, listing the capabilities after login', async () => {
    const r = await probeEndpoint({ host: HOST, port: dovecot.port, tls: 'starttls', acceptUntrustedCert: true, login: { method: 'login', ...ALICE } });
    assert.equal(outline(r), 'connect:ok greeting:ok starttls:ok capabilities:ok login:ok');
    assert.equal(r.ok, true);
    assert.match(step(r, 'starttls').detail, /STARTTLS offered and accepted/);
    assert.match(step(r, 'login').detail, /^logged in as alice; after login: \d+ capabilities; IMAP4rev1; extensions that speed up or secure a migration: LITERAL\+, UIDPLUS, CONDSTORE, SPECIAL-USE, LIST-STATUS$/);
    assert.match(step(r, 'capabilities').detail, /before login/);
    for (const c of ['IMAP4REV1', 'UIDPLUS', 'CONDSTORE', 'LITERAL+', 'SPECIAL-USE', 'LIST-STATUS']) {
      assert.ok(r.capabilities.includes(c), `${c} missing from ${r.capabilities.join(' ')}`);
    }
    assert.ok(!r.capabilities.includes('STARTTLS'), 'capabilities should be the post-login list');
    assert.ok(!JSON.stringify(r).includes(ALICE.password));
  });

  it('a correct login over plain IMAP passes; SASL PLAIN too', async () => {
    const r = await probeEndpoint({ host: HOST, port: dovecot.port, tls: 'none', login: { method: 'login', ...ALICE } });
    assert.equal(outline(r), 'connect:ok greeting:ok capabilities:ok login:ok');
    assert.ok(r.warnings.some((w) => /no encryption/.test(w)));
    const p = await probeEndpoint({ host: HOST, port: dovecot.sslPort!, tls: 'implicit', acceptUntrustedCert: true, login: { method: 'plain', authcid: ALICE.username, password: ALICE.password } });
    assert.equal(outline(p), 'connect:ok tls:ok greeting:ok capabilities:ok login:ok');
    assert.ok(p.capabilities.includes('UIDPLUS'));
  });

  it('a wrong password fails "login" with "authentication failed", and the password is nowhere in the result', async () => {
    const wrong = 'Wr0ng-Pa55word-xyz';
    for (const login of [
      { method: 'login' as const, username: 'alice', password: wrong },
      { method: 'plain' as const, authcid: 'alice', password: wrong },
    ]) {
      const r = await probeEndpoint({ host: HOST, port: dovecot.sslPort!, tls: 'implicit', acceptUntrustedCert: true, login });
      assert.equal(r.ok, false);
      assert.equal(outline(r), 'connect:ok tls:ok greeting:ok capabilities:ok login:FAIL');
      assert.match(step(r, 'login').detail, /^authentication failed for alice: wrong user name or password \(AUTHENTICATIONFAILED\)/);
      const json = JSON.stringify(r);
      assert.ok(!json.includes(wrong), json);
      assert.ok(!json.includes(Buffer.from(wrong).toString('base64').replace(/=+$/, '')));
    }
  });

  it('plain IMAP on the implicit-TLS port times out at the greeting with a hint', async () => {
    const r = await probeEndpoint({ host: HOST, port: dovecot.sslPort!, tls: 'none', timeoutMs: 600 });
    assert.equal(outline(r), 'connect:ok greeting:FAIL');
    assert.match(step(r, 'greeting').detail, /^timed out .*choose SSL\/implicit TLS/);
  });
});

// =======================================================================================

describe('probe explanations', () => {
  it('classifies first lines', () => {
    assert.deepEqual(classifyGreeting('* OK [CAPABILITY IMAP4rev1 STARTTLS] ready'), {
      imap: true,
      kind: 'OK',
      text: 'ready',
      capabilities: new Set(['IMAP4REV1', 'STARTTLS']),
    });
    assert.equal((classifyGreeting('* preauth hello') as { kind: string }).kind, 'PREAUTH');
    assert.equal((classifyGreeting('* BYE go away') as { kind: string }).kind, 'BYE');
    const cases: Array<[string, RegExp]> = [
      ['220 mx.example.org ESMTP Postfix', /SMTP/],
      ['220-mx.example.org ESMTP', /SMTP/],
      ['220 ProFTPD Server (FTP) ready', /FTP/],
      ['+OK POP3 ready', /POP3/],
      ['SSH-2.0-OpenSSH_9.6', /SSH/],
      ['HTTP/1.1 400 Bad Request', /HTTP/],
      ['* NO maybe later', /not an IMAP greeting/],
      ['\x00\x01garbage', /not an IMAP server: its first line was “\?\?garbage”/],
    ];
    for (const [line, re] of cases) {
      const v = classifyGreeting(line);
      assert.equal(v.imap, false, line);
      assert.match((v as { detail: string }).detail, re);
    }
  });

  it('explains socket errors', () => {
    const e = (code: string) => Object.assign(new Error(`x ${code}`), { code });
    assert.match(explainConnectError(e('ENOTFOUND'), 'imap.example.invalid', 993), /^host not found: DNS has no address for imap\.example\.invalid/);
    assert.match(explainConnectError(e('ECONNREFUSED'), 'h', 1), /^connection refused/);
    assert.match(explainConnectError(e('ETIMEDOUT'), 'h', 1), /^timed out/);
    assert.match(explainConnectError(e('EHOSTUNREACH'), 'h', 1), /^no route to h/);
    // Node 20's happy-eyeballs connect wraps one error per address in an AggregateError.
    assert.match(explainConnectError(new AggregateError([e('ECONNREFUSED'), e('ECONNREFUSED')]), 'localhost', 1), /^connection refused/);
    assert.match(explainTlsHandshakeError(e('ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION'), 'h', 993), /no common TLS version/);
    assert.match(explainTlsHandshakeError(e('DEPTH_ZERO_SELF_SIGNED_CERT'), 'h', 993), /self-signed/);
  });

  it('names every certificate problem, including a pure name mismatch', () => {
    const cert = {
      subject: { CN: 'mail.example.org' },
      issuer: { CN: 'Some CA' },
      subjectaltname: 'DNS:mail.example.org, DNS:imap.example.org',
      valid_from: 'Jan  1 00:00:00 2020 GMT',
      valid_to: 'Jan  1 00:00:00 2021 GMT',
    } as unknown as PeerCertificate;
    const now = new Date('2020-06-01T00:00:00Z');
    const mismatch = certificateProblems(null, tls.checkServerIdentity('imap.other.test', cert), cert, 'imap.other.test', now);
    assert.deepEqual(mismatch.codes, ['ERR_TLS_CERT_ALTNAME_INVALID']);
    assert.equal(mismatch.problems[0], 'the certificate is for mail.example.org, imap.example.org, not for imap.other.test (name mismatch)');
    const fine = certificateProblems(null, tls.checkServerIdentity('imap.example.org', cert), cert, 'imap.example.org', now);
    assert.deepEqual(fine.problems, []);
    const later = certificateProblems('CERT_HAS_EXPIRED', undefined, cert, 'imap.example.org', new Date('2022-01-01T00:00:00Z'));
    assert.deepEqual(later.problems, ['the certificate expired on 2021-01-01']);
    const early = certificateProblems(null, undefined, cert, 'imap.example.org', new Date('2019-01-01T00:00:00Z'));
    assert.match(early.problems[0]!, /only valid from 2020-01-01/);
  });

  it('judges capability lists, before login leniently', () => {
    const pre = assessCapabilities(new Set(['IMAP4REV1', 'STARTTLS', 'AUTH=PLAIN', 'LOGINDISABLED']), false);
    assert.equal(pre.imap, true);
    assert.deepEqual(pre.warnings, []);
    assert.equal(pre.loginDisabled, true);
    assert.deepEqual(pre.authMechanisms, ['PLAIN']);
    const post = assessCapabilities(new Set(['IMAP4REV2', 'LITERAL-', 'UIDPLUS']), true);
    assert.deepEqual(post.present, ['LITERAL-', 'UIDPLUS']);
    assert.deepEqual(post.absent, ['CONDSTORE', 'SPECIAL-USE', 'LIST-STATUS']);
    assert.equal(post.warnings.length, 3);
    assert.match(post.summary, /^IMAP4rev2; extensions that speed up or secure a migration: LITERAL-, UIDPLUS; not announced: CONDSTORE, SPECIAL-USE, LIST-STATUS$/);
    assert.match(assessCapabilities(new Set(['X']), true).warnings[0]!, /neither IMAP4rev1/);
  });
});
