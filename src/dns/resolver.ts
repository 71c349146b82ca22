/**
 * The resolver a check asks: `--server IP[:PORT]`, or else the system's (node:dns
 * `getServers()`, which reads /etc/resolv.conf), tried in order as a stub resolver does
 * (RFC 1034 §5.3.1): a server that does not answer, or answers SERVFAIL or REFUSED, is
 * passed over for the next; a definite answer (records, NODATA, NXDOMAIN) ends the search.
 */
import { getServers } from 'node:dns';
import type { RecordType } from 'dns-packet';
import { DnsLookupError, DnsUsageError } from './errors.js';
import { type DnsServer, parseServer, serverText } from './names.js';
import { DnsQueryError, type DnsResponse, type QueryOptions, queryDns } from './query.js';

/** What a failed RCODE means, for the error message. */
const RCODE_WORDS: Record<string, string> = {
  SERVFAIL: 'SERVFAIL (the server failed to resolve it: a broken delegation, an unreachable or DNSSEC-failing zone)',
  REFUSED: 'REFUSED (it will not answer this question for us: not a resolver open to this host, or not its zone)',
  NOTIMP: 'NOTIMP (it does not implement this query)',
  FORMERR: 'FORMERR (it could not read the question)',
};

/** RCODEs that say "this server could not", not "the name is so": another server may do better. */
export function isServerFailure(rcode: string): boolean {
  return rcode !== 'NOERROR' && rcode !== 'NXDOMAIN';
}

export class Resolver {
  constructor(
    readonly servers: readonly DnsServer[],
    private readonly opts: QueryOptions = {},
  ) {
    if (servers.length === 0) throw new DnsUsageError('no DNS server to ask: the system has none configured (/etc/resolv.conf); name one with --server');
  }

  /** `--server` if given, else the system's servers. */
  static from(server: string | undefined, opts: QueryOptions = {}): Resolver {
    return new Resolver(server !== undefined ? [parseServer(server)] : getServers().map((s) => parseServer(s)), opts);
  }

  /** Names the servers, for messages. */
  describe(): string {
    return this.servers.map(serverText).join(', ');
  }

  /**
   * The first definite answer (NOERROR or NXDOMAIN) from the servers in order. `what` says
   * what was asked ("the MX records of example.org") for the DnsLookupError that is thrown
   * when no server gives one.
   */
  async query(name: string, type: RecordType, what: string): Promise<DnsResponse> {
    const failures: { server: string; reason: string }[] = [];
    for (const server of this.servers) {
      try {
        const r = await queryDns(server, name, type, this.opts);
        if (!isServerFailure(r.rcode)) return r;
        failures.push({ server: serverText(server), reason: `answered ${RCODE_WORDS[r.rcode] ?? r.rcode}` });
      } catch (err) {
        if (!(err instanceof DnsQueryError)) throw err;
        failures.push({ server: serverText(server), reason: err.reason });
      }
    }
    throw new DnsLookupError(`could not look up ${what}: ${failures.map((f) => `${f.server}: ${f.reason}`).join('; ')}`, failures);
  }
}
