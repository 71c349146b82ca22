/**
 * `batch update`: a corrected or extended migration file for a batch that exists. The
 * wrong passwords `check-logins` or the first syncs found, a user forgotten in the file:
 * without this, the only way to fix one row was to delete the whole batch (stopping every
 * other mailbox's sync) and create it again.
 *
 * The file is checked as at creation (every problem with its line; an address in *another*
 * batch is refused). Each row whose EmailAddress is in the batch replaces that mailbox's
 * UserName, Password and UserRoot when one differs; a changed mailbox of a running batch
 * syncs again as soon as a worker is free, with its failure backoff reset (a sync running
 * now finishes with the old credentials; the next one uses the new). Rows with a new
 * address are added as mailboxes that have never synced. Mailboxes of the batch that the
 * file does not list are left as they are: the file may hold only the rows to fix.
 */
import { addressKey } from '../csv/address.js';
import { validateMigrationFile, type ValidationResult } from '../csv/index.js';
import { decryptSecret, encryptSecret, type SecretKey } from '../secrets/index.js';
import type { Store } from '../store/open.js';
import type { NewBatchMailboxRow } from '../store/schema.js';
import { freshMailbox, isAddressTaken } from './create.js';
import { BatchError } from './errors.js';
import { addressesInBatches, requireBatch } from './store.js';
import { writeTx } from './tx.js';

export type UpdateResult =
  | {
      updated: true;
      /** Mailboxes whose credentials or user root changed, by EmailAddress. */
      changed: string[];
      /** Mailboxes added to the batch. */
      added: string[];
      /** Rows of the file identical to what the batch held. */
      unchanged: number;
      /** Mailboxes of the batch that the file does not list (left as they are). */
      notInFile: number;
    }
  | { updated: false; validation: Extract<ValidationResult, { valid: false }> };

function sameSecret(key: SecretKey, stored: string, plaintext: string): boolean {
  try {
    return decryptSecret(key, stored) === plaintext;
  } catch {
    // Encrypted under another key: the new one is stored.
    return false;
  }
}

export async function updateBatch(store: Store, name: string, csv: Buffer, key: SecretKey, now = Date.now()): Promise<UpdateResult> {
  const batch = await requireBatch(store.db, name);
  if (batch.state === 'Removing') throw new BatchError(`batch "${name}" is being deleted`);
  const validation = await validateMigrationFile(csv, { alreadyInActiveBatch: (addresses) => addressesInBatches(store.db, addresses, batch.id) });
  if (!validation.valid) return { updated: false, validation };

  // By addressKey (case, Unicode form, IDN and its xn-- form), as the file's own duplicate check.
  const existing = new Map((await store.db.selectFrom('batch_mailbox').select(['id', 'email_address', 'user_name', 'password_enc', 'user_root']).where('batch_id', '=', batch.id).execute()).map((m) => [addressKey(m.email_address), m]));
  const changes: { id: number; address: string; set: { user_name: string; password_enc: string; user_root: string | null } }[] = [];
  const additions: NewBatchMailboxRow[] = [];
  let unchanged = 0;
  for (const r of validation.rows) {
    const emailKey = addressKey(r.emailAddress);
    const userRoot = r.userRoot ?? null;
    const m = existing.get(emailKey);
    if (!m) {
      // A stopped batch's mailboxes are Stopped; `batch start` queues those never synced.
      const fresh = freshMailbox(batch.state === 'Running' ? now : null);
      additions.push({ ...fresh, ...(batch.state === 'Stopped' ? { status: 'Stopped' as const } : {}), batch_id: batch.id, line: r.line, email_address: r.emailAddress, email_key: emailKey, user_name: r.userName, password_enc: encryptSecret(key, r.password), user_root: userRoot });
    } else if (m.user_name !== r.userName || m.user_root !== userRoot || !sameSecret(key, m.password_enc, r.password)) {
      // Its line stays the one of the batch's own file: check-logins and reports name it so.
      changes.push({ id: m.id, address: m.email_address, set: { user_name: r.userName, password_enc: encryptSecret(key, r.password), user_root: userRoot } });
    } else {
      unchanged++;
    }
  }
  const listed = new Set(validation.rows.map((r) => addressKey(r.emailAddress)));
  try {
    await writeTx(store, async (tx) => {
      for (const c of changes) {
        await tx
          .updateTable('batch_mailbox')
          .set({ ...c.set, ...(batch.state === 'Running' ? { sync_requested: 1, attempts: 0 } : {}) })
          .where('id', '=', c.id)
          .execute();
      }
      for (let i = 0; i < additions.length; i += 200) await tx.insertInto('batch_mailbox').values(additions.slice(i, i + 200)).execute();
    });
  } catch (err) {
    if (isAddressTaken(err)) throw new BatchError('an address of this file was added to another batch meanwhile; check the file again');
    throw err;
  }
  return {
    updated: true,
    changed: changes.map((c) => c.address),
    added: additions.map((a) => a.email_address),
    unchanged,
    notInFile: [...existing.keys()].filter((k) => !listed.has(k)).length,
  };
}
