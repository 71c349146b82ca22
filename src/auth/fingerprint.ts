/**
 * "Is this session really the user's mailbox?" — the check behind SPEC §2's "an
 * impersonation that silently fell back to the admin's own mailbox must fail that user".
 *
 * Why a fingerprint comparison: IMAP has no portable "whose mailbox is this" command (ID,
 * RFC 2971, names the server, not the user; the authorization identity is only echoed by
 * some SASL servers). What a fallback does produce is *the admin's own mailbox*, so we
 * look at the mailbox behind the impersonated login and at the admin's own (logging in
 * as the admin alone) and compare:
 *
 * - the personal namespace's folder list with each folder's UIDVALIDITY (RFC 3501
 *   §2.3.1.1) — stable while mail arrives; other users' and shared namespaces
 *   (RFC 2342) are left out, they are views onto other mailboxes;
 * - the first messages (lowest UIDs, up to {@link SAMPLE_SIZE}) of the first non-empty
 *   folder, INBOX first: UID, INTERNALDATE and RFC822.SIZE.
 *
 * UIDVALIDITY alone is not enough: Dovecot uses the creation time, so mailboxes created
 * in the same second (provisioning scripts, the lab) share it. Message counts and
 * UIDNEXT are not used because new mail between the two looks would make the same
 * mailbox look different; the lowest UIDs do not move when mail arrives.
 *
 * Verdicts: same folders, same UIDVALIDITYs and the same sample ⇒ the same mailbox ⇒ the
 * server fell back ⇒ fail. If the admin cannot log in alone, no fallback to the admin's
 * mailbox is possible (e.g. Dovecot master users, which exist only in the master passdb).
 * If both mailboxes hold no message at all, the two cannot be told apart; nothing of the
 * admin's could be copied, so that passes, reported as `both-empty`.
 */
import type { ImapFlow } from 'imapflow';
import { isImapRefusal } from '../imap/errors.js';
import { canonicalAttributes } from '../imap/mailbox-attributes.js';

/** Messages sampled from one folder. Ten make a coincidence between two users' mailboxes implausible. */
export const SAMPLE_SIZE = 10;
/** Folders with messages tried in turn for the sample, when the first ones cannot be opened. */
const SAMPLE_FOLDERS_TRIED = 5;

export interface MailboxFingerprint {
  /** Personal, selectable folders: path → UIDVALIDITY (decimal). */
  folders: Map<string, string>;
  /** Messages over those folders. */
  messages: number;
  /** The first messages of the first non-empty folder (INBOX first): `uid/internaldate-ms/size`. */
  sample: { folder: string; items: string[] } | null;
}

export type FingerprintVerdict =
  /** Different mailboxes: the session is the user's. */
  | 'differs'
  /** The admin has no own session to fall back to. */
  | 'admin-cannot-log-in-alone'
  /** Both empty with the same folders: indistinguishable, but nothing of the admin's would be copied. */
  | 'both-empty'
  /** The same mailbox: the impersonation fell back to the admin. */
  | 'same';

interface NamespaceEntry {
  prefix: string;
  delimiter: string | null;
}

interface NamespacesLike {
  personal?: NamespaceEntry[] | false;
  other?: NamespaceEntry[] | false;
  shared?: NamespaceEntry[] | false;
}

/** Prefixes of the namespaces that are not the session's own mailbox (RFC 2342 §4: other users', shared). */
export function foreignPrefixes(client: Pick<ImapFlow, 'namespaces'>): string[] {
  const ns = client.namespaces as NamespacesLike | undefined;
  return [...(ns?.other || []), ...(ns?.shared || [])].map((n) => n.prefix).filter((p) => p !== '');
}

function isForeign(path: string, prefixes: readonly string[]): boolean {
  // A prefix's own node ("users" for "users/") is a namespace root, not a personal folder.
  return prefixes.some((p) => path.startsWith(p) || path === p.slice(0, -1));
}

/** Reads the fingerprint of the mailbox a logged-in session sees. Read-only (EXAMINE). */
export async function fingerprintSession(client: ImapFlow): Promise<MailboxFingerprint> {
  const foreign = foreignPrefixes(client);
  const listed = await client.list({ statusQuery: { messages: true, uidValidity: true } });
  const own = listed.filter((f) => {
    const attributes = canonicalAttributes(f.flags);
    return !attributes.has('\\Noselect') && !attributes.has('\\NonExistent') && !isForeign(f.path, foreign);
  });
  const folders = new Map<string, string>();
  let messages = 0;
  for (const f of own) {
    const path = f.path.toUpperCase() === 'INBOX' ? 'INBOX' : f.path;
    folders.set(path, String(f.status?.uidValidity ?? '?'));
    messages += f.status?.messages ?? 0;
  }
  const ordered = [...own].sort((a, b) => (a.path.toUpperCase() === 'INBOX' ? -1 : b.path.toUpperCase() === 'INBOX' ? 1 : a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  // The first folder with messages that can be read: a Cyrus admin's own view lists the
  // users' deleted folders (`DELETED.user.alice.Old.6B0A5965`, delayed delete) with
  // messages it may not open (a NO), which must not fail the login check.
  let sample: MailboxFingerprint['sample'] = null;
  for (const f of ordered.filter((o) => (o.status?.messages ?? 0) > 0).slice(0, SAMPLE_FOLDERS_TRIED)) {
    try {
      // RFC 3501 §6.3.2 EXAMINE: read-only, so looking changes no \Seen flag.
      const box = await client.mailboxOpen(f.path, { readOnly: true });
      // Sequence numbers beyond EXISTS are an error (RFC 3501 §6.4.5), so ask for what is there.
      const n = Math.min(SAMPLE_SIZE, box.exists);
      const msgs = n > 0 ? await client.fetchAll(`1:${n}`, { uid: true, internalDate: true, size: true }) : [];
      const items = msgs.map((m) => `${m.uid}/${m.internalDate ? new Date(m.internalDate).getTime() : '?'}/${m.size ?? '?'}`).sort();
      sample = { folder: f.path, items };
      break;
    } catch (err) {
      if (!isImapRefusal(err)) throw err;
    } finally {
      await client.mailboxClose().catch(() => undefined);
    }
  }
  return { folders, messages, sample };
}

/** Compares the impersonated session's fingerprint with the admin's own (null: the admin cannot log in alone). */
export function compareFingerprints(user: MailboxFingerprint, admin: MailboxFingerprint | null): FingerprintVerdict {
  if (admin === null) return 'admin-cannot-log-in-alone';
  if (user.folders.size !== admin.folders.size) return 'differs';
  for (const [path, uidValidity] of user.folders) if (admin.folders.get(path) !== uidValidity) return 'differs';
  if (user.messages === 0 && admin.messages === 0) return 'both-empty';
  if (!user.sample || !admin.sample || user.sample.folder !== admin.sample.folder) return 'differs';
  const a = user.sample.items;
  const b = admin.sample.items;
  return a.length === b.length && a.every((x, i) => x === b[i]) ? 'same' : 'differs';
}
