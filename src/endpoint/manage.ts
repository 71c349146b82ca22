/**
 * Creating and changing a migration endpoint or target (SPEC §3): settings checked,
 * connection (and, with a test user, login) tested, stored only when the test passes; the
 * target's admin password encrypted (src/secrets). Shared by `endpoint|target
 * create|update` and the HTTP API.
 */
import { targetLogin } from './target-login.js';
import type { ImapLogin } from '../imap/endpoint.js';
import { defaultPort } from '../imap/endpoint.js';
import { decryptSecret, encryptSecret, type SecretKey } from '../secrets/index.js';
import { findEndpoint, insertEndpoint, updateEndpoint } from '../store/endpoints.js';
import type { Store } from '../store/open.js';
import type { EndpointRole, EndpointRow } from '../store/schema.js';
import { impersonationOf } from '../worker/mailbox-sides.js';
import { checkEndpointName, checkSeparator, EndpointSettingError, type EndpointSettings, type EndpointSettingsInput, newEndpointSettings, tlsMode, wholeSetting } from './settings.js';
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

export class EndpointMissingError extends Error {
  override name = 'EndpointMissingError';
}

/** What `update` may change; absent fields keep their stored value. */
export type EndpointChanges = Partial<EndpointSettingsInput>;

export interface ChangeEndpointRequest {
  role: EndpointRole;
  name: string;
  changes: EndpointChanges;
  /** Target: a new admin password (a rotated one); absent: the stored one is kept and used for the test. */
  newAdminPassword?: string | undefined;
  testUser?: string | undefined;
  /** Source: the test user's password. */
  testPassword?: string | undefined;
}

/** The stored settings with `changes` applied, checked as create checks them. */
export function changedSettings(row: EndpointRow, c: EndpointChanges): EndpointSettings {
  if (c.auth !== undefined && c.auth !== 'plain' && c.auth !== 'login') throw new EndpointSettingError('--auth must be plain or login');
  if (c.impersonation !== undefined && c.impersonation !== 'sasl' && c.impersonation !== 'separator') throw new EndpointSettingError('--impersonation must be sasl or separator');
  const host = c.host !== undefined ? c.host.trim() : row.host;
  if (!host || /[\s/]/.test(host)) throw new EndpointSettingError(`--host must be a host name or address, not "${c.host}"`);
  const mode = c.tls !== undefined ? tlsMode(c.tls) : row.tls;
  const impersonation = (c.impersonation as 'sasl' | 'separator' | undefined) ?? row.impersonation;
  if (row.role === 'target') checkSeparator(impersonation, c.separator);
  return {
    host,
    // A new TLS mode without a port moves a default port with it (993 <-> 143).
    port: c.port !== undefined && c.port !== '' ? wholeSetting(c.port, '--port', row.port) : c.tls !== undefined && row.port === defaultPort(row.tls) ? defaultPort(mode) : row.port,
    tls: mode,
    auth: (c.auth as 'plain' | 'login' | undefined) ?? row.auth,
    accept_untrusted_cert: c.acceptUntrustedCert === undefined ? row.accept_untrusted_cert : c.acceptUntrustedCert ? 1 : 0,
    max_concurrent_migrations: wholeSetting(c.maxConcurrentMigrations, '--max-concurrent-migrations', row.max_concurrent_migrations, 1000),
    max_concurrent_incremental_syncs: wholeSetting(c.maxConcurrentIncrementalSyncs, '--max-concurrent-incremental-syncs', row.max_concurrent_incremental_syncs, 1000),
    admin_user: row.role === 'target' ? (c.adminUser || row.admin_user) : null,
    impersonation: row.role === 'target' ? impersonation : null,
    separator: row.role === 'target' && impersonation === 'separator' ? (c.separator || row.separator || '*') : null,
  };
}

/**
 * `update`: a rotated admin password, a new host or other limits, tested first (as create
 * is) and stored only if the test passes; batches use it from their next run.
 */
export async function changeEndpoint(store: Store, key: (create?: boolean) => SecretKey, req: ChangeEndpointRequest): Promise<CreateEndpointOutcome> {
  const row = await findEndpoint(store.db, req.role, req.name);
  if (!row) throw new EndpointMissingError(`no ${ROLE_NOUN[req.role]} named "${req.name}"`);
  const settings = changedSettings(row, req.changes);
  // A new admin login (password, user or way of acting as users) is only tried acting as a
  // user: stored untried, every mailbox's next run would fail with it (and count towards a
  // lockout of the admin account).
  const newLogin = req.role === 'target' && (!!req.newAdminPassword || settings.admin_user !== row.admin_user || settings.impersonation !== row.impersonation || settings.separator !== row.separator);
  if (newLogin && !req.testUser) throw new EndpointSettingError('a changed admin login is tried before it is stored: give a test user (any mailbox on the target, --test-user) to log in as');
  let password = req.testPassword;
  let password_enc = row.password_enc;
  if (req.role === 'target') {
    const fresh = req.newAdminPassword;
    password = fresh ? fresh : row.password_enc ? decryptSecret(key(false), row.password_enc) : '';
    if (fresh) password_enc = encryptSecret(key(true), fresh);
  }
  const test = await testEndpointSettings({ role: req.role, ...settings }, testLogin(req.role, settings, req.testUser, password), req.testUser);
  if (!test.ok) return { stored: false, test };
  await updateEndpoint(store.db, row.id, { ...settings, password_enc });
  return { stored: true, row: (await findEndpoint(store.db, req.role, req.name))!, test };
}
