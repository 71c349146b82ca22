/**
 * Opens imapflow sessions from mailferry's endpoint/login types, with errors sorted into
 * connect / auth failures, and a watchdog: imapflow has no per-command timeout, so a
 * command that sees no progress for `stallMs` closes the connection (which fails the
 * command and lets the caller reconnect).
 */
import { ImapFlow, type ImapFlowOptions } from 'imapflow';
import type { Logger } from 'pino';
import { type ImapEndpoint, type ImapLogin, loginDisplayName } from './endpoint.js';
import { certificateSentence, errorCodes, explainAuthCode, explainConnectError, explainTlsHandshakeError } from '../endpoint/explain.js';
import { Deadline, reachServer } from '../endpoint/reach.js';
import { ImapAuthError, ImapConnectError, ImapConnectionLostError, isImapRefusal, isRetryable } from './errors.js';

export interface SessionOptions {
  endpoint: ImapEndpoint;
  login: ImapLogin;
  logger?: Logger;
  /** Close the connection when a command makes no progress for this long (ms). */
  stallMs?: number;
  /** Which side of a migration this is, carried by an ImapAuthError (worker/credential-breaker.ts). */
  side?: 'source' | 'target';
}

export function imapflowOptions(opts: SessionOptions): ImapFlowOptions {
  const { endpoint, login } = opts;
  const auth =
    login.method === 'login'
      ? { user: login.username, pass: login.password, loginMethod: 'LOGIN' }
      : // imapflow honours authzid only with AUTH=PLAIN (RFC 4616 §2 authorization identity).
        { user: login.authcid, pass: login.password, loginMethod: 'AUTH=PLAIN', ...(login.authzid ? { authzid: login.authzid } : {}) };
  return {
    host: endpoint.host,
    port: endpoint.port,
    secure: endpoint.tls === 'implicit',
    // RFC 3501 §6.2.1: 'starttls' requires the upgrade, 'none' must not attempt it.
    doSTARTTLS: endpoint.tls === 'starttls' ? true : endpoint.tls === 'none' ? false : undefined,
    tls: { rejectUnauthorized: !endpoint.acceptUntrustedCert },
    auth,
    logger: false,
    disableAutoIdle: true,
    // Copying is CPU-bound on the client; DEFLATE would cost more than it saves on a LAN.
    disableCompression: true,
    // As long as the greeting's: a port that drops packets, or a TLS handshake nobody
    // answers, is said after 15 s, not 30 (reachServer then says which).
    connectionTimeout: 15_000,
    // Servers greet at once; one that says nothing is usually waiting for a TLS hello
    // (implicit TLS asked of a STARTTLS/plain port is the other mistake, and fails fast).
    greetingTimeout: 15_000,
    socketTimeout: opts.stallMs ?? 120_000,
    qresync: false,
  };
}

function describe(opts: SessionOptions): string {
  return `${loginDisplayName(opts.login)} at ${opts.endpoint.host}:${opts.endpoint.port}`;
}

/**
 * Why a session could not be opened, in the words endpoint probes use (endpoint/explain.ts),
 * with what to change: the TLS mode or, for a certificate, the option that trusts it.
 */
function connectFailure(err: unknown, endpoint: ImapEndpoint, offeredStarttls: boolean, greeted: boolean, stallMs: number): string {
  const codes = errorCodes(err);
  const message = (err as Error)?.message ?? String(err);
  if (codes.includes('ClosedAfterConnectText') || codes.includes('ClosedAfterConnectTLS')) {
    // imapflow keeps the text of a BYE (RFC 3501 §7.1.5) the server closed with.
    const reason = (err as { reason?: unknown }).reason;
    return `the server closed the connection ${greeted ? 'after its greeting' : 'before greeting'}${typeof reason === 'string' && reason ? `: “${reason}”` : ''} (a limit of sessions per user or address, or the service going down; the server's log says which)`;
  }
  if (greeted && codes.includes('ETIMEOUT')) return `the server greeted, then stopped answering (nothing for ${Math.round(stallMs / 1000)} s): it may be overloaded, or its authentication backend may hang`;
  const cert = codes.map((c) => [c, certificateSentence(c)] as const).find(([, sentence]) => sentence !== null);
  if (cert) return `the certificate was rejected: ${cert[1]} (${cert[0]}); to trust it anyway, pass --insecure (sync, verify) or create the endpoint with --accept-untrusted-cert`;
  if (codes.some((c) => c.startsWith('ERR_SSL') || c.startsWith('ERR_TLS'))) return explainTlsHandshakeError(err, endpoint.host, endpoint.port);
  if (codes.includes('GREETING_TIMEOUT')) {
    return `no IMAP greeting within 15 s: ${endpoint.tls === 'implicit' ? 'the server may be overloaded' : 'the port probably expects TLS from the start (usually 993): use implicit TLS'} (GREETING_TIMEOUT)`;
  }
  if (/does not support STARTTLS/i.test(message)) {
    // imapflow words a refused STARTTLS (a NO: UW imapd without a certificate says "Server
    // certificate not installed") like a missing one; the capability list tells them apart.
    if (offeredStarttls) return 'the server offers STARTTLS but refused to start TLS (its TLS is not set up, e.g. no certificate): use implicit TLS if it has it (usually port 993), or no TLS on a network you trust';
    return 'the server does not offer STARTTLS (RFC 3501 §6.2.1): use implicit TLS (usually port 993), or no TLS on a network you trust';
  }
  if (codes.some((c) => c.startsWith('E'))) return explainConnectError(err, endpoint.host, endpoint.port);
  return `${codes[0] ? `${codes[0]} ` : ''}${message}`;
}

