/**
 * One DNS question to one server, with dns-packet encoding and decoding the messages
 * (RFC 1035 §4). Node's own `dns` module cannot be used: it returns MX records without
 * their TTLs, and never says whether an answer was authoritative.
 *
 * UDP first, on a connected socket (so only the server's own address can answer, and an
 * ICMP "port unreachable" fails at once instead of waiting out the timeout), asked again
 * once when no answer comes in time. An answer with the TC bit is asked again over TCP
 * (RFC 7766 §5: a truncated answer must not be used; RFC 1035 §4.2.2 frames TCP
 * messages with a two-byte length). EDNS(0) (RFC 6891) is offered with a 1232-byte UDP
 * payload (the DNS flag day 2020 figure, which fits any path's MTU), and dropped if the
 * server answers FORMERR to it (RFC 6891 §7).
 */
import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import { isIP } from 'node:net';
import net from 'node:net';
import dnsPacket, { type Answer, type DecodedPacket, type RecordType } from 'dns-packet';
import { type DnsServer, sameName, serverText } from './names.js';

/** The response codes of RFC 1035 §4.1.1 and RFC 6895 as dns-packet names them. */
export type Rcode = 'NOERROR' | 'FORMERR' | 'SERVFAIL' | 'NXDOMAIN' | 'NOTIMP' | 'REFUSED' | string;

export interface QueryOptions {
  /** RD bit (RFC 1035 §4.1.1): true to a resolver, false to an authoritative server. Default true. */
  recursionDesired?: boolean;
  /** Wait for each UDP attempt and for the whole TCP exchange. Default 2000 ms. */
  timeoutMs?: number;
  /** UDP attempts before giving up (the first and one retry). Default 2. */
  attempts?: number;
  /** Offer EDNS(0). Default true. */
  edns?: boolean;
}

export interface DnsResponse {
  server: DnsServer;
  rcode: Rcode;
  /** AA bit: the server holds the zone, so TTLs are the configured ones, not a cache's countdown. */
  authoritative: boolean;
  answers: Answer[];
  authorities: Answer[];
  additionals: Answer[];
  /** `tcp` when a truncated UDP answer was asked again over TCP. */
  transport: 'udp' | 'tcp';
}

/** No usable answer from this server: timed out, unreachable, or garbage. The caller decides whether another server is tried. */
export class DnsQueryError extends Error {
  override name = 'DnsQueryError';
  constructor(
    readonly server: DnsServer,
    readonly kind: 'timeout' | 'network' | 'malformed',
    /** What went wrong, without the server's address (the message has it). */
    readonly reason: string,
  ) {
    super(`${serverText(server)}: ${reason}`);
  }
}

const DEFAULT_TIMEOUT_MS = 2000;
/** RFC 6891 §6.2.5 advises against more than what fits unfragmented; 1232 is the DNS flag day 2020 value. */
const EDNS_PAYLOAD = 1232;

function encodeQuery(id: number, name: string, type: RecordType, opts: QueryOptions, edns: boolean): dnsPacket.Packet {
  return {
    type: 'query',
    id,
    flags: opts.recursionDesired === false ? 0 : dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name, class: 'IN' }],
    additionals: edns ? [{ type: 'OPT', name: '.', udpPayloadSize: EDNS_PAYLOAD, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }] : [],
  };
}

/** The response to our question, or null for anything else (a stray or spoofed datagram is ignored, RFC 5452 §9.1). */
function matching(packet: DecodedPacket, id: number, name: string, type: RecordType): boolean {
  const q = packet.questions?.[0];
  return packet.flag_qr && packet.id === id && q !== undefined && q.type === type && sameName(q.name, name);
}

function toResponse(server: DnsServer, packet: DecodedPacket, transport: 'udp' | 'tcp'): DnsResponse {
  return {
    server,
    // dns-packet decodes the RCODE but its type declarations leave it out.
    rcode: (packet as DecodedPacket & { rcode?: string }).rcode ?? 'NOERROR',
    authoritative: packet.flag_aa,
    answers: packet.answers ?? [],
    authorities: packet.authorities ?? [],
    additionals: packet.additionals ?? [],
    transport,
  };
}

