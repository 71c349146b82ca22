/**
 * The connection test of a migration endpoint (SPEC §3: "tests the connection first
 * (reach, TLS, greeting, capabilities) and says plainly what failed; with a sample row it
 * also tests a login"), used by `mailferry endpoint create|test` and `target create|test`.
 *
 * Two connections:
 * 1. reach.ts connects, handshakes (implicit TLS) and reads the greeting by itself, so each
 *    of those steps is timed and explained on its own, certificates are judged in full,
 *    and a server of another kind (SMTP, HTTP…) is recognised.
 * 2. Then the IMAP session is opened exactly as a migration opens it, with RawConnection
 *    (src/imap/raw-connection.ts): STARTTLS where configured, CAPABILITY, and the login.
 *    The test thereby proves that mailferry's own client gets through with these
 *    settings, not merely that some client could.
 *
 * Secrets: the password goes only to RawConnection.login(), which never puts it in an
 * error; every text of the result is scrubbed of it once more before it is returned.
 */
import { scrubSecrets } from '../auth/errors.js';
import { loginDisplayName, type ImapEndpoint, type ImapLogin } from '../imap/endpoint.js';
import { ImapAuthError, ImapConnectionLostError, ImapGreetingByeError, RawConnection } from '../imap/raw-connection.js';
import { assessCapabilities } from './capabilities.js';
import { certificateSentence, describe, errorCodes, explainAuthCode, explainConnectError, explainTlsHandshakeError, showText } from './explain.js';
import { Deadline, reachServer } from './reach.js';
import type { ProbeOptions, ProbeResult, ProbeStep } from './types.js';

export const DEFAULT_PROBE_TIMEOUT_MS = 15_000;

/**
 * Test an endpoint step by step: connect, tls (implicit TLS), greeting, starttls (STARTTLS),
 * capabilities, and login when `login` is given. Never throws for a server-side problem:
 * every failure is a step with `ok: false` and a plain `detail`.
 */
export async function probeEndpoint(opts: ProbeOptions): Promise<ProbeResult> {
  const started = Date.now();
  const deadline = new Deadline(opts.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS);
  const endpoint: ImapEndpoint = {
    host: opts.host,
    port: opts.port,
    tls: opts.tls,
    acceptUntrustedCert: opts.acceptUntrustedCert ?? false,
  };
  const steps: ProbeStep[] = [];
  const warnings: string[] = [];
  let capabilities: string[] = [];
  const finish = (): ProbeResult => {
    const result: ProbeResult = {
      ok: steps.length > 0 && steps.every((s) => s.ok),
      steps,
      capabilities,
      warnings: [...new Set(warnings)],
      ms: Date.now() - started,
    };
    return opts.login ? scrubResult(result, opts.login) : result;
  };

  const bad = checkInput(opts);
  if (bad) {
    steps.push({ step: 'connect', ok: false, detail: bad, ms: 0 });
    return finish();
  }
  if (opts.tls === 'none') {
    warnings.push('no encryption: the password and all mail would cross the network in clear text; prefer SSL/implicit TLS or STARTTLS');
  }

  // 1. Reach the server and read its greeting.
  const reach = await reachServer(endpoint, deadline);
  steps.push(...reach.steps);
  warnings.push(...reach.warnings);
  if (!reach.ok || !reach.greeting) return finish();

  if (opts.tls === 'starttls') {
    const greetingCaps = reach.greeting.capabilities;
    if (reach.greeting.kind === 'PREAUTH') {
      // RFC 3501 §6.2.1: STARTTLS is only valid in the not-authenticated state.
      steps.push({ step: 'starttls', ok: false, detail: 'the server greets with PREAUTH (already authenticated), so STARTTLS is impossible (RFC 3501 §6.2.1); choose SSL/implicit TLS', ms: 0 });
      return finish();
    }
    if (greetingCaps && !greetingCaps.has('STARTTLS')) {
      steps.push({ step: 'starttls', ok: false, detail: noStartTlsSentence(opts.port), ms: 0 });
      return finish();
    }
  }

  // 2. The IMAP session as migrations open it.
  let t = Date.now();
  let conn: RawConnection;
  try {
    const budget = Math.max(1, deadline.remaining());
    conn = await RawConnection.connect(endpoint, { connectTimeoutMs: budget, idleTimeoutMs: budget });
  } catch (err) {
    const detail = explainSessionError(err, endpoint, deadline);
    if (opts.tls === 'starttls') steps.push({ step: 'starttls', ok: false, detail, ms: Date.now() - t });
    else steps.push({ step: 'capabilities', ok: false, detail: `could not open the IMAP session: ${detail}`, ms: Date.now() - t });
    return finish();
  }
  const limit = armDeadline(conn, deadline);
  try {
    if (opts.tls === 'starttls') {
      const verified = endpoint.acceptUntrustedCert
        ? 'the certificate was not verified ("accept untrusted certificate" is on)'
        : `the certificate is trusted and valid for ${opts.host}`;
      steps.push({ step: 'starttls', ok: true, detail: `STARTTLS offered and accepted, TLS negotiated; ${verified}`, ms: Date.now() - t });
      if (endpoint.acceptUntrustedCert) warnings.push('the STARTTLS certificate is not verified ("accept untrusted certificate" is on): the connection is encrypted but the server\'s identity is not checked');
    }

    // Capabilities (RFC 3501 §6.1.1). Asked again explicitly (RawConnection already knows
    // them) so that the step has its own timing and the list is fresh.
    t = Date.now();
    let caps: ReadonlySet<string>;
    try {
      caps = new Set(await conn.capability());
    } catch (err) {
      steps.push({ step: 'capabilities', ok: false, detail: limit.timedOut() ? timeLimitSentence(deadline, 'the CAPABILITY answer') : `CAPABILITY failed: ${describe(err)}`, ms: Date.now() - t });
      return finish();
    }
    capabilities = [...caps];
    const before = assessCapabilities(caps, conn.preauth);
    steps.push({ step: 'capabilities', ok: true, detail: `${caps.size} capabilities; ${before.summary}`, ms: Date.now() - t });
    warnings.push(...before.warnings);

    if (opts.login || conn.preauth) {
      t = Date.now();
      const r = await tryLogin(conn, opts.login, caps, opts, limit, deadline);
      steps.push({ ...r.step, ms: Date.now() - t });
      warnings.push(...r.warnings);
      if (r.step.ok) capabilities = [...conn.capabilities];
    }
    return finish();
  } finally {
    limit.clear();
    // Best effort and short: the result does not depend on a polite goodbye.
    await conn.logout(Math.min(500, deadline.remaining()));
  }
}