/** What the endpoint test's reach step finds wrong at `endpoint` (5 s at most), or null when it finds nothing. */
async function diagnose(endpoint: ImapEndpoint): Promise<string | null> {
  try {
    const r = await reachServer({ host: endpoint.host, port: endpoint.port, tls: endpoint.tls, acceptUntrustedCert: endpoint.acceptUntrustedCert ?? false }, new Deadline(5000));
    return r.ok ? null : (r.steps.find((step) => !step.ok)?.detail ?? null);
  } catch {
    return null;
  }
}

/** Connects and logs in, or throws ImapConnectError / ImapAuthError with a plain reason. */
export async function openSession(opts: SessionOptions): Promise<ImapFlow> {
  const client = new ImapFlow(imapflowOptions(opts));
  // imapflow emits 'error' once when the connection dies; without a listener Node would
  // crash the process. The pending command fails on its own, which is where we handle it.
  client.on('error', (err: Error) => opts.logger?.debug({ err: err.message }, 'imap connection error'));
  // imapflow says PREAUTH only as `authenticated === true`, which a login sets as well: its
  // greeting handler is watched instead (an internal method, looked up per call).
  let preauth = false;
  const greeted = client as unknown as { initialPREAUTH?: () => Promise<void> };
  const onPreauth = greeted.initialPREAUTH?.bind(client);
  if (onPreauth) greeted.initialPREAUTH = () => ((preauth = true), onPreauth());
  try {
    await client.connect();
  } catch (err) {
    const e = err as { authenticationFailed?: boolean; responseText?: string; serverResponseCode?: string; code?: string; message?: string };
    client.close();
    if (e.message === 'Login is disabled') {
      // imapflow's words for LOGINDISABLED (RFC 3501 §6.2.3): a setting to change, not a password to doubt.
      throw new ImapConnectError(
        `cannot log in as ${describe(opts)}: the server refuses LOGIN on this connection (LOGINDISABLED)${opts.endpoint.tls === 'none' ? ': it wants an encrypted connection first; use STARTTLS or implicit TLS' : ''}`,
      );
    }
    if (e.authenticationFailed || e.serverResponseCode === 'AUTHENTICATIONFAILED') {
      // Dovecot ends some refusals with "[host:date time]", a log reference that only makes
      // the text differ from one attempt to the next; the RFC 5530 code says more, in words.
      const text = (e.responseText ?? e.message ?? 'authentication failed').replace(/\s*\[[^\]\s]*:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\]\s*$/, '');
      const why = explainAuthCode(e.serverResponseCode);
      throw Object.assign(new ImapAuthError(`login failed for ${describe(opts)}: ${text}${why ? ` (${why})` : ''}`), opts.side ? { side: opts.side } : {}, e.serverResponseCode ? { code: e.serverResponseCode } : {});
    }
    const greeted = (client as unknown as { greetingReceived?: boolean }).greetingReceived === true;
    // No greeting, or no connection within the time: imapflow cannot say what answered
    // instead. The endpoint test's own look (a few seconds) can: an SSH or web server, a
    // TLS port spoken to in plain text, or nothing at all.
    const codes = errorCodes(err);
    const looked = !greeted && (codes.includes('GREETING_TIMEOUT') || codes.includes('CONNECT_TIMEOUT')) ? await diagnose(opts.endpoint) : null;
    // Retryable as imapflow's own error was (a session limit, a server going down): the
    // explanation replaces the words isRetryable would have recognised.
    throw Object.assign(
      new ImapConnectError(`cannot connect to ${opts.endpoint.host}:${opts.endpoint.port} (${opts.endpoint.tls === 'implicit' ? 'implicit TLS' : opts.endpoint.tls === 'starttls' ? 'STARTTLS' : 'no TLS'}): ${looked ?? connectFailure(err, opts.endpoint, client.capabilities?.has('STARTTLS') ?? false, greeted, opts.stallMs ?? 120_000)}`),
      isRetryable(err) ? { retryable: true } : {},
    );
  }
  // A PREAUTH greeting (RFC 3501 §7.1.4) logs the connection in as whoever the server
  // chose, without the login given: a UW imapd run under a user's own account answers so
  // for any --source-user. Whose mailbox that is cannot be told, so it is not used.
  if (preauth) {
    client.close();
    throw new ImapConnectError(
      `PREAUTH greeting: the server logged the connection in by itself instead of asking for ${describe(opts)}; mailferry cannot tell whose mailbox that is: connect to an IMAP service that asks for a login`,
    );
  }
  return client;
}

/**
 * Runs `fn` with a watchdog: if it does not settle within `ms`, the connection is closed,
 * which makes imapflow fail the command in flight, and the error is a connection loss.
 */
export async function withWatchdog<T>(client: ImapFlow, ms: number, what: string, fn: () => Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  let fired = false;
  const watchdog = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      fired = true;
      client.close();
      reject(new ImapConnectionLostError(`${what}: no answer within ${Math.round(ms / 1000)} s, connection closed`));
    }, ms);
  });
  try {
    return await Promise.race([fn(), watchdog]);
  } catch (err) {
    if (fired) throw new ImapConnectionLostError(`${what}: no answer within ${Math.round(ms / 1000)} s, connection closed`);
    // imapflow says only "Command failed" for a tagged NO or BAD (RFC 3501 §7.1): the
    // command's purpose and the server's own words are what an admin can act on.
    if (isImapRefusal(err) && err.message === 'Command failed') err.message = `${what}: the server answered ${err.responseStatus}${err.responseText ? ` ${err.responseText}` : ''}`;
    throw err;
  } finally {
    clearTimeout(timer);
  }
}
