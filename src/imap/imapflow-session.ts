/**
 * Opens imapflow sessions from mailferry's endpoint/login types, with errors sorted into
 * connect / auth failures, and a watchdog: imapflow has no per-command timeout, so a
 * command that sees no progress for `stallMs` closes the connection (which fails the
 * command and lets the caller reconnect).
 */
import { ImapFlow, type ImapFlowOptions } from 'imapflow';
import type { Logger } from 'pino';
import { type ImapEndpoint, type ImapLogin, loginDisplayName } from './endpoint.js';
import { ImapAuthError, ImapConnectError, ImapConnectionLostError } from './errors.js';

export interface SessionOptions {
  endpoint: ImapEndpoint;
  login: ImapLogin;
  logger?: Logger;
  /** Close the connection when a command makes no progress for this long (ms). */
  stallMs?: number;
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
    connectionTimeout: 30_000,
    greetingTimeout: 30_000,
    socketTimeout: opts.stallMs ?? 120_000,
    qresync: false,
  };
}

function describe(opts: SessionOptions): string {
  return `${loginDisplayName(opts.login)} at ${opts.endpoint.host}:${opts.endpoint.port}`;
}

/** Connects and logs in, or throws ImapConnectError / ImapAuthError with a plain reason. */
export async function openSession(opts: SessionOptions): Promise<ImapFlow> {
  const client = new ImapFlow(imapflowOptions(opts));
  // imapflow emits 'error' once when the connection dies; without a listener Node would
  // crash the process. The pending command fails on its own, which is where we handle it.
  client.on('error', (err: Error) => opts.logger?.debug({ err: err.message }, 'imap connection error'));
  try {
    await client.connect();
  } catch (err) {
    const e = err as { authenticationFailed?: boolean; responseText?: string; serverResponseCode?: string; code?: string; message?: string };
    client.close();
    if (e.authenticationFailed || e.serverResponseCode === 'AUTHENTICATIONFAILED') {
      throw new ImapAuthError(`login failed for ${describe(opts)}: ${e.responseText ?? e.message ?? 'authentication failed'}`);
    }
    throw new ImapConnectError(`cannot connect to ${opts.endpoint.host}:${opts.endpoint.port} (${opts.endpoint.tls}): ${e.code ? `${e.code} ` : ''}${e.message ?? String(err)}`);
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
    throw err;
  } finally {
    clearTimeout(timer);
  }
}
