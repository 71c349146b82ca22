/**
 * `mailferry dns check` (SPEC §7) against a lab DNS server on loopback (src/lab/dns-server.ts):
 * TTL verdicts, authoritative and cached TTLs (the domain's name servers asked directly on
 * a test port), sorting, the switch verdict by name and by address, NXDOMAIN, implicit and
 * null MX, CNAMEs, TC→TCP, servers that fail or stay silent; the 72-hour tracking in the
 * state database (SQLite, and PostgreSQL when the local one is up); batch deletion that
 * consults it; and the built CLI end to end.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Answer } from 'dns-packet';
import { createBatch } from '../src/batch/create.js';
import { DeleteTooEarlyError } from '../src/batch/errors.js';
import { deleteBatch } from '../src/batch/lifecycle.js';
import { checkDomain } from '../src/dns/check.js';
import { DnsLookupError, DnsUsageError } from '../src/dns/errors.js';
import { pointsAtTarget, switchState, ttlVerdict } from '../src/dns/mx-verdict.js';
import { batchMxReport, recordMxCheck } from '../src/dns/mx-watch.js';
import { MxWatcher } from '../src/dns/mx-watcher.js';
import { pino } from 'pino';
import { normalizeDomain, parseServer } from '../src/dns/names.js';
import { Resolver } from '../src/dns/resolver.js';
import { type LabDnsServer, startDnsServer } from '../src/lab/dns-server.js';
import { generateSecretKeyText, loadSecretKey } from '../src/secrets/index.js';
import { insertEndpoint } from '../src/store/endpoints.js';
import type { Store } from '../src/store/open.js';
import { runCli } from './helpers/cli.js';
import { type DialectName, freshDb, postgresUnavailable, type TestDb } from './helpers/batch-lab.js';

const H = 3_600_000;
const T0 = Date.parse('2026-11-28T08:00:00Z');

const mx = (name: string, preference: number, exchange: string, ttl = 300): Answer => ({ type: 'MX', name, ttl, class: 'IN', data: { preference, exchange } });
const a = (name: string, ip: string, ttl = 300): Answer => ({ type: 'A', name, ttl, class: 'IN', data: ip });
const aaaa = (name: string, ip: string, ttl = 300): Answer => ({ type: 'AAAA', name, ttl, class: 'IN', data: ip });
const ns = (name: string, host: string): Answer => ({ type: 'NS', name, ttl: 3600, class: 'IN', data: host });
const cname = (name: string, target: string): Answer => ({ type: 'CNAME', name, ttl: 600, class: 'IN', data: target });
const soa = (zone: string, ttl = 3600, minimum = 900): Answer => ({
  type: 'SOA', name: zone, ttl, class: 'IN',
  data: { mname: `ns1.${zone}`, rname: `hostmaster.${zone}`, serial: 1, refresh: 3600, retry: 600, expire: 86400, minimum },
});

/** The namespace the lab server serves: example.org's zone, the old and new mail systems. */
function world(mxTtl = 300): Answer[] {
  return [
    soa('example.org'),
    ns('example.org', 'ns1.example.org'),
    a('ns1.example.org', '127.0.0.1'),
    mx('example.org', 20, 'mx2.old.example', mxTtl),
    mx('example.org', 10, 'mx1.old.example', mxTtl),
    a('mx1.old.example', '198.51.100.1'),
    a('mx2.old.example', '198.51.100.2'),
    a('mx.new.example', '192.0.2.10'),
    aaaa('mx.new.example', '2001:db8::10'),
    soa('old.example'),
    soa('new.example'),
  ];
}

/** A loopback port nothing listens on (UDP there fails at once with "port unreachable"). */
async function closedPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

const servers: LabDnsServer[] = [];
async function lab(records: Answer[], behaviour: Parameters<typeof startDnsServer>[1] = {}): Promise<LabDnsServer> {
  const s = await startDnsServer(records, behaviour);
  servers.push(s);
  return s;
}
after(async () => {
  await Promise.all(servers.map((s) => s.stop()));
});

