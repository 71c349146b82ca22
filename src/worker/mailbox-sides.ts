/**
 * A batch's mailbox turned into the two sides the engine works on: the source login
 * resolved and checked by src/auth (SPEC §2, admin credential forms included), and the
 * target reached through its admin credential acting as the mailbox's address. Shared by
 * the workers' syncs and `batch verify`, so both log in exactly the same way.
 */
import type { ImapFlow } from 'imapflow';
import type { Logger } from 'pino';
import { adminOf, parseSourceUserName } from '../auth/credentials.js';
import { scrubSecrets } from '../auth/errors.js';
import { type CredentialBreaker, credentialKey } from './credential-breaker.js';
import { resolveSourceLogin, SourceLoginCache } from '../auth/source-login.js';
import { type Impersonation, targetLogin } from '../endpoint/target-login.js';
import type { ImapEndpoint } from '../imap/endpoint.js';
import { credentialAccepted, credentialRefused, isRetryable } from '../imap/errors.js';
import { decryptSecret, type SecretKey } from '../secrets/index.js';
import type { BatchMailboxRow, BatchRow, EndpointRow } from '../store/schema.js';
import type { MailboxSide } from '../sync/options.js';

export function imapEndpointOf(row: Pick<EndpointRow, 'host' | 'port' | 'tls' | 'accept_untrusted_cert'>): ImapEndpoint {
  return { host: row.host, port: row.port, tls: row.tls, acceptUntrustedCert: row.accept_untrusted_cert === 1 };
}

export function impersonationOf(row: Pick<EndpointRow, 'impersonation' | 'separator'>): Impersonation {
  return row.impersonation === 'separator' ? { kind: 'separator', separator: row.separator ?? '*' } : { kind: 'sasl' };
}

/** Thrown for a mailbox that cannot be reached: the message is safe to store and show (no password). */
export class MailboxSyncError extends Error {
  override name = 'MailboxSyncError';
}

export interface MailboxSides {
  source: MailboxSide & { userRoot?: string };
  target: MailboxSide;
  /** With SideContext.keepSourceSession: the login check's session, for the sync to use first (SyncOptions.sourceSession). */
  sourceSession?: ImapFlow;
}

export interface SideContext {
  source: EndpointRow;
  target: EndpointRow;
  key: SecretKey;
  /** Capability probes and admin fingerprints shared by a batch's mailboxes (see src/auth/resolve.ts). */
  loginCache: SourceLoginCache;
  logger: Logger;
  stallMs?: number;
  /** Hand the login check's session to `fn` (a sync uses it and logs it out) rather than log it out: one login less per run. */
  keepSourceSession?: boolean;
  /** Keeps a refused source admin credential from being tried by every mailbox (credential-breaker.ts). */
  breaker?: CredentialBreaker;
}

type MailboxLogin = Pick<BatchMailboxRow, 'user_name' | 'password_enc' | 'user_root' | 'email_address'>;

/**
 * Logs in to the source (checking the session is really the user's), prepares the target
 * side, and runs `fn` with both. Whatever fails, in the login or in `fn`, leaves as a
 * MailboxSyncError whose message holds neither password.
 */
export async function withMailboxSides<T>(ctx: SideContext, mailbox: MailboxLogin, fn: (sides: MailboxSides) => Promise<T>): Promise<T> {
  const { target, key } = ctx;
  if (target.password_enc === null || target.admin_user === null) throw new MailboxSyncError(`target "${target.name}" has no stored admin login`);
  const password = decryptSecret(key, mailbox.password_enc);
  const adminPassword = decryptSecret(key, target.password_enc);
  let sides: MailboxSides | undefined;
  try {
    sides = await mailboxSides(ctx, mailbox, password, target.admin_user, adminPassword);
    return await fn(sides);
  } catch (err) {
    throw Object.assign(new MailboxSyncError(scrubSecrets((err as Error)?.message ?? String(err), [password, adminPassword], [mailbox.user_name, mailbox.email_address, target.admin_user])), { cause: err });
  } finally {
    // Normally the sync has logged it out; not when `fn` never got as far.
    const kept = sides?.sourceSession;
    if (kept?.usable) await kept.logout().catch(() => kept.close());
  }
}

