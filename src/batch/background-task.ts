/**
 * Batch-wide tasks the web page starts and then watches — check logins and verify — run in
 * the background of one `serve`. They are claimed in the batch row (an expiry the runner
 * keeps fresh), so that:
 * - a second click, on this `serve` or another sharing the database, does not run them
 *   again (check logins tries every password: twice would count twice towards lockouts);
 * - every `serve` shows that they run, and check logins' result, whichever started it;
 * - a `serve` that dies mid-run leaves a claim that expires, shown as interrupted.
 */
import type { LoginCheck } from './check-logins.js';
import type { Store } from '../store/open.js';
import type { BatchRow } from '../store/schema.js';
import { writeTx } from './tx.js';

export type BatchTask = 'login_check' | 'verify';

/** A claim lives this long without a heartbeat. */
const CLAIM_MS = 120_000;
const HEARTBEAT_MS = 30_000;

/** The last check-logins run of a batch, as the page shows it. */
export interface LoginCheckState {
  running: boolean;
  startedAt: string;
  finishedAt: string | null;
  /** Every login worked; null while running or when it could not finish. */
  ok: boolean | null;
  mailboxes: LoginCheck[];
  error: string | null;
}

const UNTIL = { login_check: 'login_check_until', verify: 'verify_until' } as const;

/** Takes the batch's `task` for this caller; false when another run holds it. */
export function claimTask(store: Store, batchId: number, task: BatchTask, now = Date.now()): Promise<boolean> {
  return writeTx(store, async (tx) => {
    let q = tx.selectFrom('batch').selectAll().where('id', '=', batchId);
    if (store.dialect === 'postgres') q = q.forUpdate();
    const b = await q.executeTakeFirst();
    if (!b) return false;
    const until = b[UNTIL[task]];
    if (until !== null && until > now) return false;
    const started: LoginCheckState = { running: true, startedAt: new Date(now).toISOString(), finishedAt: null, ok: null, mailboxes: [], error: null };
    await tx
      .updateTable('batch')
      .set({ [UNTIL[task]]: now + CLAIM_MS, ...(task === 'login_check' ? { login_check_json: JSON.stringify(started) } : {}) })
      .where('id', '=', batchId)
      .execute();
    return true;
  });
}

/** Runs `fn` under a claim taken by claimTask, keeping it fresh, and gives it back at the end. */
export async function runClaimed<T>(store: Store, batchId: number, task: BatchTask, fn: () => Promise<T>): Promise<T> {
  const column = UNTIL[task];
  const beat = setInterval(() => {
    void store.db.updateTable('batch').set({ [column]: Date.now() + CLAIM_MS }).where('id', '=', batchId).execute().catch(() => undefined);
  }, HEARTBEAT_MS);
  try {
    return await fn();
  } finally {
    clearInterval(beat);
    await store.db.updateTable('batch').set({ [column]: null }).where('id', '=', batchId).execute();
  }
}

/** Records a check-logins run's outcome (before its claim is given back). */
export async function recordLoginCheck(store: Store, batchId: number, state: LoginCheckState): Promise<void> {
  await store.db.updateTable('batch').set({ login_check_json: JSON.stringify(state) }).where('id', '=', batchId).execute();
}

/** What the batch row says of its tasks now: a claim past its expiry was a run whose `serve` stopped. */
export function taskStates(b: Pick<BatchRow, 'login_check_until' | 'login_check_json' | 'verify_until'>, now = Date.now()): { verifying: boolean; loginCheck: LoginCheckState | null } {
  let loginCheck = b.login_check_json ? (JSON.parse(b.login_check_json) as LoginCheckState) : null;
  if (loginCheck?.running && (b.login_check_until === null || b.login_check_until <= now)) {
    loginCheck = { ...loginCheck, running: false, error: 'interrupted: the serve process running it stopped before it finished' };
  }
  return { verifying: b.verify_until !== null && b.verify_until > now, loginCheck };
}