describe('names and verdicts', () => {
  test('domain and server syntax', () => {
    assert.equal(normalizeDomain('Example.ORG.'), 'example.org');
    assert.equal(normalizeDomain('bücher.example'), 'xn--bcher-kva.example');
    for (const bad of ['', 'exa mple.org', 'a..b', '-a.org', `${'x'.repeat(64)}.org`, '192.0.2.1']) assert.throws(() => normalizeDomain(bad), DnsUsageError, bad);
    assert.deepEqual(parseServer('192.0.2.1'), { host: '192.0.2.1', port: 53 });
    assert.deepEqual(parseServer('192.0.2.1:5353'), { host: '192.0.2.1', port: 5353 });
    assert.deepEqual(parseServer('[2001:db8::1]:5353'), { host: '2001:db8::1', port: 5353 });
    assert.deepEqual(parseServer('2001:db8::1'), { host: '2001:db8::1', port: 53 });
    for (const bad of ['dns.example', '192.0.2.1:0', '192.0.2.1:70000', '[::1]:x', '']) assert.throws(() => parseServer(bad), DnsUsageError, bad);
  });

  test('TTL verdicts: authoritative, cached above and below the limit', () => {
    assert.equal(ttlVerdict(3600, 'authoritative', 'MX').ok, true);
    const high = ttlVerdict(86400, 'authoritative', 'MX');
    assert.equal(high.ok, false);
    assert.match(high.message, /lower it to 3600 s or less at least 86400 s \(24 h\) before the switch, so resolvers forget the old MX in time/);
    assert.equal(ttlVerdict(7200, 'cached', 'MX').ok, false, 'a cached figure above the limit proves the configured one is too');
    assert.equal(ttlVerdict(1200, 'cached', 'MX').ok, null, 'below it proves nothing');
  });

  test('pointing at the target: by name (case, trailing dot) or by a shared address in any spelling', () => {
    const t = { name: 'mx.new.example', addresses: ['192.0.2.10', '2001:db8::10'] };
    assert.equal(pointsAtTarget('MX.New.Example.', [], t), true);
    assert.equal(pointsAtTarget('mail.example.org', ['192.0.2.10'], t), true);
    assert.equal(pointsAtTarget('mail.example.org', ['2001:0db8:0:0:0:0:0:0010'], t), true);
    assert.equal(pointsAtTarget('mail.example.org', ['192.0.2.11'], t), false);
    assert.equal(switchState([true, true]), 'all');
    assert.equal(switchState([true, false]), 'some');
    assert.equal(switchState([false]), 'none');
    assert.equal(switchState([]), 'none');
  });
});

