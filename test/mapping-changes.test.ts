/**
 * A folder already copied keeps going to the target folder that holds its copies, whatever
 * either side gained since: a mapping that changed between runs split folders in two and
 * sent flag changes to the journal's target UIDs in the *new* folder, onto other messages
 * (a user's own mail on the target got the source's `\Deleted`).
 */
import assert from 'node:assert/strict';
import type { ImapFlow } from 'imapflow';
import { after, describe, test } from 'node:test';
import { env, runCli, syncArgs } from './helpers/cli.js';
import { type LabPair, startPair } from './helpers/lab-pair.js';
import { compareMailboxes, connect, snapshot } from './helpers/mailbox-snapshot.js';
import { pino } from 'pino';
import { openStore } from '../src/store/open.js';
import { folderPatternProblem, NothingSelectedError } from '../src/sync/folder-map.js';
import { syncMailbox } from '../src/sync/mailbox-sync.js';
import { verifyMailbox } from '../src/sync/verify.js';

function message(n: number): Buffer {
  return Buffer.from(`From: sender${n}@example.org\r\nTo: alice@example.org\r\nSubject: message ${n}\r\nMessage-ID: <m${n}@example.org>\r\nDate: Mon, 2 Mar 2020 10:00:00 +0000\r\n\r\n${'body '.repeat(30 + n)}\r\n`);
}

async function on(lab: LabPair, side: 'source' | 'target', use: (c: ImapFlow) => Promise<unknown>): Promise<void> {
  const c = side === 'source' ? await connect(lab.source.endpoint(), lab.sourceUser, lab.sourcePass) : await connect(lab.target.endpoint(), lab.targetUser, lab.targetPass);
  try {
    await use(c);
  } finally {
    await c.logout();
  }
}

const sync = (lab: LabPair) => runCli(['sync', ...syncArgs(lab, lab.db, ['--json'])], env(lab));

/** Each message of a target folder as [subject, its flags sorted]. */
const flagsIn = async (lab: LabPair, folder: string) => {
  const out: [string, string][] = [];
  await on(lab, 'target', async (c) => {
    if (!(await c.list()).some((f) => f.path === folder)) return;
    await c.mailboxOpen(folder, { readOnly: true });
    for await (const m of c.fetch('1:*', { envelope: true, flags: true })) out.push([m.envelope?.subject ?? '', [...(m.flags ?? [])].filter((f) => f !== '\\Recent').sort().join(' ')]);
  });
  return out;
};

