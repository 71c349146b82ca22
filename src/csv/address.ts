/**
 * Is `EmailAddress` an address? Pragmatic RFC 5321/6531 rules: a dot-atom local part (UTF-8
 * allowed), a domain of at least two labels (IDN allowed), no quoted local parts or IP literals,
 * which no mailbox to migrate uses and which usually mean a pasting mistake.
 */

const ATEXT = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~\\-\\u{80}-\\u{10FFFF}]";
const LOCAL = new RegExp(`^${ATEXT}+(?:\\.${ATEXT}+)*$`, 'u');
const LABEL_CHAR = 'A-Za-z0-9\\u{80}-\\u{10FFFF}';
const LABEL = new RegExp(`^[${LABEL_CHAR}](?:[${LABEL_CHAR}-]{0,61}[${LABEL_CHAR}])?$`, 'u');

/** The usual case, ASCII only, in one regex without the `u` flag, which is much cheaper per row than the full checks. */
const ASCII_ATOM = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+";
const ASCII_LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
const PLAIN = new RegExp(`^${ASCII_ATOM}(?:\\.${ASCII_ATOM})*@(?:${ASCII_LABEL}\\.)+${ASCII_LABEL}$`);
const NUMERIC_TLD = /\.[0-9]+$/;

/** Why `value` (already trimmed, not empty) is not an address, or undefined when it is one. */
export function addressProblem(value: string): string | undefined {
  if (value.length <= 254 && PLAIN.test(value) && !NUMERIC_TLD.test(value) && value.indexOf('@') <= 64) return undefined;
  if (/\s/u.test(value)) return 'contains a space';
  const at = value.lastIndexOf('@');
  if (at === -1) return 'has no @';
  if (value.indexOf('@') !== at) return 'has more than one @';
  const local = value.slice(0, at);
  const domain = value.slice(at + 1);
  if (local === '') return 'has nothing before the @';
  if (domain === '') return 'has nothing after the @';
  if (!LOCAL.test(local)) return 'has characters or dots before the @ that an address cannot have';
  if (Buffer.byteLength(local) > 64) return 'has more than 64 characters before the @';
  const labels = domain.split('.');
  if (labels.length < 2) return 'has a domain without a dot';
  if (!labels.every((l) => LABEL.test(l))) return 'has a domain that is not valid';
  if (/^[0-9]+$/u.test(labels[labels.length - 1] as string)) return 'has a domain that is not valid';
  if (Buffer.byteLength(value) > 254) return 'is longer than 254 characters';
  return undefined;
}
