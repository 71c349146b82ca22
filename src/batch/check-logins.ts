/**
 * `batch check-logins` (SPEC §4): every row's source login, and the target's admin login
 * acting as the row's address, tried without copying anything, so that a batch of 500
 * does not start with 40 wrong passwords. Each failure is a plain reason per mailbox.
 */
import type { Logger } from 'pino';
import { resolveSourceLogin, SourceLoginCache } from '../auth/source-login.js';
import { adminOf, parseSourceUserName } from '../auth/credentials.js';
import { scrubSecrets } from '../auth/errors.js';
import { checkTargetSession, TargetCheckCache } from '../auth/target-check.js';
import { credentialAccepted, credentialRefused } from '../imap/errors.js';
import { AdminGate } from './admin-gate.js';
import { targetLogin } from '../endpoint/target-login.js';
import { decryptSecret, type SecretKey } from '../secrets/index.js';
import type { Store } from '../store/open.js';
import type { BatchRow } from '../store/schema.js';
import { imapEndpointOf, impersonationOf } from '../worker/mailbox-sides.js';
import { BatchError } from './errors.js';
import { pooled } from './pooled.js';

export type SideCheck = { ok: true; detail: string } | { ok: false; error: string };

export interface LoginCheck {
  line: number;
  emailAddress: string;
  source: SideCheck;
  target: SideCheck;
}

export async function checkLogins(store: Store, batch: BatchRow, opts: { key: SecretKey; logger?: Logger; concurrency?: number }): Promise<LoginCheck[]> {
  const source = await store.db.selectFrom('endpoint').selectAll().where('id', '=', batch.endpoint_id).executeTakeFirstOrThrow();
  const target = await store.db.selectFrom('endpoint').selectAll().where('id', '=', batch.target_id).executeTakeFirstOrThrow();
  if (target.password_enc === null || target.admin_user === null) throw new BatchError(`target "${target.name}" has no stored admin login`);
  const adminPassword = decryptSecret(opts.key, target.password_enc);
  const adminUser = target.admin_user;
  const rows = await store.db.selectFrom('batch_mailbox').select(['line', 'email_address', 'user_name', 'password_enc', 'user_root']).where('batch_id', '=', batch.id).orderBy('line').execute();
  const cache = new SourceLoginCache();
  // Logins only, but still the source's connections: stay within what it accepts for migrations.
  const limit = opts.concurrency ?? Math.max(1, Math.min(source.max_concurrent_migrations, 10));
  // One gate per admin credential (admin-gate.ts): the target's admin for every row, and
  // each source admin with its password.
  const targetGate = new AdminGate(`the target admin login "${adminUser}"`);
  const targetChecks = new TargetCheckCache();
  const sourceGates = new Map<string, AdminGate>();
  const sourceGate = (userName: string, userRoot: string | null, password: string): AdminGate | null => {
    let admin: string | null;
    try {
      admin = adminOf(parseSourceUserName(userName, { userRoot: userRoot ?? undefined }));
    } catch {
      return null; // an unusable UserName fails on its own, without a login
    }
    if (admin === null) return null;
    const key = `${admin}\0${password}`;
    let gate = sourceGates.get(key);
    if (!gate) sourceGates.set(key, (gate = new AdminGate(`the source admin login "${admin}"`)));
    return gate;
  };
  return pooled(rows, limit, async (r): Promise<LoginCheck> => {
    const password = decryptSecret(opts.key, r.password_enc);
    const secrets = [password, adminPassword];
    const fail = (err: unknown) => ({
      check: { ok: false as const, error: scrubSecrets((err as Error)?.message ?? String(err), secrets, [r.user_name, r.email_address]) },
      credential: credentialAccepted(err) ? ('accepted' as const) : credentialRefused(err) ? ('refused' as const) : ('unknown' as const),
    });
    type Tried = { check: SideCheck; credential: 'accepted' | 'refused' | 'unknown' };
    const trySource = async (): Promise<Tried> => {
      try {
        const resolved = await resolveSourceLogin(imapEndpointOf(source), r.user_name, password, {
          userRoot: r.user_root ?? undefined,
          auth: source.auth === 'plain' ? 'plain' : 'auto',
          cache,
          ...(opts.logger ? { logger: opts.logger } : {}),
        });
        return { check: { ok: true, detail: `${resolved.method} (${resolved.check})` }, credential: 'accepted' };
      } catch (err) {
        return fail(err);
      }
    };
    const tryTarget = async (): Promise<Tried> => {
      try {
        // Logs in as the user and looks: the session must be the user's, not the admin's own (target-check.ts).
        const verdict = await checkTargetSession(imapEndpointOf(target), targetLogin(adminUser, adminPassword, impersonationOf(target), r.email_address), r.email_address, adminUser, { cache: targetChecks, ...(opts.logger ? { logger: opts.logger } : {}) });
        return { check: { ok: true, detail: `${adminUser} as ${r.email_address} (${verdict})` }, credential: 'accepted' };
      } catch (err) {
        return fail(err);
      }
    };
    const gate = sourceGate(r.user_name, r.user_root, password);
    const src = gate ? await gate.attempt(r.line, trySource) : (await trySource()).check;
    const tgt = await targetGate.attempt(r.line, tryTarget);
    return { line: r.line, emailAddress: r.email_address, source: src, target: tgt };
  });
}
