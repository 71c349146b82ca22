/**
 * The key that encrypts passwords at rest (endpoint, target and CSV passwords in the state
 * database; SPEC §1 "passwords never appear…", issue 3 item 4).
 *
 * Where it comes from, first match wins:
 * 1. `MAILFERRY_SECRET_KEY`: 32 random bytes as 64 hex digits or as base64 (standard or
 *    URL-safe alphabet, RFC 4648 §4/§5, padding optional). Meant for deployments where
 *    the key lives in a secret store and the database elsewhere; `serve` and every
 *    `worker` machine must then get the same value.
 * 2. A key file, default `~/.mailferry/secret.key` (the directory follows `MAILFERRY_HOME`,
 *    like the default SQLite file in src/store/open.ts). Created on first use with 32 bytes
 *    from the CSPRNG, mode 0600, in a directory created 0700. An existing key file that
 *    the group or others may access is refused rather than used: a key that other local
 *    users can read protects nothing, and silently chmod-ing it would hide that it may
 *    already have leaked.
 *
 * Error messages never contain the key or any part of it (only its length and a key id).
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync, writeSync, fchmodSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const SECRET_KEY_ENV = 'MAILFERRY_SECRET_KEY';
export const HOME_ENV = 'MAILFERRY_HOME';
/** AES-256 (FIPS 197 / NIST SP 800-38D with a 256-bit key). */
export const SECRET_KEY_BYTES = 32;
export const KEY_FILE_NAME = 'secret.key';

/** The key cannot be loaded: bad `MAILFERRY_SECRET_KEY`, unsafe or unreadable key file. */
export class SecretKeyError extends Error {
  override name = 'SecretKeyError';
}

export interface SecretKey {
  /** The 32 key bytes. Keep in memory only; never log. */
  readonly bytes: Buffer;
  /**
   * A short public fingerprint (8 hex digits) stored with every encrypted value, so that
   * "encrypted with another key" can be told apart from "corrupted" (GCM alone cannot),
   * and an admin can check that `serve` and the workers use the same key. It is a
   * truncated, domain-separated SHA-256 of a 256-bit random key: it reveals nothing usable.
   */
  readonly id: string;
  readonly source: 'env' | 'file';
  /** The key file, when `source` is 'file'. */
  readonly path?: string;
  /** True when this call created the key file. */
  readonly created: boolean;
}

export interface LoadSecretKeyOptions {
  /** Environment to read `MAILFERRY_SECRET_KEY` / `MAILFERRY_HOME` from (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Use this key file instead of `<MAILFERRY_HOME or ~/.mailferry>/secret.key`. */
  keyFile?: string;
  /** Create the key file when it does not exist (default true). When false, a missing
   * file is an error: commands that only read secrets should not mint a new key, which
   * could never decrypt what is already stored. */
  create?: boolean;
}

/** Where the key file is by default, for this environment. */
export function defaultKeyFilePath(env: NodeJS.ProcessEnv = process.env): string {
  const home = env[HOME_ENV] ? env[HOME_ENV] : path.join(os.homedir(), '.mailferry');
  return path.join(home, KEY_FILE_NAME);
}

/** The key id of raw key bytes (see {@link SecretKey.id}). */
export function secretKeyId(bytes: Buffer): string {
  return createHash('sha256').update('mailferry secret key id\0').update(bytes).digest('hex').slice(0, 8);
}

/**
 * Load the key: from `MAILFERRY_SECRET_KEY` if set, else from the key file (created on
 * first use unless `create` is false). Throws {@link SecretKeyError} with a message an
 * admin can act on.
 */
export function loadSecretKey(opts: LoadSecretKeyOptions = {}): SecretKey {
  const env = opts.env ?? process.env;
  const fromEnv = env[SECRET_KEY_ENV];
  if (fromEnv !== undefined) {
    // An empty value is an error, not "unset": falling back to a key file the admin did
    // not mean to use would encrypt with a key that their deployment does not share.
    const bytes = parseKeyText(fromEnv, `${SECRET_KEY_ENV}`);
    return { bytes, id: secretKeyId(bytes), source: 'env', created: false };
  }
  const file = opts.keyFile ?? defaultKeyFilePath(env);
  return loadKeyFile(file, opts.create ?? true);
}

/** A fresh key in the text form the key file and `MAILFERRY_SECRET_KEY` take (64 hex). */
export function generateSecretKeyText(): string {
  return randomBytes(SECRET_KEY_BYTES).toString('hex');
}

// ---------------------------------------------------------------------------------------