/** `login` undefined: only to say that a PREAUTH greeting cannot be used. */
async function tryLogin(
  conn: RawConnection,
  login: ImapLogin | undefined,
  caps: ReadonlySet<string>,
  opts: ProbeOptions,
  limit: DeadlineGuard,
  deadline: Deadline,
): Promise<{ step: Omit<ProbeStep, 'ms'>; warnings: string[] }> {
  const who = login ? loginDisplayName(login) : 'a login';
  const failed = (detail: string) => ({ step: { step: 'login' as const, ok: false, detail }, warnings: [] });
  if (conn.preauth || !login) {
    // As a sync refuses it (imapflow-session.ts): a test that passed here would be a batch
    // whose every mailbox fails.
    return failed(`the server logged the connection in by itself (PREAUTH greeting, RFC 3501 §7.1.4) instead of asking for ${who}: mailferry cannot tell whose mailbox that is; connect to an IMAP service that asks for a login`);
  }
  if (login.method === 'login' && caps.has('LOGINDISABLED')) {
    // RFC 3501 §6.2.3: a client MUST NOT send LOGIN when LOGINDISABLED is advertised.
    return failed(
      `the server refuses LOGIN on this connection (LOGINDISABLED, RFC 3501 §6.2.3)` +
        (opts.tls === 'none' ? ': it wants an encrypted connection first; choose STARTTLS or SSL/implicit TLS' : ''),
    );
  }
  if (login.method === 'plain' && !caps.has('AUTH=PLAIN')) {
    const offered = [...caps].filter((c) => c.startsWith('AUTH=')).map((c) => c.slice(5));
    return failed(
      `the server does not offer AUTHENTICATE PLAIN (RFC 4616) on this connection` +
        (offered.length ? ` (it offers ${offered.join(', ')})` : '') +
        (opts.tls === 'none' && caps.has('LOGINDISABLED') ? '; it wants an encrypted connection first: choose STARTTLS or SSL/implicit TLS' : ''),
    );
  }
  try {
    await conn.login(login);
  } catch (err) {
    if (err instanceof ImapAuthError) {
      const meaning = explainAuthCode(err.code) ?? 'the server refused the login';
      const said = err.serverText ? `; the server said: “${showText(err.serverText)}”` : '';
      return failed(`authentication failed for ${who}: ${meaning}${err.code ? ` (${err.code})` : ''}${said}`);
    }
    if (limit.timedOut()) return failed(timeLimitSentence(deadline, 'the login answer'));
    if (err instanceof ImapConnectionLostError) return failed(`the connection was lost during the login of ${who}: ${describe(err.cause ?? err)}`);
    return failed(`the login of ${who} failed: ${describe(err)}`);
  }
  const after = assessCapabilities(conn.capabilities, true);
  return {
    step: { step: 'login', ok: true, detail: `logged in as ${who}; after login: ${conn.capabilities.size} capabilities; ${after.summary}` },
    warnings: after.warnings,
  };
}

