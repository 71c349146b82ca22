/**
 * From a source `UserName` + password to a login that opens *the user's* mailbox, checked.
 *
 * The engine opens many source connections per mailbox (listing, copy lanes, reconnects);
 * it must not re-decide the mechanism or re-check each time. So this runs once per
 * mailbox, before the engine: it recognises the form (credentials.ts), asks the server's
 * capabilities when the choice depends on them, logs in, proves the session is the
 * user's (or, for UserRoot, that the root exists), logs out, and returns the `ImapLogin`
 * the engine then reuses for every connection.
 */
import { createHash } from 'node:crypto';
import type { ImapFlow } from 'imapflow';
import type { Logger } from 'pino';
import { type ImapEndpoint, type ImapLogin } from '../imap/endpoint.js';
import { ImapAuthError } from '../imap/errors.js';
import { openSession } from '../imap/imapflow-session.js';
import { RawConnection } from '../imap/raw-connection.js';
import { mapFolders, type ServerView } from '../sync/folder-map.js';
import { listMailboxFolders, personalNamespace } from '../sync/server-view.js';
import {
  type AuthPreference,
  type LoginAttempt,
  type LoginMethod,
  type SourceCredential,
  adminAloneLogin,
  adminOf,
  describeKind,
  loginPlan,
  mailboxUserOf,
  needsCapabilities,
  noLoginReason,
  parseSourceUserName,
  userRootSegments,
} from './credentials.js';
import { ImpersonationError, SourceLoginError, UserRootError, scrubSecrets } from './errors.js';
import { type FingerprintVerdict, type MailboxFingerprint, compareFingerprints, fingerprintSession } from './fingerprint.js';

export interface ResolveSourceLoginOptions {
  /** Courier-style: `userName` is the admin's own login, the user's folders are under this path. */
  userRoot?: string | undefined;
  /** Default 'auto' (SPEC §2). See {@link AuthPreference}. */
  auth?: AuthPreference;
  logger?: Logger;
  /** Share capability probes and the admin's own-mailbox fingerprint across the mailboxes of a batch. */
  cache?: SourceLoginCache;
  /** Close a connection whose command makes no progress for this long (ms). */
  stallMs?: number;
  /**
   * Hand the checked session over (`ResolvedSourceLogin.session`) instead of logging it
   * out: a sync that starts right after can use it as its first source session and save a
   * whole login (connect, greeting, capabilities, authentication: several round trips).
   */
  keepSession?: boolean;
}

/** How the session was confirmed to be the right one. */
export type SessionCheck =
  /** A plain user's own login: nothing was impersonated. */
  | 'own-login'
  /** UserRoot: folders exist under the root in the admin's view. */
  | 'user-root-found'
  | Exclude<FingerprintVerdict, 'same'>;

export interface ResolvedSourceLogin {
  /** Use this for every source connection of this mailbox. */
  login: ImapLogin;
  /** Whose mailbox it is (for UserRoot: the root's last segment). */
  mailboxUser: string;
  method: LoginMethod;
  credential: SourceCredential;
  check: SessionCheck;
  /** UserRoot only: the root as given, and the source folders found under it. */
  userRoot?: string;
  userRootFolders?: string[];
  /** With `keepSession`: the authenticated session the check used; the caller logs it out. */
  session?: ImapFlow;
}

/**
 * Capabilities per endpoint and the admin's own-mailbox fingerprint per admin, for a
 * while. A batch of hundreds of `user*admin` mailboxes then costs one admin-alone login
 * per TTL rather than one per mailbox (each a failed login where the admin cannot log in
 * alone, which lockout policies count). Safe to keep for minutes: capabilities do not
 * change, and the fingerprint uses what new mail does not move (see fingerprint.ts).
 * Memory only; keyed with a hash of the password, never the password.
 */
export class SourceLoginCache {
  private readonly entries = new Map<string, { at: number; value: Promise<unknown> }>();
  constructor(readonly ttlMs = 5 * 60_000) {}

  memo<T>(key: string, compute: () => Promise<T>): Promise<T> {
    const hit = this.entries.get(key);
    if (hit && Date.now() - hit.at < this.ttlMs) return hit.value as Promise<T>;
    const value = compute();
    this.entries.set(key, { at: Date.now(), value });
    // A failure (connection refused…) is not an answer worth keeping.
    value.catch(() => this.entries.get(key)?.value === value && this.entries.delete(key));
    return value;
  }
}

function endpointKey(e: ImapEndpoint): string {
  return `${e.host.toLowerCase()}:${e.port}:${e.tls}`;
}

function loginKey(l: ImapLogin): string {
  const who = l.method === 'login' ? `login\0${l.username}` : `plain\0${l.authcid}\0${l.authzid ?? ''}`;
  return `${who}\0${createHash('sha256').update(l.password).digest('hex')}`;
}

/** Pre-login capabilities (after STARTTLS when configured, RFC 3501 §6.2.1). */
async function capabilitiesOf(endpoint: ImapEndpoint): Promise<ReadonlySet<string>> {
  const conn = await RawConnection.connect(endpoint, { connectTimeoutMs: 30_000 });
  try {
    return new Set(conn.capabilities);
  } finally {
    await conn.logout().catch(() => conn.destroy());
  }
}