/** Tries at resolving the source login when the connection, not the login, fails. */
const LOGIN_ATTEMPTS = 3;

async function mailboxSides(ctx: SideContext, mailbox: MailboxLogin, password: string, adminUser: string, adminPassword: string): Promise<MailboxSides> {
  const sourceEndpoint = imapEndpointOf(ctx.source);
  // A connection that drops or is refused while logging in (a busy source, a restart) is
  // tried again at once: failing the mailbox would park it for a backoff. A refused
  // password is not (isRetryable is false for it): trying again could lock the account.
  const admin = sourceAdminOf(mailbox);
  const key = admin === null ? null : credentialKey('source', sourceEndpoint.host, sourceEndpoint.port, admin, password);
  const leave = key !== null && ctx.breaker ? await ctx.breaker.enter(key, `the source admin login "${admin}"`) : () => undefined;
  let resolved;
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        resolved = await resolveLogin(ctx, sourceEndpoint, mailbox, password);
        if (key !== null) ctx.breaker?.succeeded(key);
        break;
      } catch (err) {
        if (key !== null && credentialAccepted(err)) ctx.breaker?.succeeded(key);
        else if (key !== null && credentialRefused(err)) ctx.breaker?.refused(key, mailbox.email_address);
        if (attempt >= LOGIN_ATTEMPTS || !isRetryable(err)) throw err;
        ctx.logger.warn({ err: (err as Error).message, attempt }, 'source login lost its connection; trying again');
        await new Promise((r) => setTimeout(r, 1000 * attempt));
      }
    }
  } finally {
    leave();
  }
  return {
    source: { endpoint: sourceEndpoint, login: resolved.login, ...(resolved.userRoot ? { userRoot: resolved.userRoot } : {}) },
    target: { endpoint: imapEndpointOf(ctx.target), login: targetLogin(adminUser, adminPassword, impersonationOf(ctx.target), mailbox.email_address) },
    ...(resolved.session ? { sourceSession: resolved.session } : {}),
  };
}

/** The admin of a SPEC §2 admin form of the mailbox's UserName, or null (the user's own login, or a name that does not parse). */
function sourceAdminOf(mailbox: MailboxLogin): string | null {
  try {
    return adminOf(parseSourceUserName(mailbox.user_name, { userRoot: mailbox.user_root ?? undefined }));
  } catch {
    return null;
  }
}

function resolveLogin(ctx: SideContext, sourceEndpoint: ImapEndpoint, mailbox: MailboxLogin, password: string) {
  return resolveSourceLogin(sourceEndpoint, mailbox.user_name, password, {
    userRoot: mailbox.user_root ?? undefined,
    // The endpoint's `plain` forces SASL PLAIN; its default `login` leaves the choice to
    // SPEC §2 (LOGIN, or PLAIN with an authorization identity for `user*admin`).
    auth: ctx.source.auth === 'plain' ? 'plain' : 'auto',
    cache: ctx.loginCache,
    logger: ctx.logger,
    ...(ctx.stallMs ? { stallMs: ctx.stallMs } : {}),
    ...(ctx.keepSourceSession ? { keepSession: true } : {}),
  });
}

function parseList(json: string | null): string[] | undefined {
  if (json === null) return undefined;
  const v = JSON.parse(json) as unknown;
  return Array.isArray(v) ? v.map(String) : undefined;
}

/** The batch's folder and date options, in the engine's terms (empty lists left out). */
export function batchScope(batch: Pick<BatchRow, 'exclude_json' | 'include_json' | 'received_after'>): { exclude?: string[]; include?: string[]; receivedAfter?: number } {
  const exclude = parseList(batch.exclude_json);
  const include = parseList(batch.include_json);
  return {
    ...(exclude?.length ? { exclude } : {}),
    ...(include?.length ? { include } : {}),
    ...(batch.received_after !== null ? { receivedAfter: batch.received_after } : {}),
  };
}

export { SourceLoginCache };
