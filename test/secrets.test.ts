/**
 * Passwords at rest (src/secrets): the AES-256-GCM format and where the key comes from.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import {
  decryptSecret,
  encryptedSecretKeyId,
  encryptSecret,
  isEncryptedSecret,
  loadSecretKey,
  type SecretKey,
  SecretDecryptError,
  SecretKeyError,
  secretKeyId,
} from '../src/secrets/index.js';

const PASSWORD = 'Sup3r-Secret:pässwörd/with=stuff';

const tmpDirs: string[] = [];
function tmpHome(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'mailferry-secrets-'));
  tmpDirs.push(d);
  return d;
}
after(() => {
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

function keyFromHex(hex: string): SecretKey {
  return loadSecretKey({ env: { MAILFERRY_SECRET_KEY: hex } });
}
const KEY = keyFromHex(randomBytes(32).toString('hex'));
const OTHER_KEY = keyFromHex(randomBytes(32).toString('hex'));

/** Replace one base64 field of an encrypted text with the same bytes, one bit flipped. */
function flipBit(text: string, field: 2 | 3 | 4): string {
  const parts = text.split(':');
  const bytes = Buffer.from(parts[field]!, 'base64');
  bytes[0] = bytes[0]! ^ 0x01;
  parts[field] = bytes.toString('base64');
  return parts.join(':');
}

function decryptError(key: SecretKey, text: string): SecretDecryptError {
  try {
    decryptSecret(key, text);
  } catch (err) {
    assert.ok(err instanceof SecretDecryptError, `expected SecretDecryptError, got ${String(err)}`);
    return err;
  }
  assert.fail('decryption unexpectedly succeeded');
}

describe('encryptSecret / decryptSecret', () => {
  it('round-trips, including empty and non-ASCII values', () => {
    for (const s of [PASSWORD, '', 'x', '🔑 ключ 密码', 'a'.repeat(10_000)]) {
      assert.equal(decryptSecret(KEY, encryptSecret(KEY, s)), s);
    }
  });

  it('has the versioned text format with a fresh 12-byte IV and a 16-byte tag each time', () => {
    const a = encryptSecret(KEY, PASSWORD);
    const b = encryptSecret(KEY, PASSWORD);
    assert.notEqual(a, b, 'same plaintext must not give the same text (random IV)');
    for (const t of [a, b]) {
      const [version, keyId, iv, tag, ct] = t.split(':');
      assert.equal(version, 'v1');
      assert.equal(keyId, KEY.id);
      assert.equal(Buffer.from(iv!, 'base64').length, 12);
      assert.equal(Buffer.from(tag!, 'base64').length, 16);
      assert.equal(Buffer.from(ct!, 'base64').length, Buffer.byteLength(PASSWORD, 'utf8'));
    }
    assert.notEqual(a.split(':')[2], b.split(':')[2]);
    assert.ok(isEncryptedSecret(a));
    assert.equal(encryptedSecretKeyId(a), KEY.id);
    assert.equal(isEncryptedSecret(PASSWORD), false);
  });

  it('does not contain the plaintext in any form', () => {
    const t = encryptSecret(KEY, PASSWORD);
    const needles = [
      PASSWORD,
      Buffer.from(PASSWORD, 'utf8').toString('base64'),
      Buffer.from(PASSWORD, 'utf8').toString('hex'),
      'Sup3r',
      'Secret',
    ];
    for (const n of needles) assert.ok(!t.includes(n), `ciphertext contains ${JSON.stringify(n)}`);
    // Also not in what the decoded fields hold.
    const raw = Buffer.concat(t.split(':').slice(2).map((f) => Buffer.from(f, 'base64')));
    assert.ok(!raw.includes(Buffer.from('Sup3r')));
  });

  it('detects tampering with the IV, the tag, the ciphertext and the header', () => {
    const t = encryptSecret(KEY, PASSWORD);
    for (const field of [2, 3, 4] as const) {
      const e = decryptError(KEY, flipBit(t, field));
      assert.equal(e.reason, 'tampered');
      assert.match(e.message, /altered or damaged/);
      assert.ok(!e.message.includes(PASSWORD));
    }
    // A truncated ciphertext (one byte less) is caught too.
    const parts = t.split(':');
    parts[4] = Buffer.from(parts[4]!, 'base64').subarray(1).toString('base64');
    assert.equal(decryptError(KEY, parts.join(':')).reason, 'tampered');
    // Swapping in another value's tag fails.
    const other = encryptSecret(KEY, PASSWORD);
    const mixed = [...t.split(':').slice(0, 3), other.split(':')[3], t.split(':')[4]].join(':');
    assert.equal(decryptError(KEY, mixed).reason, 'tampered');
  });

  it('says "another key" for a wrong key, without the secret', () => {
    const t = encryptSecret(KEY, PASSWORD);
    const e = decryptError(OTHER_KEY, t);
    assert.equal(e.reason, 'wrong-key');
    assert.match(e.message, /another key/);
    assert.ok(e.message.includes(KEY.id) && e.message.includes(OTHER_KEY.id));
    assert.ok(!e.message.includes(PASSWORD));
    assert.ok(!e.message.includes(KEY.bytes.toString('hex')) && !e.message.includes(OTHER_KEY.bytes.toString('hex')));
    // Even with the key id forged to match, the other key fails GCM's check.
    const forged = ['v1', OTHER_KEY.id, ...t.split(':').slice(2)].join(':');
    assert.equal(decryptError(OTHER_KEY, forged).reason, 'tampered');
  });

  it('rejects texts that are not in the format, without quoting them', () => {
    for (const bad of [PASSWORD, '', 'v1:', 'v1:zzzzzzzz:a:b:c', `v1:${KEY.id}:AAAA:AAAA:AAAA`, 'v1:' + KEY.id + ':!!:!!:!!']) {
      const e = decryptError(KEY, bad);
      assert.equal(e.reason, 'format');
      assert.ok(!e.message.includes(PASSWORD));
    }
    const e = decryptError(KEY, 'v9:abc:def');
    assert.equal(e.reason, 'version');
    assert.match(e.message, /v9/);
  });
});

