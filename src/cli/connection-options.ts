/**
 * The source/target options `sync` and `verify` share. Passwords never come from the
 * command line (visible in `ps` and shell history): only from the environment or a file.
 */
import type { ImapFlow } from 'imapflow';
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { Logger } from 'pino';
import { type AuthPreference, loginFor, resolveSourceLogin } from '../auth/source-login.js';
import { defaultPort, type ImapEndpoint, type TlsMode } from '../imap/endpoint.js';
import type { MailboxSide } from '../sync/options.js';
import { UsageError } from './exit-codes.js';

export interface ConnectionFlags {
  source: string;
  sourceUser: string;
  sourceTls: TlsMode;
  sourcePasswordFile?: string;
  sourceAuth: string;
  target: string;
  targetUser: string;
  targetTls: TlsMode;
  targetPasswordFile?: string;
  targetAuth: 'login' | 'plain';
  userRoot?: string;
  exclude: string[];
  insecure?: boolean;
  db?: string;
  logLevel: string;
}

const collect = (v: string, prev: string[]) => [...prev, v];

export function addConnectionOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--source <host[:port]>', 'source IMAP server')
    .requiredOption('--source-user <name>', 'login on the source (env MAILFERRY_SOURCE_PASSWORD or --source-password-file gives its password)')
    .option('--source-tls <mode>', 'implicit | starttls | none', 'implicit')
    .option('--source-password-file <file>', 'file holding the source password')
    .option('--source-auth <method>', 'auto | login | plain (SASL PLAIN, RFC 4616); auto picks by the user name form (SPEC §2)', 'auto')
    .requiredOption('--target <host[:port]>', 'target IMAP server')
    .requiredOption('--target-user <name>', 'login on the target (env MAILFERRY_TARGET_PASSWORD or --target-password-file gives its password)')
    .option('--target-tls <mode>', 'implicit | starttls | none', 'implicit')
    .option('--target-password-file <file>', 'file holding the target password')
    .option('--target-auth <method>', 'login | plain', 'login')
    .option('--user-root <path>', "migrate only the folders under this path of the source login's view")
    .option('--exclude <folder>', 'skip this folder and its subfolders (repeatable)', collect, [])
    .option('--insecure', 'accept untrusted TLS certificates (self-signed, wrong name)')
    .option('--db <url>', 'state database: a SQLite file (PATH or sqlite:PATH) or postgres://… (default MAILFERRY_DB or ~/.mailferry/mailferry.sqlite)')
    .option('--log-level <level>', 'fatal | error | warn | info | debug', 'warn');
}

function tlsMode(v: string, flag: string): TlsMode {
  if (v === 'implicit' || v === 'starttls' || v === 'none') return v;
  throw new UsageError(`${flag} must be implicit, starttls or none, not "${v}"`);
}

export function parseHostPort(value: string, tls: TlsMode, flag: string): Pick<ImapEndpoint, "host" | "port"> {
  const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(value.trim());
  if (!m) throw new UsageError(`${flag} must be HOST or HOST:PORT, not "${value}"`);
  const port = m[2] ? Number(m[2]) : defaultPort(tls);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new UsageError(`${flag}: port ${m[2]} is out of range`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

function password(envName: string, file: string | undefined, side: string): string {
  if (file) {
    try {
      return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new UsageError(`cannot read the ${side} password file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  const v = process.env[envName];
  if (v === undefined) throw new UsageError(`no ${side} password: set ${envName} or use --${side}-password-file`);
  return v;
}

function endpointOf(flags: ConnectionFlags, which: 'source' | 'target'): MailboxSide['endpoint'] {
  const tls = tlsMode(which === 'source' ? flags.sourceTls : flags.targetTls, `--${which}-tls`);
  const { host, port } = parseHostPort(which === 'source' ? flags.source : flags.target, tls, `--${which}`);
  return { host, port, tls, acceptUntrustedCert: !!flags.insecure };
}

/**
 * Both sides, logged in as an admin would expect: the source user name may be any admin
 * form of SPEC §2 (`user*admin`, `Domain/Admin/User`, `#user@domain#admin#`, or the
 * admin's own name with --user-root); resolveSourceLogin picks the login and makes sure
 * the session is the user's. The target login is used verbatim.
 */
export async function resolveSides(
  flags: ConnectionFlags,
  logger: Logger,
  opts: { keepSourceSession?: boolean } = {},
): Promise<{ source: MailboxSide & { userRoot?: string }; target: MailboxSide; sourceSession?: ImapFlow }> {
  const sourceAuth = flags.sourceAuth;
  if (sourceAuth !== 'auto' && sourceAuth !== 'login' && sourceAuth !== 'plain') throw new UsageError('--source-auth must be auto, login or plain');
  if (flags.targetAuth !== 'login' && flags.targetAuth !== 'plain') throw new UsageError('--target-auth must be login or plain');
  const sourcePassword = password('MAILFERRY_SOURCE_PASSWORD', flags.sourcePasswordFile, 'source');
  const targetPassword = password('MAILFERRY_TARGET_PASSWORD', flags.targetPasswordFile, 'target');
  const sourceEndpoint = endpointOf(flags, 'source');
  const targetEndpoint = endpointOf(flags, 'target');
  const resolved = await resolveSourceLogin(sourceEndpoint, flags.sourceUser, sourcePassword, { userRoot: flags.userRoot, auth: sourceAuth as AuthPreference, logger, ...(opts.keepSourceSession ? { keepSession: true } : {}) });
  // Never log `resolved` itself: its login carries the password.
  if (resolved.check === 'both-empty') logger.warn({ user: resolved.mailboxUser }, 'impersonation could not be confirmed: the user and admin mailboxes are both empty');
  else logger.info({ user: resolved.mailboxUser, method: resolved.method, check: resolved.check }, 'source login resolved');
  const userRoot = resolved.userRoot ?? flags.userRoot;
  return {
    source: { endpoint: sourceEndpoint, login: resolved.login, mailboxUser: resolved.mailboxUser, ...(userRoot ? { userRoot } : {}) },
    target: { endpoint: targetEndpoint, login: loginFor(flags.targetUser, targetPassword, flags.targetAuth) },
    ...(resolved.session ? { sourceSession: resolved.session } : {}),
  };
}
