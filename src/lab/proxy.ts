/**
 * A TCP proxy on a free loopback port in front of a server: adds a one-way delay in each
 * direction (a WAN round trip for the benchmark) and injects faults (dropped or refused
 * connections) for tests.
 *
 * The delay is a timestamped FIFO per direction: every chunk is released `delayMs` after
 * it arrived, while reading goes on meanwhile, so a long transfer is delayed but not
 * slowed ("wait, then read the next chunk" would cap throughput at one chunk per delay).
 * Backpressure: reading pauses while a direction holds more than BUFFER_LIMIT bytes in
 * its queue or the receiving socket's buffer is full, so memory stays bounded.
 */
import net from 'node:net';

export interface ProxyOptions {
  targetHost: string;
  targetPort: number;
  /** ONE-WAY delay applied in each direction, so RTT = 2 * delayMs. Default 0. */
  delayMs?: number;
}

/**
 * Bytes one direction may hold in its delay queue before reading pauses. It bounds the
 * throughput to BUFFER_LIMIT per delay (16 MiB / 50 ms = 320 MiB/s), far above what an
 * IMAP transfer needs, and the memory per connection to 2 * BUFFER_LIMIT.
 */
const BUFFER_LIMIT = 16 * 1024 * 1024;

type Item = { kind: 'data'; chunk: Buffer; due: number } | { kind: 'end' | 'kill'; due: number };

/** One direction of one connection: src is read, dst is written, delayed. */
class DelayedPipe {
  private readonly queue: Item[] = [];
  private head = 0;
  /** Data bytes in the queue, not yet written to dst. */
  queuedBytes = 0;
  private timer: NodeJS.Timeout | null = null;
  private blocked = false; // dst.write() returned false; wait for 'drain'
  private stopped = false;
  /** Bytes read from src so far. */
  bytesIn = 0;
  srcEnded = false;

  constructor(
    private readonly src: net.Socket,
    private readonly dst: net.Socket,
    private readonly delay: () => number,
    private readonly onKill: () => void,
    /** Cut the connection after this many bytes from src (null: never). */
    private readonly cutAfter: number | null,
  ) {
    src.on('data', (chunk: Buffer) => this.onData(chunk));
    src.on('end', () => {
      this.srcEnded = true;
      this.push({ kind: 'end', due: Date.now() + this.delay() });
    });
    dst.on('drain', () => {
      this.blocked = false;
      this.flush();
    });
  }

  private onData(chunk: Buffer): void {
    if (this.stopped) return;
    const now = Date.now();
    if (this.cutAfter !== null && this.bytesIn + chunk.length >= this.cutAfter) {
      // Deliver exactly cutAfter bytes, then cut both sides once they have been delivered.
      const keep = this.cutAfter - this.bytesIn;
      this.bytesIn += keep;
      if (keep > 0) this.push({ kind: 'data', chunk: chunk.subarray(0, keep), due: now + this.delay() });
      this.push({ kind: 'kill', due: now + this.delay() });
      this.src.pause();
      this.stopped = true;
      return;
    }
    this.bytesIn += chunk.length;
    this.push({ kind: 'data', chunk, due: now + this.delay() });
  }

  private push(item: Item): void {
    this.queue.push(item);
    if (item.kind === 'data') this.queuedBytes += item.chunk.length;
    this.updateFlow();
    this.flush();
  }

  /** Pauses or resumes reading from src according to what this direction holds. */
  private updateFlow(): void {
    if (this.stopped) return;
    if (this.blocked || this.queuedBytes > BUFFER_LIMIT) this.src.pause();
    else if (this.src.isPaused()) this.src.resume();
  }

  private flush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const now = Date.now();
    while (this.head < this.queue.length && !this.blocked) {
      const item = this.queue[this.head]!;
      if (item.due > now) {
        this.timer = setTimeout(() => {
          this.timer = null;
          this.flush();
        }, item.due - now);
        break;
      }
      this.head++;
      if (item.kind === 'data') {
        this.queuedBytes -= item.chunk.length;
        if (!this.dst.destroyed && !this.dst.write(item.chunk)) this.blocked = true;
      } else if (item.kind === 'end') {
        if (!this.dst.destroyed) this.dst.end();
      } else {
        this.onKill();
        return;
      }
    }
    // Drop the consumed prefix now and then instead of shift()ing every item (O(n)).
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    this.updateFlow();
  }

  /** Bytes held for dst: in the delay queue plus in dst's own write buffer. */
  held(): number {
    return this.queuedBytes + (this.dst.destroyed ? 0 : this.dst.writableLength);
  }

  dispose(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.queue.length = 0;
    this.head = 0;
    this.queuedBytes = 0;
  }
}

