/**
 * Passwords at rest: the key (key.ts) and the AES-256-GCM format (cipher.ts).
 *
 * Typical use by the store:
 *     const key = loadSecretKey();               // once per process
 *     row.password = encryptSecret(key, password);
 *     const password = decryptSecret(key, row.password);
 */
export {
  defaultKeyFilePath,
  generateSecretKeyText,
  HOME_ENV,
  loadSecretKey,
  type LoadSecretKeyOptions,
  parseKeyText,
  SECRET_KEY_BYTES,
  SECRET_KEY_ENV,
  type SecretKey,
  SecretKeyError,
  secretKeyId,
} from './key.js';
export {
  decryptSecret,
  encryptedSecretKeyId,
  encryptSecret,
  isEncryptedSecret,
  SecretDecryptError,
  type SecretDecryptFailure,
} from './cipher.js';
