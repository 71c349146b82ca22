/**
 * What the first line a server sends says about it. An IMAP server greets at once with
 * `* OK`, `* PREAUTH` or `* BYE` (RFC 3501 §7.1, RFC 9051 §7.1); anything else means the
 * admin pointed the endpoint at the wrong port or the wrong kind of server, and the most
 * useful thing to say is which kind it looks like.
 */
import { parseCapabilities, parseRespText } from '../imap/raw-connection.js';
import { showText } from './explain.js';

export type GreetingVerdict =
  | { imap: true; kind: 'OK' | 'PREAUTH'; text: string; capabilities?: Set<string> }
  | { imap: true; kind: 'BYE'; text: string }
  | { imap: false; detail: string };

const WRONG_PORT_HINT = 'IMAP is usually on port 993 (SSL/implicit TLS) or 143 (STARTTLS or no encryption)';

export function classifyGreeting(line: string): GreetingVerdict {
  const m = /^\* (OK|PREAUTH|BYE)(?: (.*))?$/i.exec(line);
  if (m) {
    const kind = m[1]!.toUpperCase() as 'OK' | 'PREAUTH' | 'BYE';
    const rest = m[2] ?? '';
    if (kind === 'BYE') return { imap: true, kind, text: showText(rest) };
    // RFC 3501 §7.1: the greeting may carry [CAPABILITY …], which saves a round trip.
    const rt = parseRespText(rest);
    const v: GreetingVerdict = { imap: true, kind, text: showText(rt.text) };
    if (rt.code === 'CAPABILITY' && rt.codeArgs) v.capabilities = parseCapabilities(rt.codeArgs);
    return v;
  }
  const shown = `“${showText(line, 80)}”`;
  const looksLike = (what: string) => ({ imap: false as const, detail: `not an IMAP server: it answered ${shown}, which looks like ${what}. ${WRONG_PORT_HINT}` });
  if (/^220[ -].*\bFTP\b/i.test(line)) return looksLike('an FTP server');
  if (/^220[ -]/.test(line)) return looksLike('an SMTP (mail submission/relay) server');
  if (/^\+OK\b|^-ERR\b/.test(line)) return looksLike('a POP3 server');
  if (/^HTTP\/\d/i.test(line) || /^<(!doctype|html)/i.test(line)) return looksLike('a web (HTTP) server');
  if (/^SSH-\d/.test(line)) return looksLike('an SSH server');
  if (/^\* /.test(line)) {
    return { imap: false, detail: `not an IMAP greeting: ${shown} (an IMAP server starts with “* OK”, “* PREAUTH” or “* BYE”)` };
  }
  return { imap: false, detail: `not an IMAP server: its first line was ${shown}. ${WRONG_PORT_HINT}` };
}

/** Bytes that start a TLS record (RFC 8446 §5.1: content type 21 alert / 22 handshake,
 * legacy version 3.x): the server speaks TLS where plain text was expected. */
export function looksLikeTls(data: Buffer): boolean {
  return data.length >= 2 && (data[0] === 0x15 || data[0] === 0x16) && data[1] === 0x03;
}
