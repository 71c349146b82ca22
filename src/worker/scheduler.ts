/**
 * What happens by the clock rather than by a mailbox falling due: batches created with
 * `--start-at` start, and deletions whose last mailboxes were held by a vanished worker
 * finish once those leases expire. Every step is an idempotent transaction, so any number
 * of schedulers may run (one per `serve`). Report e-mails have a timer of their own
 * (src/report/sender.ts).
 */
import type { Logger } from 'pino';
import { finishRemovals, startScheduledBatches } from '../batch/lifecycle.js';
import type { Store } from '../store/open.js';

export class Scheduler {
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;

  constructor(
    private readonly store: Store,
    private readonly logger: Logger,
    private readonly everyMs = 1000,
  ) {}

  start(): void {
    const tick = () => {
      if (this.ticking) return;
      this.ticking = this.tick().finally(() => (this.ticking = undefined));
    };
    tick();
    this.timer = setInterval(tick, this.everyMs);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.ticking;
  }

  async tick(now = Date.now()): Promise<void> {
    try {
      for (const name of await startScheduledBatches(this.store, now)) this.logger.info({ batch: name }, 'batch started at its scheduled time');
      const removed = await finishRemovals(this.store, now);
      if (removed) this.logger.info({ removed }, 'deleted batches removed');
    } catch (err) {
      this.logger.error({ err: (err as Error).message }, 'scheduler step failed; retrying');
    }
  }
}