// ---------------------------------------------------------------------------------------

interface DeadlineGuard {
  timedOut(): boolean;
  clear(): void;
}

/** Drop the connection when the test's time is up, so no command can outlast the limit
 * (RawConnection's idle watchdog only fires on silence, not on a slow trickle). */
function armDeadline(conn: RawConnection, deadline: Deadline): DeadlineGuard {
  let fired = false;
  const timer = setTimeout(() => {
    fired = true;
    conn.destroy(new Error(`time limit of ${deadline.totalMs} ms reached`));
  }, deadline.remaining());
  timer.unref();
  return { timedOut: () => fired, clear: () => clearTimeout(timer) };
}

function timeLimitSentence(deadline: Deadline, waitingFor: string): string {
  return `timed out: the test's limit of ${deadline.totalMs} ms ran out while waiting for ${waitingFor}`;
}

function noStartTlsSentence(port: number): string {
  return (
    'the server does not offer STARTTLS (RFC 3501 §6.2.1): choose SSL/implicit TLS' +
    (port === 143 ? ' (usually port 993)' : '') +
    ', or no encryption if the network is trusted'
  );
}

/** Why RawConnection.connect() failed, in words. Its errors carry the socket or TLS error
 * as `cause`; the codes are looked up first, the message is the fallback. */
function explainSessionError(err: unknown, e: ImapEndpoint, deadline: Deadline): string {
  if (err instanceof ImapGreetingByeError) {
    return `the server refused the connection: “* BYE ${showText(err.serverText)}” (it may be overloaded, or limit connections from this address)`;
  }
  const codes = errorCodes(err);
  const cert = codes.find((c) => certificateSentence(c) !== null);
  if (cert) {
    // Node's hostname check error carries a reason naming both sides.
    const reason = findReason(err);
    return (
      `the certificate was rejected: ${certificateSentence(cert)}${reason ? ` (${reason})` : ''} (${cert}). ` +
      `Install a certificate from a trusted authority for ${e.host}, or, if you trust this server, turn on "accept untrusted certificate"`
    );
  }
  if (codes.some((c) => c.startsWith('ERR_SSL') || c.startsWith('ERR_TLS'))) return explainTlsHandshakeError(err, e.host, e.port);
  if (codes.some((c) => ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT'].includes(c))) {
    return explainConnectError(err, e.host, e.port);
  }
  const msg = err instanceof Error ? err.message : String(err);
  if (/does not offer STARTTLS/i.test(msg)) return noStartTlsSentence(e.port);
  if (/no greeting\/handshake within/i.test(msg) || deadline.remaining() === 0) return timeLimitSentence(deadline, 'the server');
  // "could not connect to host:port: …" → the part after the address.
  return msg.replace(/^could not connect to [^ ]+: /, '');
}

function findReason(err: unknown): string | undefined {
  for (let e: unknown = err, i = 0; e && typeof e === 'object' && i < 5; e = (e as { cause?: unknown }).cause, i++) {
    const r = (e as { reason?: unknown }).reason;
    if (typeof r === 'string' && r) return r;
  }
  return undefined;
}

function checkInput(o: ProbeOptions): string | null {
  if (!o.host || /\s/.test(o.host)) return `the server name ${JSON.stringify(o.host)} is not a host name or address`;
  if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535) return `port ${String(o.port)} is not a valid TCP port (1–65535)`;
  if (o.tls !== 'implicit' && o.tls !== 'starttls' && o.tls !== 'none') return `security must be implicit, starttls or none, not ${JSON.stringify(o.tls)}`;
  if (o.timeoutMs !== undefined && !(o.timeoutMs > 0)) return `the time limit must be a positive number of milliseconds`;
  return null;
}

/** Belt and braces: remove the password, in every form a server may echo it
 * (auth/errors.ts scrubSecrets), from every text of the result. */
function scrubResult(r: ProbeResult, login: ImapLogin): ProbeResult {
  // The whole SASL PLAIN response too (RFC 4616): a password too short to scrub by itself
  // is still hidden inside it.
  const plain = login.method === 'plain' ? [Buffer.from(`${login.authzid ?? ''}\0${login.authcid}\0${login.password}`, 'utf8').toString('base64').replace(/=+$/, '')] : [];
  const user = login.method === 'plain' ? login.authcid : login.username;
  const clean = (s: string): string => scrubSecrets(s, [login.password, ...plain], [user, ...(login.method === 'plain' && login.authzid ? [login.authzid] : [])]);
  return {
    ...r,
    steps: r.steps.map((s) => ({ ...s, detail: clean(s.detail) })),
    warnings: r.warnings.map(clean),
  };
}
