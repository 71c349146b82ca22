/**
 * Folders users rename on the source in the weeks before the cut-over: the target copy is
 * renamed the same way and nothing is copied again (renamed-folders.ts), also where the
 * server gives the renamed folder new UIDs; a new folder with other messages is copied.
 */
import assert from 'node:assert/strict';
import type { ImapFlow } from 'imapflow';
import { after, before, describe, test } from 'node:test';
import { env, runCli, syncArgs } from './helpers/cli.js';
import { type LabPair, startPair } from './helpers/lab-pair.js';
import { compareMailboxes, connect, snapshot } from './helpers/mailbox-snapshot.js';

function message(n: number): Buffer {
  return Buffer.from(`From: sender${n}@example.org\r\nTo: alice@example.org\r\nSubject: message ${n}\r\nMessage-ID: <r${n}@example.org>\r\nDate: Mon, 2 Mar 2020 10:00:00 +0000\r\n\r\n${'body '.repeat(40 + n)}\r\n`);
}

describe('sync: folders renamed on the source between runs', () => {
  let lab: LabPair;
  const sync = () => runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
  /** Runs `use` on a session of the source's (or the target's) user, as their mail client would. */
  const on = async (side: 'source' | 'target', use: (c: ImapFlow) => Promise<unknown>) => {
    const c = side === 'source' ? await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass) : await connect(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    try {
      await use(c);
    } finally {
      await c.logout();
    }
  };
  const onSource = (use: (c: ImapFlow) => Promise<unknown>) => on('source', use);
  const onTarget = (use: (c: ImapFlow) => Promise<unknown>) => on('target', use);
  const targetFolders = async () => {
    const t = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    return new Map([...t].filter(([, msgs]) => msgs.length > 0).map(([path, msgs]) => [path, msgs.length]));
  };
  /** Every source folder's messages, exactly once, under its name translated to `/`. */
  const exact = async () => {
    const src = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    const tgt = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    return compareMailboxes(src, tgt, (p) => p.replaceAll('.', '/'));
  };

  before(async () => {
    lab = await startPair();
    await onSource(async (c) => {
      await c.append('INBOX', message(0), [], new Date(Date.UTC(2020, 0, 1)));
      await c.mailboxCreate('Projects');
      await c.mailboxCreate('Projects.Alpha');
      await c.mailboxCreate('Old');
      for (let n = 1; n <= 3; n++) await c.append('Projects', message(n), ['\\Seen'], new Date(Date.UTC(2020, 1, n)));
      for (let n = 4; n <= 5; n++) await c.append('Projects.Alpha', message(n), [], new Date(Date.UTC(2020, 2, n)));
      for (let n = 6; n <= 7; n++) await c.append('Old', message(n), [], new Date(Date.UTC(2020, 3, n)));
    });
  });
  after(async () => lab?.stop());

  test('a renamed folder and its subfolders are renamed on the target; only new mail is copied', async () => {
    const first = await sync();
    assert.equal(first.status, 0, first.stderr);
    assert.equal(first.json?.copied, 8);

    await onSource(async (c) => {
      await c.mailboxRename('Projects', 'Work');
      await c.mailboxRename('Old', 'Archived.2019');
      await c.append('Work', message(8), [], new Date(Date.UTC(2020, 4, 1)));
      await c.mailboxOpen('Work.Alpha');
      await c.messageFlagsAdd('1', ['\\Flagged']);
    });

    const dry = await runCli(['sync', ...syncArgs(lab, lab.db, ['--json', '--dry-run'])], env(lab));
    assert.equal(dry.json?.toCopy, 1, 'a dry run counts the renamed folders as the folders they were');
    const second = await sync();
    assert.equal(second.status, 0, second.stderr);
    assert.equal(second.json?.copied, 1, 'only the new message in Work');
    assert.equal(second.json?.flagsUpdated, 1);
    assert.deepEqual(
      [...(await targetFolders())].sort(),
      [['Archived/2019', 2], ['INBOX', 1], ['Work', 4], ['Work/Alpha', 2]],
      'the old names are gone from the target, each message is there once',
    );
    assert.deepEqual(await exact(), []);
    const verified = await runCli(['verify', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(verified.json?.inSync, true, verified.stdout);

    const third = await sync();
    assert.equal(third.json?.copied, 0);
    assert.equal(third.json?.flagsUpdated, 0);
  });

  test('a rename the target took before a killed run could record it is adopted', async () => {
    await onSource(async (s) => {
      await s.mailboxRename('Work.Alpha', 'Work.Beta');
    });
    // What a run killed between its RENAME on the target and its journal update leaves.
    await onTarget(async (t) => {
      await t.mailboxRename('Work/Alpha', 'Work/Beta');
    });
    const r = await sync();
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 0);
    // Followed as a rename: the journal's folder moved, its copies were not looked for by
    // content as copies already on the target (which alone would also avoid duplicates).
    assert.equal(r.json?.alreadyOnTarget, 0);
    assert.equal((await targetFolders()).get('Work/Beta'), 2);
    assert.deepEqual(await exact(), []);
  });

  test('a folder renamed and a new one made under its old name: the copy is renamed, the new folder copied', async () => {
    await onSource(async (c) => {
      await c.mailboxRename('Work', 'Work 2020');
      await c.mailboxCreate('Work');
      await c.append('Work', message(9), [], new Date(Date.UTC(2021, 0, 1)));
    });
    const r = await sync();
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 1, 'only the new Work folder\'s message');
    const folders = await targetFolders();
    assert.equal(folders.get('Work 2020'), 4);
    assert.equal(folders.get('Work 2020/Beta'), 2);
    assert.equal(folders.get('Work'), 1);
    assert.deepEqual(await exact(), []);
  });

  test('a folder deleted and another made with its messages is followed like a rename; one with other messages is new', async () => {
    await onSource(async (c) => {
      // A new folder (its own UIDVALIDITY and UIDs) whose oldest messages are byte for byte
      // the old folder's: as Courier renames. Linked by content, nothing copied twice.
      await c.mailboxDelete('Archived.2019');
      await c.mailboxCreate('Restored');
      for (let n = 6; n <= 7; n++) await c.append('Restored', message(n), [], new Date(Date.UTC(2020, 3, n)));
    });
    const r = await sync();
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 0);
    let folders = await targetFolders();
    assert.equal(folders.get('Restored'), 2);
    assert.equal(folders.get('Archived/2019'), undefined);
    assert.deepEqual(await exact(), []);

    await onSource(async (d) => {
      await d.mailboxDelete('Restored');
      await d.mailboxCreate('Fresh');
      for (let n = 10; n <= 11; n++) await d.append('Fresh', message(n), [], new Date(Date.UTC(2021, 3, n)));
    });
    const again = await sync();
    assert.equal(again.json?.copied, 2, 'other messages: a new folder, copied');
    folders = await targetFolders();
    assert.equal(folders.get('Fresh'), 2);
    assert.equal(folders.get('Restored'), 2, 'the copy of the deleted folder stays, as deleted mail does');
  });

  test('a rename onto a name the target already has is copied there, the old copy left alone', async () => {
    await onTarget(async (t) => {
      await t.mailboxCreate('Later');
    });
    await onSource(async (s) => {
      await s.mailboxRename('Fresh', 'Later');
    });
    const r = await sync();
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.copied, 2);
    const folders = await targetFolders();
    assert.equal(folders.get('Later'), 2);
    assert.equal(folders.get('Fresh'), 2);
    assert.match(r.stderr, /source folder renamed; copied again under its new name/);
  });

  test('a folder of that name the user made on the target is not taken for the copy', async () => {
    await onSource(async (s) => {
      await s.mailboxCreate('Mine');
      for (let n = 20; n <= 22; n++) await s.append('Mine', message(n), [], new Date(Date.UTC(2022, 0, n)));
    });
    assert.equal((await sync()).json?.copied, 3);
    // On the target the user moves the copy aside and makes a folder of that name of their own.
    await onTarget(async (t) => {
      await t.mailboxRename('Mine', 'Mine-old');
      await t.mailboxCreate('Mine');
      await t.append('Mine', Buffer.from('Subject: my own\r\n\r\nmine\r\n'));
    });
    await onSource(async (s2) => {
      await s2.mailboxRename('Mine', 'Ours');
    });
    const r = await sync();
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /Mine on the target is not the copy/);
    const folders = await targetFolders();
    assert.equal(folders.get('Mine'), 1, "the user's own folder is left as it is");
    assert.equal(folders.get('Mine-old'), 3);
    assert.equal(folders.get('Ours'), 3, 'copied under the new name');
  });

  test('a parent renamed while a new subfolder keeps its old name listed (Maildir++): followed, and no failed folder', async () => {
    await onSource(async (c) => {
      await c.mailboxCreate('Team');
      for (let n = 30; n <= 31; n++) await c.append('Team', message(n), [], new Date(Date.UTC(2022, 1, n - 29)));
    });
    assert.equal((await sync()).json?.copied, 2);
    await onSource(async (d) => {
      await d.mailboxRename('Team', 'Crew');
      // Dovecot now lists `Team` (no STATUS, cannot be opened) for its new subfolder.
      await d.mailboxCreate('Team.New');
      await d.append('Team.New', message(32), [], new Date(Date.UTC(2022, 2, 1)));
    });
    const r = await sync();
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.json?.failedFolders, []);
    assert.equal(r.json?.copied, 1, 'only the message in Team.New');
    const folders = await targetFolders();
    assert.equal(folders.get('Crew'), 2);
    assert.equal(folders.get('Team/New'), 1);
    assert.equal(folders.get('Team'), undefined, 'the copy moved to Crew');
    const verified = await runCli(['verify', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(verified.status, 0, verified.stderr);
    assert.equal(verified.json?.inSync, true);
  });
});
