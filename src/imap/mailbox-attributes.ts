/**
 * Mailbox attributes are atoms, and atoms compare case-insensitively (RFC 3501 §7.2.2,
 * RFC 5258 §3, RFC 6154 §2): UW-IMAP sends `\NoSelect` where Dovecot sends `\Noselect`.
 * imapflow passes them on as received; the code here compares one spelling, this one.
 */
const CANONICAL = [
  '\\Noselect', '\\NonExistent', '\\Noinferiors', '\\HasChildren', '\\HasNoChildren', '\\Marked', '\\Unmarked', '\\Subscribed', '\\Remote',
  '\\All', '\\Archive', '\\Drafts', '\\Flagged', '\\Junk', '\\Sent', '\\Trash', '\\Important',
] as const;

const byLowerCase = new Map<string, string>(CANONICAL.map((a) => [a.toLowerCase(), a]));

/** The attributes with the known ones in their canonical spelling. */
export function canonicalAttributes(flags: Iterable<string>): Set<string> {
  const out = new Set<string>();
  for (const f of flags) out.add(byLowerCase.get(f.toLowerCase()) ?? f);
  return out;
}
