/**
 * A circuit breaker for admin credentials shared by many mailboxes (the target's admin
 * acting as every user; a source admin in `alice*admin`, `CORP/admin/alice`…). Each
 * mailbox's run logs in on its own, so a wrong admin password would be refused once per
 * mailbox, and again at every retry of each: hundreds of refusals an hour, which a server
 * with a lockout policy answers by locking the admin account, for the whole migration.
 *
 * After three refusals in a row (a row can be refused for its own reason: a user that
 * does not exist) the credential is not tried again for an hour: runs that would use it
 * fail at once with a message that says why, without a login. After the hour one run
 * tries it again (the others still wait); a success closes the breaker. Correcting the
 * password (`target` re-created, `batch update`) makes it another credential, tried at
 * once. Per worker process: workers on other machines keep their own count, so the
 * refusals are bounded by three per worker per hour.
 *
 * Runs start side by side (20 at once by default), so counting refusals alone would let 20
 * logins with a wrong admin password through before the first answer: until a credential
 * has worked, one run at a time tries it (`enter`) and the others wait for its outcome,
 * then go at once if it worked.
 */
import { createHash } from 'node:crypto';
import { credentialAccepted, credentialRefused, ImapAuthError } from '../imap/errors.js';

/** A run not tried because its admin credential's breaker is open: no login was sent. */
export class BreakerOpenError extends ImapAuthError {
  override name = 'BreakerOpenError';
  /** When the credential is tried again (ms): the mailbox is not due before. */
  retryAt = 0;
}

export const REFUSALS_TO_OPEN = 3;
export const OPEN_FOR_MS = 3_600_000;

interface State {
  /** Mailboxes refused since the last success, in order. */
  refused: string[];
  /** While open: when runs may try again. */
  retryAt: number | null;
}

/** The breaker's key for a credential: where, who, and a hash of the password (never the password). */
export function credentialKey(side: 'source' | 'target', host: string, port: number, admin: string, password: string): string {
  return `${side}\0${host.toLowerCase()}:${port}\0${admin}\0${createHash('sha256').update(password).digest('hex')}`;
}

export class CredentialBreaker {
  private readonly states = new Map<string, State>();
  /** Credentials that worked since their last refusal: every run tries them at once. */
  private readonly proven = new Set<string>();
  /** The one login in flight with a credential not proven yet: the others wait for it. */
  private readonly probes = new Map<string, () => void>();
  private readonly settled = new Map<string, Promise<void>>();

  constructor(private readonly now: () => number = Date.now) {}

  /**
   * Waits until this run may try the credential: at once when it has worked, else when no
   * other run is trying it; throws as `check` does while the breaker is open. Returns what
   * to call when the login's outcome is known without a verdict (a lost connection): the
   * next waiting run then tries. `succeeded` and `refused` end a probe by themselves.
   */
  async enter(key: string, what: string): Promise<() => void> {
    for (;;) {
      this.check(key, what);
      if (this.proven.has(key)) return () => undefined;
      const waiting = this.settled.get(key);
      if (waiting === undefined) {
        let settle!: () => void;
        this.settled.set(key, new Promise<void>((resolve) => (settle = resolve)));
        const mine = () => {
          if (this.probes.get(key) !== mine) return;
          this.probes.delete(key);
          this.settled.delete(key);
          settle();
        };
        this.probes.set(key, mine);
        return mine;
      }
      await waiting;
    }
  }

  private endProbe(key: string): void {
    this.probes.get(key)?.();
  }

  /** Throws, without a login, while the credential's breaker is open; `what` names it ("the target admin login \"admin\""). */
  check(key: string, what: string): void {
    const s = this.states.get(key);
    if (!s || s.retryAt === null) return;
    const now = this.now();
    if (now < s.retryAt) {
      throw Object.assign(
        new BreakerOpenError(
          `not tried: ${what} was refused for ${s.refused.slice(-REFUSALS_TO_OPEN).join(', ')} and has not worked since; ` +
            `to keep the admin account from being locked out, it is tried again at ${new Date(s.retryAt).toISOString()} (or at once once its password is corrected)`,
        ),
        { retryAt: s.retryAt },
      );
    }
    // Half-open: this run tries; the others wait for another interval.
    s.retryAt = now + OPEN_FOR_MS;
  }

  succeeded(key: string): void {
    this.states.delete(key);
    this.proven.add(key);
    this.endProbe(key);
  }

  /** What a failed run's error says of the target admin credential: it worked (the login got as far as acting as the user), it was refused, or nothing. */
  judgeTargetError(key: string, err: unknown, mailbox: string): void {
    if (credentialAccepted(err)) this.succeeded(key);
    else if (credentialRefused(err) && (err as ImapAuthError).side === 'target') this.refused(key, mailbox);
  }

  /** A refusal does not end a probe: a run that entered while the credential was proven
   * may report one while another run probes; the prober's own `leave` ends it. */
  refused(key: string, mailbox: string): void {
    this.proven.delete(key);
    const s = this.states.get(key) ?? { refused: [], retryAt: null };
    s.refused.push(mailbox);
    if (s.refused.length > REFUSALS_TO_OPEN * 4) s.refused.splice(0, s.refused.length - REFUSALS_TO_OPEN);
    if (s.refused.length >= REFUSALS_TO_OPEN && s.retryAt === null) s.retryAt = this.now() + OPEN_FOR_MS;
    this.states.set(key, s);
  }
}
