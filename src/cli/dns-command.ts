/**
 * `mailferry dns check DOMAIN` (SPEC §7): the MX records and their TTL before the cut-over,
 * whether they point at the new system, and the 72 hours after the switch.
 */
import type { Command } from 'commander';
import { checkDomain, type DnsCheckResult } from '../dns/check.js';
import { DnsLookupError, DnsUsageError } from '../dns/errors.js';
import { MAX_MX_TTL, seconds } from '../dns/mx-verdict.js';
import { utc } from '../dns/mx-watch.js';
import { openStore, type Store } from '../store/open.js';
import { EXIT, UsageError } from './exit-codes.js';

type Run = (fn: () => Promise<number>) => Promise<void>;

/**
 * Test only: the port the domain's name servers are asked on (always 53 otherwise), so a
 * test's own authoritative server on a free loopback port can stand in for them.
 */
const NS_PORT_ENV = 'MAILFERRY_TEST_DNS_NS_PORT';

const HOUR = 3_600_000;

function pad(s: string, n: number): string {
  return s.length >= n ? s + ' ' : s + ' '.repeat(n - s.length);
}

/** The human report: one block per domain. */
export function formatCheck(r: DnsCheckResult, now: number): string {
  const out: string[] = [];
  const source = r.authoritative ? `configured TTL, from an authoritative answer of ${r.ttlFrom}` : `cached TTL from ${r.ttlFrom}: may be lower than the configured one`;
  out.push(`${r.domain}${r.canonicalName ? ` (alias of ${r.canonicalName})` : ''}: resolver ${r.resolver}; ${source}`);
  if (r.answer === 'nxdomain') out.push('  the domain does not exist (NXDOMAIN)');
  else if (r.answer === 'null-mx') out.push(`  null MX ("0 .", RFC 7505): the domain accepts no mail (TTL ${r.ttl ?? '?'})`);
  else {
    const shown = (m: DnsCheckResult['mx'][number]) => (m.implicit ? `${m.exchange} (implicit MX: no MX records)` : m.exchange);
    const w = Math.max(13, ...r.mx.map((m) => shown(m).length + 2));
    out.push(`  ${pad('PREF', 6)}${pad('MAIL SERVER', w)}${pad('TTL', 8)}${r.targetMx ? 'POINTS AT TARGET' : ''}`.trimEnd());
    for (const m of r.mx) {
      const ttl = m.implicit ? '-' : String(m.ttl);
      const name = shown(m);
      const points = m.pointsAtTarget === null ? '' : m.pointsAtTarget ? 'yes' : 'no';
      const addresses = m.addresses.length ? `  [${m.addresses.join(', ')}]` : '';
      out.push(`  ${pad(String(m.preference), 6)}${pad(name, w)}${pad(ttl, 8)}${points}${addresses}`.trimEnd());
    }
  }
  // The TTL verdict.
  const ttl = r.ttl === null ? 'unknown' : r.answer === 'no-mx' || r.answer === 'nxdomain' ? `${seconds(r.ttl)} (negative caching, RFC 2308)` : seconds(r.ttl);
  const verdict =
    r.ttlOk === true
      ? `ok (${MAX_MX_TTL} s or less)`
      : r.ttlOk === false
        ? r.switched === 'all'
          ? `more than ${MAX_MX_TTL} s (no matter now: the switch is done)`
          : `TOO HIGH (more than ${MAX_MX_TTL} s)`
        : r.answer === 'mx' || r.answer === 'no-mx' ? 'cannot tell' : '-';
  out.push(`  TTL: ${ttl}: ${verdict}`);
  // The switch and the 72 hours.
  if (r.switched === null) out.push('  switch: not checked (name the new system with --target-mx HOST)');
  else {
    const n = r.mx.length;
    const count = r.switched === 'all' ? `all ${n} record${n === 1 ? '' : 's'}` : `${r.mx.filter((m) => m.pointsAtTarget).length} of ${n}`;
    const words = r.switched === 'all' ? 'done' : r.switched === 'some' ? 'PARTIAL' : 'not yet';
    const addresses = r.targetAddresses.length && r.targetAddresses[0] !== r.targetMx ? ` [${r.targetAddresses.join(', ')}]` : '';
    out.push(`  switch to ${r.targetMx}${addresses}: ${words} (${count})`);
    if (r.switched === 'all' && r.switchedSeenAt && r.deleteSafeAt) {
      const safe = Date.parse(r.deleteSafeAt);
      const left = safe - now;
      out.push(
        `  MX points at ${r.targetMx} (${count}) since at least ${utc(Date.parse(r.switchedSeenAt))} (first seen by mailferry); ` +
          `72 hours after that: ${utc(safe)} (${left > 0 ? `${Math.ceil(left / HOUR)} h to go` : 'over: the batch may be deleted'})`,
      );
    } else if (r.switched === 'all') out.push('  72 hours: not tracked (no state database)');
    else out.push(`  72 hours: they start when every MX points at ${r.targetMx}`);
  }
  for (const w of r.warnings) out.push(`  warning: ${w}`);
  for (const n of r.notes) out.push(`  note: ${n}`);
  return out.join('\n') + '\n';
}

