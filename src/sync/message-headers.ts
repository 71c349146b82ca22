/**
 * Reads the few header fields a report needs (Subject, Date) from a raw message, so a
 * skipped message can be named without a second round trip. RFC 5322 §2.2.3 unfolding,
 * RFC 2047 encoded words; raw 8-bit values are read as UTF-8 (RFC 6532), or, when they are
 * not valid UTF-8, as Windows-1252: what old mailers wrote unencoded (`Résumé für März` in
 * Latin-1) reads as written instead of as replacement characters.
 */
import { TextDecoder } from 'node:util';
import iconv from 'iconv-lite';

const MAX_HEADER_SCAN = 64 * 1024;

function headerBlock(raw: Buffer): string {
  const limit = Math.min(raw.length, MAX_HEADER_SCAN);
  const end = raw.subarray(0, limit).indexOf('\r\n\r\n');
  const block = raw.subarray(0, end === -1 ? limit : end);
  try {
    // `stream`: a head cut inside a UTF-8 sequence is not invalid UTF-8.
    return new TextDecoder('utf-8', { fatal: true }).decode(block, { stream: true });
  } catch {
    return iconv.decode(block, 'windows-1252');
  }
}

export function headerValue(raw: Buffer, name: string): string | null {
  const unfolded = headerBlock(raw).replace(/\r?\n[ \t]/g, ' ');
  const re = new RegExp(`^${name}:[ \\t]*(.*)$`, 'im');
  const m = re.exec(unfolded);
  return m ? m[1]!.trim() : null;
}

/** Decodes RFC 2047 encoded words; unknown charsets are left as written. */
export function decodeEncodedWords(value: string): string {
  return value
    .replace(/(=\?[^?]+\?[BbQq]\?[^?]*\?=)\s+(?==\?)/g, '$1') // §6.2: whitespace between encoded words is dropped
    .replace(/=\?([^?*]+)(?:\*[^?]*)?\?([BbQq])\?([^?]*)\?=/g, (whole, charset: string, enc: string, text: string) => {
      try {
        const bytes = enc.toUpperCase() === 'B' ? Buffer.from(text, 'base64') : Buffer.from(text.replace(/_/g, ' ').replace(/=([0-9A-Fa-f]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1');
        return iconv.encodingExists(charset) ? iconv.decode(bytes, charset) : whole;
      } catch {
        return whole;
      }
    });
}

export function subjectOf(raw: Buffer): string {
  const v = headerValue(raw, 'Subject');
  return v === null ? '' : storableText(decodeEncodedWords(v));
}

/**
 * A decoded header as the journal can store it: an encoded word may decode to NUL
 * (`=?utf-8?q?a=00b?=`), which PostgreSQL's text type refuses (the insert, and with it the
 * mailbox's run, failed); other control characters would garble a report line.
 */
export function storableText(s: string): string {
  return s.replace(/[\x00-\x08\x0b-\x1f\x7f]/g, ' ');
}
