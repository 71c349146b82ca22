/**
 * A counting semaphore over bytes: bounds the message bytes held in memory across all
 * copy lanes, whatever the message sizes. A request larger than the whole budget is
 * granted alone (when nothing else is held), so one huge message still goes through.
 */
export class ByteBudget {
  private held = 0;
  private waiters: { bytes: number; resolve: () => void }[] = [];

  constructor(readonly capacity: number) {}

  get inUse(): number {
    return this.held;
  }

  acquire(bytes: number): Promise<void> {
    if (this.fits(bytes) && this.waiters.length === 0) {
      this.held += bytes;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiters.push({ bytes, resolve }));
  }

  release(bytes: number): void {
    this.held -= bytes;
    while (this.waiters.length > 0 && this.fits(this.waiters[0]!.bytes)) {
      const w = this.waiters.shift()!;
      this.held += w.bytes;
      w.resolve();
    }
  }

  private fits(bytes: number): boolean {
    return this.held === 0 || this.held + bytes <= this.capacity;
  }
}