async function withSession<T>(endpoint: ImapEndpoint, login: ImapLogin, opts: ResolveSourceLoginOptions, fn: (s: ImapFlow) => Promise<T>, keep?: (s: ImapFlow) => void): Promise<T> {
  const session = await openSession({ endpoint, login, ...(opts.logger ? { logger: opts.logger } : {}), ...(opts.stallMs ? { stallMs: opts.stallMs } : {}) });
  let kept = false;
  try {
    const value = await fn(session);
    if (keep) {
      keep(session);
      kept = true;
    }
    return value;
  } finally {
    if (!kept) await session.logout().catch(() => session.close());
  }
}

/** openSession's auth message without its "login failed for … at host:port: " lead-in. */
function serverReason(err: Error): string {
  return err.message.replace(/^login failed for .*? at \S+: /, '');
}

/** How the attempt logs in, for messages: the user name as written, and the mechanism. */
function describeAttempt(cred: SourceCredential, attempt: LoginAttempt): string {
  const as = cred.kind === 'user-root' ? `"${cred.admin}"` : cred.kind === 'user' ? `"${cred.user}"` : `"${cred.raw}"`;
  return `${describeKind(cred.kind)} ${as} via ${attempt.method}`;
}

/**
 * Logs in as `userName` (any SPEC §2 form) and returns the login that opened the user's
 * mailbox, after making sure it is the user's. Throws:
 * - {@link SourceLoginError} (an ImapAuthError): refused, or no usable mechanism;
 * - {@link ImpersonationError}: the session is the admin's own mailbox;
 * - {@link UserRootError}: nothing under the UserRoot in the admin's view;
 * - CredentialFormatError: `userName`/`userRoot` unusable;
 * - ImapConnectError (and connection losses) as openSession raises them.
 * No message contains the password.
 */
export async function resolveSourceLogin(
  endpoint: ImapEndpoint,
  userName: string,
  password: string,
  opts: ResolveSourceLoginOptions = {},
): Promise<ResolvedSourceLogin> {
  const cred = parseSourceUserName(userName, { userRoot: opts.userRoot });
  const mailboxUser = mailboxUserOf(cred);
  const auth = opts.auth ?? 'auto';
  const where = `${endpoint.host}:${endpoint.port}`;
  const log = opts.logger?.child({ mailbox: mailboxUser });

  let caps: ReadonlySet<string> | undefined;
  if (needsCapabilities(cred, auth)) {
    const probe = () => capabilitiesOf(endpoint);
    caps = await (opts.cache ? opts.cache.memo(`caps\0${endpointKey(endpoint)}`, probe) : probe());
  }
  const plan = loginPlan(cred, password, caps, auth);
  if (plan.length === 0) {
    throw new SourceLoginError(`cannot log in to ${mailboxUser}'s mailbox at ${where} (${describeKind(cred.kind)}): ${noLoginReason(caps ?? [])}`, mailboxUser, 'none');
  }

  const failures: string[] = [];
  const codes = new Set<string>();
  let kept: ImapFlow | undefined;
  for (const attempt of plan) {
    let result: ResolvedSourceLogin;
    try {
      result = await withSession(endpoint, attempt.login, opts, async (session) => {
        const base = { login: attempt.login, mailboxUser, method: attempt.method, credential: cred };
        if (cred.kind === 'user-root') {
          const { folders, delimiter } = await checkUserRoot(session, cred, where);
          // The root's last segment, split as the server separates names ('#shared.alberta').
          const user = userRootSegments(cred.userRoot, delimiter ? [delimiter] : []).at(-1) ?? mailboxUser;
          return { ...base, mailboxUser: user, check: 'user-root-found' as const, userRoot: cred.userRoot, userRootFolders: folders };
        }
        const check = await checkNotAdminsOwn(session, cred, attempt, endpoint, password, opts);
        return { ...base, check };
      }, opts.keepSession ? (session) => (kept = session) : undefined);
    } catch (err) {
      // Refused credentials: try the next attempt. Everything else (connection, the
      // checks' own errors) is final.
      if (!(err instanceof ImapAuthError) || err instanceof SourceLoginError) throw err;
      failures.push(`${describeAttempt(cred, attempt)}: ${serverReason(err)}`);
      if (err.code) codes.add(err.code);
      log?.debug({ method: attempt.method }, 'source login refused');
      continue;
    }
    log?.debug({ method: result.method, check: result.check }, 'source login resolved');
    return kept ? { ...result, session: kept } : result;
  }
  const text = scrubSecrets(failures.join('; '), [password], [mailboxUser, ...('raw' in cred ? [cred.raw] : []), ...('admin' in cred ? [cred.admin] : [])]);
  const admin = adminOf(cred);
  const hint = admin === null ? '' : ` (the password is ${admin}'s; check it, and that ${admin} may open ${mailboxUser}'s mailbox)`;
  const refusal = new SourceLoginError(`cannot log in to ${mailboxUser}'s mailbox at ${where}: ${text}${hint}`, mailboxUser, plan.map((a) => a.method).join(', '));
  // One attempt that got as far as authorization proves the admin's password right.
  if (codes.has('AUTHORIZATIONFAILED')) refusal.code = 'AUTHORIZATIONFAILED';
  else if (codes.size === 1) refusal.code = [...codes][0]!;
  throw refusal;
}

