/**
 * Where report e-mail goes (SPEC §8): the SMTP server in `MAILFERRY_SMTP_URL`
 * (`smtp://host:port`, `smtps://user:pass@host`; nodemailer's URL form, so
 * `?tls.rejectUnauthorized=false` and the like work too), from `MAILFERRY_REPORT_FROM`, to
 * `MAILFERRY_ADMIN_EMAIL` (one address or a comma-separated list) plus each batch's
 * `--notify` addresses.
 *
 * Without `MAILFERRY_SMTP_URL` reports are not e-mailed (they stay available with
 * `batch report`); `serve` says so when it starts. A URL that cannot be right is a usage
 * error at start, not a failure discovered on the first report a day later.
 */
import { hostname } from 'node:os';
import { addressProblem } from '../csv/address.js';

const isAddress = (a: string) => addressProblem(a) === undefined;

export interface ReportMailConfig {
  /** The transport URL as given: it may hold the SMTP password, so it is never shown. */
  url: string;
  /** Scheme, host and port only, for logs and messages. */
  display: string;
  from: string;
  /** Recipients of every batch's reports. */
  admins: string[];
}

export type ReportMailSetting = { kind: 'on'; config: ReportMailConfig } | { kind: 'off'; why: string };

export class ReportMailConfigError extends Error {
  override name = 'ReportMailConfigError';
}

/**
 * The URL as logs and messages may show it: scheme, host and port only. The user name is
 * left out too (some relays use an API token as both), and so is the query, which can
 * hold `auth.pass`.
 */
export function hideUrlPassword(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}`;
  } catch {
    return '(an unparsable URL)';
  }
}

function addressList(text: string | undefined, name: string): string[] {
  if (!text?.trim()) return [];
  const list = text
    .split(',')
    .map((a) => a.trim())
    .filter(Boolean);
  for (const a of list) if (!isAddress(a)) throw new ReportMailConfigError(`${name}: "${a}" is not an e-mail address`);
  return list;
}

export function reportMailSetting(env: NodeJS.ProcessEnv = process.env): ReportMailSetting {
  const url = env.MAILFERRY_SMTP_URL?.trim();
  if (!url) return { kind: 'off', why: 'MAILFERRY_SMTP_URL is not set' };
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ReportMailConfigError('MAILFERRY_SMTP_URL must be a URL like smtp://mail.example.org:587 or smtps://user:password@mail.example.org');
  }
  if (parsed.protocol !== 'smtp:' && parsed.protocol !== 'smtps:') {
    throw new ReportMailConfigError(`MAILFERRY_SMTP_URL must start with smtp:// or smtps://, not ${parsed.protocol}//`);
  }
  if (!parsed.hostname) throw new ReportMailConfigError('MAILFERRY_SMTP_URL has no host name');
  const fromText = env.MAILFERRY_REPORT_FROM?.trim();
  // A bare address or `Name <address>`.
  const fromAddress = fromText ? (/<([^>]+)>\s*$/.exec(fromText)?.[1] ?? fromText) : undefined;
  if (fromAddress !== undefined && !isAddress(fromAddress)) throw new ReportMailConfigError(`MAILFERRY_REPORT_FROM: "${fromText}" is not an e-mail address`);
  return {
    kind: 'on',
    config: {
      url,
      display: hideUrlPassword(url),
      // The machine's name is the only sender we can invent; relays that check senders want MAILFERRY_REPORT_FROM.
      from: fromText ?? `mailferry <mailferry@${hostname()}>`,
      admins: addressList(env.MAILFERRY_ADMIN_EMAIL, 'MAILFERRY_ADMIN_EMAIL'),
    },
  };
}