describe('dns check against a lab server', () => {
  const opts = (s: LabDnsServer, extra: Partial<Parameters<typeof checkDomain>[1]> = {}) => ({ domain: 'example.org', server: s.address, timeoutMs: 400, ...extra });

  test('a low authoritative TTL is ok; MX records come sorted by preference', async () => {
    const s = await lab(world(300));
    const r = await checkDomain(undefined, opts(s));
    assert.equal(r.answer, 'mx');
    assert.equal(r.authoritative, true);
    assert.equal(r.ttl, 300);
    assert.equal(r.ttlOk, true);
    assert.deepEqual(r.mx.map((m) => [m.preference, m.exchange, m.ttl]), [[10, 'mx1.old.example', 300], [20, 'mx2.old.example', 300]]);
    assert.equal(r.switched, null);
    assert.deepEqual(r.warnings, []);
    assert.equal(r.exitStatus, 0);
    // Preference first (lowest first, RFC 5321 §5.1), the name only between equals.
    s.records.push(...[[30, 'a.old.example'], [10, 'c.old.example'], [20, 'b.old.example'], [10, 'b.old.example']].map(([p, e]) => mx('several.example', p as number, e as string)));
    const several = await checkDomain(undefined, opts(s, { domain: 'several.example' }));
    assert.deepEqual(several.mx.map((m) => `${m.preference} ${m.exchange}`), ['10 b.old.example', '10 c.old.example', '20 b.old.example', '30 a.old.example']);
  });

  test('a TTL over 3600 s is a warning with the advice', async () => {
    const s = await lab(world(86400));
    const r = await checkDomain(undefined, opts(s));
    assert.equal(r.ttl, 86400);
    assert.equal(r.ttlOk, false);
    assert.match(r.warnings.join('\n'), /86400 s \(24 h\), more than 3600 s: lower it to 3600 s or less at least 86400 s \(24 h\) before the switch/);
    assert.equal(r.exitStatus, 1);
  });

  test("a resolver's cached TTL: the zone's name servers are asked without recursion, and their AA answer wins", async () => {
    // The "resolver" answers without AA and with a counted-down TTL; the zone's name server
    // (ns1.example.org = 127.0.0.1, on the test port) has the configured one.
    const resolver = await lab(world(1200), { authoritative: false });
    const auth = await lab(world(86400));
    const r = await checkDomain(undefined, opts(resolver, { nameServerPort: auth.port }));
    assert.equal(r.authoritative, true);
    assert.equal(r.ttl, 86400, 'the configured TTL, not the cached 1200');
    assert.equal(r.ttlFrom, auth.address);
    assert.equal(r.ttlOk, false);
    const asked = auth.queries.filter((q) => q.type === 'MX');
    assert.ok(asked.length > 0 && asked.every((q) => !q.recursionDesired), JSON.stringify(auth.queries));
    assert.ok(resolver.queries.some((q) => q.type === 'NS' && q.name === 'example.org'));
  });

  test('no name server answers with authority: the cached TTL is used and said to be one', async () => {
    const resolver = await lab(world(1200), { authoritative: false });
    const r = await checkDomain(undefined, opts(resolver, { nameServerPort: await closedPort() }));
    assert.equal(r.authoritative, false);
    assert.equal(r.ttl, 1200);
    assert.equal(r.ttlOk, null);
    assert.match(r.warnings.join('\n'), /only a cached TTL was seen: 1200 s.*configured TTL may be higher/);
    assert.equal(r.exitStatus, 1);
    // A name server that answers, but without authority, does not count either.
    const lame = await lab(world(86400), { authoritative: false });
    const r2 = await checkDomain(undefined, opts(resolver, { nameServerPort: lame.port }));
    assert.equal(r2.authoritative, false);
    assert.equal(r2.ttl, 1200);
    // And a cached figure above the limit is too high whatever the configured one.
    const highCache = await lab(world(7000), { authoritative: false });
    const r3 = await checkDomain(undefined, opts(highCache, { nameServerPort: await closedPort() }));
    assert.equal(r3.ttlOk, false);
    assert.match(r3.warnings.join('\n'), /at least 7000 s/);
  });

  test('the target by name (case and trailing dot ignored): all records point at it', async () => {
    const s = await lab([...world(), mx('switched.example', 10, 'MX.NEW.EXAMPLE.'), mx('switched.example', 20, 'mx.new.example')]);
    const r = await checkDomain(undefined, opts(s, { domain: 'switched.example', targetMx: 'mx.new.example.' }));
    assert.deepEqual(r.mx.map((m) => m.pointsAtTarget), [true, true]);
    assert.equal(r.switched, 'all');
    assert.equal(r.exitStatus, 0);
    assert.deepEqual(r.targetAddresses, ['192.0.2.10', '2001:db8::10']);
  });

  test('the target by address: an MX named in the domain with the new system\'s address; HOST as an IP literal', async () => {
    const s = await lab([...world(), mx('own.example', 10, 'mail.own.example'), a('mail.own.example', '203.0.113.5'), aaaa('mail.own.example', '2001:db8::10')]);
    const r = await checkDomain(undefined, opts(s, { domain: 'own.example', targetMx: 'mx.new.example' }));
    assert.equal(r.switched, 'all', JSON.stringify(r));
    assert.deepEqual(r.mx[0]!.addresses, ['203.0.113.5', '2001:db8::10']);
    const byIp = await checkDomain(undefined, opts(s, { domain: 'own.example', targetMx: '203.0.113.5' }));
    assert.equal(byIp.switched, 'all');
    const other = await checkDomain(undefined, opts(s, { domain: 'own.example', targetMx: '203.0.113.6' }));
    assert.equal(other.switched, 'none');
  });

  test('some records point at the target: partial, naming the others; none: not yet', async () => {
    const s = await lab([...world(), mx('half.example', 10, 'mx.new.example'), mx('half.example', 20, 'mx2.old.example')]);
    const some = await checkDomain(undefined, opts(s, { domain: 'half.example', targetMx: 'mx.new.example' }));
    assert.equal(some.switched, 'some');
    assert.match(some.warnings.join('\n'), /only in part \(1 of 2 records\): mail may still reach the old server through mx2\.old\.example \(preference 20\)/);
    assert.equal(some.exitStatus, 1);
    const none = await checkDomain(undefined, opts(s, { targetMx: 'mx.new.example' }));
    assert.equal(none.switched, 'none');
    assert.match(none.warnings.join('\n'), /does not point at mx\.new\.example yet \(none of 2 records\)/);
  });

  test('a new system with two MX hosts (or a backup MX): naming them all, every record points at the target', async () => {
    const s = await lab([...world(), mx('two.example', 10, 'mx.new.example'), mx('two.example', 20, 'backup.relay.example'), a('backup.relay.example', '203.0.113.9')]);
    const one = await checkDomain(undefined, opts(s, { domain: 'two.example', targetMx: 'mx.new.example' }));
    assert.equal(one.switched, 'some');
    assert.match(one.warnings.join('\n'), /name it as well: --target-mx mx\.new\.example,backup\.relay\.example/);
    const both = await checkDomain(undefined, opts(s, { domain: 'two.example', targetMx: 'backup.relay.example, MX.new.example.' }));
    assert.equal(both.switched, 'all');
    assert.equal(both.targetMx, 'backup.relay.example,mx.new.example', 'sorted: the same hosts in any order are one target');
    assert.deepEqual(both.mx.map((m) => m.pointsAtTarget), [true, true]);
    assert.equal(both.exitStatus, 0);
  });

  test('NXDOMAIN: the domain does not exist', async () => {
    const s = await lab(world());
    const r = await checkDomain(undefined, opts(s, { domain: 'nosuch.example' }));
    assert.equal(r.answer, 'nxdomain');
    assert.deepEqual(r.mx, []);
    assert.match(r.warnings.join('\n'), /nosuch\.example does not exist \(NXDOMAIN/);
    assert.equal(r.exitStatus, 1);
  });

  test('no MX records: the implicit MX (RFC 5321 §5.1) is the domain\'s own address', async () => {
    const s = await lab([...world(), soa('bare.example', 3600, 600), a('bare.example', '192.0.2.10')]);
    const r = await checkDomain(undefined, opts(s, { domain: 'bare.example', targetMx: 'mx.new.example' }));
    assert.equal(r.answer, 'no-mx');
    assert.equal(r.mx.length, 1);
    assert.equal(r.mx[0]!.implicit, true);
    assert.equal(r.mx[0]!.exchange, 'bare.example');
    assert.equal(r.ttl, 600, 'the negative-caching TTL: min(SOA TTL, MINIMUM), RFC 2308 §5');
    assert.match(r.notes.join('\n'), /implicit MX, RFC 5321 §5\.1/);
    assert.equal(r.switched, 'all', 'its address is the target\'s');
  });

  test('a null MX (RFC 7505): the domain accepts no mail', async () => {
    const s = await lab([...world(), mx('nomail.example', 0, '.')]);
    const r = await checkDomain(undefined, opts(s, { domain: 'nomail.example' }));
    assert.equal(r.answer, 'null-mx');
    assert.deepEqual(r.mx, []);
    assert.match(r.warnings.join('\n'), /null MX.*accepts no mail/);
    assert.equal(r.exitStatus, 1);
  });

  test('a CNAME: the MX records are the alias target\'s, and said so', async () => {
    const s = await lab([...world(), cname('alias.example', 'example.org')]);
    const r = await checkDomain(undefined, opts(s, { domain: 'alias.example' }));
    assert.equal(r.canonicalName, 'example.org');
    assert.deepEqual(r.mx.map((m) => m.exchange), ['mx1.old.example', 'mx2.old.example']);
    assert.match(r.notes.join('\n'), /alias \(CNAME example\.org\)/);
  });

  test('a truncated UDP answer (TC bit) is asked again over TCP (RFC 7766)', async () => {
    const s = await lab(world(), { truncateUdp: true });
    const r = await checkDomain(undefined, opts(s));
    assert.deepEqual(r.mx.map((m) => m.exchange), ['mx1.old.example', 'mx2.old.example']);
    const mxQueries = s.queries.filter((q) => q.type === 'MX').map((q) => q.transport);
    assert.deepEqual(mxQueries, ['udp', 'tcp']);
  });

  test('SERVFAIL, REFUSED and silence: a DnsLookupError naming the domain and the server', async () => {
    for (const rcode of ['SERVFAIL', 'REFUSED'] as const) {
      const s = await lab(world(), { rcode });
      await assert.rejects(checkDomain(undefined, opts(s)), (err: Error) => {
        assert.ok(err instanceof DnsLookupError, String(err));
        assert.match(err.message, new RegExp(`MX records of example\\.org: 127\\.0\\.0\\.1:${s.port}: answered ${rcode}`));
        return true;
      });
    }
    const silent = await lab(world(), { silent: true });
    const started = Date.now();
    await assert.rejects(checkDomain(undefined, opts(silent, { timeoutMs: 200 })), (err: Error) => {
      assert.ok(err instanceof DnsLookupError);
      assert.match(err.message, new RegExp(`example\\.org: 127\\.0\\.0\\.1:${silent.port}: no answer within 0\\.2 s \\(asked 2 times over UDP\\)`));
      return true;
    });
    assert.ok(Date.now() - started >= 400, 'asked twice');
    assert.equal(silent.queries.length, 2, 'one retry');
  });

  test('servers are tried in order: a silent or failing first server is passed over', async () => {
    const silent = await lab(world(), { silent: true });
    const failing = await lab(world(), { rcode: 'SERVFAIL' });
    const good = await lab(world());
    const r = new Resolver([silent, failing, good].map((s) => ({ host: s.host, port: s.port })), { timeoutMs: 200 });
    const answer = await r.query('example.org', 'MX', 'the MX records of example.org');
    assert.equal(answer.server.port, good.port);
    assert.equal(answer.answers.filter((x) => x.type === 'MX').length, 2);
  });
});

for (const dialect of ['sqlite', 'postgres'] as DialectName[]) {
  describe(`the 72 hours in the state database (${dialect})`, async () => {
    const skip = dialect === 'postgres' ? await postgresUnavailable() : null;
    if (skip) process.stderr.write(`# skipping PostgreSQL MX-watch tests: ${skip}\n`);
    let dir: string;
    let db: TestDb;
    let store: Store;
    let s: LabDnsServer;
    const key = loadSecretKey({ env: { MAILFERRY_SECRET_KEY: generateSecretKeyText() } });

    before(async () => {
      if (skip) return;
      dir = mkdtempSync(join(tmpdir(), 'mailferry-dns-'));
      db = await freshDb(dialect, dir);
      store = await db.open();
      s = await lab(world());
      for (const [role, name] of [['source', 'src'], ['target', 'tgt']] as const) {
        await insertEndpoint(store.db, {
          role, name, host: '127.0.0.1', port: 1, tls: 'none', auth: 'login', accept_untrusted_cert: 0, max_concurrent_migrations: 1, max_concurrent_incremental_syncs: 1,
          admin_user: role === 'target' ? 'admin' : null, impersonation: role === 'target' ? 'sasl' : null, separator: null, password_enc: null, created_at: Date.now(),
        });
      }
    });
    after(async () => {
      if (skip) return;
      await store?.close();
      await db?.drop();
      rmSync(dir, { recursive: true, force: true });
    });

    const setMx = (exchanges: string[]) => {
      s.records = [...world().filter((r) => !(r.type === 'MX' && r.name === 'example.org')), ...exchanges.map((e, i) => mx('example.org', 10 * (i + 1), e))];
    };
    const check = (now: number, targetMx: string | null = 'mx.new.example') => checkDomain(store, { domain: 'example.org', server: s.address, timeoutMs: 400, now, ...(targetMx ? { targetMx } : {}) });

    test('the first switch seen is kept across checks, forgotten when MX moves back, and nothing is written without --target-mx', { skip: skip ?? false }, async () => {
      setMx(['mx1.old.example']);
      await check(T0 - H, null);
      assert.equal((await store.db.selectFrom('mx_watch').selectAll().execute()).length, 0, 'no target: no row');
      const before = await check(T0 - H);
      assert.equal(before.switched, 'none');
      assert.equal(before.switchedSeenAt, null);
      setMx(['mx.new.example', 'mx.new.example']);
      const first = await check(T0);
      assert.equal(first.switched, 'all');
      assert.equal(first.switchedSeenAt, new Date(T0).toISOString());
      assert.equal(first.deleteSafeAt, new Date(T0 + 72 * H).toISOString());
      assert.equal(first.tracked, true);
      const later = await check(T0 + 11 * H);
      assert.equal(later.switchedSeenAt, new Date(T0).toISOString(), 'the first time seen is kept');
      const row = await store.db.selectFrom('mx_watch').selectAll().executeTakeFirstOrThrow();
      assert.deepEqual([row.domain, row.target_mx, row.state, row.switched_seen_at, row.checked_at, row.ttl], ['example.org', 'mx.new.example', 'all', T0, T0 + 11 * H, 300]);
      setMx(['mx.new.example', 'mx2.old.example']);
      const back = await check(T0 + 12 * H);
      assert.equal(back.switched, 'some');
      assert.equal(back.switchedSeenAt, null);
      assert.equal(back.switchForgotten, new Date(T0).toISOString());
      assert.match(back.warnings.join('\n'), /no longer points \(fully\) at mx\.new\.example: the switch first seen at 2026-11-28T08:00:00\.000Z is forgotten/);
      setMx(['mx.new.example']);
      const again = await check(T0 + 13 * H);
      assert.equal(again.switchedSeenAt, new Date(T0 + 13 * H).toISOString(), 'the 72 hours start again');
    });

    test('batch delete refuses within 72 hours of the recorded switch, and names mailboxes not synced since', { skip: skip ?? false }, async () => {
      const csv = ['EmailAddress,UserName,Password', 'a@example.org,a,pw-a', 'b@Example.org,b,pw-b', 'c@other.example,c,pw-c'].join('\n');
      const created = await createBatch(store, { name: 'cut', csv: Buffer.from(csv), endpoint: 'src', target: 'tgt', exclude: [], include: [], notify: [], receivedAfter: null, badItemLimit: null, start: { kind: 'now' } }, key);
      assert.ok(created.created);
      const id = created.batch.id;
      // Started and initially synced long ago: only the MX can hold the deletion back.
      await store.db.updateTable('batch').set({ started_at: T0 - 30 * 24 * H, initial_synced_at: T0 - 20 * 24 * H }).where('id', '=', id).execute();
      await store.db.updateTable('batch_mailbox').set({ last_sync_at: T0 + 2 * H }).where('batch_id', '=', id).execute();
      await store.db.updateTable('batch_mailbox').set({ last_sync_at: T0 - H }).where('email_address', '=', 'b@Example.org').execute();
      // The switch recorded at T0 (as the test above left it, recorded afresh here).
      await store.db.deleteFrom('mx_watch').execute();
      await recordMxCheck(store, { domain: 'example.org', targetMx: 'mx.new.example', state: 'all', ttl: 300, now: T0 });

      const report = await batchMxReport(store.db, id, T0 + 10 * H);
      assert.deepEqual(report.unwatched, ['other.example']);
      await assert.rejects(deleteBatch(store, 'cut', { now: T0 + 10 * H }), (err: Error) => {
        assert.ok(err instanceof DeleteTooEarlyError, String(err));
        assert.match(err.message, /the MX of example\.org points at mx\.new\.example since at least 2026-11-28 08:00 UTC \(first seen by mailferry\), 10h ago, less than 72 hours \(2d14h to go\)/);
        assert.match(err.message, /not synced since the MX switch of example\.org: 1 mailbox, e\.g\. b@Example\.org/);
        assert.doesNotMatch(err.message, /a@example\.org|other\.example/);
        assert.match(err.message, /Use --force/);
        return true;
      });
      // After 72 hours a check that old is not trusted (MX may have been rolled back since).
      await assert.rejects(deleteBatch(store, 'cut', { now: T0 + 73 * H }), /the last MX check of example\.org is 3d1h old: check it again/);
      // Checked again: every mailbox needs a sync after the 72 hours, which copies what reached the old server meanwhile.
      await recordMxCheck(store, { domain: 'example.org', targetMx: 'mx.new.example', state: 'all', ttl: 300, now: T0 + 73 * H });
      await assert.rejects(deleteBatch(store, 'cut', { now: T0 + 73 * H }), (err: Error) => {
        assert.doesNotMatch(err.message, /less than 72 hours|check it again/);
        assert.match(err.message, /not synced since the 72 hours after the MX switch of example\.org ended \(2026-12-01 08:00 UTC\): 2 mailboxes, e\.g\. a@example\.org, b@Example\.org; sync them/);
        return true;
      });
      // MX not pointing at the target (yet, or again) holds it back too.
      await recordMxCheck(store, { domain: 'example.org', targetMx: 'mx.new.example', state: 'some', ttl: 300, now: T0 + 74 * H });
      await assert.rejects(deleteBatch(store, 'cut', { now: T0 + 74 * H }), /the MX of example\.org points at mx\.new\.example only in part/);
      await recordMxCheck(store, { domain: 'example.org', targetMx: 'mx.new.example', state: 'none', ttl: 300, now: T0 + 75 * H });
      await assert.rejects(deleteBatch(store, 'cut', { now: T0 + 75 * H }), /the MX of example\.org does not point at mx\.new\.example yet/);
      // Switched again, 72 hours over, checked lately, everyone synced after them: deleted without --force.
      await recordMxCheck(store, { domain: 'example.org', targetMx: 'mx.new.example', state: 'all', ttl: 300, now: T0 + 76 * H });
      await store.db.updateTable('batch_mailbox').set({ last_sync_at: T0 + 77 * H }).where('batch_id', '=', id).execute();
      await recordMxCheck(store, { domain: 'example.org', targetMx: 'mx.new.example', state: 'all', ttl: 300, now: T0 + 149 * H });
      await assert.rejects(deleteBatch(store, 'cut', { now: T0 + 149 * H }), /not synced since the 72 hours after the MX switch of example\.org ended/);
      await store.db.updateTable('batch_mailbox').set({ last_sync_at: T0 + 148.5 * H }).where('batch_id', '=', id).execute();
      // A mailbox that failed its last sync holds it back whatever DNS says.
      await store.db.updateTable('batch_mailbox').set({ status: 'Failed' }).where('email_address', '=', 'c@other.example').execute();
      await assert.rejects(deleteBatch(store, 'cut', { now: T0 + 149 * H }), /1 mailbox \(e\.g\. c@other\.example\) failed their last sync/);
      await store.db.updateTable('batch_mailbox').set({ status: 'Synced' }).where('email_address', '=', 'c@other.example').execute();
      const done = await deleteBatch(store, 'cut', { now: T0 + 149 * H });
      assert.equal(done.removed, true);
    });

    test('serve re-checks recorded domains still being migrated: the switch is seen without a check by hand', { skip: skip ?? false }, async () => {
      const w = await lab([...world(), mx('watch.example', 10, 'mx1.old.example', 300)]);
      const csv = ['EmailAddress,UserName,Password', 'w1@watch.example,w1,pw-w1'].join('\n');
      assert.ok((await createBatch(store, { name: 'watched', csv: Buffer.from(csv), endpoint: 'src', target: 'tgt', exclude: [], include: [], notify: [], receivedAfter: null, badItemLimit: null, start: { kind: 'manual' } }, key)).created);
      await store.db.deleteFrom('mx_watch').execute();
      assert.equal((await checkDomain(store, { domain: 'watch.example', targetMx: 'mx.new.example', server: w.address, now: T0 })).switched, 'none');
      // A domain no batch holds any more: not checked again.
      await checkDomain(store, { domain: 'example.org', targetMx: 'mx.new.example', server: w.address, now: T0 });
      // The admin switches MX and checks nothing.
      w.records = w.records.filter((r) => !(r.type === 'MX' && r.name === 'watch.example'));
      w.records.push(mx('watch.example', 10, 'mx.new.example', 300));
      const watcher = new MxWatcher(store, pino({ level: 'silent' }), H);
      assert.equal(await watcher.tick(T0 + H / 2), 0, 'not due before the interval');
      assert.equal(await watcher.tick(T0 + H), 1);
      const row = async (domain: string) => store.db.selectFrom('mx_watch').selectAll().where('domain', '=', domain).executeTakeFirstOrThrow();
      const seen = await row('watch.example');
      assert.deepEqual([seen.state, Number(seen.switched_seen_at), seen.resolver], ['all', T0 + H, w.address]);
      assert.equal(Number((await row('example.org')).checked_at), T0, 'a domain of no batch is left alone');
      // A resolver that fails: said in the log, tried again only an interval later.
      w.behaviour.rcode = 'SERVFAIL';
      assert.equal(await watcher.tick(T0 + 2 * H), 0);
      w.behaviour.rcode = null;
      assert.equal(await watcher.tick(T0 + 2 * H + 60_000), 0, 'a failed re-check waits an interval');
      assert.equal(await watcher.tick(T0 + 3 * H + 60_000), 1);
      await store.db.deleteFrom('batch').where('name', '=', 'watched').execute();
    });

    test('MX switched before the migration: the 72 hours are not waited for again after the initial sync', { skip: skip ?? false }, async () => {
      const csv = ['EmailAddress,UserName,Password', 'early1@example.org,e1,pw-e1', 'early2@example.org,e2,pw-e2'].join('\n');
      const created = await createBatch(store, { name: 'early', csv: Buffer.from(csv), endpoint: 'src', target: 'tgt', exclude: [], include: [], notify: [], receivedAfter: null, badItemLimit: null, start: { kind: 'now' } }, key);
      assert.ok(created.created);
      const id = created.batch.id;
      await store.db.deleteFrom('mx_watch').execute();
      await recordMxCheck(store, { domain: 'example.org', targetMx: 'mx.new.example', state: 'all', ttl: 300, now: T0 });
      // Migrated after the switch: initial sync at +100 h, every mailbox synced at +101 h.
      await store.db.updateTable('batch').set({ started_at: T0 + 90 * H, initial_synced_at: T0 + 100 * H }).where('id', '=', id).execute();
      await store.db.updateTable('batch_mailbox').set({ status: 'Synced', last_sync_at: T0 + 101 * H }).where('batch_id', '=', id).execute();
      await recordMxCheck(store, { domain: 'example.org', targetMx: 'mx.new.example', state: 'all', ttl: 300, now: T0 + 102 * H });
      const done = await deleteBatch(store, 'early', { now: T0 + 102 * H });
      assert.equal(done.removed, true, 'the MX data says every mailbox synced after the 72 hours');
    });
  });
}

describe('the CLI (built bundle)', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'mailferry-dns-cli-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  const env = () => ({ ...process.env, MAILFERRY_HOME: dir, MAILFERRY_DB: `sqlite:${join(dir, 'state.sqlite')}` });

  test('human output and exit 0; --json; a high TTL exits 1', async () => {
    const s = await lab(world(300));
    const r = await runCli(['dns', 'check', 'Example.ORG', '--server', s.address], env());
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^example\.org: resolver 127\.0\.0\.1:\d+; configured TTL, from an authoritative answer/m);
    assert.match(r.stdout, /^ {2}10 +mx1\.old\.example +300\n {2}20 +mx2\.old\.example +300$/m);
    assert.match(r.stdout, /TTL: 300 s: ok \(3600 s or less\)/);
    assert.match(r.stdout, /switch: not checked/);
    const j = await runCli(['dns', 'check', 'example.org', '--server', s.address, '--json'], env());
    assert.equal(j.status, 0, j.stderr);
    assert.ok(j.json, j.stdout);
    assert.equal(j.json.domain, 'example.org');
    assert.equal(j.json.resolver, s.address);
    assert.equal(j.json.authoritative, true);
    assert.equal(j.json.ttl, 300);
    assert.equal(j.json.ttlOk, true);
    assert.equal(j.json.switched, null);
    assert.deepEqual((j.json.mx as { exchange: string }[]).map((m) => m.exchange), ['mx1.old.example', 'mx2.old.example']);
    assert.deepEqual(j.json.warnings, []);
    s.records = world(86400);
    const high = await runCli(['dns', 'check', 'example.org', '--server', s.address], env());
    assert.equal(high.status, 1, high.stderr);
    assert.match(high.stdout, /TTL: 86400 s \(24 h\): TOO HIGH/);
    assert.match(high.stdout, /warning: .*lower it to 3600 s or less at least 86400 s \(24 h\) before the switch/);
  });

  test('--target-mx: the switch, the first time seen and the 72-hour line, kept in --db', async () => {
    const s = await lab(world());
    const db = `sqlite:${join(dir, 'watch.sqlite')}`;
    const not = await runCli(['dns', 'check', 'example.org', '--server', s.address, '--target-mx', 'mx.new.example', '--db', db, '--json'], env());
    assert.equal(not.status, 1, not.stderr);
    assert.equal(not.json!.switched, 'none');
    assert.match(not.stderr, /switch to mx\.new\.example \[192\.0\.2\.10, 2001:db8::10\]: not yet \(0 of 2\)/);
    s.records = [...world().filter((r) => r.type !== 'MX'), mx('example.org', 10, 'mx.new.example'), mx('example.org', 20, 'mx.new.example.')];
    const sw = await runCli(['dns', 'check', 'example.org', '--server', s.address, '--target-mx', 'mx.new.example', '--db', db], env());
    assert.equal(sw.status, 0, sw.stdout + sw.stderr);
    assert.match(sw.stdout, /MX points at mx\.new\.example \(all 2 records\) since at least \d{4}-\d\d-\d\d \d\d:\d\d UTC \(first seen by mailferry\); 72 hours after that: \d{4}-\d\d-\d\d \d\d:\d\d UTC \((72|71) h to go\)/);
    const again = await runCli(['dns', 'check', 'example.org', '--server', s.address, '--target-mx', 'mx.new.example', '--db', db, '--json'], env());
    assert.equal(again.status, 0);
    const first = await runCli(['dns', 'check', 'example.org', '--server', s.address, '--target-mx', 'mx.new.example', '--db', db, '--json'], env());
    assert.equal(first.json!.switchedSeenAt, again.json!.switchedSeenAt, 'kept across checks');
    assert.ok(typeof first.json!.deleteSafeAt === 'string');
  });

  test('the name servers asked directly (test port), bad usage exits 2, failures exit 3 naming domain and server', async () => {
    const resolver = await lab(world(1200), { authoritative: false });
    const auth = await lab(world(600));
    const viaNs = await runCli(['dns', 'check', 'example.org', '--server', resolver.address, '--json'], { ...env(), MAILFERRY_TEST_DNS_NS_PORT: String(auth.port) });
    assert.equal(viaNs.status, 0, viaNs.stderr);
    assert.equal(viaNs.json!.authoritative, true);
    assert.equal(viaNs.json!.ttl, 600);
    const cached = await runCli(['dns', 'check', 'example.org', '--server', resolver.address], { ...env(), MAILFERRY_TEST_DNS_NS_PORT: String(await closedPort()) });
    assert.equal(cached.status, 1);
    assert.match(cached.stdout, /cached TTL from 127\.0\.0\.1:\d+: may be lower than the configured one/);

    for (const args of [['exa mple.org', '--server', resolver.address], ['example.org', '--server', 'dns.example'], ['example.org', '--server', '127.0.0.1:99999']]) {
      const bad = await runCli(['dns', 'check', ...args, '--json'], env());
      assert.equal(bad.status, 2, `${args.join(' ')}: ${bad.stderr}`);
      assert.equal(bad.json!.exitStatus, 2);
    }

    const failing = await lab(world(), { rcode: 'SERVFAIL' });
    const f = await runCli(['dns', 'check', 'example.org', '--server', failing.address, '--json'], env());
    assert.equal(f.status, 3, f.stderr);
    assert.match(f.stderr, new RegExp(`could not look up the MX records of example\\.org: ${failing.address.replace(/\./g, '\\.')}: answered SERVFAIL`));
    assert.equal(f.json!.exitStatus, 3);
    const silent = await lab(world(), { silent: true });
    const t = await runCli(['dns', 'check', 'example.org', '--server', silent.address, '--timeout', '0.2'], env());
    assert.equal(t.status, 3, t.stderr);
    assert.match(t.stderr, new RegExp(`example\\.org: ${silent.address.replace(/\./g, '\\.')}: no answer within 0\\.2 s`));
  });

  test('dns --help, and batch delete suggests a check for domains never checked', async () => {
    const help = await runCli(['dns', 'check', '--help'], env());
    assert.equal(help.status, 0);
    assert.match(help.stdout, /--target-mx <host>/);
    assert.match(help.stdout, /Exit status: 0 checked, nothing to warn about/);
    // A batch made in the database directly (batch create would test a real IMAP server).
    const { openStore } = await import('../src/store/open.js');
    const url = `sqlite:${join(dir, 'batch.sqlite')}`;
    const store = await openStore(url);
    try {
      for (const [role, name] of [['source', 'src'], ['target', 'tgt']] as const) {
        await insertEndpoint(store.db, { role, name, host: '127.0.0.1', port: 1, tls: 'none', auth: 'login', accept_untrusted_cert: 0, max_concurrent_migrations: 1, max_concurrent_incremental_syncs: 1, admin_user: null, impersonation: null, separator: null, password_enc: null, created_at: Date.now() });
      }
      const key = loadSecretKey({ env: { MAILFERRY_SECRET_KEY: generateSecretKeyText() } });
      const r = await createBatch(store, { name: 'later', csv: Buffer.from('EmailAddress,UserName,Password\nx@example.org,x,pw\n'), endpoint: 'src', target: 'tgt', exclude: [], include: [], notify: [], receivedAfter: null, badItemLimit: null, start: { kind: 'manual' } }, key);
      assert.ok(r.created);
    } finally {
      await store.close();
    }
    const del = await runCli(['batch', 'delete', 'later', '--db', url], env());
    assert.equal(del.status, 0, del.stderr);
    assert.match(del.stderr, /note: no MX check recorded for example\.org; .*mailferry dns check example\.org --target-mx HOST/);
    assert.match(del.stderr, /batch later deleted/);
  });
});
