/**
 * A bounded hand-over of a literal's bytes from a socket reader (raw-fetch.ts
 * `fetchStream`) to a consumer that writes them elsewhere (the APPEND literal of
 * append-pipeline.ts): the source message goes from one server to the other without ever
 * being held whole.
 *
 * The reader's pieces are views of a reused read buffer, so each is copied here, into
 * blocks of up to `blockBytes` (fewer, larger writes downstream). When more than
 * `highWater` bytes wait for the consumer, `pause()` is called (the reader stops reading
 * the socket); once the consumer has taken them down to `lowWater`, `resume()`. So this
 * holds about `highWater` + one socket read at most, whatever the message size.
 *
 * Blocks are reused: the consumer (the appender's streamed literal, raw-connection.ts) is
 * done with a yielded block once it asks for the block after the next one, so a block
 * goes back to the free list then, and a message of any size passes through the same few
 * blocks instead of making its size in garbage.
 */
export interface LiteralPipeOptions {
  pause: () => void;
  resume: () => void;
  blockBytes?: number;
  highWater?: number;
  lowWater?: number;
}

export class LiteralPipe implements AsyncIterable<Buffer> {
  /** Handed-over views, each of a whole block (`parent`) from the free list. */
  private readonly blocks: { view: Buffer; parent: Buffer }[] = [];
  private readonly free: Buffer[] = [];
  private queued = 0;
  private current: Buffer | null = null;
  private currentUsed = 0;
  private ended = false;
  private error: Error | null = null;
  private paused = false;
  private discarding = false;
  private wake: (() => void) | null = null;
  private readonly blockBytes: number;
  private readonly highWater: number;
  private readonly lowWater: number;

  constructor(private readonly opts: LiteralPipeOptions) {
    this.blockBytes = opts.blockBytes ?? 256 * 1024;
    this.highWater = opts.highWater ?? 1024 * 1024;
    this.lowWater = opts.lowWater ?? this.highWater / 2;
  }

  /** A piece from the reader, valid only during this call: copied. */
  write(piece: Buffer): void {
    if (this.ended || this.error || this.discarding) return;
    let off = 0;
    while (off < piece.length) {
      if (!this.current) {
        this.current = this.free.pop() ?? Buffer.allocUnsafeSlow(this.blockBytes);
        this.currentUsed = 0;
      }
      const n = piece.copy(this.current, this.currentUsed, off);
      off += n;
      this.currentUsed += n;
      if (this.currentUsed === this.current.length) this.push();
    }
    // A partly filled block is handed over too when the consumer is waiting: it must not
    // wait for more bytes than the server has sent so far.
    if (this.wake && this.current) this.push();
    if (!this.paused && this.queued > this.highWater) {
      this.paused = true;
      this.opts.pause();
    }
  }

  /** The reader delivered the last byte. */
  end(): void {
    if (this.ended) return;
    if (this.current) this.push();
    this.ended = true;
    this.notify();
  }

  /**
   * The consumer will read no more (its APPEND was refused or failed): drop what is
   * queued and what still comes, and let the reader run to the end of the literal, so the
   * source command completes and its connection stays usable.
   */
  discard(): void {
    this.discarding = true;
    this.blocks.length = 0;
    this.queued = 0;
    this.current = null;
    if (this.paused) {
      this.paused = false;
      this.opts.resume();
    }
  }

  /** The reader failed: the consumer's next read throws `err`. */
  fail(err: Error): void {
    if (this.ended || this.error) return;
    this.error = err;
    this.blocks.length = 0;
    this.current = null;
    this.notify();
  }

  private push(): void {
    const parent = this.current!;
    const view = this.currentUsed === parent.length ? parent : parent.subarray(0, this.currentUsed);
    this.current = null;
    this.currentUsed = 0;
    if (view.length === 0) {
      this.free.push(parent);
      return;
    }
    this.blocks.push({ view, parent });
    this.queued += view.length;
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
    /** The block yielded before the last one: free once the consumer asks for another. */
    let previous: Buffer | null = null;
    for (;;) {
      if (this.error) throw this.error;
      if (this.discarding) return;
      const block = this.blocks.shift();
      if (block) {
        this.queued -= block.view.length;
        if (this.paused && this.queued <= this.lowWater) {
          this.paused = false;
          this.opts.resume();
        }
        yield block.view;
        // Asked for the next block: the one before `block` is no longer referenced.
        if (previous) this.free.push(previous);
        previous = block.parent;
        continue;
      }
      if (this.current && this.currentUsed > 0) {
        this.push();
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }
}
