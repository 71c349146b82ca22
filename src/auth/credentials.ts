/**
 * The source `UserName` forms of SPEC §2, recognised from the string the admin wrote, and
 * how each one logs in. Pure: no I/O, so the decisions are testable against any
 * capability set.
 *
 * | form                         | kind         | login                                        |
 * |------------------------------|--------------|----------------------------------------------|
 * | `alice`                      | `user`       | LOGIN verbatim (RFC 3501 §6.2.3)             |
 * | `alice*admin`                | `sasl-admin` | AUTHENTICATE PLAIN authzid=alice authcid=admin (RFC 4616 §2) when AUTH=PLAIN is offered, else LOGIN verbatim (Dovecot's master-user separator) |
 * | `Domain/Admin/User`          | `exchange`   | LOGIN verbatim                               |
 * | `#user@domain#admin#`        | `mirapoint`  | LOGIN verbatim                               |
 * | admin's own name + UserRoot  | `user-root`  | LOGIN as the admin                           |
 */
import type { ImapLogin } from '../imap/endpoint.js';
import { CredentialFormatError } from './errors.js';

export type SourceCredential =
  /** The user's own name and password: nothing to impersonate. */
  | { kind: 'user'; user: string }
  /** `user*admin`: Dovecot master users, and any SASL server with authorization identities. */
  | { kind: 'sasl-admin'; raw: string; user: string; admin: string }
  /** `Domain/Admin/User`: Exchange's "log in as Admin, open User's mailbox". */
  | { kind: 'exchange'; raw: string; domain: string; admin: string; user: string }
  /** `#user@domain#admin#`: Mirapoint's admin login. */
  | { kind: 'mirapoint'; raw: string; user: string; admin: string }
  /** Courier and others without admin logins: the admin's own login, the user's folders under `userRoot`. */
  | { kind: 'user-root'; admin: string; userRoot: string };

export type CredentialKind = SourceCredential['kind'];

/** How a login is performed, as shown to the admin (and returned by the resolver). */
export type LoginMethod =
  | 'LOGIN'
  | 'AUTHENTICATE PLAIN'
  | 'AUTHENTICATE PLAIN with authorization identity'
  | 'LOGIN with master-user separator'
  | 'LOGIN Exchange admin string'
  | 'LOGIN Mirapoint admin string'
  | 'LOGIN as admin with UserRoot';

/**
 * `auto` (default): SPEC §2. `login`: always LOGIN with the name as the form implies
 * (verbatim; the admin's name for UserRoot). `plain`: always AUTHENTICATE PLAIN — with
 * the authorization identity for `user*admin`, with the whole name as authentication
 * identity otherwise — also when the server does not advertise it.
 */
export type AuthPreference = 'auto' | 'login' | 'plain';

export interface LoginAttempt {
  login: ImapLogin;
  method: LoginMethod;
}

// Names are printable, without surrounding blanks. Inner spaces are left to the server
// (some allow them); control characters never reach one.
const CONTROL = /[\x00-\x1f\x7f]/;

/** `Domain/Admin/User`: exactly three non-empty parts without blanks or slashes. */
const EXCHANGE = /^([^/\s]+)\/([^/\s]+)\/([^/\s]+)$/;
/** `#user@domain#admin#`: the user part is an address, as Mirapoint documents it. */
const MIRAPOINT = /^#([^#\s@]+@[^#\s@]+)#([^#\s]+)#$/;
/** `user*admin`: exactly one `*` (Dovecot's auth_master_user_separator), both sides non-empty. */
const SASL_ADMIN = /^([^*]+)\*([^*]+)$/;

/**
 * Recognises a source `UserName`. With `userRoot`, the name must be the admin's own
 * (the Courier-style case has no combined form; a combined one would be ambiguous about
 * whose view the root is in).
 */
export function parseSourceUserName(userName: string, opts: { userRoot?: string | undefined } = {}): SourceCredential {
  if (userName === '' || userName.trim() !== userName) {
    throw new CredentialFormatError(`source user name ${JSON.stringify(userName)} is empty or has leading/trailing blanks`);
  }
  if (CONTROL.test(userName)) throw new CredentialFormatError(`source user name ${JSON.stringify(userName)} contains control characters`);

  let m: RegExpExecArray | null;
  let cred: SourceCredential;
  if ((m = MIRAPOINT.exec(userName))) cred = { kind: 'mirapoint', raw: userName, user: m[1]!, admin: m[2]! };
  else if ((m = EXCHANGE.exec(userName))) cred = { kind: 'exchange', raw: userName, domain: m[1]!, admin: m[2]!, user: m[3]! };
  else if ((m = SASL_ADMIN.exec(userName))) cred = { kind: 'sasl-admin', raw: userName, user: m[1]!, admin: m[2]! };
  else cred = { kind: 'user', user: userName };

  if (opts.userRoot === undefined) return cred;
  if (cred.kind !== 'user') {
    throw new CredentialFormatError(`with a UserRoot the source user name must be the admin's own login, not the ${describeKind(cred.kind)} form "${userName}"`);
  }
  if (userRootSegments(opts.userRoot).length === 0) {
    throw new CredentialFormatError(`UserRoot ${JSON.stringify(opts.userRoot)} names no folder`);
  }
  return { kind: 'user-root', admin: userName, userRoot: opts.userRoot };
}

