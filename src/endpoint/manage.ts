/**
 * Creating a migration endpoint or target (SPEC §3): settings checked, connection (and,
 * with a test user, login) tested, stored only when the test passes; the target's admin
 * password encrypted (src/secrets). Shared by `endpoint|target create` and the HTTP API.
 */
import { targetLogin } from './target-login.js';
import type { ImapLogin } from '../imap/endpoint.js';
import { encryptSecret, type SecretKey } from '../secrets/index.js';
import { findEndpoint, insertEndpoint } from '../store/endpoints.js';
import type { Store } from '../store/open.js';
import type { EndpointRole, EndpointRow } from '../store/schema.js';
import { impersonationOf } from '../worker/mailbox-sides.js';
import { checkEndpointName, EndpointSettingError, type EndpointSettings, type EndpointSettingsInput, newEndpointSettings } from './settings.js';
import { type EndpointTest, testEndpointSettings } from './test-settings.js';

export const ROLE_NOUN: Record<EndpointRole, string> = { source: 'migration endpoint', target: 'migration target' };

/** A source test login for `user` (SPEC §3 "with a sample row it also tests a login"). */
export function sourceTestLogin(auth: 'plain' | 'login', user: string, password: string): ImapLogin {
  return auth === 'plain' ? { method: 'plain', authcid: user, password } : { method: 'login', username: user, password };
}

/** The login a test makes: the sample user's on a source, the admin acting as the test user on a target. */
export function testLogin(role: EndpointRole, s: Pick<EndpointSettings, 'auth' | 'admin_user' | 'impersonation' | 'separator'>, testUser: string | undefined, password: string | undefined): ImapLogin | undefined {
  if (!testUser) return undefined;
  if (password === undefined || password === '') throw new EndpointSettingError(role === 'source' ? `the password of test user ${testUser} is needed to test its login` : 'the target admin password is needed to test a login');
  return role === 'source' ? sourceTestLogin(s.auth, testUser, password) : targetLogin(s.admin_user!, password, impersonationOf(s), testUser);
}

export interface CreateEndpointRequest {
  role: EndpointRole;
  name: string;
  settings: EndpointSettingsInput;
  /** Target: the admin password (required). */
  adminPassword?: string | undefined;
  testUser?: string | undefined;
  /** Source: the test user's password. */
  testPassword?: string | undefined;
}

export type CreateEndpointOutcome = { stored: true; row: EndpointRow; test: EndpointTest } | { stored: false; test: EndpointTest };

export class EndpointNameTakenError extends Error {
  override name = 'EndpointNameTakenError';
}

/** Throws EndpointSettingError / EndpointNameTakenError for input that cannot be tried at all. */
export async function createEndpoint(store: Store, key: () => SecretKey, req: CreateEndpointRequest): Promise<CreateEndpointOutcome> {
  const name = checkEndpointName(req.name);
  const settings = newEndpointSettings(req.role, req.settings);
  if (req.role === 'target' && !req.adminPassword) throw new EndpointSettingError('the target admin password is required');
  if (await findEndpoint(store.db, req.role, name)) throw new EndpointNameTakenError(`a ${ROLE_NOUN[req.role]} named "${name}" already exists (delete it first)`);
  const login = testLogin(req.role, settings, req.testUser, req.role === 'target' ? req.adminPassword : req.testPassword);
  const test = await testEndpointSettings({ role: req.role, ...settings }, login, req.testUser);
  if (!test.ok) return { stored: false, test };
  const row = await insertEndpoint(store.db, {
    role: req.role,
    name,
    ...settings,
    password_enc: req.adminPassword !== undefined && req.role === 'target' ? encryptSecret(key(), req.adminPassword) : null,
    created_at: Date.now(),
  });
  return { stored: true, row, test };
}
