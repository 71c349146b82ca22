/**
 * Is `EmailAddress` an address? Pragmatic RFC 5321/6531 rules: a dot-atom local part (UTF-8
 * allowed), a domain of at least two labels (IDN allowed), no quoted local parts or IP literals,
 * which no mailbox to migrate uses and which usually mean a pasting mistake.
 */

import { domainToASCII } from 'node:url';

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
  // Zero-width spaces, joiners, a BOM, direction marks: pasted along from a web page or a
  // document, they make an address that looks right and logs in as nobody.
  const invisible = /[\p{Cf}\p{Cc}]/u.exec(value);
  if (invisible) return `contains the invisible character U+${invisible[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
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

/**
 * The form two spellings of one mailbox share, for finding duplicates: case folded, Unicode
 * in NFC (`jóse` typed, or pasted decomposed), and an international domain in its ASCII
 * (punycode) form (`bücher.de` is `xn--bcher-kva.de`).
 */
export function addressKey(address: string): string {
  const lower = address.toLowerCase();
  if (/^[\x00-\x7f]*$/.test(lower)) return lower;
  const at = lower.lastIndexOf('@');
  const domain = lower.slice(at + 1);
  return `${lower.slice(0, at).normalize('NFC')}@${domainToASCII(domain) || domain}`;
}
