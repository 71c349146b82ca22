/**
 * A small authoritative DNS server for tests: UDP and TCP (RFC 1035 §4.2, RFC 7766) on one
 * free loopback port, messages encoded and decoded by dns-packet. It answers from a zone
 * the test may change between queries, and can misbehave on demand: no AA bit (to play a
 * caching resolver), truncated UDP answers (TC bit: the client must ask again over TCP),
 * SERVFAIL or REFUSED, or silence.
 *
 * Answers follow RFC 1034 §4.3.2 as far as tests need: records of the asked name and
 * type; a CNAME at the name (followed inside the zone); NODATA (NOERROR, empty answer,
 * the zone's SOA as authority, RFC 2308 §2.2) when the name has other records or names
 * below it; NXDOMAIN with the SOA otherwise.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket, { type Answer, type DecodedPacket, type Question } from 'dns-packet';

export interface DnsServerBehaviour {
  /** Set the AA bit (default true): an authoritative server; false plays a resolver answering from its cache. */
  authoritative: boolean;
  /** Answer UDP queries with the TC bit and no records, so clients ask over TCP. */
  truncateUdp: boolean;
  /** Answer every query with this RCODE and nothing else. */
  rcode: 'SERVFAIL' | 'REFUSED' | null;
  /** Answer nothing at all (UDP dropped, TCP connections held open). */
  silent: boolean;
}

export interface LabDnsServer {
  host: string;
  port: number;
  /** `127.0.0.1:PORT`, for `--server`. */
  address: string;
  /** The zone: any records, changed freely between queries. */
  records: Answer[];
  behaviour: DnsServerBehaviour;
  /** Every query received, in order. */
  queries: { name: string; type: string; transport: 'udp' | 'tcp'; recursionDesired: boolean }[];
  stop(): Promise<void>;
}

const RCODES = { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 } as const;
const lower = (n: string) => n.replace(/\.$/, '').toLowerCase();

function answer(server: LabDnsServer, query: DecodedPacket, transport: 'udp' | 'tcp'): dnsPacket.Packet | null {
  const q: Question | undefined = query.questions?.[0];
  if (q) server.queries.push({ name: lower(q.name), type: q.type, transport, recursionDesired: query.flag_rd });
  const b = server.behaviour;
  if (b.silent) return null;
  const flags = (b.authoritative ? dnsPacket.AUTHORITATIVE_ANSWER : 0) | (query.flag_rd ? dnsPacket.RECURSION_DESIRED : 0);
  const base = { type: 'response' as const, id: query.id ?? 0, questions: q ? [q] : [] };
  if (b.rcode) return { ...base, flags: flags | RCODES[b.rcode] };
  if (!q) return { ...base, flags: flags | 1 };
  if (transport === 'udp' && b.truncateUdp) return { ...base, flags: flags | dnsPacket.TRUNCATED_RESPONSE };
  const answers: Answer[] = [];
  let name = lower(q.name);
  for (let hops = 0; hops < 8; hops++) {
    const here = server.records.filter((r) => lower(r.name) === name);
    const exact = here.filter((r) => r.type === q.type);
    if (exact.length > 0) {
      answers.push(...exact);
      break;
    }
    const cname = here.find((r) => r.type === 'CNAME');
    if (!cname || cname.type !== 'CNAME' || q.type === 'CNAME') break;
    answers.push(cname);
    name = lower(cname.data);
  }
  if (answers.some((a) => a.type === q.type)) return { ...base, flags, answers };
  const soa = server.records.find((r) => r.type === 'SOA' && (name === lower(r.name) || name.endsWith(`.${lower(r.name)}`)));
  const exists = server.records.some((r) => lower(r.name) === name || lower(r.name).endsWith(`.${name}`));
  return { ...base, flags: flags | (exists ? RCODES.NOERROR : RCODES.NXDOMAIN), answers, authorities: soa ? [soa] : [] };
}

/** Starts the server on 127.0.0.1, UDP and TCP on the same free port. */
export async function startDnsServer(records: Answer[] = [], behaviour: Partial<DnsServerBehaviour> = {}): Promise<LabDnsServer> {
  for (let attempt = 0; ; attempt++) {
    const udp = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(0, '127.0.0.1', () => resolve());
    });
    const port = udp.address().port;
    const tcp = net.createServer();
    const ok = await new Promise<boolean>((resolve) => {
      tcp.once('error', () => resolve(false));
      tcp.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (!ok) {
      // The TCP side of that port is taken: another one.
      udp.close();
      if (attempt > 20) throw new Error('no free port for the lab DNS server');
      continue;
    }
    const held = new Set<net.Socket>();
    const server: LabDnsServer = {
      host: '127.0.0.1',
      port,
      address: `127.0.0.1:${port}`,
      records,
      behaviour: { authoritative: true, truncateUdp: false, rcode: null, silent: false, ...behaviour },
      queries: [],
      async stop() {
        for (const s of held) s.destroy();
        await Promise.all([new Promise<void>((r) => udp.close(() => r())), new Promise<void>((r) => tcp.close(() => r()))]);
      },
    };
    udp.on('message', (msg, rinfo) => {
      let query: DecodedPacket;
      try {
        query = dnsPacket.decode(msg);
      } catch {
        return;
      }
      const reply = answer(server, query, 'udp');
      if (reply) udp.send(dnsPacket.encode(reply), rinfo.port, rinfo.address);
    });
    tcp.on('connection', (socket) => {
      held.add(socket);
      socket.on('close', () => held.delete(socket));
      socket.on('error', () => undefined);
      let buffer = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        buffer = Buffer.concat([buffer, chunk]);
        // RFC 1035 §4.2.2 / RFC 7766 §8: each message is preceded by its two-byte length; several may follow on one connection.
        while (buffer.length >= 2 && buffer.length >= 2 + buffer.readUInt16BE(0)) {
          const len = buffer.readUInt16BE(0);
          const msg = buffer.subarray(2, 2 + len);
          buffer = buffer.subarray(2 + len);
          let query: DecodedPacket;
          try {
            query = dnsPacket.decode(msg);
          } catch {
            socket.destroy();
            return;
          }
          const reply = answer(server, query, 'tcp');
          if (reply) socket.write(dnsPacket.streamEncode(reply));
        }
      });
    });
    return server;
  }
}
