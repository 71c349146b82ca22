/**
 * The first half of the endpoint test: reach the server and see what answers. TCP connect
 * (with the DNS lookup), the TLS handshake for implicit TLS, and the first line the server
 * sends, each timed and explained on its own. No IMAP command is sent and no secret.
 *
 * Why not RawConnection for this part: `RawConnection.connect()` does connect, TLS,
 * greeting, STARTTLS and CAPABILITY as one step and exposes neither the socket nor the
 * greeting line. So it cannot time the steps apart, cannot show why an untrusted
 * certificate was untrusted when it was accepted anyway, and ignores a non-IMAP first line
 * such as SMTP's `220 …` (it only waits for `* …`, so an SMTP server looks like a silent
 * one). Everything that speaks IMAP (STARTTLS, CAPABILITY, LOGIN) is left to RawConnection
 * in probe.ts, so that the test exercises the client the migrations use.
 */
import net from 'node:net';
import tls from 'node:tls';

import type { TlsMode } from '../imap/endpoint.js';
import { certificateProblems, describeCertificate, explainConnectError, explainTlsHandshakeError } from './explain.js';
import { classifyGreeting, looksLikeTls } from './greeting.js';
import type { ProbeStep } from './types.js';

/** A point in time all steps share, so the whole test ends within its limit. */
export class Deadline {
  private readonly end: number;
  constructor(readonly totalMs: number) {
    this.end = Date.now() + totalMs;
  }
  remaining(): number {
    return Math.max(0, this.end - Date.now());
  }
}

export interface ReachOptions {
  host: string;
  port: number;
  tls: TlsMode;
  acceptUntrustedCert: boolean;
}

export interface ReachResult {
  ok: boolean;
  steps: ProbeStep[];
  warnings: string[];
  /** The greeting, when it was an IMAP `* OK` / `* PREAUTH`. */
  greeting?: { kind: 'OK' | 'PREAUTH'; capabilities?: ReadonlySet<string> };
}

/** Longest first line we wait for; real IMAP greetings with a capability list are < 1 KB. */
const MAX_GREETING_BYTES = 8192;

type Wait = { ok: true } | { ok: false; error?: unknown; timeout?: boolean; closed?: boolean };

/** Wait for `event` on a socket, or its error, close, or the time limit. */
function waitFor(socket: net.Socket, event: 'connect' | 'secureConnect', ms: number): Promise<Wait> {
  return new Promise<Wait>((resolve) => {
    const finish = (w: Wait): void => {
      clearTimeout(timer);
      socket.off(event, onEvent);
      socket.off('error', onError);
      socket.off('close', onClose);
      resolve(w);
    };
    const onEvent = (): void => finish({ ok: true });
    const onError = (error: Error): void => finish({ ok: false, error });
    const onClose = (): void => finish({ ok: false, closed: true });
    const timer = setTimeout(() => finish({ ok: false, timeout: true }), ms);
    socket.once(event, onEvent);
    socket.once('error', onError);
    socket.once('close', onClose);
  });
}

type FirstLine =
  | { line: string }
  | { timeout: true; raw: Buffer }
  | { closed: true; raw: Buffer; error?: unknown }
  | { tooLong: true; raw: Buffer };

/** Read up to the first LF (RFC 3501 §2.2 says CRLF; a bare LF is tolerated here). */
function readFirstLine(socket: net.Socket, ms: number): Promise<FirstLine> {
  return new Promise<FirstLine>((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let error: unknown;
    const raw = () => Buffer.concat(chunks);
    const finish = (r: FirstLine): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
      socket.pause();
      resolve(r);
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      size += chunk.length;
      const all = raw();
      const lf = all.indexOf(0x0a);
      if (lf >= 0) {
        const end = lf > 0 && all[lf - 1] === 0x0d ? lf - 1 : lf;
        finish({ line: all.toString('utf8', 0, end) });
      } else if (size > MAX_GREETING_BYTES) {
        finish({ tooLong: true, raw: all });
      }
    };
    const onError = (err: unknown): void => {
      error = err;
    };
    const onClose = (): void => finish(error === undefined ? { closed: true, raw: raw() } : { closed: true, raw: raw(), error });
    const timer = setTimeout(() => finish({ timeout: true, raw: raw() }), ms);
    socket.on('data', onData);
    socket.on('error', onError);
    socket.once('close', onClose);
    socket.resume();
  });
}

/**
 * Connect, (for implicit TLS) handshake and judge the certificate, read the greeting.
 * Always closes its socket before returning.
 */
