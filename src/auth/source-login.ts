/**
 * Source logins. `resolveSourceLogin` (resolve.ts) is the entry point: it recognises the
 * SPEC §2 admin forms (`user*admin`, `Domain/Admin/User`, `#user@domain#admin#`, admin +
 * UserRoot), picks the mechanism, logs in once and checks the session is the user's.
 *
 * `loginFor` is the old mechanical mapping (the name verbatim with LOGIN, RFC 3501
 * §6.2.3, or as SASL PLAIN authentication identity, RFC 4616), without any check. It stays
 * for the target side and for callers not yet moved to resolveSourceLogin.
 */
import type { ImapLogin } from '../imap/endpoint.js';

export function loginFor(username: string, password: string, method: 'login' | 'plain' = 'login'): ImapLogin {
  return method === 'plain' ? { method: 'plain', authcid: username, password } : { method: 'login', username, password };
}

export { resolveSourceLogin, SourceLoginCache, type ResolvedSourceLogin, type ResolveSourceLoginOptions, type SessionCheck } from './resolve.js';
export { parseSourceUserName, loginPlan, type SourceCredential, type AuthPreference, type LoginMethod } from './credentials.js';
export { CredentialFormatError, ImpersonationError, SourceLoginError, UserRootError } from './errors.js';
