/**
 * How the target's admin credential acts as one user, so the migration file needs no
 * target passwords: SASL PLAIN with the user as authorization identity (RFC 4616 §2), or a
 * master-user separator in the LOGIN name (Dovecot `user*admin`).
 */
import type { ImapLogin } from '../imap/endpoint.js';

export type Impersonation = { kind: 'sasl' } | { kind: 'separator'; separator: string };

export function targetLogin(adminUser: string, adminPassword: string, impersonation: Impersonation, user: string): ImapLogin {
  return impersonation.kind === 'sasl'
    ? { method: 'plain', authcid: adminUser, authzid: user, password: adminPassword }
    : { method: 'login', username: `${user}${impersonation.separator}${adminUser}`, password: adminPassword };
}
