/**
 * Blanks passwords out of text a server sent back (an echoed command, a SASL response),
 * before it reaches an error, a log line, a report or the API.
 */

/** A password made only of words, blanks and sentence punctuation: it reads as prose. */
const PROSE = /^[\p{L} .,:;!?'-]+$/u;

/** Base64 runs long enough to hide a secret (a SASL response, RFC 4616, is one). */
const BASE64_RUN = /[A-Za-z0-9+/]{8,}={0,2}/g;

/**
 * Replaces every occurrence of the secrets with `***`, in the forms a server may echo
 * them: as given; quoted and escaped as in an IMAP LOGIN (RFC 3501 §4.3); UTF-8 bytes read
 * as Latin-1; and inside any base64 run that decodes to text holding one (AUTHENTICATE
 * PLAIN's `authzid NUL authcid NUL password`, RFC 4616, whatever its alignment).
 */
export function scrubSecrets(text: string, secrets: readonly string[], keep: readonly string[] = []): string {
  // Very short strings would mangle ordinary words, and reveal next to nothing.
  const wanted = secrets.filter((s) => s.length >= 3);
  if (wanted.length === 0) return text;
  // Text that is not a secret even where it holds one (the user name, when the password
  // is the user name: blanking it would say so) is set aside while the rest is scrubbed.
  const kept = keep.filter((k) => k.length > 0 && wanted.some((s) => k.includes(s)));
  const marks = kept.map((_, i) => `\u0000${i}\u0000`);
  kept.forEach((k, i) => (text = text.split(k).join(marks[i]!)));
  let out = text.replace(BASE64_RUN, (run) => {
    const bytes = Buffer.from(run, 'base64');
    const decoded = [bytes.toString('utf8'), bytes.toString('latin1')];
    return wanted.some((s) => decoded.some((d) => d.includes(s))) ? '***' : run;
  });
  for (const s of wanted) {
    if (PROSE.test(s)) {
      // A password made of words ("name", "password", "user name", "failed.") is in
      // mailferry's own wording and the server's prose too: blanking it there ("wrong user
      // *** or password") would tell the reader what it is. Only the forms a server echoes
      // from a command are blanked: quoted, or the password argument of a LOGIN (RFC 3501
      // §6.2.3) sent as an atom.
      out = out.split(`"${s}"`).join('"***"');
      out = out.replace(new RegExp(`(LOGIN\\s+\\S+\\s+)${s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?!\\p{L})`, 'giu'), '$1***');
      continue;
    }
    const forms = new Set([s, s.replace(/[\\"]/g, '\\$&'), Buffer.from(s, 'utf8').toString('latin1'), Buffer.from(s, 'utf8').toString('base64').replace(/=+$/, '')]);
    for (const form of [...forms].sort((a, b) => b.length - a.length)) out = out.split(form).join('***');
  }
  kept.forEach((k, i) => (out = out.split(marks[i]!).join(k)));
  return out;
}