export function registerDnsCommands(program: Command, run: Run): void {
  const dns = program.command('dns').description("The cut-over (SPEC §7): a domain's MX records, their TTL, and the switch to the new system.");
  dns
    .command('check <domain>')
    .description(
      "Look up DOMAIN's MX records and the TTL that matters: the configured one (from an authoritative answer: the resolver's if it has the AA bit, " +
        "else the domain's own name servers asked directly; failing that the resolver's cached figure, said to be one). The TTL should be " +
        `${MAX_MX_TTL} s or less before the switch. With --target-mx, says whether each MX points at HOST (same name, or an address in common) ` +
        'and whether all, some or none do, and records in the state database when every MX was first seen pointing there: the 72 hours before ' +
        '`batch delete` count from then, and `batch delete` warns about the domain until they are over. A domain without MX records is checked ' +
        'by its own addresses (implicit MX, RFC 5321 §5.1). Exit status: 0 checked, nothing to warn about (TTL low enough, and with --target-mx every MX ' +
        'points at HOST; the 72 hours still running is not a warning); 1 checked with a warning (TTL too high or only a cached one seen, not or partly ' +
        'switched, MX moved back, null MX, no such domain); 2 bad usage (domain, host or --server not valid); 3 the resolver could not answer ' +
        '(timeouts, SERVFAIL, REFUSED: the message names the domain and each server).',
    )
    .option('--target-mx <host>', "the new system's MX host (a name, or an IP address); repeat it (or separate with commas) when the new system has several, a backup MX included", (v: string, prev: string[] | undefined) => [...(prev ?? []), v])
    .option('--server <ip[:port]>', 'the resolver to ask, e.g. 192.0.2.53 or [2001:db8::53]:5353 (default: the system\'s, from /etc/resolv.conf, in order)')
    .option('--timeout <seconds>', 'wait this long for each answer (UDP is asked twice)', '2')
    .option('--db <url>', 'state database for the 72-hour tracking (default MAILFERRY_DB or ~/.mailferry/mailferry.sqlite); used only with --target-mx')
    .option('--json', 'print the result as one JSON object on the last line of stdout (the report then goes to stderr)')
    .action((domain: string, f: { targetMx?: string[]; server?: string; timeout: string; db?: string; json?: boolean }) =>
      run(async () => {
        const timeout = Number(f.timeout);
        if (!Number.isFinite(timeout) || timeout <= 0 || timeout > 60) throw new UsageError(`--timeout must be a number of seconds from 0 to 60, not "${f.timeout}"`);
        const nsPortText = process.env[NS_PORT_ENV];
        const nameServerPort = nsPortText ? Number(nsPortText) : undefined;
        const now = Date.now();
        // Without a target nothing is recorded, so no database is opened (nor created).
        let store: Store | undefined;
        try {
          if (f.targetMx !== undefined) store = await openStore(f.db);
          const r = await checkDomain(store, {
            domain,
            ...(f.targetMx !== undefined ? { targetMx: f.targetMx.join(',') } : {}),
            ...(f.server !== undefined ? { server: f.server } : {}),
            timeoutMs: timeout * 1000,
            now,
            ...(nameServerPort !== undefined ? { nameServerPort } : {}),
          });
          (f.json ? process.stderr : process.stdout).write(formatCheck(r, now));
          if (f.json) process.stdout.write(JSON.stringify(r) + '\n');
          return r.exitStatus === 0 ? EXIT.ok : EXIT.incomplete;
        } catch (err) {
          if (err instanceof DnsUsageError) throw new UsageError(err.message);
          if (err instanceof DnsLookupError) {
            process.stderr.write(`mailferry: ${err.message}\n`);
            if (f.json) process.stdout.write(JSON.stringify({ error: err.message, exitStatus: EXIT.connect, domain, servers: err.failures }) + '\n');
            return EXIT.connect;
          }
          throw err;
        } finally {
          await store?.close();
        }
      }),
    );
}