const HEX_KEY = /^[0-9a-fA-F]{64}$/;
// RFC 4648 §4 (standard) or §5 (URL-safe) alphabet, optional '=' padding.
const BASE64_KEY = /^(?:[A-Za-z0-9+/]+|[A-Za-z0-9_-]+)={0,2}$/;

/** Parse 64 hex digits or base64 of exactly 32 bytes. `what` names the source in errors;
 * the value itself never appears in them. */
export function parseKeyText(text: string, what: string): Buffer {
  const s = text.trim();
  const help = 'expected 32 bytes written as 64 hex digits or as base64 (e.g. the output of `openssl rand -hex 32`)';
  if (s === '') throw new SecretKeyError(`${what} is empty; ${help}`);
  if (HEX_KEY.test(s)) return Buffer.from(s, 'hex');
  if (BASE64_KEY.test(s)) {
    const bytes = Buffer.from(s.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    if (bytes.length === SECRET_KEY_BYTES) return bytes;
    throw new SecretKeyError(`${what} decodes to ${bytes.length} bytes, not ${SECRET_KEY_BYTES}; ${help}`);
  }
  throw new SecretKeyError(`${what} is neither hex nor base64 (${s.length} characters); ${help}`);
}

function loadKeyFile(file: string, create: boolean): SecretKey {
  let stat;
  try {
    stat = statSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new SecretKeyError(`cannot read the secret key file ${file}: ${(err as Error).message}`);
    }
    if (!create) {
      throw new SecretKeyError(
        `the secret key file ${file} does not exist; without it the stored passwords cannot be decrypted (set ${SECRET_KEY_ENV} or restore the file)`,
      );
    }
    const made = createKeyFile(file);
    if (made) return { bytes: made, id: secretKeyId(made), source: 'file', path: file, created: true };
    // Another process created it first (see createKeyFile): use theirs.
    stat = statSync(file);
  }
  if (!stat.isFile()) throw new SecretKeyError(`the secret key file ${file} is not a regular file`);
  // POSIX permission bits; Windows has no such thing and reports 0o666-ish modes.
  if (process.platform !== 'win32' && (stat.mode & 0o077) !== 0) {
    const mode = (stat.mode & 0o777).toString(8).padStart(3, '0');
    throw new SecretKeyError(
      `refusing to use the secret key file ${file}: its mode is ${mode}, so other users may read or change it. ` +
        `Run \`chmod 600 ${file}\`; if others could read it, treat the stored passwords as exposed`,
    );
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new SecretKeyError(`cannot read the secret key file ${file}: ${(err as Error).message}`);
  }
  const bytes = parseKeyText(text, `the secret key file ${file}`);
  return { bytes, id: secretKeyId(bytes), source: 'file', path: file, created: false };
}

/**
 * Create the key file atomically: write a private temp file in the same directory, then
 * link(2) it to the final name. link fails with EEXIST instead of replacing, so when
 * `serve` and a `worker` start at the same moment exactly one key wins and the other
 * process reads it; nobody ever sees a half-written file (which O_EXCL alone would allow).
 * Returns the key, or null when another process won the race.
 */
function createKeyFile(file: string): Buffer | null {
  const dir = path.dirname(file);
  try {
    // 0700: only set when we create it; an existing directory (maybe $HOME itself via
    // MAILFERRY_HOME) is left alone, the key file's own mode is what is checked.
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new SecretKeyError(`cannot create the directory ${dir} for the secret key: ${(err as Error).message}`);
  }
  const bytes = randomBytes(SECRET_KEY_BYTES);
  const tmp = path.join(dir, `.${KEY_FILE_NAME}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const fd = openSync(tmp, 'wx', 0o600);
    try {
      fchmodSync(fd, 0o600); // whatever the umask did
      writeSync(fd, `${bytes.toString('hex')}\n`);
      fsyncSync(fd); // a crash must not leave an empty key file behind a linked name
    } finally {
      closeSync(fd);
    }
    try {
      linkSync(tmp, file);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') return null;
      // A file system without hard links (some FUSE / SMB mounts): fall back to O_EXCL,
      // which still never replaces another process's key.
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw err;
      return writeExclusive(file, bytes);
    }
    return bytes;
  } catch (err) {
    throw new SecretKeyError(`cannot create the secret key file ${file}: ${(err as Error).message}`);
  } finally {
    try {
      unlinkSync(tmp);
    } catch {
      // never created, or already gone
    }
  }
}

function writeExclusive(file: string, bytes: Buffer): Buffer | null {
  let fd: number;
  try {
    fd = openSync(file, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return null;
    throw err;
  }
  try {
    fchmodSync(fd, 0o600);
    writeSync(fd, `${bytes.toString('hex')}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return bytes;
}
