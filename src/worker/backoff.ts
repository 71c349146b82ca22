/**
 * How long a failed mailbox waits before its next automatic attempt: doubling from `baseMs`
 * up to `capMs`, so a server that was briefly down is retried soon. A refused password is
 * not retried on this timer at all (lease.ts release): lockout policies count its tries.
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
