/**
 * SPEC §2's "make sure the session is really the user's", on the target side. The target
 * is reached with one admin credential acting as every user (SASL PLAIN with an
 * authorization identity, RFC 4616 §2, or a master-user separator). A server that ignores
 * the authorization identity, or a master-user setup that falls back to the admin's own
 * mailbox, would file every user's mail into the admin's mailbox, and `verify` (which
 * reads through the same login) would call it in sync.
 *
 * The same fingerprint comparison as the source's (fingerprint.ts): the mailbox behind
 * the impersonated login against the admin's own, logged in alone. It cannot tell two
 * empty mailboxes apart, and an admin that cannot log in alone (a Dovecot master user)
 * has no mailbox to fall back to; so on a server that does fall back, the first mailbox
 * migrated into an empty admin mailbox is not caught, and every one after it is (the
 * admin's mailbox then holds the first one's mail). Checked before every initial sync,
 * by check-logins, and by `target create --test-user`.
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { ImapEndpoint, ImapLogin } from '../imap/endpoint.js';
import { ImapAuthError } from '../imap/errors.js';
import { openSession } from '../imap/imapflow-session.js';
import { ImpersonationError } from './errors.js';
import { compareFingerprints, fingerprintSession, type FingerprintVerdict, type MailboxFingerprint } from './fingerprint.js';

/** The admin alone, without acting as anyone: the mailbox a fallback would land in. */
function adminAlone(login: ImapLogin, adminUser: string): ImapLogin {
  return login.method === 'plain' ? { method: 'plain', authcid: login.authcid, password: login.password } : { method: 'login', username: adminUser, password: login.password };
}

async function fingerprintOf(endpoint: ImapEndpoint, login: ImapLogin, opts: { logger?: Logger; stallMs?: number }): Promise<MailboxFingerprint> {
  const session = await openSession({ endpoint, login, ...opts, side: 'target' });
  try {
    return await fingerprintSession(session);
  } finally {
    await session.logout().catch(() => session.close());
  }
}

/**
 * Admin credentials that cannot log in alone (a Dovecot master user): remembered, so that
 * checking 500 mailboxes does not cost 500 refused admin logins (a lockout policy counts
 * them). Only the refusal is remembered: an admin mailbox that can be opened is looked at
 * each time, since a server that ignores impersonation keeps filling it.
 */
export class TargetCheckCache {
  private readonly refusedAlone = new Set<string>();
  key(endpoint: ImapEndpoint, login: ImapLogin): string {
    const who = login.method === 'plain' ? login.authcid : login.username;
    return `${endpoint.host.toLowerCase()}:${endpoint.port}\0${who}\0${createHash('sha256').update(login.password).digest('hex')}`;
  }
  refused(key: string): boolean {
    return this.refusedAlone.has(key);
  }
  noteRefused(key: string): void {
    this.refusedAlone.add(key);
  }
}

/**
 * Throws ImpersonationError when the target session `login` opens for `user` is the
 * admin's own mailbox; returns the verdict otherwise. `login` failing is the caller's
 * ImapAuthError, as openSession throws it.
 */
export async function checkTargetSession(
  endpoint: ImapEndpoint,
  login: ImapLogin,
  user: string,
  adminUser: string,
  opts: { logger?: Logger; stallMs?: number; cache?: TargetCheckCache } = {},
): Promise<FingerprintVerdict> {
  const { cache, ...session } = opts;
  const mine = await fingerprintOf(endpoint, login, session);
  const alone = adminAlone(login, adminUser);
  const key = cache?.key(endpoint, alone);
  let admins: MailboxFingerprint | null = null;
  if (key === undefined || !cache!.refused(key)) {
    try {
      admins = await fingerprintOf(endpoint, alone, session);
    } catch (err) {
      if (!(err instanceof ImapAuthError)) throw err;
      if (key !== undefined) cache!.noteRefused(key);
    }
  }
  const verdict = compareFingerprints(mine, admins);
  if (verdict === 'same') {
    throw new ImpersonationError(
      `the target session for ${user} at ${endpoint.host}:${endpoint.port} is the admin's own mailbox: it shows the same folders, UIDVALIDITYs and first messages ` +
        `as "${adminUser}" logging in alone, so the server ignored the impersonation and ${user}'s mail would go into ${adminUser}'s mailbox. ` +
        `Nothing was copied; check that "${adminUser}" may act as other users on the target, and the target's impersonation setting (sasl or separator).`,
      user,
      adminUser,
    );
  }
  return verdict;
}
