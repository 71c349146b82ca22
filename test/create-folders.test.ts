/**
 * Pipelined folder creation (src/imap/create-folders.ts) against Dovecot: nested names with
 * spaces, quotes, `&` and non-ASCII, parents first; each folder created, subscribed, and
 * its STATUS returned; creating them again is not an error (ALREADYEXISTS, RFC 5530).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ImapFlow } from 'imapflow';
import type { ImapLogin } from '../src/imap/endpoint.js';
import { createFolders } from '../src/imap/create-folders.js';
import { type DovecotServer, dovecotBinary, startDovecot } from '../src/lab/dovecot.js';

const alice = { username: 'alice', password: 'Folders-Pw-1' };
const login: ImapLogin = { method: 'login', ...alice };
const PATHS = ['Projects', 'Projects/Q3 "Review" & Plans', 'Ärger', 'Ärger/Rechnungen 🧾', 'Back\\slash'];

describe('createFolders against Dovecot', { skip: dovecotBinary() ? false : 'dovecot is not installed' }, () => {
  let srv: DovecotServer;
  before(async () => {
    srv = await startDovecot({ name: 'create-folders', separator: '/', users: [alice] });
  });
  after(async () => srv?.stop());

  it('creates, subscribes and reports every folder; a second call finds them existing', async () => {
    const first = await createFolders(srv.endpoint(), login, PATHS);
    const c = new ImapFlow({ host: srv.host, port: srv.port, secure: false, auth: { user: alice.username, pass: alice.password }, logger: false });
    await c.connect();
    try {
      const listed = new Map((await c.list()).map((f) => [f.path, f]));
      for (const p of PATHS) {
        assert.ok(listed.has(p), `${p} exists: ${[...listed.keys()].join(', ')}`);
        assert.ok(listed.get(p)!.subscribed, `${p} is subscribed`);
        const st = await c.status(p, { uidValidity: true, uidNext: true });
        assert.ok(st, `STATUS ${p}`);
        assert.deepEqual(first.created.get(p), { uidValidity: Number(st.uidValidity), uidNext: st.uidNext }, `STATUS of ${p}`);
      }
    } finally {
      await c.logout();
    }
    const again = await createFolders(srv.endpoint(), login, PATHS);
    assert.deepEqual([...again.created.keys()].sort(), [...PATHS].sort());
    assert.equal(first.refused.size + again.refused.size, 0);
  });

  it('a folder the server refuses is reported with its answer; the others are still created', async () => {
    // Dovecot refuses names beginning with '~' (they would be home-relative paths).
    const r = await createFolders(srv.endpoint(), login, ['Before', '~tilde', 'After']);
    assert.deepEqual([...r.created.keys()].sort(), ['After', 'Before']);
    assert.match(r.refused.get('~tilde') ?? '', /^NO .*Invalid mailbox name/);
  });
});