export async function reachServer(o: ReachOptions, deadline: Deadline): Promise<ReachResult> {
  const steps: ProbeStep[] = [];
  const warnings: string[] = [];
  const where = `${o.host} port ${o.port}`;
  const fail = (step: ProbeStep['step'], started: number, detail: string): ReachResult => {
    steps.push({ step, ok: false, detail, ms: Date.now() - started });
    return { ok: false, steps, warnings };
  };

  // --- connect (DNS lookup + TCP handshake) -------------------------------------------
  let t = Date.now();
  let socket: net.Socket;
  try {
    socket = net.connect({ host: o.host, port: o.port });
  } catch (err) {
    // Synchronous throws: an invalid port or host argument.
    return fail('connect', t, explainConnectError(err, o.host, o.port));
  }
  // Each step listens for errors while it runs; this keeps an error between steps (or on
  // the TCP socket under TLS) from becoming an uncaught exception.
  socket.on('error', () => {});
  try {
    const budget = deadline.remaining();
    const c = await waitFor(socket, 'connect', budget);
    if (!c.ok) {
      if (c.timeout) {
        return fail('connect', t, `timed out after ${budget} ms: no answer from ${where} (a firewall may be dropping the packets, or the host is down)`);
      }
      return fail('connect', t, c.error !== undefined ? explainConnectError(c.error, o.host, o.port) : `the connection to ${where} closed while connecting`);
    }
    const addr = socket.remoteAddress;
    steps.push({
      step: 'connect',
      ok: true,
      detail: `connected to ${o.host}${addr && addr !== o.host ? ` (${addr})` : ''} port ${o.port}`,
      ms: Date.now() - t,
    });

    // --- TLS, for implicit TLS (RFC 8314 §3.3) ----------------------------------------
    if (o.tls === 'implicit') {
      t = Date.now();
      // Handshake without verification and judge the certificate here, so that every
      // problem is named (Node stops at the first) and an accepted one can still be shown.
      // Nothing secret travels over this connection.
      const secure = tls.connect({
        socket,
        // SNI must not be an IP address (RFC 6066 §3).
        ...(net.isIP(o.host) ? {} : { servername: o.host }),
        rejectUnauthorized: false,
      });
      secure.on('error', () => {});
      socket = secure;
      const budgetTls = deadline.remaining();
      const h = await waitFor(secure, 'secureConnect', budgetTls);
      if (!h.ok) {
        if (h.timeout) {
          return fail('tls', t, `timed out after ${budgetTls} ms: the server did not answer the TLS handshake (it may not use TLS on port ${o.port})`);
        }
        return fail('tls', t, explainTlsHandshakeError(h.error ?? new Error('connection closed'), o.host, o.port));
      }
      const cert = secure.getPeerCertificate(false);
      const identity = cert && Object.keys(cert).length ? tls.checkServerIdentity(o.host, cert) : new Error('no certificate');
      const judged = certificateProblems(secure.authorized ? null : secure.authorizationError, identity, cert, o.host);
      const proto = `${secure.getProtocol() ?? 'TLS'} (${secure.getCipher()?.name ?? 'unknown cipher'})`;
      const certText = cert && Object.keys(cert).length ? describeCertificate(cert) : 'no certificate';
      if (judged.problems.length === 0) {
        steps.push({ step: 'tls', ok: true, detail: `${proto}; trusted ${certText}`, ms: Date.now() - t });
      } else if (o.acceptUntrustedCert) {
        const why = judged.problems.join('; ');
        steps.push({
          step: 'tls',
          ok: true,
          detail: `${proto}; the certificate is NOT trusted: ${why}; accepted because "accept untrusted certificate" is on; ${certText}`,
          ms: Date.now() - t,
        });
        warnings.push(`untrusted TLS certificate accepted: ${why}; the connection is encrypted but the server's identity is not verified`);
      } else {
        return fail(
          'tls',
          t,
          `${judged.problems.join('; ')}. Install a certificate from a trusted authority for ${o.host}, or, if you trust this server, ` +
            `turn on "accept untrusted certificate" (${certText})`,
        );
      }
    }

    // --- greeting (RFC 3501 §7.1) ------------------------------------------------------
    t = Date.now();
    const budgetGreeting = deadline.remaining();
    const first = await readFirstLine(socket, budgetGreeting);
    if ('timeout' in first) {
      if (first.raw.length && looksLikeTls(first.raw)) {
        return fail('greeting', t, `the server on port ${o.port} speaks TLS from the start: choose SSL/implicit TLS`);
      }
      let hint: string;
      if (o.tls !== 'implicit' && o.port === 993) hint = 'port 993 normally uses SSL/implicit TLS: choose that security setting';
      else if (o.tls !== 'implicit') hint = 'it may expect TLS from the start (choose SSL/implicit TLS), be another kind of server that waits for the client (such as HTTP), or be overloaded';
      else hint = 'it may be another kind of server behind TLS (such as HTTPS), or be overloaded';
      const got = first.raw.length ? ` (it sent ${first.raw.length} bytes without a line end)` : '';
      return fail('greeting', t, `timed out after ${budgetGreeting} ms waiting for the greeting${got}: the server accepted the connection but sent no IMAP greeting, which an IMAP server sends at once; ${hint}`);
    }
    if ('tooLong' in first) {
      return fail('greeting', t, `not an IMAP server: it sent ${first.raw.length} bytes without a line end (an IMAP greeting is one short line)`);
    }
    if ('closed' in first) {
      if (first.raw.length && looksLikeTls(first.raw)) {
        return fail('greeting', t, `the server on port ${o.port} speaks TLS from the start: choose SSL/implicit TLS`);
      }
      const why = first.error !== undefined ? `: ${explainConnectError(first.error, o.host, o.port)}` : '';
      return fail('greeting', t, `the server closed the connection without a greeting${why} (it may refuse connections from this address, or not be an IMAP server)`);
    }
    const v = classifyGreeting(first.line);
    if (!v.imap) return fail('greeting', t, v.detail);
    if (v.kind === 'BYE') {
      return fail('greeting', t, `the server refused the connection: “* BYE ${v.text}” (it may be overloaded, in maintenance, or blocking this address)`);
    }
    const detail =
      v.kind === 'PREAUTH'
        ? `IMAP server, already authenticated by the server (PREAUTH): “${v.text}”`
        : `IMAP server ready: “${v.text}”`;
    steps.push({ step: 'greeting', ok: true, detail, ms: Date.now() - t });
    const greeting: ReachResult['greeting'] = v.capabilities ? { kind: v.kind, capabilities: v.capabilities } : { kind: v.kind };
    return { ok: true, steps, warnings, greeting };
  } finally {
    socket.destroy();
  }
}