type Raw = { packet: DecodedPacket; transport: 'udp' | 'tcp' };

function udpExchange(server: DnsServer, name: string, type: RecordType, opts: QueryOptions, edns: boolean): Promise<Raw> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const attempts = opts.attempts ?? 2;
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket(isIP(server.host) === 6 ? 'udp6' : 'udp4');
    let timer: NodeJS.Timeout | undefined;
    // One ID for both attempts: a late answer to the first still counts (it answers the same question).
    const id = randomInt(0x10000);
    let tries = 0;
    let done = false;
    const finish = (fn: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.close();
      fn();
    };
    const send = () => {
      tries++;
      socket.send(dnsPacket.encode(encodeQuery(id, name, type, opts, edns)));
      timer = setTimeout(() => {
        if (tries < attempts) send();
        else finish(() => reject(new DnsQueryError(server, 'timeout', `no answer within ${(timeoutMs / 1000).toFixed(1)} s (asked ${attempts} times over UDP)`)));
      }, timeoutMs);
    };
    socket.on('error', (err: NodeJS.ErrnoException) =>
      finish(() => reject(new DnsQueryError(server, 'network', err.code === 'ECONNREFUSED' ? 'nothing listens there (port unreachable)' : err.message))),
    );
    socket.on('message', (msg: Buffer) => {
      let packet: DecodedPacket;
      try {
        packet = dnsPacket.decode(msg);
      } catch {
        return;
      }
      if (matching(packet, id, name, type)) finish(() => resolve({ packet, transport: 'udp' }));
    });
    socket.connect(server.port, server.host, () => send());
  });
}

function tcpExchange(server: DnsServer, name: string, type: RecordType, opts: QueryOptions, edns: boolean): Promise<Raw> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const id = randomInt(0x10000);
    let buffer = Buffer.alloc(0);
    let done = false;
    const socket = net.connect({ host: server.host, port: server.port });
    const finish = (fn: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      fn();
    };
    const timer = setTimeout(() => finish(() => reject(new DnsQueryError(server, 'timeout', `no answer over TCP within ${(timeoutMs / 1000).toFixed(1)} s`))), timeoutMs);
    socket.on('connect', () => socket.write(dnsPacket.streamEncode(encodeQuery(id, name, type, opts, edns))));
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      if (buffer.length < 2 || buffer.length < 2 + buffer.readUInt16BE(0)) return;
      let packet: DecodedPacket;
      try {
        packet = dnsPacket.decode(buffer.subarray(2, 2 + buffer.readUInt16BE(0)));
      } catch (err) {
        finish(() => reject(new DnsQueryError(server, 'malformed', `a malformed answer over TCP (${(err as Error).message})`)));
        return;
      }
      if (matching(packet, id, name, type)) finish(() => resolve({ packet, transport: 'tcp' }));
      else finish(() => reject(new DnsQueryError(server, 'malformed', 'an answer to another question over TCP')));
    });
    socket.on('end', () => finish(() => reject(new DnsQueryError(server, 'network', 'closed the TCP connection without an answer'))));
    socket.on('error', (err: NodeJS.ErrnoException) =>
      finish(() => reject(new DnsQueryError(server, 'network', `over TCP: ${err.code === 'ECONNREFUSED' ? 'connection refused' : err.message}`))),
    );
  });
}

/** Asks `server` one question; resolves with whatever RCODE it answered (NXDOMAIN and SERVFAIL are answers too). */
export async function queryDns(server: DnsServer, name: string, type: RecordType, opts: QueryOptions = {}): Promise<DnsResponse> {
  let edns = opts.edns ?? true;
  let raw = await udpExchange(server, name, type, opts, edns);
  if (edns && (raw.packet as DecodedPacket & { rcode?: string }).rcode === 'FORMERR') {
    // RFC 6891 §7: a server that does not know EDNS may answer FORMERR; ask it the old way.
    edns = false;
    raw = await udpExchange(server, name, type, opts, edns);
  }
  if (raw.packet.flag_tc) raw = await tcpExchange(server, name, type, opts, edns);
  return toResponse(server, raw.packet, raw.transport);
}
