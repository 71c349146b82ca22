/**
 * The test run before an endpoint or target is stored (SPEC §3: "tests the connection
 * first … and says plainly what failed"), and by `test`: the probe (reach, TLS, greeting,
 * capabilities, optional login), then, for a target with a test user, that the admin
 * acting as that user really opens the user's mailbox (auth/target-check.ts).
 */
import { ImpersonationError } from '../auth/errors.js';
import { checkTargetSession } from '../auth/target-check.js';
import type { ImapLogin } from '../imap/endpoint.js';
import type { EndpointRow } from '../store/schema.js';
import { imapEndpointOf } from '../worker/mailbox-sides.js';
import { probeEndpoint } from './probe.js';
import type { ProbeResult } from './types.js';

/** Whether the target session acting as the test user was the user's. */
export type SessionCheck =
  | { kind: 'not-checked' }
  | { kind: 'users' }
  /** Both mailboxes empty: cannot tell yet; checked again before each initial sync. */
  | { kind: 'both-empty'; note: string }
  | { kind: 'admins'; error: string };

export interface EndpointTest {
  /** The probe passed and the session check did not fail: safe to store. */
  ok: boolean;
  probe: ProbeResult;
  session: SessionCheck;
}

type Tested = Pick<EndpointRow, 'role' | 'host' | 'port' | 'tls' | 'accept_untrusted_cert' | 'admin_user'>;

export async function testEndpointSettings(row: Tested, login: ImapLogin | undefined, testUser: string | undefined): Promise<EndpointTest> {
  const probe = await probeEndpoint({ host: row.host, port: row.port, tls: row.tls, acceptUntrustedCert: row.accept_untrusted_cert === 1, ...(login ? { login } : {}) });
  // A target's admin password is only tried acting as someone (a master user may not log in
  // alone): without a test user a wrong one would pass unnoticed until every mailbox fails.
  if (row.role === 'target' && !login) probe.warnings.push('the admin login was not tried: give a test user (any mailbox on the target) to test it acting as that user');
  if (!probe.ok || row.role !== 'target' || !login || !testUser) return { ok: probe.ok, probe, session: { kind: 'not-checked' } };
  try {
    const verdict = await checkTargetSession(imapEndpointOf(row), login, testUser, row.admin_user!);
    if (verdict === 'both-empty') {
      const note = `${testUser}'s mailbox and the admin's own are both empty, so mailferry cannot yet confirm the impersonation works; each mailbox is checked again before its initial sync`;
      return { ok: true, probe, session: { kind: 'both-empty', note } };
    }
    return { ok: true, probe, session: { kind: 'users' } };
  } catch (err) {
    if (!(err instanceof ImpersonationError)) throw err;
    return { ok: false, probe, session: { kind: 'admins', error: err.message } };
  }
}
