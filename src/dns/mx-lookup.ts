/**
 * A domain's MX records with the TTL that matters: the one configured in the zone, since
 * that is how long resolvers may keep serving the old MX after the switch. A resolver's
 * own answer carries its cache's countdown (RFC 1035 §6.1.2), anywhere from the
 * configured value down to 0, so unless the answer is authoritative (AA bit) the zone's
 * name servers are asked directly, without recursion; only if none of them answers is
 * the resolver's figure used, and said to be a cached one.
 */
import type { Answer, MxAnswer, SoaAnswer } from 'dns-packet';
import { DnsLookupError } from './errors.js';
import { sameName, serverText } from './names.js';
import { type DnsResponse, type QueryOptions, queryDns } from './query.js';
import type { Resolver } from './resolver.js';

export interface MxRecord {
  preference: number;
  /** The mail server's name, lower case, no trailing dot. */
  exchange: string;
  ttl: number;
}

/**
 * What the zone says about mail to the domain:
 * - `mx`: MX records (sorted by preference, RFC 5321 §5.1: lowest first);
 * - `null-mx`: the single record `0 .` (RFC 7505): the domain accepts no mail;
 * - `no-mx`: the name exists but has no MX (NODATA, RFC 2308 §2.2): mail goes to its
 *   own A/AAAA addresses, the "implicit MX" of RFC 5321 §5.1;
 * - `nxdomain`: the name does not exist (RFC 2308 §2.1).
 */
export type MxAnswerKind = 'mx' | 'null-mx' | 'no-mx' | 'nxdomain';

export interface MxLookup {
  /** The domain asked about. */
  domain: string;
  /** The name the MX records belong to: the domain, or where its CNAME chain ends. */
  canonicalName: string;
  /** The CNAME chain from the domain (RFC 1034 §3.6.2), empty for most domains. */
  aliases: { name: string; target: string; ttl: number }[];
  kind: MxAnswerKind;
  /** `mx` only (a null MX is not a mail server), sorted by preference then name. */
  records: MxRecord[];
  /**
   * The MX RRset's TTL (its lowest, should the records disagree: RFC 2181 §5.2); for
   * `no-mx` and `nxdomain` how long resolvers cache the negative answer (RFC 2308 §5:
   * the SOA record's TTL or its MINIMUM field, whichever is lower), null without an SOA.
   */
  ttl: number | null;
  /**
   * `authoritative`: from an answer with the AA bit (the resolver asked is itself a server
   * of the zone, or a name server of the zone answered); `cached`: only the resolver's
   * answer, whose TTL may be lower than the configured one.
   */
  ttlSource: 'authoritative' | 'cached';
  /** `host:port` of the server whose answer the records and TTL come from. */
  answeredBy: string;
  /** `host:port` of the resolver asked first. */
  resolver: string;
  /** The zone's name servers tried for an authoritative answer, with why each did not give one (empty when not needed). */
  nameServersTried: { server: string; reason: string }[];
  /** Oddities worth telling the admin (a null MX beside other MX records…). */
  warnings: string[];
}

export interface LookupOptions {
  /** Passed to each query (timeouts). */
  query?: QueryOptions;
  /**
   * The port the zone's name servers are asked on. Always 53 in use (RFC 1035 §4.2);
   * tests set it to reach a name server of their own on a free loopback port.
   */
  nameServerPort?: number;
}

/** CNAME chains longer than this are given up (RFC 1034 §3.6.2 wants chains followed, but loops exist). */
const MAX_ALIASES = 8;
/** Name-server addresses asked for the configured TTL, each once: enough for the usual 2–4 NS, bounded when they are all unreachable. */
const MAX_NS_ADDRESSES = 4;

const bare = (name: string) => name.replace(/\.$/, '').toLowerCase();