describe('loadSecretKey from MAILFERRY_SECRET_KEY', () => {
  const bytes = randomBytes(32);

  it('takes 64 hex digits (either case) and base64 (standard, URL-safe, with or without padding)', () => {
    const forms = [
      bytes.toString('hex'),
      bytes.toString('hex').toUpperCase(),
      bytes.toString('base64'),
      bytes.toString('base64').replace(/=+$/, ''),
      bytes.toString('base64url'),
      `  ${bytes.toString('hex')}\n`,
    ];
    for (const f of forms) {
      const k = loadSecretKey({ env: { MAILFERRY_SECRET_KEY: f } });
      assert.ok(k.bytes.equals(bytes), `form ${JSON.stringify(f)}`);
      assert.equal(k.source, 'env');
      assert.equal(k.id, secretKeyId(bytes));
    }
  });

  it('refuses wrong lengths and non-key text with a clear error that does not echo the value', () => {
    const bad = [
      '',
      bytes.toString('hex').slice(0, 62), // 31 bytes of hex is valid base64 text of the wrong length
      randomBytes(16).toString('base64'),
      randomBytes(33).toString('base64'),
      'correct horse battery staple!!',
      `${bytes.toString('hex')}00`,
    ];
    for (const v of bad) {
      assert.throws(
        () => loadSecretKey({ env: { MAILFERRY_SECRET_KEY: v } }),
        (err: unknown) => {
          assert.ok(err instanceof SecretKeyError);
          assert.match(err.message, /MAILFERRY_SECRET_KEY/);
          assert.match(err.message, /32 bytes/);
          if (v) assert.ok(!err.message.includes(v.trim()), `message echoes the value: ${err.message}`);
          return true;
        },
      );
    }
  });

  it('wins over the key file, which is then not created', () => {
    const home = tmpHome();
    loadSecretKey({ env: { MAILFERRY_SECRET_KEY: bytes.toString('hex'), MAILFERRY_HOME: home } });
    assert.throws(() => statSync(path.join(home, 'secret.key')), /ENOENT/);
  });
});

