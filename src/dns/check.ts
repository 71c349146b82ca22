/**
 * `checkDomain`: everything `mailferry dns check` says about one domain (SPEC §7), as one
 * typed object: the CLI prints it (and `--json` is this object), and the HTTP API can
 * return it as is.
 */
import type { Store } from '../store/open.js';
import { DnsUsageError } from './errors.js';
import { type MxLookup, lookupAddresses, lookupMx } from './mx-lookup.js';
import { MAX_MX_TTL, pointsAtTarget, type SwitchState, switchState, type Target, ttlVerdict } from './mx-verdict.js';
import { MX_GRACE_MS, recordMxCheck } from './mx-watch.js';
import { normalizeDomain, normalizeHost } from './names.js';
import { Resolver } from './resolver.js';

export interface DnsCheckOptions {
  /** The mail domain, as the admin typed it (an IDN is taken in its xn-- form). */
  domain: string;
  /** The new system's MX host(s), comma-separated (names or IP addresses; any of them counts): enables the switch verdict and the 72-hour tracking. */
  targetMx?: string;
  /** `IP[:PORT]` of the resolver to ask; default the system's (node:dns getServers()). */
  server?: string;
  /** Each query's timeout (ms; UDP is asked twice). Default 2000. */
  timeoutMs?: number;
  /** The clock, for tests. */
  now?: number;
  /** Test only: the port the domain's name servers are asked on (always 53 in use). */
  nameServerPort?: number;
}

export interface MxEntry {
  preference: number;
  exchange: string;
  /** Null for the implicit MX (the domain's own addresses, RFC 5321 §5.1), which has no MX record. */
  ttl: number | null;
  /** Its A/AAAA addresses, through the same resolver (looked up only with a target to compare). */
  addresses: string[];
  /** Null without --target-mx. */
  pointsAtTarget: boolean | null;
  /** True for the implicit MX of a domain without MX records. */
  implicit: boolean;
}

/** The result of one check; also the `--json` line. Times are ISO 8601 (UTC). */
export interface DnsCheckResult {
  domain: string;
  /** `host:port` of the resolver that answered. */
  resolver: string;
  /** What the zone says: MX records, a null MX, none (implicit MX), or no such domain. */
  answer: MxLookup['kind'];
  /** Where the domain's CNAME chain ends, when it is an alias; else null. */
  canonicalName: string | null;
  /** The TTL comes from an authoritative answer (the configured one), not a resolver's cache. */
  authoritative: boolean;
  /** `host:port` of the server the records and TTL come from. */
  ttlFrom: string;
  /** The MX RRset's TTL (or the negative-caching TTL of a "no MX" answer, RFC 2308 §5); null when unknown. */
  ttl: number | null;
  /** TTL ≤ 3600 s; null when it cannot be told (only a cached figure under the limit, or none). */
  ttlOk: boolean | null;
  /** Sorted by preference; for a domain without MX records, its implicit MX. */
  mx: MxEntry[];
  targetMx: string | null;
  targetAddresses: string[];
  /** Null without --target-mx. */
  switched: SwitchState | null;
  /** When mailferry first saw every MX point at the target (from the state database); null if not (or not tracked). */
  switchedSeenAt: string | null;
  /** 72 hours after switchedSeenAt: the batch may be deleted from then (SPEC §7). */
  deleteSafeAt: string | null;
  /** A switch time this check forgot because MX no longer points at the target. */
  switchForgotten: string | null;
  /** Whether the check was recorded in the state database. */
  tracked: boolean;
  /** Things to act on; any makes the CLI exit 1. */
  warnings: string[];
  /** Things to know. */
  notes: string[];
  /** SPEC §8 as `dns check` applies it: 0 checked and nothing to warn about, 1 checked with warnings. */
  exitStatus: 0 | 1;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/**
 * Checks `domain`'s MX records: TTL verdict, and with `targetMx` whether they point at it.
 * With a store and a target, the outcome is recorded (src/dns/mx-watch.ts) for the 72
 * hours and for batch deletion; without a target nothing is written.
 * Throws DnsUsageError (bad domain, host or server) and DnsLookupError (the resolver could
 * not answer: timeouts, SERVFAIL, REFUSED), both naming what failed.
 */
export async function checkDomain(store: Pick<Store, 'db' | 'dialect'> | undefined, opts: DnsCheckOptions): Promise<DnsCheckResult> {
  const now = opts.now ?? Date.now();
  const domain = normalizeDomain(opts.domain);
  // The new system may have several MX hosts (mx1 and mx2 of a provider, a backup MX): any of them counts.
  const hosts = opts.targetMx !== undefined ? opts.targetMx.split(',').map((h) => h.trim()).filter(Boolean) : [];
  if (opts.targetMx !== undefined && hosts.length === 0) throw new DnsUsageError('--target-mx names no host');
  const targets = hosts.length ? [...new Map(hosts.map((h) => normalizeHost(h, '--target-mx host')).map((t) => [t.kind === 'ip' ? t.ip : t.name, t] as const)).values()] : null;
  if (opts.timeoutMs !== undefined && !(opts.timeoutMs > 0)) throw new DnsUsageError('the timeout must be more than 0');
  const resolver = Resolver.from(opts.server, opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {});
  const lookup = await lookupMx(resolver, domain, { query: opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}, ...(opts.nameServerPort !== undefined ? { nameServerPort: opts.nameServerPort } : {}) });
  const warnings = [...lookup.warnings];
  const notes: string[] = [];

