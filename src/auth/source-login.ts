/**
 * Turns a user name (and password) as the admin writes it into how to log in.
 * For now every name is sent verbatim with LOGIN (RFC 3501 §6.2.3), which also covers
 * Dovecot's `user*master` separator form and Exchange/Mirapoint admin strings.
 */
import type { ImapLogin } from '../imap/endpoint.js';

export function loginFor(username: string, password: string, method: 'login' | 'plain' = 'login'): ImapLogin {
  return method === 'plain' ? { method: 'plain', authcid: username, password } : { method: 'login', username, password };
}