/** The segments of a UserRoot, split on `/` and the given hierarchy separators, as the folder mapping does. */
export function userRootSegments(userRoot: string, separators: Iterable<string> = []): string[] {
  let segs = [userRoot.trim()];
  for (const sep of new Set(['/', ...separators])) segs = segs.flatMap((s) => s.split(sep));
  return segs.filter((s) => s !== '');
}

export function describeKind(kind: CredentialKind): string {
  switch (kind) {
    case 'user':
      return 'plain user';
    case 'sasl-admin':
      return 'Dovecot/SASL user*admin';
    case 'exchange':
      return 'Exchange Domain/Admin/User';
    case 'mirapoint':
      return 'Mirapoint #user@domain#admin#';
    case 'user-root':
      return 'admin with UserRoot';
  }
}

/** Whose mailbox the credential opens (for messages and state keys). For UserRoot: the root's last segment. */
export function mailboxUserOf(cred: SourceCredential): string {
  return cred.kind === 'user-root' ? userRootSegments(cred.userRoot).at(-1)! : cred.user;
}

/** The admin account behind an admin form, or null for a plain user. */
export function adminOf(cred: SourceCredential): string | null {
  return cred.kind === 'user' ? null : cred.admin;
}

/** Whether choosing the login needs the server's pre-login capabilities (RFC 3501 §6.1.1). */
export function needsCapabilities(cred: SourceCredential, auth: AuthPreference = 'auto'): boolean {
  return cred.kind === 'sasl-admin' && auth === 'auto';
}

/**
 * The logins to try, in order, for this credential on a server with these pre-login
 * capabilities (upper- or lower-case; `undefined` when not asked). Empty means the server
 * offers no way in, and `noLoginReason` says why.
 *
 * One attempt per credential, by design: each failed attempt counts against the admin
 * account (lockout policies, Dovecot's auth penalty), and the servers that understand
 * `user*admin` over LOGIN (Dovecot) understand the PLAIN authorization identity equally,
 * so a second try after a refused PLAIN would only double a wrong password's failures.
 */
export function loginPlan(cred: SourceCredential, password: string, capabilities?: Iterable<string>, auth: AuthPreference = 'auto'): LoginAttempt[] {
  const login = (username: string, method: LoginMethod): LoginAttempt => ({ login: { method: 'login', username, password }, method });
  const plain = (authcid: string, authzid?: string): LoginAttempt => ({
    login: { method: 'plain', authcid, password, ...(authzid !== undefined ? { authzid } : {}) },
    method: authzid !== undefined ? 'AUTHENTICATE PLAIN with authorization identity' : 'AUTHENTICATE PLAIN',
  });
  switch (cred.kind) {
    case 'user':
      return [auth === 'plain' ? plain(cred.user) : login(cred.user, 'LOGIN')];
    case 'exchange':
      return [auth === 'plain' ? plain(cred.raw) : login(cred.raw, 'LOGIN Exchange admin string')];
    case 'mirapoint':
      return [auth === 'plain' ? plain(cred.raw) : login(cred.raw, 'LOGIN Mirapoint admin string')];
    case 'user-root':
      return [auth === 'plain' ? plain(cred.admin) : login(cred.admin, 'LOGIN as admin with UserRoot')];
    case 'sasl-admin': {
      if (auth === 'plain') return [plain(cred.admin, cred.user)];
      if (auth === 'login') return [login(cred.raw, 'LOGIN with master-user separator')];
      const caps = new Set([...(capabilities ?? [])].map((c) => c.toUpperCase()));
      // RFC 4616 §2: the authorization identity is what makes the server act as the user.
      if (caps.has('AUTH=PLAIN')) return [plain(cred.admin, cred.user)];
      // RFC 3501 §6.2.3: a client must not send LOGIN when the server says LOGINDISABLED.
      if (caps.has('LOGINDISABLED')) return [];
      return [login(cred.raw, 'LOGIN with master-user separator')];
    }
  }
}

/** Why {@link loginPlan} came back empty. */
export function noLoginReason(capabilities: Iterable<string>): string {
  const caps = [...capabilities].map((c) => c.toUpperCase());
  const mechs = caps.filter((c) => c.startsWith('AUTH=')).map((c) => c.slice(5));
  return `the server offers neither AUTH=PLAIN (needed for an authorization identity) nor LOGIN (LOGINDISABLED${mechs.length ? `; it offers ${mechs.join(', ')}` : ''}); connect with TLS`;
}

/**
 * How the admin logs in *alone*, to see their own mailbox for the impersonation check:
 * with the same mechanism as the impersonation, minus the user. Null for a plain user
 * and for UserRoot (which is the admin's session on purpose).
 *
 * Exchange: `Domain/Admin` — the admin in the same syntax the server just understood.
 */
export function adminAloneLogin(cred: SourceCredential, chosen: ImapLogin): ImapLogin | null {
  const admin =
    cred.kind === 'sasl-admin' || cred.kind === 'mirapoint' ? cred.admin : cred.kind === 'exchange' ? `${cred.domain}/${cred.admin}` : null;
  if (admin === null) return null;
  return chosen.method === 'plain' ? { method: 'plain', authcid: admin, password: chosen.password } : { method: 'login', username: admin, password: chosen.password };
}