  if (lookup.aliases.length > 0) {
    notes.push(`${domain} is an alias (CNAME ${lookup.aliases.map((a) => a.target).join(' -> ')}): its mail goes where ${lookup.canonicalName}'s MX records say (RFC 5321 §5.1), and changing them changes ${domain}'s too`);
  }

  // The mail servers as a sender sees them; the implicit MX stands for the domain's own addresses.
  let mx: MxEntry[] = lookup.records.map((r) => ({ preference: r.preference, exchange: r.exchange, ttl: r.ttl, addresses: [], pointsAtTarget: null, implicit: false }));
  if (lookup.kind === 'no-mx') {
    mx = [{ preference: 0, exchange: lookup.canonicalName, ttl: null, addresses: [], pointsAtTarget: null, implicit: true }];
    notes.push(`${domain} has no MX records: mail goes to its own A/AAAA addresses (the implicit MX, RFC 5321 §5.1); the switch means adding an MX record for the target (or moving those addresses)`);
  }

  let ttlOk: boolean | null = null;
  let ttlWarning: string | null = null;
  if (lookup.kind === 'nxdomain') {
    warnings.push(`${domain} does not exist (NXDOMAIN from ${lookup.answeredBy}): no mail can be delivered to it; check the spelling`);
  } else if (lookup.kind === 'null-mx') {
    warnings.push(`${domain} has a null MX ("0 .", RFC 7505): it declares that it accepts no mail`);
  } else {
    const v = ttlVerdict(lookup.ttl, lookup.ttlSource, lookup.kind === 'mx' ? 'MX' : 'negative');
    ttlOk = v.ok;
    if (v.ok === true || (lookup.kind === 'no-mx' && lookup.ttl === null)) notes.push(v.message);
    else ttlWarning = v.message;
  }
  if (lookup.ttlSource === 'cached' && lookup.kind !== 'nxdomain' && lookup.kind !== 'null-mx' && ttlOk !== null) {
    notes.push(`the TTL is ${lookup.answeredBy}'s cached figure: the domain's name servers did not answer with authority (${lookup.nameServersTried.map((t) => `${t.server}: ${t.reason}`).join('; ') || 'none found'})`);
  }

