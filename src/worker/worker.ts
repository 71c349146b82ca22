/**
 * A worker process's sync slots: claim a due mailbox, sync it while pulsing its lease,
 * record the outcome, release; up to `concurrency` at once. Workers in other processes
 * and on other machines do the same against the same database and never need to talk.
 *
 * Safety of "never two syncs of one mailbox at once" rests on the lease: the holder pulses
 * every `pulseMs`, and besides stops on its own as soon as it has gone `leaseTtlMs` (less
 * a margin) without a successful pulse, before anyone else may take the mailbox.
 */
import type { Logger } from 'pino';
import { isStoreFailure, type Store } from '../store/open.js';
import type { SyncProgress } from '../sync/progress.js';
import { pairOfFailedRun } from '../sync/mailbox-sync.js';
import { credentialRefused, type ImapAuthError } from '../imap/errors.js';
import { SourceLoginError } from '../auth/errors.js';
import { BreakerOpenError } from './credential-breaker.js';
import { type BackoffPolicy, DEFAULT_BACKOFF } from './backoff.js';
import { type Claim, claimNext, pulse, release, type RunResult } from './lease.js';
import { judge } from './outcome.js';
import { loadJob, type MailboxRunner } from './run-mailbox.js';

export interface WorkerOptions {
  /** This process's name in leases (see owner.ts). */
  owner: string;
  /** Mailboxes synced at once by this process (endpoint limits apply on top, across all workers). */
  concurrency: number;
  /** Time between a mailbox's successful syncs (SPEC §4: 24 hours). */
  incrementalEveryMs: number;
  /** A lease not pulsed for this long is free to take. Default 60 s. */
  leaseTtlMs?: number;
  /** How often a running sync pulses its lease and writes progress. Default min(2 s, ttl/3). */
  pulseMs?: number;
  /** How often an idle worker looks for due mailboxes. Default 1 s. */
  pollMs?: number;
  backoff?: BackoffPolicy;
  runner: MailboxRunner;
  logger: Logger;
}

type Interruption = Extract<RunResult, { kind: 'interrupted' }>['why'];

export class Worker {
  private readonly running = new Set<Promise<void>>();
  private readonly controllers = new Set<AbortController>();
  private stopping = false;
  private wake: (() => void) | undefined;
  private readonly ttl: number;
  private readonly pulseEvery: number;
  private readonly poll: number;

  constructor(
    private readonly store: Store,
    private readonly opts: WorkerOptions,
  ) {
    this.ttl = opts.leaseTtlMs ?? 60_000;
    this.pulseEvery = opts.pulseMs ?? Math.min(2000, Math.floor(this.ttl / 3));
    this.poll = opts.pollMs ?? 1000;
  }

  /** Runs until stop(); resolves once every sync in progress has been given back. */
  async run(): Promise<void> {
    const log = this.opts.logger;
    while (!this.stopping) {
      if (this.running.size >= this.opts.concurrency) {
        await this.idle(this.poll * 10);
        continue;
      }
      let claim: Claim | null;
      try {
        claim = await claimNext(this.store, { owner: this.opts.owner, ttlMs: this.ttl });
      } catch (err) {
        log.error({ err: (err as Error).message }, 'claiming a mailbox failed; retrying');
        await this.idle(this.poll);
        continue;
      }
      if (!claim) {
        await this.idle(this.poll);
        continue;
      }
      if (this.stopping) {
        // Stopped between the claim and now: give it straight back.
        await this.give(claim, { kind: 'interrupted', why: 'shutdown', pairId: null }, undefined);
        break;
      }
      const p: Promise<void> = this.execute(claim).finally(() => {
        this.running.delete(p);
        this.wake?.();
      });
      this.running.add(p);
    }
    await Promise.allSettled([...this.running]);
  }

  /** Aborts every sync in progress; run() resolves once they are released. */
  stop(): void {
    if (this.stopping) return;
    this.stopping = true;
    for (const c of this.controllers) c.abort('shutdown' satisfies Interruption);
    this.wake?.();
  }

  get busy(): number {
    return this.running.size;
  }

