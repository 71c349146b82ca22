/**
 * How long a failed mailbox waits before its next automatic attempt: doubling from `baseMs`
 * up to `capMs`. A wrong password is tried about once an hour at most, so it does not lock
 * the account under a lockout policy, while a server that was briefly down is retried soon.
 */
export interface BackoffPolicy {
  baseMs: number;
  capMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 60_000, capMs: 3_600_000 };

/** `attempts`: consecutive failures so far, including the one just recorded (>= 1). */
export function backoffMs(attempts: number, policy: BackoffPolicy = DEFAULT_BACKOFF): number {
  const n = Math.max(1, Math.min(attempts, 40));
  return Math.min(policy.capMs, policy.baseMs * 2 ** (n - 1));
}