describe('loadSecretKey from the key file', () => {
  it('creates MAILFERRY_HOME/secret.key with mode 0600 (directory 0700) and reuses it', () => {
    const home = path.join(tmpHome(), 'nested', 'home');
    const env = { MAILFERRY_HOME: home };
    const first = loadSecretKey({ env });
    assert.equal(first.source, 'file');
    assert.equal(first.created, true);
    assert.equal(first.path, path.join(home, 'secret.key'));
    assert.equal(statSync(first.path!).mode & 0o777, 0o600);
    assert.equal(statSync(home).mode & 0o777, 0o700);
    assert.match(readFileSync(first.path!, 'utf8'), /^[0-9a-f]{64}\n$/);

    const second = loadSecretKey({ env });
    assert.equal(second.created, false);
    assert.ok(second.bytes.equals(first.bytes));
    assert.equal(decryptSecret(second, encryptSecret(first, PASSWORD)), PASSWORD);
  });

  it('defaults to ~/.mailferry/secret.key', () => {
    const home = tmpHome();
    const saved = process.env.HOME;
    process.env.HOME = home; // os.homedir() follows $HOME on POSIX
    try {
      const k = loadSecretKey({ env: {} });
      assert.equal(k.path, path.join(home, '.mailferry', 'secret.key'));
      assert.equal(statSync(path.join(home, '.mailferry')).mode & 0o777, 0o700);
    } finally {
      process.env.HOME = saved;
    }
  });

  it('refuses an existing key file that group or others can access', () => {
    const home = tmpHome();
    const k = loadSecretKey({ env: { MAILFERRY_HOME: home } });
    for (const mode of [0o644, 0o640, 0o604, 0o660, 0o602]) {
      chmodSync(k.path!, mode);
      assert.throws(
        () => loadSecretKey({ env: { MAILFERRY_HOME: home } }),
        (err: unknown) => {
          assert.ok(err instanceof SecretKeyError);
          assert.match(err.message, /refusing to use the secret key file/);
          assert.match(err.message, new RegExp(`mode is ${mode.toString(8)}`));
          assert.match(err.message, /chmod 600/);
          assert.ok(!err.message.includes(k.bytes.toString('hex')));
          return true;
        },
      );
    }
    chmodSync(k.path!, 0o600);
    assert.ok(loadSecretKey({ env: { MAILFERRY_HOME: home } }).bytes.equals(k.bytes));
    chmodSync(k.path!, 0o400); // read-only for the owner is fine
    assert.ok(loadSecretKey({ env: { MAILFERRY_HOME: home } }).bytes.equals(k.bytes));
  });

  it('refuses a damaged key file without printing its content, and create:false does not mint a key', () => {
    const home = tmpHome();
    const file = path.join(home, 'secret.key');
    writeFileSync(file, 'not-a-key-at-all\n', { mode: 0o600 });
    assert.throws(() => loadSecretKey({ env: { MAILFERRY_HOME: home } }), (err: unknown) => {
      assert.ok(err instanceof SecretKeyError);
      assert.match(err.message, /secret key file/);
      assert.ok(!err.message.includes('not-a-key-at-all'));
      return true;
    });
    const empty = tmpHome();
    assert.throws(() => loadSecretKey({ env: { MAILFERRY_HOME: empty }, create: false }), /does not exist/);
    assert.throws(() => statSync(path.join(empty, 'secret.key')), /ENOENT/);
  });

  it('gives every process the same key when several start at once', async () => {
    const home = tmpHome();
    const moduleUrl = new URL('../src/secrets/index.js', import.meta.url).href;
    const script = `import { loadSecretKey } from ${JSON.stringify(moduleUrl)}; process.stdout.write(loadSecretKey().id);`;
    const run = () =>
      new Promise<string>((resolve, reject) => {
        execFile(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, MAILFERRY_HOME: home, MAILFERRY_SECRET_KEY: undefined } }, (err, stdout) =>
          err ? reject(err) : resolve(stdout),
        );
      });
    const ids = await Promise.all(Array.from({ length: 6 }, run));
    assert.equal(new Set(ids).size, 1, `different keys: ${ids.join(' ')}`);
    assert.equal(ids[0], loadSecretKey({ env: { MAILFERRY_HOME: home } }).id);
    // No temp files left behind.
    assert.deepEqual(readdirSync(home).filter((f) => f !== 'secret.key'), []);
  });
});

describe('the state database file', () => {
  it('is created readable by its owner only (it names mailboxes, folders and subjects), WAL files too', async () => {
    const { openStore } = await import('../src/store/open.js');
    const dir = path.join(tmpHome(), 'state');
    const file = path.join(dir, 'mailferry.sqlite');
    const store = await openStore(`sqlite:${file}`);
    try {
      await store.db.selectFrom('batch').selectAll().execute();
      assert.equal(statSync(dir).mode & 0o777, 0o700);
      for (const f of readdirSync(dir)) assert.equal(statSync(path.join(dir, f)).mode & 0o777, 0o600, f);
      assert.ok(readdirSync(dir).some((f) => f.endsWith('-wal')), 'the WAL file exists');
    } finally {
      await store.close();
    }
  });
});