  private idle(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.wake = done;
    });
  }

  /**
   * A run taken over from a worker that died or was paused waits until a lease's time has
   * passed since that worker's lease ended (heartbeats continue meanwhile). The APPENDs it
   * had handed to its OS before (the write fence stops the rest) may still be on their way
   * over a slow link or through a proxy; the journal's recovery then finds them on the
   * target instead of judging them lost and copying them again.
   */
  private async afterTakeover(claim: Claim, signal: AbortSignal): Promise<void> {
    const wait = claim.tookOverAt === undefined ? 0 : claim.tookOverAt + this.ttl - Date.now();
    if (wait > 0) {
      this.opts.logger.info({ mailboxId: claim.mailboxId, waitMs: wait }, 'taken over from a run whose lease ran out: waiting for what it sent to land before recovery');
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, wait);
        signal.addEventListener('abort', done, { once: true });
        function done() {
          clearTimeout(t);
          signal.removeEventListener('abort', done);
          resolve();
        }
      });
    }
    if (signal.aborted) throw new Error('sync stopped');
  }

  private async execute(claim: Claim): Promise<void> {
    const log = this.opts.logger.child({ mailboxId: claim.mailboxId, kind: claim.kind });
    const controller = new AbortController();
    this.controllers.add(controller);
    const abort = (why: Interruption) => {
      if (!controller.signal.aborted) controller.abort(why);
    };
    let progress: SyncProgress | undefined;
    // Until when this worker may consider the mailbox its own, by its own clock.
    let ownedUntil = claim.expiresAt;
    const margin = Math.min(this.pulseEvery, Math.floor(this.ttl / 6));
    let pulsing = false;
    // Asked before each write that could copy a message (SyncOptions.mayWrite), by the
    // clock, not only by this timer: after a pause (SIGSTOP, a suspended VM, swapping) Node
    // handles the I/O that was waiting before any timer, and a lane would journal and send
    // its next messages while another worker, which took the expired lease over, copies
    // them too.
    // Closed only when the lease is (or may be) another's: a run stopped or shut down lets
    // the APPENDs it has sent finish, and keeps its lease alive meanwhile.
    let leaseLost = false;
    const loseLease = (): void => {
      leaseLost = true;
      abort('lease-lost');
    };
    const mayWrite = (): boolean => {
      if (leaseLost) return false;
      if (Date.now() <= ownedUntil - margin) return true;
      // Also what a worker says on waking from a pause, when its lease may be another's already.
      log.warn({ ownedUntil: new Date(ownedUntil).toISOString() }, 'the lease on this mailbox ran out or is about to, with no heartbeat recorded (the process was paused, or the database did not answer): abandoning the sync, nothing more is written');
      loseLease();
      return false;
    };
    const timer = setInterval(() => {
      // Before the heartbeat's own wait: a heartbeat stuck on a hung database must not keep
      // the deadline from being seen.
      if (!mayWrite() || pulsing) return;
      pulsing = true;
      const sentAt = Date.now();
      pulse(this.store, claim, progress, { ttlMs: this.ttl, now: sentAt })
        .then((r) => {
          if (!r.owned) loseLease();
          else ownedUntil = sentAt + this.ttl;
          if (r.batchState === 'Stopped') abort('stopped');
          else if (r.batchState === 'Removing' || r.batchState === null) abort('removed');
        })
        // A failed pulse is not yet a lost lease: the local deadline above decides.
        .catch((err: unknown) => log.warn({ err: (err as Error).message }, 'heartbeat failed'))
        .finally(() => (pulsing = false));
    }, this.pulseEvery);

    let result: RunResult;
    try {
      await this.afterTakeover(claim, controller.signal);
      const job = await loadJob(this.store, claim);
      if (!job) {
        result = { kind: 'interrupted', why: 'removed', pairId: null };
      } else {
        log.info({ batch: job.batch.name, mailbox: job.mailbox.email_address }, `${claim.kind} sync starting`);
        const { summary, pairId } = await this.opts.runner(job, { signal: controller.signal, onProgress: (p) => (progress = { ...p }), mayWrite });
        result = judge(summary, pairId, job.batch.bad_item_limit);
        log.info({ batch: job.batch.name, mailbox: job.mailbox.email_address, copied: summary.copied, found: summary.found, seconds: summary.seconds, outcome: result.kind }, `${claim.kind} sync finished`);
      }
    } catch (err) {
      if (controller.signal.aborted) {
        // What it copied before it was stopped is in the journal: the counts must show it.
        result = { kind: 'interrupted', why: controller.signal.reason as Interruption, pairId: pairOfFailedRun(err) };
        log.info({ why: result.why }, 'sync interrupted');
      } else if (isStoreFailure(err)) {
        // The journal is safe (every write is a transaction), and the mailbox did nothing
        // wrong: given back, due at once, rather than Failed with a backoff.
        result = { kind: 'interrupted', why: 'database', pairId: pairOfFailedRun(err) };
        log.warn({ err: (err as Error).message }, 'sync interrupted: the state database failed');
      } else {
        result = {
          kind: 'failed',
          error: (err as Error)?.message ?? String(err),
          pairId: pairOfFailedRun(err),
          ...(sourceLoginRefused(err) ? { loginRefused: true as const } : {}),
          ...(err instanceof BreakerOpenError ? { notBefore: err.retryAt } : {}),
        };
        log.warn({ err: result.error }, 'sync failed');
      }
    } finally {
      clearInterval(timer);
      this.controllers.delete(controller);
    }
    await this.give(claim, result, progress);
  }

  private async give(claim: Claim, result: RunResult, progress: SyncProgress | undefined): Promise<void> {
    // A lost lease is someone else's now: release() writes nothing then, but trying is harmless.
    for (let attempt = 1; ; attempt++) {
      try {
        await release(this.store, claim, result, progress, { incrementalEveryMs: this.opts.incrementalEveryMs, backoff: this.opts.backoff ?? DEFAULT_BACKOFF });
        return;
      } catch (err) {
        this.opts.logger.error({ err: (err as Error).message, mailboxId: claim.mailboxId, attempt }, 'recording a sync outcome failed');
        // Unrecorded, the lease expires on its own and the mailbox is synced again: safe, only slower.
        if (attempt >= 3 || this.stopping) return;
        await new Promise((r) => setTimeout(r, 1000 * attempt));
      }
    }
  }
}

/**
 * Whether the source server refused the mailbox's credentials: the error, or the one
 * inside (withMailboxSides wraps what it throws to scrub passwords). A refusal without a
 * side is the source's: its logins are resolved by auth/resolve.ts. Not an admin login
 * the breaker held back (no login was sent; the breaker retries it), nor a source that
 * offers no login mechanism mailferry can use (nothing was refused).
 */
function sourceLoginRefused(err: unknown): boolean {
  return [err, (err as Error | null)?.cause].some(
    (e) => credentialRefused(e) && (e as ImapAuthError).side !== 'target' && !(e instanceof BreakerOpenError) && !(e instanceof SourceLoginError && e.method === 'none'),
  );
}