/** Follows the CNAMEs in `answers` from `name`; returns where the chain ends. */
function chase(answers: readonly Answer[], name: string): { name: string; aliases: MxLookup['aliases'] } {
  const aliases: MxLookup['aliases'] = [];
  let current = name;
  for (let i = 0; i < MAX_ALIASES; i++) {
    const c = answers.find((a) => a.type === 'CNAME' && sameName(a.name, current));
    if (!c || c.type !== 'CNAME') break;
    aliases.push({ name: bare(current), target: bare(c.data), ttl: c.ttl ?? 0 });
    current = c.data;
  }
  return { name: bare(current), aliases };
}

/** RFC 2308 §5: a negative answer is cached for min(SOA TTL, SOA MINIMUM). */
export function negativeTtl(r: DnsResponse): number | null {
  const soa = r.authorities.find((a): a is SoaAnswer => a.type === 'SOA');
  if (!soa) return null;
  return Math.min(soa.ttl ?? 0, soa.data.minimum ?? soa.ttl ?? 0);
}

/** The zone apex named by an SOA in the authority section (NODATA and NXDOMAIN answers carry one, RFC 2308 §3). */
function soaZone(r: DnsResponse): string | null {
  const soa = r.authorities.find((a) => a.type === 'SOA');
  return soa ? bare(soa.name) : null;
}

type Classified = Pick<MxLookup, 'kind' | 'records' | 'ttl' | 'warnings'>;

/** What one response says about mail to `name` (the end of the CNAME chain). */
function classify(r: DnsResponse, name: string): Classified {
  if (r.rcode === 'NXDOMAIN') return { kind: 'nxdomain', records: [], ttl: negativeTtl(r), warnings: [] };
  const mx = r.answers.filter((a): a is MxAnswer => a.type === 'MX' && sameName(a.name, name));
  if (mx.length === 0) return { kind: 'no-mx', records: [], ttl: negativeTtl(r), warnings: [] };
  const ttl = Math.min(...mx.map((a) => a.ttl ?? 0));
  const records = mx
    .map((a) => ({ preference: a.data.preference ?? 0, exchange: bare(a.data.exchange), ttl: a.ttl ?? 0 }))
    .sort((a, b) => a.preference - b.preference || (a.exchange < b.exchange ? -1 : a.exchange > b.exchange ? 1 : 0));
  const real = records.filter((m) => m.exchange !== '' && m.exchange !== '.');
  if (real.length === 0) return { kind: 'null-mx', records: [], ttl, warnings: [] };
  const warnings: string[] = [];
  // RFC 7505 §3: a domain with a null MX must have no other MX; senders then use the others.
  if (real.length < records.length) warnings.push(`${name} has a null MX ("0 .", RFC 7505) beside other MX records: a misconfiguration; senders use the other records`);
  if (new Set(records.map((m) => m.ttl)).size > 1) warnings.push(`the MX records of ${name} have different TTLs (${[...new Set(records.map((m) => m.ttl))].join(', ')} s): resolvers use the lowest (RFC 2181 §5.2)`);
  return { kind: 'mx', records: real, ttl, warnings };
}

/** The A and AAAA addresses of `host`, through the resolver; `problem` says why there are none when a lookup failed. */
export async function lookupAddresses(resolver: Resolver, host: string): Promise<{ addresses: string[]; problem: string | null }> {
  const addresses: string[] = [];
  const problems: string[] = [];
  for (const type of ['A', 'AAAA'] as const) {
    try {
      const r = await resolver.query(host, type, `the ${type} records of ${host}`);
      if (r.rcode === 'NXDOMAIN') return { addresses: [], problem: `${host} does not exist (NXDOMAIN)` };
      // The answer's CNAME chain ends at the addresses: every A/AAAA record in it is the host's.
      for (const a of r.answers) if ((a.type === 'A' || a.type === 'AAAA') && !addresses.includes(a.data.toLowerCase())) addresses.push(a.data.toLowerCase());
    } catch (err) {
      if (!(err instanceof DnsLookupError)) throw err;
      problems.push(err.message);
    }
  }
  if (addresses.length > 0) return { addresses, problem: null };
  return { addresses, problem: problems.length ? problems.join('; ') : `${host} has no A or AAAA record` };
}

/**
 * An authoritative answer to `name MX` from one of the zone's own name servers, asked
 * without recursion (RD=0); null, with the reasons, when none gives one.
 */
