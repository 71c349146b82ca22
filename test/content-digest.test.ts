/**
 * Content digests (src/sync/content-digest.ts, src/store/content-key.ts): the stored forms,
 * which journals of every earlier version depend on, and the journal's own key.
 */
import assert from 'node:assert/strict';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { contentHasher } from '../src/store/content-key.js';
import { openStore } from '../src/store/open.js';
import { algorithmOf, ContentHasher, type Digest } from '../src/sync/content-digest.js';

const body = randomBytes(300_000);
const key = randomBytes(32);

test('SHA-256 digests are bare hex, as every journal before GMAC digests stored them', () => {
  const d = new ContentHasher(key).digestOf(body, 'sha256');
  assert.equal(d, createHash('sha256').update(body).digest('hex'));
  assert.equal(algorithmOf(d), 'sha256');
  assert.equal(algorithmOf(createHash('sha256').update('x').digest('hex') as Digest), 'sha256');
});

test('GMAC digests are `g1:` and the AES-256-GCM tag of the message as additional data, under the key', () => {
  const h = new ContentHasher(key);
  const d = h.digestOf(body);
  const c = createCipheriv('aes-256-gcm', key, Buffer.alloc(12));
  c.setAAD(body);
  c.final();
  assert.equal(d, `g1:${c.getAuthTag().toString('hex')}`);
  assert.equal(algorithmOf(d), 'gmac');
  assert.equal(h.digestOf(Buffer.from(body)), d, 'the same bytes, the same digest');
  const changed = Buffer.from(body);
  changed[150_000] = changed[150_000]! ^ 1;
  assert.notEqual(h.digestOf(changed), d, 'one bit changed');
  assert.notEqual(h.digestOf(Buffer.concat([body, Buffer.alloc(1)])), d, 'one NUL byte longer');
  assert.notEqual(new ContentHasher(randomBytes(32)).digestOf(body), d, 'another key');
  assert.throws(() => new ContentHasher(randomBytes(16)), /32 bytes/);
});

test('a digester fed in pieces gives the one-shot digests, in the order asked for', () => {
  const h = new ContentHasher(key);
  const d = h.digester(['gmac', 'sha256', 'gmac']);
  for (let i = 0; i < body.length; i += 65_537) d.update(body.subarray(i, i + 65_537));
  assert.deepEqual(d.digests(), [h.digestOf(body, 'gmac'), h.digestOf(body, 'sha256')]);
  assert.deepEqual(h.digestsOf(body, ['sha256', 'gmac']), [h.digestOf(body, 'sha256'), h.digestOf(body, 'gmac')]);
});

test('new digests are GMAC unless MAILFERRY_DIGEST=sha256', () => {
  const saved = process.env.MAILFERRY_DIGEST;
  try {
    delete process.env.MAILFERRY_DIGEST;
    assert.equal(new ContentHasher(key).preferred, 'gmac');
    process.env.MAILFERRY_DIGEST = 'sha256';
    assert.equal(new ContentHasher(key).preferred, 'sha256');
    assert.equal(algorithmOf(new ContentHasher(key).digester().digests()[0]!), 'sha256');
  } finally {
    if (saved === undefined) delete process.env.MAILFERRY_DIGEST;
    else process.env.MAILFERRY_DIGEST = saved;
  }
});

test('each database gets its own content key, kept across reopening', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mailferry-digest-'));
  try {
    const digestIn = async (file: string) => {
      const store = await openStore(`sqlite:${path.join(dir, file)}`);
      try {
        return (await contentHasher(store.db)).digestOf(body, 'gmac');
      } finally {
        await store.close();
      }
    };
    const first = await digestIn('a.sqlite');
    assert.equal(await digestIn('a.sqlite'), first, 'the same key after reopening');
    assert.notEqual(await digestIn('b.sqlite'), first, 'another database, another key');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