describe('sync: a folder mapping stays where the copies are', () => {
  const labs: LabPair[] = [];
  after(async () => Promise.all(labs.map((l) => l.stop())));

  test('the target gains the special-use folder after the first run (a client makes "Sent" there after the MX switch)', async () => {
    const lab = await startPair({ source: { specialUse: { '\\Sent': 'Sent Messages' } }, target: { specialUse: {} } });
    labs.push(lab);
    await on(lab, 'source', async (c) => {
      for (const n of [1, 2]) await c.append('Sent Messages', message(n), ['\\Seen'], new Date(Date.UTC(2020, 0, n)));
    });
    const first = await sync(lab);
    assert.equal(first.status, 0, first.stderr);
    assert.equal(first.json?.copied, 2);

    await on(lab, 'target', async (c) => {
      await c.mailboxCreate('Sent');
      await c.append('Sent', message(100), ['\\Seen'], new Date(Date.UTC(2021, 0, 1)));
    });
    await on(lab, 'source', async (c) => {
      await c.mailboxOpen('Sent Messages');
      await c.messageFlagsAdd('1', ['\\Flagged']);
      await c.messageFlagsAdd('2', ['\\Deleted']);
      await c.append('Sent Messages', message(3), [], new Date(Date.UTC(2020, 0, 3)));
    });
    const second = await sync(lab);
    assert.equal(second.status, 0, second.stderr);
    assert.equal(second.json?.copied, 1);
    assert.equal(second.json?.flagsUpdated, 2);
    assert.deepEqual(await flagsIn(lab, 'Sent'), [['message 100', '\\Seen']], "the user's own message is left alone");
    assert.deepEqual(await flagsIn(lab, 'Sent Messages'), [
      ['message 1', '\\Flagged \\Seen'],
      ['message 2', '\\Deleted \\Seen'],
      ['message 3', ''],
    ]);
    const verified = await runCli(['verify', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(verified.status, 0, verified.stdout + verified.stderr);
    assert.equal(verified.json?.inSync, true);
  });

  test('the source gains a folder that takes over a special use by its name ("Junk" beside "Junk E-mail")', async () => {
    const lab = await startPair();
    labs.push(lab);
    await on(lab, 'source', async (c) => {
      await c.mailboxCreate('Junk E-mail');
      for (const n of [1, 2, 3]) await c.append('Junk E-mail', message(n), [], new Date(Date.UTC(2020, 0, n)));
    });
    const first = await sync(lab);
    assert.equal(first.status, 0, first.stderr);
    assert.deepEqual((await flagsIn(lab, 'Junk')).length, 3, "copied into the target's \\Junk folder");

    await on(lab, 'source', async (c) => {
      await c.mailboxCreate('Junk');
      await c.append('Junk', message(4), [], new Date(Date.UTC(2020, 0, 4)));
      await c.mailboxOpen('Junk E-mail');
      await c.messageFlagsAdd('1:2', ['\\Seen']);
      await c.append('Junk E-mail', message(5), [], new Date(Date.UTC(2020, 0, 5)));
    });
    const second = await sync(lab);
    assert.equal(second.status, 0, second.stderr);
    assert.equal(second.json?.copied, 2);
    assert.deepEqual((await flagsIn(lab, 'Junk')).sort(), [
      ['message 1', '\\Seen'],
      ['message 2', '\\Seen'],
      ['message 3', ''],
      ['message 4', ''],
      ['message 5', ''],
    ]);
    const t = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.equal((t.get('Junk E-mail') ?? []).length, 0, 'the folder was not split in two');
    // Both source folders are merged in the target's Junk: compared together.
    const s = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    assert.deepEqual(compareMailboxes(s, t, (p) => (p === 'Junk E-mail' ? 'Junk' : p)), []);
  });
});

describe('sync: a target folder that exists only as a container (\\Noselect)', () => {
  const labs: LabPair[] = [];
  after(async () => Promise.all(labs.map((l) => l.stop())));

  test('is created as a folder where the server allows it (Maildir), else fails only its own source folder (mbox)', async () => {
    const maildir = await startPair();
    const mbox = await startPair({ target: { specialUse: {}, extraConfig: 'mail_location = mbox:~/mail:INBOX=~/mail/inbox\n' } });
    labs.push(maildir, mbox);
    for (const lab of [maildir, mbox]) {
      await on(lab, 'source', async (c) => {
        await c.mailboxCreate('Stuff');
        await c.append('Stuff', message(1), ['\\Seen'], new Date(Date.UTC(2020, 0, 1)));
        await c.append('INBOX', message(2), [], new Date(Date.UTC(2020, 0, 2)));
      });
      // A client left `Stuff` on the target as a parent only.
      await on(lab, 'target', async (c) => {
        await c.mailboxCreate('Stuff/Sub');
        const listed = (await c.list()).find((f) => f.path === 'Stuff');
        assert.ok(listed?.flags.has('\\Noselect'), `Stuff is a container only: ${[...(listed?.flags ?? [])].join(' ')}`);
      });
    }
    const ok = await runCli(['sync', ...syncArgs(maildir, maildir.db, ['--json'])], env(maildir));
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(ok.json?.copied, 2);
    const t = await snapshot(maildir.target.endpoint(), maildir.targetUser, maildir.targetPass);
    assert.equal(t.get('Stuff')?.length, 1);

    const partly = await runCli(['sync', ...syncArgs(mbox, mbox.db, ['--json'])], env(mbox));
    assert.equal(partly.status, 1, partly.stderr);
    assert.equal(partly.json?.copied, 1, 'the inbox is copied');
    assert.match(partly.stderr, /Stuff.*cannot hold messages/);
  });
});

describe('sync: folders below levels that hold no mail, into an mbox-format target', () => {
  const labs: LabPair[] = [];
  after(async () => Promise.all(labs.map((l) => l.stop())));

  test('the levels are made as containers (RFC 3501 §6.3.3), so every subfolder can be made and filled', async () => {
    // An mbox file cannot have subfolders: made as a mailbox, `Projects` refused them all.
    const lab = await startPair({ target: { specialUse: {}, extraConfig: 'mail_location = mbox:~/mail:INBOX=~/mail/inbox\n' } });
    labs.push(lab);
    await on(lab, 'source', async (c) => {
      // Maildir++ lists `Projects` and `Projects.2024` as \Noselect: they hold no mail.
      await c.mailboxCreate('Projects.2024.Q1');
      await c.mailboxCreate('Projects.2024.Q2');
      await c.mailboxCreate('Clients.Acme');
      await c.append('Projects.2024.Q1', message(1), ['\Seen'], new Date(Date.UTC(2020, 0, 1)));
      await c.append('Projects.2024.Q2', message(2), [], new Date(Date.UTC(2020, 0, 2)));
      await c.append('Clients.Acme', message(3), [], new Date(Date.UTC(2020, 0, 3)));
      await c.append('INBOX', message(4), [], new Date(Date.UTC(2020, 0, 4)));
      const listed = new Map((await c.list()).map((f) => [f.path, f.flags]));
      assert.ok(listed.get('Projects.2024')?.has('\\Noselect'), 'the source has container levels');
    });
    const first = await sync(lab);
    assert.equal(first.status, 0, first.stderr);
    assert.equal(first.json?.copied, 4);
    await on(lab, 'target', async (c) => {
      const listed = new Map((await c.list()).map((f) => [f.path, f.flags]));
      for (const p of ['Projects', 'Projects/2024', 'Clients']) assert.ok(listed.get(p)?.has('\\Noselect'), `${p} is a container: ${[...(listed.get(p) ?? [])].join(' ')}`);
    });
    const s = await snapshot(lab.source.endpoint(), lab.sourceUser, lab.sourcePass);
    const t = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.deepEqual(compareMailboxes(s, t, (p) => p.replaceAll('.', '/')), []);
    const again = await sync(lab);
    assert.equal(again.status, 0, again.stderr);
    assert.equal(again.json?.copied, 0);
    const verified = await runCli(['verify', ...syncArgs(lab, lab.db, ['--json'])], env(lab));
    assert.equal(verified.status, 0, verified.stdout + verified.stderr);
  });
});

describe('sync: folders the user renames or deletes on the target after the MX switch', () => {
  const labs: LabPair[] = [];
  after(async () => Promise.all(labs.map((l) => l.stop())));

  test('a renamed folder is followed under its new name (nothing copied again); a deleted one is made again', async () => {
    const lab = await startPair();
    labs.push(lab);
    await on(lab, 'source', async (c) => {
      await c.mailboxCreate('Projects');
      await c.mailboxCreate('Projects.Alpha');
      await c.mailboxCreate('Old');
      for (const n of [1, 2, 3]) await c.append('Projects', message(n), [], new Date(Date.UTC(2020, 0, n)));
      await c.append('Projects.Alpha', message(4), [], new Date(Date.UTC(2020, 0, 4)));
      await c.append('Old', message(5), [], new Date(Date.UTC(2020, 0, 5)));
    });
    const first = await sync(lab);
    assert.equal(first.json?.copied, 5, first.stderr);

    await on(lab, 'target', async (c) => {
      await c.mailboxRename('Projects', 'Work');
      await c.mailboxDelete('Old');
    });
    await on(lab, 'source', async (c) => {
      await c.append('Projects', message(6), [], new Date(Date.UTC(2020, 0, 6)));
      await c.mailboxOpen('Projects');
      await c.messageFlagsAdd('1', ['\\Flagged']);
    });
    const second = await sync(lab);
    assert.equal(second.status, 0, second.stderr);
    assert.equal(second.json?.copied, 2, 'message 6, and Old made again with message 5');
    assert.equal(second.json?.flagsUpdated, 1);
    const t = await snapshot(lab.target.endpoint(), lab.targetUser, lab.targetPass);
    assert.equal(t.get('Work')?.length, 4, 'messages 1–3 and the new 6, in the folder under its new name');
    assert.equal(t.get('Work/Alpha')?.length, 1);
    assert.equal(t.get('Projects'), undefined, 'not made again');
    assert.equal(t.get('Old')?.length, 1);
    assert.deepEqual(await flagsIn(lab, 'Work').then((l) => l.filter(([, f]) => f.includes('Flagged')).map(([s]) => s)), ['message 1']);
    const again = await sync(lab);
    assert.deepEqual([again.json?.copied, again.json?.flagsUpdated], [0, 0]);
  });
});

describe('folder choices that select nothing', () => {
  const labs: LabPair[] = [];
  after(async () => Promise.all(labs.map((l) => l.stop())));

  test('an unknown alias, an empty name or a folder both included and excluded is refused before anything runs', async () => {
    assert.match(folderPatternProblem(['#Inbx#'], []) ?? '', /--include #Inbx#: no such folder alias; the aliases are #Inbox# #SentItems# #Drafts# #DeletedItems# #JunkEmail# #Archive#/);
    assert.match(folderPatternProblem([], [' ']) ?? '', /--exclude: an empty folder name/);
    assert.match(folderPatternProblem(['Archive'], ['archive']) ?? '', /Archive is both included and excluded/);
    assert.equal(folderPatternProblem(['#inbox#', 'Projects/2024'], ['#JunkEmail#', 'Junk E-mail']), null);
    const r = await runCli(['sync', '--source', '127.0.0.1:1', '--source-user', 'a', '--target', '127.0.0.1:1', '--target-user', 'b', '--exclude', '#Junkmail#', '--json'], { ...process.env, MAILFERRY_SOURCE_PASSWORD: 'x', MAILFERRY_TARGET_PASSWORD: 'y' });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /--exclude #Junkmail#: no such folder alias/);
  });

  test('an include that matches no folder of the mailbox fails it, naming its folders; sync and verify alike', async () => {
    const lab = await startPair();
    labs.push(lab);
    await on(lab, 'source', async (c) => {
      await c.mailboxCreate('Projects');
      await c.append('Projects', message(1), [], new Date(Date.UTC(2020, 0, 1)));
      await c.append('INBOX', message(2), [], new Date(Date.UTC(2020, 0, 2)));
    });
    const store = await openStore(`sqlite:${lab.db}`);
    const sides = {
      source: { endpoint: lab.source.endpoint(), login: { method: 'login' as const, username: lab.sourceUser, password: lab.sourcePass } },
      target: { endpoint: lab.target.endpoint(), login: { method: 'login' as const, username: lab.targetUser, password: lab.targetPass } },
      logger: pino({ level: 'silent' }),
    };
    try {
      await assert.rejects(syncMailbox(store, { ...sides, include: ['Projets'] }), (err: Error) => err instanceof NothingSelectedError && /no folder of this mailbox matches --include Projets \(its folders: .*Projects/.test(err.message));
      await assert.rejects(verifyMailbox({ ...sides, include: ['Projets'] }), NothingSelectedError);
      // One of several patterns matching nothing is normal in a batch: the others are copied.
      const summary = await syncMailbox(store, { ...sides, include: ['Projects', 'Clients'] });
      assert.equal(summary.copied, 1);
    } finally {
      await store.close();
    }
  });
});
