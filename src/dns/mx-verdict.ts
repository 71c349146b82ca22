/**
 * What the MX records mean for the cut-over (SPEC §7): is the TTL low enough, and does
 * mail already go to the new system. Pure functions over a lookup's figures.
 */
import { BlockList, isIP } from 'node:net';
import { sameName } from './names.js';

/** SPEC §7: before the migration, the MX record's TTL should be 3600 s or less. */
export const MAX_MX_TTL = 3600;

/**
 * `all`: every MX (the implicit one included) points at the target: switched;
 * `some`: only some do: mail may still reach the old server through the others
 * (senders fall back to any MX, RFC 5321 §5.1, not only the lowest preference);
 * `none`: not switched yet.
 */
export type SwitchState = 'all' | 'some' | 'none';

/** 86400 → "86400 s (24 h)": the admin plans in hours. */
export function seconds(ttl: number): string {
  if (ttl < 3600) return `${ttl} s`;
  const h = ttl / 3600;
  return `${ttl} s (${Number.isInteger(h) ? h : h.toFixed(1)} h)`;
}

export interface TtlVerdict {
  /** True: low enough; false: too high; null: cannot tell (only a cached figure under the limit, or none at all). */
  ok: boolean | null;
  /** One sentence for the admin. */
  message: string;
}

/**
 * The TTL's verdict. A cached TTL is the configured one minus the time it spent in the
 * resolver's cache: above the limit it proves the configured one is too; below it proves
 * nothing.
 */
export function ttlVerdict(ttl: number | null, source: 'authoritative' | 'cached', what: 'MX' | 'negative'): TtlVerdict {
  const subject = what === 'MX' ? 'the MX TTL' : 'the "no MX" answer\'s negative-caching TTL (RFC 2308 §5)';
  if (ttl === null) return { ok: null, message: `${subject} is unknown (the answer carried no SOA record)` };
  const advice = `lower it to ${MAX_MX_TTL} s or less at least ${seconds(ttl)} before the switch, so resolvers forget the old MX in time`;
  if (source === 'cached') {
    if (ttl > MAX_MX_TTL) return { ok: false, message: `${subject} is at least ${seconds(ttl)} (a cached figure; the configured one is at least that): more than ${MAX_MX_TTL} s: ${advice}` };
    return {
      ok: null,
      message: `only a cached TTL was seen: ${ttl} s, counted down in the resolver's cache, so the configured TTL may be higher; the domain's name servers did not answer with authority. Ask one of them (dig @NS DOMAIN MX) or check the zone: it should be ${MAX_MX_TTL} s or less`,
    };
  }
  if (ttl > MAX_MX_TTL) return { ok: false, message: `${subject} is ${seconds(ttl)}, more than ${MAX_MX_TTL} s: ${advice}` };
  return { ok: true, message: `${subject} is ${seconds(ttl)}: low enough (${MAX_MX_TTL} s or less)` };
}

/** The target as `--target-mx` names it: its name (null for an IP literal) and its addresses. */
export interface Target {
  name: string | null;
  addresses: readonly string[];
}

/**
 * Whether one MX points at the target: the same name (RFC 4343: case-insensitive; a
 * trailing dot is the same name), or an address in common (the new system's MX may be
 * named in the domain's own zone, mx.example.org, with the provider's addresses).
 * node:net's BlockList compares addresses, so 2001:db8::1 and 2001:0db8:0:0::1 are one.
 */
export function pointsAtTarget(exchange: string, addresses: readonly string[], target: Target): boolean {
  if (target.name !== null && sameName(exchange, target.name)) return true;
  const list = new BlockList();
  for (const a of target.addresses) {
    const family = isIP(a);
    if (family) list.addAddress(a, family === 6 ? 'ipv6' : 'ipv4');
  }
  return addresses.some((a) => {
    const family = isIP(a);
    return family !== 0 && list.check(a, family === 6 ? 'ipv6' : 'ipv4');
  });
}

/** The overall state from each MX's verdict; no MX at all points nowhere. */
export function switchState(points: readonly boolean[]): SwitchState {
  const n = points.filter(Boolean).length;
  return n === 0 ? 'none' : n === points.length ? 'all' : 'some';
}