async function askNameServers(resolver: Resolver, name: string, first: DnsResponse, opts: LookupOptions): Promise<{ response: DnsResponse | null; tried: MxLookup['nameServersTried'] }> {
  const tried: MxLookup['nameServersTried'] = [];
  // The zone: `name` itself when it has NS records (a zone apex, as most mail domains are),
  // else the zone an SOA in a negative answer names (RFC 2308 §3).
  const candidates = [name];
  const fromFirst = soaZone(first);
  if (fromFirst !== null && fromFirst !== name) candidates.push(fromFirst);
  let ns: string[] = [];
  for (let i = 0; i < candidates.length && ns.length === 0 && i < 4; i++) {
    const zone = candidates[i]!;
    try {
      const r = await resolver.query(zone, 'NS', `the NS records of ${zone}`);
      ns = r.answers.flatMap((a) => (a.type === 'NS' && sameName(a.name, zone) ? [bare(a.data)] : []));
      const apex = soaZone(r);
      if (ns.length === 0 && apex !== null && !candidates.includes(apex)) candidates.push(apex);
    } catch (err) {
      if (!(err instanceof DnsLookupError)) throw err;
      tried.push({ server: '-', reason: err.message });
    }
  }
  if (ns.length === 0) {
    tried.push({ server: '-', reason: `found no NS records for ${candidates.join(' or ')}` });
    return { response: null, tried };
  }
  let asked = 0;
  for (const host of ns) {
    const { addresses, problem } = await lookupAddresses(resolver, host);
    if (problem) tried.push({ server: host, reason: problem });
    for (const address of addresses) {
      if (asked++ >= MAX_NS_ADDRESSES) return { response: null, tried };
      const server = { host: address, port: opts.nameServerPort ?? 53 };
      try {
        // One attempt each: a name server that does not answer is passed over for the next.
        const r = await queryDns(server, name, 'MX', { ...opts.query, recursionDesired: false, attempts: 1 });
        if (r.authoritative && (r.rcode === 'NOERROR' || r.rcode === 'NXDOMAIN')) return { response: r, tried };
        tried.push({ server: `${host} (${serverText(server)})`, reason: r.authoritative ? `answered ${r.rcode}` : 'answered without authority (AA bit not set)' });
      } catch (err) {
        tried.push({ server: `${host} (${serverText(server)})`, reason: (err as Error & { reason?: string }).reason ?? (err as Error).message });
      }
    }
  }
  return { response: null, tried };
}

/** Looks up `domain`'s MX records (DnsLookupError when the resolver cannot answer at all). */
export async function lookupMx(resolver: Resolver, domain: string, opts: LookupOptions = {}): Promise<MxLookup> {
  let name = domain;
  const aliases: MxLookup['aliases'] = [];
  let r: DnsResponse;
  for (;;) {
    r = await resolver.query(name, 'MX', `the MX records of ${domain}${name !== domain ? ` (through its alias ${name})` : ''}`);
    const c = chase(r.answers, name);
    aliases.push(...c.aliases);
    name = c.name;
    // A server that holds the alias but not its target answers with the CNAME alone: ask for the target.
    const stopped = r.rcode === 'NOERROR' && c.aliases.length > 0 && !r.answers.some((a) => a.type === 'MX' && sameName(a.name, name)) && soaZone(r) === null;
    if (!stopped || aliases.length >= MAX_ALIASES) break;
  }
  if (r.authoritative) {
    return { domain, canonicalName: name, aliases, ...classify(r, name), ttlSource: 'authoritative', answeredBy: serverText(r.server), resolver: serverText(r.server), nameServersTried: [] };
  }
  const { response, tried } = await askNameServers(resolver, name, r, opts);
  const source = response ?? r;
  return {
    domain,
    canonicalName: name,
    aliases,
    ...classify(source, name),
    ttlSource: response ? 'authoritative' : 'cached',
    answeredBy: serverText(source.server),
    resolver: serverText(r.server),
    nameServersTried: tried,
  };
}
