/**
 * Domain names and server addresses as the admin types them, checked and put in the one
 * form the rest of src/dns/ compares: ASCII (an IDN's `xn--` form, RFC 5890), lower case,
 * no trailing dot.
 */
import { isIP } from 'node:net';
import { domainToASCII } from 'node:url';
import { DnsUsageError } from './errors.js';

/** A DNS server to ask: an IP address (v4 or v6, never a name: resolving it would need DNS) and a port. */
export interface DnsServer {
  host: string;
  port: number;
}

/** `192.0.2.1:53`, `[2001:db8::1]:53`: the form error messages and `--json` use. */
export function serverText(s: DnsServer): string {
  return isIP(s.host) === 6 ? `[${s.host}]:${s.port}` : `${s.host}:${s.port}`;
}

/** RFC 1035 §2.3.4: labels of 1–63 octets, 255 octets in all (253 characters written without the root's dot). */
const LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;

/**
 * The domain in its comparable form, or a DnsUsageError saying what is wrong with it.
 * RFC 1035 §2.3.1's letter-digit-hyphen labels, plus `_` (RFC 2181 §11 allows any octet;
 * underscores occur in real names). An IDN is taken in its `xn--` form.
 */
export function normalizeDomain(text: string, what = 'domain'): string {
  const trimmed = text.trim().replace(/\.$/, '');
  if (trimmed === '') throw new DnsUsageError(`the ${what} is empty`);
  if (isIP(trimmed) || isIP(trimmed.replace(/^\[|\]$/g, ''))) throw new DnsUsageError(`the ${what} "${text}" is an IP address, not a domain name`);
  const ascii = /^[\x21-\x7e]*$/.test(trimmed) ? trimmed.toLowerCase() : domainToASCII(trimmed);
  if (!ascii) throw new DnsUsageError(`the ${what} "${text}" is not a valid domain name`);
  if (ascii.length > 253) throw new DnsUsageError(`the ${what} "${text}" is longer than 253 characters (RFC 1035 §2.3.4)`);
  const bad = ascii.split('.').find((label) => !LABEL.test(label));
  if (bad !== undefined) {
    throw new DnsUsageError(
      bad === ''
        ? `the ${what} "${text}" has an empty label (two dots in a row)`
        : bad.length > 63
          ? `the ${what} "${text}" has a label longer than 63 characters (RFC 1035 §2.3.4)`
          : `the ${what} "${text}" is not a valid domain name: "${bad}" may hold only letters, digits and inner hyphens`,
    );
  }
  return ascii;
}

/** A host as `--target-mx` takes it: an IP literal (kept as is, `[v6]` unwrapped) or a domain name. */
export function normalizeHost(text: string, what = 'host'): { kind: 'ip'; ip: string } | { kind: 'name'; name: string } {
  const bare = text.trim().replace(/^\[(.*)\]$/, '$1');
  if (isIP(bare)) return { kind: 'ip', ip: bare.toLowerCase() };
  return { kind: 'name', name: normalizeDomain(text, what) };
}

/** DNS names compare case-insensitively (RFC 4343), trailing root dot or not. */
export function sameName(a: string, b: string): boolean {
  return a.replace(/\.$/, '').toLowerCase() === b.replace(/\.$/, '').toLowerCase();
}

/**
 * `--server IP[:PORT]`: `192.0.2.1`, `192.0.2.1:5353`, `2001:db8::1`, `[2001:db8::1]:5353`.
 * The same form as node:dns `getServers()` gives, so the system's servers are read with it too.
 */
export function parseServer(text: string): DnsServer {
  const t = text.trim();
  let host = t;
  let port = '53';
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(t);
  const v4 = /^([\d.]+):(\d+)$/.exec(t);
  if (v6) {
    host = v6[1]!;
    port = v6[2] ?? '53';
  } else if (v4) {
    host = v4[1]!;
    port = v4[2]!;
  }
  // A zone index (fe80::1%eth0) is accepted as node:net accepts it.
  if (!isIP(host)) throw new DnsUsageError(`--server must be an IP address with an optional port (192.0.2.1, 192.0.2.1:5353, [2001:db8::1]:5353), not "${text}"`);
  const n = Number(port);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new DnsUsageError(`the port in --server "${text}" must be from 1 to 65535`);
  return { host, port: n };
}
