/**
 * Batch-wide tasks the web page starts and then watches — check logins and verify — run in
 * the background of one `serve`. They are claimed in the batch row (an expiry the runner
 * keeps fresh), so that:
 * - a second click, on this `serve` or another sharing the database, does not run them
 *   again (check logins tries every password: twice would count twice towards lockouts);
 * - every `serve` shows that they run, and check logins' result, whichever started it;
 * - a `serve` that dies mid-run leaves a claim that expires, shown as interrupted.
 * The CLI's `batch check-logins` and `batch verify` take the same claims, so a command run
 * beside the page neither doubles the logins nor goes unseen there.
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

/**
 * Runs a check-logins claimed by claimTask, and records its outcome in the batch row (before
 * the claim is given back) for every page to show. Gives back the results, or throws what
 * the check threw once that is recorded.
 */
export async function runLoginCheck(store: Store, batchId: number, check: () => Promise<LoginCheck[]>): Promise<LoginCheck[]> {
  const startedAt = new Date().toISOString();
  const record = (state: Partial<LoginCheckState>) =>
    store.db
      .updateTable('batch')
      .set({ login_check_json: JSON.stringify({ running: false, startedAt, finishedAt: new Date().toISOString(), ok: null, mailboxes: [], error: null, ...state } satisfies LoginCheckState) })
      .where('id', '=', batchId)
      .execute();
  return runClaimed(store, batchId, 'login_check', async () => {
    let results: LoginCheck[];
    try {
      results = await check();
    } catch (err) {
      await record({ error: (err as Error).message });
      throw err;
    }
    await record({ ok: results.every((r) => r.source.ok && r.target.ok), mailboxes: results });
    return results;
  });
}

/** What the batch row says of its tasks now: a claim past its expiry was a run whose `serve` stopped. */
export function taskStates(b: Pick<BatchRow, 'login_check_until' | 'login_check_json' | 'verify_until'>, now = Date.now()): { verifying: boolean; loginCheck: LoginCheckState | null } {
  let loginCheck = b.login_check_json ? (JSON.parse(b.login_check_json) as LoginCheckState) : null;
  if (loginCheck?.running && (b.login_check_until === null || b.login_check_until <= now)) {
    loginCheck = { ...loginCheck, running: false, error: 'interrupted: the serve process running it stopped before it finished' };
  }
  return { verifying: b.verify_until !== null && b.verify_until > now, loginCheck };
}
