/**
 * The admin token that guards the HTTP API and the web page. The API creates batches,
 * takes migration files full of passwords and starts migrations: it must not answer
 * whoever reaches the port. One bearer token (RFC 6750 §2.1) per installation:
 * `MAILFERRY_ADMIN_TOKEN` when set (deployments with a secret store), else the file
 * `admin-token` beside the secret key (`~/.mailferry`, or MAILFERRY_HOME), made by the
 * first `serve` with 32 random bytes, mode 0600. Never logged; `serve` names the file.
 *
 * Why a bearer token and not a session cookie: a header the page adds itself is never
 * sent by the browser on its own, so no other site can make the admin's browser act
 * (no CSRF defence needed), and scripts use the same token with curl.
 */
import { randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { defaultKeyFilePath } from '../secrets/key.js';

export const ADMIN_TOKEN_ENV = 'MAILFERRY_ADMIN_TOKEN';
const FILE_NAME = 'admin-token';
/** Shorter tokens are refused: the API is worth guessing at. */
const MIN_LENGTH = 16;

export class AdminTokenError extends Error {
  override name = 'AdminTokenError';
}

export interface AdminToken {
  /** Compares in constant time (of the digests), so response times tell nothing about the token. */
  matches(candidate: string): boolean;
  /** Where it came from, for the start-up line (never the token itself). */
  where: string;
}

function tokenOf(value: string, where: string): AdminToken {
  if (value.length < MIN_LENGTH) throw new AdminTokenError(`the admin token (${where}) is shorter than ${MIN_LENGTH} characters`);
  // RFC 6750 §2.1: a bearer token is one word; one with blanks could never be sent.
  if (/\s/.test(value)) throw new AdminTokenError(`the admin token (${where}) holds blanks; use one word (letters, digits, - . _ ~ + /)`);
  const digest = (s: string) => createHash('sha256').update(s).digest();
  const want = digest(value);
  return { where, matches: (candidate) => timingSafeEqual(digest(candidate), want) };
}

export function loadAdminToken(env: NodeJS.ProcessEnv = process.env): AdminToken {
  const given = env[ADMIN_TOKEN_ENV];
  if (given !== undefined && given !== '') return tokenOf(given.trim(), ADMIN_TOKEN_ENV);
  const file = path.join(path.dirname(defaultKeyFilePath(env)), FILE_NAME);
  try {
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    // O_EXCL: never replaces a token another `serve` made first.
    writeFileSync(file, `${randomBytes(32).toString('base64url')}\n`, { flag: 'wx', mode: 0o600 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new AdminTokenError(`cannot create the admin token file ${file}: ${(err as Error).message}`);
  }
  const stat = statSync(file);
  if (!stat.isFile()) throw new AdminTokenError(`the admin token file ${file} is not a regular file`);
  if (process.platform !== 'win32' && (stat.mode & 0o077) !== 0) {
    throw new AdminTokenError(`refusing to use the admin token file ${file}: other users may read it (run \`chmod 600 ${file}\` and consider making a new token)`);
  }
  const text = readFileSync(file, 'utf8').trim();
  if (text === '') throw new AdminTokenError(`the admin token file ${file} is empty; delete it and start serve again to make a new token`);
  return tokenOf(text, file);
}
