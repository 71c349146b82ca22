/**
 * `serve` keeps checking the MX of the domains being migrated (SPEC §7: mailferry "tracks the
 * 72 hours"): every recorded `dns check --target-mx` of a domain that still has mailboxes in
 * a batch is repeated once its last check is an interval old, with the same target and
 * resolver. So the switch is seen within the interval of being made — the 72 hours then
 * start on their own — and a roll-back is seen too, without the admin checking by hand.
 * Each check is an ordinary one (recorded the same way); several `serve` processes may
 * repeat one at about the same time, which changes nothing.
 */
import type { Logger } from 'pino';
import type { Store } from '../store/open.js';
import { checkDomain } from './check.js';

export const MX_RECHECK_EVERY_MS = 3_600_000;

export class MxWatcher {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  /** When a failed re-check was last tried (by domain and target): not again before an interval. */
  private readonly failedAt = new Map<string, number>();

  constructor(
    private readonly store: Store,
    private readonly logger: Logger,
    private readonly everyMs = MX_RECHECK_EVERY_MS,
  ) {}

  start(): void {
    const tick = () => {
      if (this.running) return;
      this.running = this.tick()
        .catch((err: unknown) => this.logger.warn({ err: (err as Error).message }, 'MX re-check failed; trying again later'))
        .finally(() => (this.running = undefined));
    };
    tick();
    // A minute's resolution is plenty for an hourly re-check, and costs one small query.
    this.timer = setInterval(tick, Math.min(this.everyMs, 60_000));
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }

  /** Repeats the checks that are due; returns how many ran. */
  async tick(now = Date.now()): Promise<number> {
    const due = await this.store.db.selectFrom('mx_watch').selectAll().where('checked_at', '<=', now - this.everyMs).execute();
    if (due.length === 0) return 0;
    // Only domains still being migrated: a deleted batch's domains are left alone.
    const keys = await this.store.db.selectFrom('batch_mailbox').select('email_key').execute();
    const live = new Set(keys.map((k) => k.email_key.slice(k.email_key.lastIndexOf('@') + 1)));
    let ran = 0;
    for (const w of due) {
      if (!live.has(w.domain)) continue;
      const key = `${w.domain} ${w.target_mx}`;
      if (now - (this.failedAt.get(key) ?? -Infinity) < this.everyMs) continue;
      try {
        const r = await checkDomain(this.store, { domain: w.domain, targetMx: w.target_mx, ...(w.resolver ? { server: w.resolver } : {}), now });
        ran++;
        this.failedAt.delete(key);
        if (r.switched !== w.state) this.logger.info({ domain: w.domain, target: w.target_mx, was: w.state, now: r.switched }, 'MX of a migrated domain changed');
      } catch (err) {
        this.failedAt.set(key, now);
        this.logger.warn({ domain: w.domain, target: w.target_mx, err: (err as Error).message }, 'MX re-check failed; trying again in an interval');
      }
    }
    return ran;
  }
}
