/**
 * Encryption of one secret (a password) for storage: AES-256-GCM (NIST SP 800-38D) from
 * node:crypto, as one line of text that fits any TEXT column:
 *
 *     v1:<key id>:<iv>:<tag>:<ciphertext>        (iv, tag, ciphertext in base64, RFC 4648 §4)
 *
 * - A fresh random 96-bit IV per value. 96 bits is the IV length GCM is designed for
 *   (SP 800-38D §5.2.1.1, §8.2.2: random IVs are safe for up to 2^32 encryptions under one
 *   key, far beyond the number of passwords a deployment stores). Never reuse an IV:
 *   with GCM that leaks the XOR of two plaintexts and the authentication key.
 * - The full 128-bit tag (SP 800-38D §5.2.1.2) is checked on decryption, so any change to
 *   the IV, tag or ciphertext is detected.
 * - The header `v1:<key id>` is authenticated as additional data (AAD), so it cannot be
 *   altered either; the version leaves room for another algorithm or key wrapping later.
 * - The key id tells "encrypted with another key" from "corrupted", which GCM alone cannot.
 *
 * Errors name what is wrong, never the plaintext, the key, or the stored text (which
 * could be a plaintext password that was never encrypted).
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

import type { SecretKey } from './key.js';

const VERSION = 'v1';
const ALGORITHM = 'aes-256-gcm';
const IV_BYTES = 12;
const TAG_BYTES = 16;
const PREFIX = `${VERSION}:`;
const B64 = /^[A-Za-z0-9+/]*={0,2}$/;

export type SecretDecryptFailure = 'format' | 'version' | 'wrong-key' | 'tampered';

/** A stored secret could not be decrypted. `reason` says why; the message says what to do. */
export class SecretDecryptError extends Error {
  override name = 'SecretDecryptError';
  constructor(
    message: string,
    readonly reason: SecretDecryptFailure,
  ) {
    super(message);
  }
}

function aad(keyId: string): Buffer {
  return Buffer.from(`mailferry-secret:${VERSION}:${keyId}`, 'utf8');
}

/** Encrypt a secret for storage. Two calls with the same input give different texts. */
export function encryptSecret(key: SecretKey, plaintext: string): string {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv(ALGORITHM, key.bytes, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad(key.id));
  const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  const tag = cipher.getAuthTag();
  return `${VERSION}:${key.id}:${iv.toString('base64')}:${tag.toString('base64')}:${ct.toString('base64')}`;
}

/** Whether a stored text is in the encrypted format (it does not check that it decrypts). */
export function isEncryptedSecret(text: string): boolean {
  return parse(text) !== null;
}

/** The key id an encrypted text was made with, or null if the text is not one. */
export function encryptedSecretKeyId(text: string): string | null {
  return parse(text)?.keyId ?? null;
}

/**
 * Decrypt a text made by {@link encryptSecret}. Throws {@link SecretDecryptError} when the
 * text is not in the format, was made with another key, or was altered.
 */
export function decryptSecret(key: SecretKey, text: string): string {
  if (text.startsWith('v') && !text.startsWith(PREFIX) && /^v\d+:/.test(text)) {
    throw new SecretDecryptError(
      `stored secret uses format ${text.slice(0, text.indexOf(':'))}, which this version of mailferry cannot read (it knows ${VERSION}); upgrade mailferry`,
      'version',
    );
  }
  const p = parse(text);
  if (!p) {
    // Do not quote the text: it might be a plaintext password stored by mistake.
    throw new SecretDecryptError(`stored secret is not in the encrypted format (${VERSION}:…); it is damaged or was never encrypted`, 'format');
  }
  if (p.keyId !== key.id) {
    throw new SecretDecryptError(
      `stored secret was encrypted with another key (key id ${p.keyId}, the key in use is ${key.id}${key.source === 'env' ? ' from MAILFERRY_SECRET_KEY' : key.path ? ` from ${key.path}` : ''}); ` +
        'use the key it was stored with (check MAILFERRY_SECRET_KEY and the key file) or enter the password again',
      'wrong-key',
    );
  }
  try {
    const decipher = createDecipheriv(ALGORITHM, key.bytes, p.iv, { authTagLength: TAG_BYTES });
    decipher.setAAD(aad(p.keyId));
    decipher.setAuthTag(p.tag);
    return Buffer.concat([decipher.update(p.ct), decipher.final()]).toString('utf8');
  } catch {
    // Same key id but the tag does not verify: the value (or the key, in the 1 in 2^32
    // case of an id collision) is not what it was.
    throw new SecretDecryptError(
      'stored secret failed its integrity check: it was altered or damaged (or the key changed); enter the password again',
      'tampered',
    );
  }
}

interface Parsed {
  keyId: string;
  iv: Buffer;
  tag: Buffer;
  ct: Buffer;
}

function parse(text: string): Parsed | null {
  if (!text.startsWith(PREFIX)) return null;
  const parts = text.split(':');
  if (parts.length !== 5) return null;
  const [, keyId, ivB64, tagB64, ctB64] = parts as [string, string, string, string, string];
  if (!/^[0-9a-f]{8}$/.test(keyId)) return null;
  if (!B64.test(ivB64) || !B64.test(tagB64) || !B64.test(ctB64) || ctB64.length % 4 !== 0) return null;
  const iv = Buffer.from(ivB64, 'base64');
  const tag = Buffer.from(tagB64, 'base64');
  if (iv.length !== IV_BYTES || tag.length !== TAG_BYTES) return null;
  return { keyId, iv, tag, ct: Buffer.from(ctB64, 'base64') };
}
