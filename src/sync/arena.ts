/**
 * Reused memory for the messages of a fetch chunk.
 *
 * Each message used to be read into a Buffer of its own: memory outside the V8 heap that
 * is returned only when V8 collects the Buffer's small JS object, and V8 schedules
 * collections by heap pressure, which message bytes barely create. Dead message Buffers
 * piled up beyond the copy budget (peak RSS followed), and the forced collections that
 * bounded them (reclaim.ts) cost CPU. Instead, a chunk's messages are read into one slab
 * (bump allocation, views by `subarray`), and the slab goes back to the pool once the
 * chunk's APPENDs are answered: the bytes for messages are allocated once per run, not
 * once per message, and never wait for a collection.
 *
 * Safety: a slab is released only when nothing can still read it: every APPEND of its
 * chunk has its tagged response (the server has read the literal, so the socket is done
 * with those bytes) or has failed with its connection (a destroyed socket writes nothing
 * more), and the lane has dropped its references (journal rows hold digests, not bytes).
 */
export class SlabPool {
  private readonly free: Buffer[] = [];
  /** Bytes handed out as fresh Buffers because a slab was full (see Slab.alloc). */
  unpooledBytes = 0;

  /**
   * @param slabBytes size of a slab: the largest fetch chunk (a message that does not fit
   *   the rest of its slab gets a Buffer of its own).
   * @param keep slabs kept for reuse; more are allocated when needed and left to the GC.
   */
  constructor(
    readonly slabBytes: number,
    private readonly keep: number,
  ) {}

  private made = 0;

  /**
   * A slab for a chunk of about `bytes`: a pooled one, or while fewer than `keep` exist a
   * new pooled one; beyond that (more lanes than the budget has slabs for) a one-off of
   * the chunk's size, left to the GC, so memory still follows the byte budget.
   */
  take(bytes: number): Slab {
    const reused = bytes <= this.slabBytes ? this.free.pop() : undefined;
    if (reused) return new Slab(reused, this, true);
    if (bytes <= this.slabBytes && this.made < this.keep) {
      this.made += 1;
      return new Slab(Buffer.allocUnsafeSlow(this.slabBytes), this, true);
    }
    this.unpooledBytes += bytes;
    return new Slab(Buffer.allocUnsafeSlow(Math.max(1, bytes)), this, false);
  }

  /** @internal */
  give(buf: Buffer): void {
    this.free.push(buf);
  }
}

export class Slab {
  private used = 0;
  private released = false;

  constructor(
    private buf: Buffer,
    private readonly pool: SlabPool,
    private readonly pooled: boolean,
  ) {}

  /**
   * `size` bytes of this slab, or a fresh Buffer when they do not fit (a server's
   * RFC822.SIZE can be smaller than what it then sends).
   */
  alloc(size: number): Buffer {
    if (!this.released && this.used + size <= this.buf.length) {
      const view = this.buf.subarray(this.used, this.used + size);
      this.used += size;
      return view;
    }
    this.pool.unpooledBytes += size;
    return Buffer.allocUnsafe(size);
  }

  /** Give the memory back: nothing may read any view of it afterwards. */
  release(): void {
    if (this.released) return;
    this.released = true;
    if (this.pooled) this.pool.give(this.buf);
    this.buf = EMPTY;
  }
}

const EMPTY = Buffer.alloc(0);
