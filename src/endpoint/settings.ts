/**
 * An endpoint's or target's settings as an admin gives them (CLI flags, the HTTP API's
 * JSON), checked and turned into a row; and the row as shown back (never the password).
 * One place, so the CLI and the web page refuse the same things in the same words.
 */
import { defaultPort, type TlsMode } from '../imap/endpoint.js';
import type { EndpointRole, EndpointRow } from '../store/schema.js';

/** A setting that cannot be stored; the message names it (in the CLI's flag spelling). */
export class EndpointSettingError extends Error {
  override name = 'EndpointSettingError';
}

export interface EndpointSettingsInput {
  host: string;
  port?: number | string | undefined;
  tls?: string | undefined;
  auth?: string | undefined;
  acceptUntrustedCert?: boolean | undefined;
  maxConcurrentMigrations?: number | string | undefined;
  maxConcurrentIncrementalSyncs?: number | string | undefined;
  /** Targets only. */
  adminUser?: string | undefined;
  impersonation?: string | undefined;
  separator?: string | undefined;
}

/** The row's settings, without identity and password: what create and update write. */
export type EndpointSettings = Pick<
  EndpointRow,
  'host' | 'port' | 'tls' | 'auth' | 'accept_untrusted_cert' | 'max_concurrent_migrations' | 'max_concurrent_incremental_syncs' | 'admin_user' | 'impersonation' | 'separator'
>;

export const NAME_RULE = /^[A-Za-z0-9_-]{1,64}$/;

export function checkEndpointName(name: string): string {
  if (!NAME_RULE.test(name)) throw new EndpointSettingError(`name "${name}" must be 1–64 letters, digits, '-' or '_'`);
  return name;
}

export function tlsMode(v: string): TlsMode {
  if (v === 'implicit' || v === 'starttls' || v === 'none') return v;
  throw new EndpointSettingError(`--tls must be implicit, starttls or none, not "${v}"`);
}

export function wholeSetting(v: number | string | undefined, flag: string, fallback: number, max = 65535): number {
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new EndpointSettingError(`${flag} must be a whole number from 1 to ${max}, not "${v}"`);
  return n;
}

function authMethod(v: string): 'plain' | 'login' {
  if (v === 'plain' || v === 'login') return v;
  throw new EndpointSettingError(`--auth must be plain or login, not "${v}"`);
}

function impersonationMode(v: string): 'sasl' | 'separator' {
  if (v === 'sasl' || v === 'separator') return v;
  throw new EndpointSettingError(`--impersonation must be sasl or separator, not "${v}"`);
}

/**
 * A master-user separator only where it is used, and one character: given with
 * `sasl` (which has none) or empty, it was stored as nothing, or as `*`, without a word.
 */
export function checkSeparator(impersonation: 'sasl' | 'separator' | null, separator: string | undefined): void {
  if (separator === undefined) return;
  if (impersonation !== 'separator') throw new EndpointSettingError('--separator is only for --impersonation separator (sasl acts as the user with an authorization identity, no separator)');
  if (separator.length !== 1 || /\s/.test(separator)) throw new EndpointSettingError(`--separator must be one character, such as *, not "${separator}"`);
}

/** New settings with SPEC §3's defaults: port 993 (143 without implicit TLS), 20 and 10 concurrent. */
export function newEndpointSettings(role: EndpointRole, f: EndpointSettingsInput): EndpointSettings {
  const host = f.host.trim();
  if (!host || /[\s/]/.test(host)) throw new EndpointSettingError(`--host must be a host name or address, not "${f.host}"`);
  const mode = tlsMode(f.tls ?? 'implicit');
  const impersonation = role === 'target' ? impersonationMode(f.impersonation ?? 'sasl') : null;
  if (role === 'target' && !f.adminUser) throw new EndpointSettingError('--admin-user is required for a target');
  checkSeparator(impersonation, f.separator);
  return {
    host,
    port: wholeSetting(f.port, '--port', defaultPort(mode)),
    tls: mode,
    auth: authMethod(f.auth ?? (role === 'source' ? 'login' : 'plain')),
    accept_untrusted_cert: f.acceptUntrustedCert ? 1 : 0,
    max_concurrent_migrations: wholeSetting(f.maxConcurrentMigrations, '--max-concurrent-migrations', 20, 1000),
    max_concurrent_incremental_syncs: wholeSetting(f.maxConcurrentIncrementalSyncs, '--max-concurrent-incremental-syncs', 10, 1000),
    admin_user: role === 'target' ? f.adminUser! : null,
    impersonation,
    separator: impersonation === 'separator' ? (f.separator || '*') : null,
  };
}

/** What `show`/`list` and the API print: every setting, never the password. */
export function publicEndpointView(row: EndpointRow): Record<string, unknown> {
  return {
    name: row.name,
    host: row.host,
    port: row.port,
    tls: row.tls,
    auth: row.auth,
    acceptUntrustedCert: row.accept_untrusted_cert === 1,
    ...(row.role === 'source'
      ? { maxConcurrentMigrations: row.max_concurrent_migrations, maxConcurrentIncrementalSyncs: row.max_concurrent_incremental_syncs }
      : { adminUser: row.admin_user, impersonation: row.impersonation, ...(row.impersonation === 'separator' ? { separator: row.separator } : {}), passwordStored: row.password_enc !== null }),
    createdAt: new Date(row.created_at).toISOString(),
  };
}