  let switched: SwitchState | null = null;
  const targetAddresses: string[] = [];
  let targetText: string | null = null;
  if (targets !== null) {
    // Sorted, so the same hosts in another order are the same target (one 72-hour record).
    targetText = targets.map((t) => (t.kind === 'ip' ? t.ip : t.name)).sort().join(',');
    const known: Target[] = [];
    for (const target of targets) {
      if (target.kind === 'ip') {
        targetAddresses.push(target.ip);
        known.push({ name: null, addresses: [target.ip] });
        continue;
      }
      const t = await lookupAddresses(resolver, target.name);
      targetAddresses.push(...t.addresses);
      known.push({ name: target.name, addresses: t.addresses });
      if (t.problem) notes.push(`the target ${target.name} has no address (${t.problem}): MX records are compared with it by name only`);
    }
    for (const m of mx) {
      const a = await lookupAddresses(resolver, m.exchange);
      m.addresses = a.addresses;
      if (a.problem && !targets.some((t) => t.kind === 'name' && m.exchange === t.name)) warnings.push(`could not resolve the mail server ${m.exchange}: ${a.problem}`);
      m.pointsAtTarget = known.some((t) => pointsAtTarget(m.exchange, m.addresses, t));
    }
    switched = switchState(mx.map((m) => m.pointsAtTarget === true));
    const others = mx.filter((m) => !m.pointsAtTarget);
    const count = `${mx.length} record${mx.length === 1 ? '' : 's'}`;
    if (switched === 'some') {
      warnings.push(
        `MX points at ${targetText} only in part (${mx.length - others.length} of ${count}): mail may still reach the old server through ${others.map((m) => `${m.exchange} (preference ${m.preference})`).join(', ')}; senders use every MX, not only the lowest preference (if that host belongs to the new system too, a backup MX say, name it as well: --target-mx ${[targetText, ...others.map((m) => m.exchange)].join(',')})`,
      );
    } else if (switched === 'none' && lookup.kind !== 'nxdomain' && lookup.kind !== 'null-mx') {
      warnings.push(`MX does not point at ${targetText} yet (none of ${count}): mail still goes to ${others.map((m) => m.exchange).join(', ')}`);
    }
  }

  let seen: number | null = null;
  let forgotten: number | null = null;
  const tracked = store !== undefined && targets !== null && switched !== null;
  if (tracked) {
    const outcome = await recordMxCheck(store, { domain, targetMx: targetText!, state: switched!, ttl: lookup.ttl, now, resolver: opts.server ?? null });
    seen = outcome.switchedSeenAt;
    forgotten = outcome.forgottenSwitch;
    if (forgotten !== null) warnings.push(`MX no longer points (fully) at ${targetText}: the switch first seen at ${iso(forgotten)} is forgotten, and the 72 hours start again when it does`);
  }
  if (ttlWarning !== null && switched === 'all') {
    // Advice for before the switch is moot after it: a high TTL only means resolvers used
    // the old MX longer, which the 72 hours cover (up to a TTL of 72 hours).
    notes.push(`the switch is done: a TTL over ${MAX_MX_TTL} s (${lookup.ttl ?? '?'} s) only meant resolvers kept the old MX longer after it; the 72 hours cover that`);
  } else if (ttlWarning !== null) {
    warnings.unshift(ttlWarning);
  }

  return {
    domain,
    resolver: lookup.resolver,
    answer: lookup.kind,
    canonicalName: lookup.aliases.length > 0 ? lookup.canonicalName : null,
    authoritative: lookup.ttlSource === 'authoritative',
    ttlFrom: lookup.answeredBy,
    ttl: lookup.ttl,
    ttlOk,
    mx,
    targetMx: targetText,
    targetAddresses,
    switched,
    switchedSeenAt: iso(seen),
    deleteSafeAt: iso(seen === null ? null : seen + MX_GRACE_MS),
    switchForgotten: iso(forgotten),
    tracked,
    warnings,
    notes,
    exitStatus: warnings.length > 0 ? 1 : 0,
  };
}
