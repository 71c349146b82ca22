/**
 * A small TCP relay for fault tests, next to the lab's TcpProxy: it counts what the client
 * sends, can hold the server's answers back (so that a drop loses answers to commands
 * the server has already carried out), and can rewrite the server's lines.
 */
import net from 'node:net';

export interface Relay {
  port: number;
  /** Bytes the clients sent to the server so far. */
  bytesUp(): number;
  /** While on, the server's data is kept back (not forwarded); off forwards what was kept. */
  hold(on: boolean): void;
  /** Stops holding and forgets what was kept: those answers never reach the client. */
  discard(): void;
  /** The server data kept back since hold(true), as latin1 text. */
  heldText(): string;
  stop(): Promise<void>;
}

export interface RelayOptions {
  /**
   * Rewrites complete server lines (everything up to the last CRLF of what has arrived;
   * the rest waits for more). Only for tests whose message literals cannot match.
   */
  rewrite?: (text: string) => string;
  /**
   * Drops the connection (both sides, nothing more forwarded) as soon as the client has
   * sent these bytes, like a server that answers a message it will not take by closing
   * the connection. Matched across packet boundaries.
   */
  dropWhenSent?: string;
  /** Called for each drop caused by `dropWhenSent`. */
  onDrop?: () => void;
  /**
   * Client command lines matching this are answered `tag NO` by the relay and never reach
   * the server, as a server refusing that command would. The client's data is then
   * forwarded line by line: only for sessions that send no literals (a source's).
   */
  refuseCommands?: RegExp;
  /**
   * Awaited before each client command line is forwarded (line by line, as for
   * `refuseCommands`): a test acts on the server between two of the client's commands.
   */
  beforeCommand?: (line: string) => Promise<void>;
}

export async function startRelay(targetPort: number, opts: RelayOptions = {}): Promise<Relay> {
  let up = 0;
  let holding = false;
  let held = '';
  const conns = new Set<{ client: net.Socket; upstream: net.Socket; kept: Buffer[] }>();
  const srv = net.createServer((client) => {
    const upstream = net.connect({ host: '127.0.0.1', port: targetPort });
    const conn = { client, upstream, kept: [] as Buffer[] };
    conns.add(conn);
    const marker = opts.dropWhenSent === undefined ? null : Buffer.from(opts.dropWhenSent, 'latin1');
    let tail = Buffer.alloc(0);
    let lineBuf = '';
    // Client lines in order, each after the one before (beforeCommand may wait).
    let lines = Promise.resolve();
    client.on('data', (d: Buffer) => {
      up += d.length;
      if (opts.refuseCommands || opts.beforeCommand) {
        lineBuf += d.toString('latin1');
        for (let i = lineBuf.indexOf('\r\n'); i >= 0; i = lineBuf.indexOf('\r\n')) {
          const line = lineBuf.slice(0, i);
          lineBuf = lineBuf.slice(i + 2);
          lines = lines.then(async () => {
            await opts.beforeCommand?.(line);
            if (opts.refuseCommands?.test(line)) client.write(`${line.split(' ')[0]} NO [UNAVAILABLE] refused by the test relay\r\n`);
            else upstream.write(`${line}\r\n`, 'latin1');
          });
        }
        return;
      }
      if (marker) {
        const seen = Buffer.concat([tail, d]);
        if (seen.includes(marker)) {
          opts.onDrop?.();
          client.destroy();
          upstream.destroy();
          return;
        }
        tail = seen.subarray(Math.max(0, seen.length - marker.length + 1));
      }
      upstream.write(d);
    });
    let partial = '';
    upstream.on('data', (d: Buffer) => {
      let out = d;
      if (opts.rewrite) {
        const text = partial + d.toString('latin1');
        const cut = text.lastIndexOf('\r\n') + 2;
        partial = text.slice(cut);
        out = Buffer.from(opts.rewrite(text.slice(0, cut)), 'latin1');
      }
      if (out.length === 0) return;
      if (holding) {
        conn.kept.push(out);
        held += out.toString('latin1');
      } else {
        client.write(out);
      }
    });
    const end = () => {
      conns.delete(conn);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    port: (srv.address() as net.AddressInfo).port,
    bytesUp: () => up,
    hold(on) {
      holding = on;
      if (on) {
        held = '';
        return;
      }
      for (const c of conns) {
        for (const b of c.kept.splice(0)) if (!c.client.destroyed) c.client.write(b);
      }
    },
    discard() {
      holding = false;
      for (const c of conns) c.kept.length = 0;
    },
    heldText: () => held,
    stop: () =>
      new Promise<void>((r) => {
        for (const c of conns) {
          c.client.destroy();
          c.upstream.destroy();
        }
        srv.close(() => r());
      }),
  };
}

/**
 * How many messages the tagged `OK [APPENDUID uidvalidity uid-set]` answers in `text`
 * stand for: one per APPEND, the uid-set's size for a MULTIAPPEND (RFC 4315 §3).
 */
export function appendUidMessages(text: string): number {
  let n = 0;
  for (const m of text.matchAll(/^\S+ OK \[APPENDUID \d+ ([\d:,]+)\]/gm)) {
    for (const range of m[1]!.split(',')) {
      const [a, b = a] = range.split(':').map(Number);
      n += Math.abs(b! - a!) + 1;
    }
  }
  return n;
}