/** The admin's own mailbox, or null when the admin cannot log in alone. */
async function adminFingerprint(endpoint: ImapEndpoint, login: ImapLogin, opts: ResolveSourceLoginOptions): Promise<MailboxFingerprint | null> {
  const look = async () => {
    try {
      return await withSession(endpoint, login, opts, fingerprintSession);
    } catch (err) {
      if (err instanceof ImapAuthError) return null;
      throw err;
    }
  };
  return opts.cache ? opts.cache.memo(`admin\0${endpointKey(endpoint)}\0${loginKey(login)}`, look) : look();
}

async function checkNotAdminsOwn(
  session: ImapFlow,
  cred: SourceCredential,
  attempt: LoginAttempt,
  endpoint: ImapEndpoint,
  password: string,
  opts: ResolveSourceLoginOptions,
): Promise<SessionCheck> {
  const adminLogin = adminAloneLogin(cred, attempt.login);
  if (adminLogin === null || cred.kind === 'user' || cred.kind === 'user-root') return 'own-login';
  const mine = await fingerprintSession(session);
  const admins = await adminFingerprint(endpoint, adminLogin, opts);
  const verdict = compareFingerprints(mine, admins);
  if (verdict !== 'same') return verdict;
  const adminName = adminLogin.method === 'login' ? adminLogin.username : adminLogin.authcid;
  throw new ImpersonationError(
    scrubSecrets(
      `the source session for ${cred.user} is the admin's own mailbox: logging in as "${cred.raw}" (${attempt.method}) at ` +
        `${endpoint.host}:${endpoint.port} shows the same folders, UIDVALIDITYs and first messages as "${adminName}" logging in alone, ` +
        `so the server ignored the impersonation. ${cred.user}'s mailbox was not migrated; check that "${cred.admin}" may act as other users on the source.`,
      [password],
      [cred.raw, cred.user, adminName],
    ),
    cred.user,
    cred.admin,
  );
}

type Namespaces = { personal: { prefix: string; delimiter: string | null }[]; other: { prefix: string; delimiter: string | null }[] | false; shared: { prefix: string; delimiter: string | null }[] | false };

function describeNamespaces(ns: Namespaces | undefined): string {
  if (!ns) return 'none reported';
  const part = (label: string, list: Namespaces['other']) => (list || []).map((n) => `${label} "${n.prefix}"`);
  return [...part('personal', ns.personal), ...part('other users', ns.other), ...part('shared', ns.shared)].join(', ') || 'none reported';
}

/**
 * UserRoot: the root must hold at least one folder in the admin's view — judged with the
 * engine's own folder mapping (mapFolders with this root), so "found" here means "the
 * engine will migrate something". NAMESPACE (RFC 2342) tells the admin in the error where
 * such roots can be: other users' (`users/` in Dovecot) or shared (Courier's `#shared.`).
 */
async function checkUserRoot(session: ImapFlow, cred: Extract<SourceCredential, { kind: 'user-root' }>, where: string): Promise<{ folders: string[]; delimiter: string | null }> {
  const ns = session.namespaces as Namespaces | undefined;
  // Not only `LIST "" "*"`: Courier leaves its `#shared.` virtual shared folders out of it.
  const listed = await listMailboxFolders(session, {}, cred.userRoot);
  const inbox = listed.find((f) => f.path.toUpperCase() === 'INBOX');
  // The same view the engine builds (mailbox-sync.ts), so the decision cannot differ.
  const view: ServerView = {
    folders: listed.map((f) => ({ path: f.path, delimiter: f.delimiter ?? null, flags: f.flags, specialUse: f.specialUse })),
    prefix: personalNamespace(session)?.prefix ?? '',
    delimiter: personalNamespace(session)?.delimiter ?? inbox?.delimiter ?? listed.find((f) => f.delimiter)?.delimiter ?? null,
  };
  const mapped = mapFolders(view, { folders: [], prefix: '', delimiter: '/' }, { userRoot: cred.userRoot });
  const found = mapped.filter((m) => m.selectable).map((m) => m.sourcePath);
  const segs = userRootSegments(cred.userRoot, view.delimiter ? [view.delimiter] : []);
  if (found.length > 0) return { folders: found, delimiter: view.delimiter };
  throw new UserRootError(
    `UserRoot "${cred.userRoot}" holds no folder in the view of "${cred.admin}" at ${where} (looked for ${segs.join(view.delimiter ?? '/')} and below; ` +
      `namespaces: ${describeNamespaces(ns)}). Check the path and that "${cred.admin}" has lookup and read rights on the user's folders.`,
    segs.at(-1) ?? mailboxUserOf(cred),
    cred.userRoot,
  );
}