interface Connection {
  client: net.Socket;
  upstream: net.Socket;
  up: DelayedPipe;
  down: DelayedPipe;
  destroy(): void;
}

export class TcpProxy {
  readonly host = '127.0.0.1' as const;
  readonly port: number;
  private delayMs: number;
  private cutAfter: number | null = null;
  private refusing = false;
  private opened = 0;
  private refused = 0;
  private readonly conns = new Set<Connection>();
  private stopping: Promise<void> | null = null;

  private constructor(
    private readonly server: net.Server,
    private readonly opts: ProxyOptions,
  ) {
    const addr = server.address();
    this.port = typeof addr === 'object' && addr ? addr.port : 0;
    this.delayMs = opts.delayMs ?? 0;
    server.on('connection', (c) => this.accept(c));
  }

  static start(opts: ProxyOptions): Promise<TcpProxy> {
    return new Promise((resolve, reject) => {
      // allowHalfOpen: a FIN from one side is forwarded (after the delay) as a FIN, not
      // turned into a full close, so "send LOGOUT, then read the BYE" still works.
      const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        server.off('error', reject);
        resolve(new TcpProxy(server, opts));
      });
    });
  }

  /** Accepted client connections so far, including refused ones. */
  get connectionsOpened(): number {
    return this.opened;
  }

  /** Of those, how many refuseNew() closed right away. */
  get connectionsRefused(): number {
    return this.refused;
  }

  /** Connections currently proxied. */
  get activeConnections(): number {
    return this.conns.size;
  }

  /** Bytes currently held by the proxy (delay queues and outgoing socket buffers). */
  get bufferedBytes(): number {
    let n = 0;
    for (const c of this.conns) n += c.up.held() + c.down.held();
    return n;
  }

  /** New one-way delay; applies to data arriving from now on (order is always kept). */
  setDelay(ms: number): void {
    if (!(ms >= 0)) throw new Error(`proxy: bad delay ${ms}`);
    this.delayMs = ms;
  }

  /** Destroys every open connection now, both sides. */
  dropAll(): void {
    for (const c of [...this.conns]) c.destroy();
  }

  /** Each NEW connection is cut after n bytes client->server (null = off). */
  dropAfterBytes(n: number | null): void {
    if (n !== null && !(Number.isInteger(n) && n >= 0)) throw new Error(`proxy: bad byte count ${n}`);
    this.cutAfter = n;
  }

  /** Accept, then immediately close new connections. */
  refuseNew(on: boolean): void {
    this.refusing = on;
  }

  stop(): Promise<void> {
    this.stopping ??= new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.dropAll();
    });
    return this.stopping;
  }

  private accept(client: net.Socket): void {
    this.opened++;
    if (this.refusing || this.stopping) {
      this.refused++;
      client.destroy();
      return;
    }
    const upstream = net.connect({ host: this.opts.targetHost, port: this.opts.targetPort, allowHalfOpen: true });
    // The proxy must add exactly the configured delay, not Nagle's.
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    let dead = false;
    const conn: Connection = {
      client,
      upstream,
      up: undefined as unknown as DelayedPipe,
      down: undefined as unknown as DelayedPipe,
      destroy: () => {
        if (dead) return;
        dead = true;
        this.conns.delete(conn);
        conn.up.dispose();
        conn.down.dispose();
        client.destroy();
        upstream.destroy();
      },
    };
    const delay = () => this.delayMs;
    conn.up = new DelayedPipe(client, upstream, delay, conn.destroy, this.cutAfter);
    conn.down = new DelayedPipe(upstream, client, delay, conn.destroy, null);
    this.conns.add(conn);

    // Errors (reset, refused upstream) end the connection on both sides at once.
    client.on('error', conn.destroy);
    upstream.on('error', conn.destroy);
    // A socket that closes without having sent its FIN first was torn down; a socket
    // that is closed can no longer receive: either way the other side goes too.
    // A clean close (FIN seen) leaves the other side to be ended by its delayed FIN.
    const onClose = (pipeFromIt: DelayedPipe, other: net.Socket) => () => {
      if (!pipeFromIt.srcEnded || !other.writable) conn.destroy();
      else if (client.destroyed && upstream.destroyed) conn.destroy();
    };
    client.on('close', onClose(conn.up, upstream));
    upstream.on('close', onClose(conn.down, client));
    // Both sockets fully closed: forget the connection.
    const maybeDone = () => {
      if (client.destroyed && upstream.destroyed) conn.destroy();
    };
    client.on('close', maybeDone);
    upstream.on('close', maybeDone);
    client.resume();
  }
}
