/** Folder mapping rules, without a server: separators, namespaces, special-use, excludes, UserRoot. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ImapFlow, ListResponse } from 'imapflow';
import { type FolderMapping, mapFolders, patternsMatchingNothing, type ServerFolder, type ServerView } from '../src/sync/folder-map.js';
import { serverView } from '../src/sync/server-view.js';

function folder(path: string, delimiter: string, ...flags: string[]): ServerFolder {
  return { path, delimiter, flags: new Set(flags) };
}

function view(delimiter: string, prefix: string, ...folders: ServerFolder[]): ServerView {
  return { folders, prefix, delimiter };
}

const byTarget = (ms: FolderMapping[]) => Object.fromEntries(ms.map((m) => [m.sourcePath, m.targetPath]));

describe('mapFolders', () => {
  test('translates separators and keeps non-ASCII names', () => {
    const src = view('.', '', folder('INBOX', '.'), folder('Archiv.2019.Ärger & Co', '.'), folder('日本語', '.'));
    const tgt = view('/', '', folder('INBOX', '/'));
    assert.deepEqual(byTarget(mapFolders(src, tgt)), { INBOX: 'INBOX', 'Archiv.2019.Ärger & Co': 'Archiv/2019/Ärger & Co', '日本語': '日本語' });
  });

  test('strips the source namespace prefix and adds the target one (Courier INBOX.)', () => {
    const src = view('.', 'INBOX.', folder('INBOX', '.'), folder('INBOX.Reports.2020', '.'));
    const tgt = view('/', '', folder('INBOX', '/'));
    assert.deepEqual(byTarget(mapFolders(src, tgt)), { INBOX: 'INBOX', 'INBOX.Reports.2020': 'Reports/2020' });
    const back = mapFolders(view('/', '', folder('INBOX', '/'), folder('Reports/2020', '/')), view('.', 'INBOX.', folder('INBOX', '.')));
    assert.deepEqual(byTarget(back), { INBOX: 'INBOX', 'Reports/2020': 'INBOX.Reports.2020' });
  });

  test('INBOX under an INBOX. prefix: a folder called INBOX stays a folder; children of INBOX get no extra level', () => {
    const courier = view('.', 'INBOX.', folder('INBOX', '.'), folder('INBOX.INBOX', '.'), folder('INBOX.Work', '.'));
    assert.deepEqual(byTarget(mapFolders(courier, view('/', '', folder('INBOX', '/')))), { INBOX: 'INBOX', 'INBOX.INBOX': 'INBOX/INBOX', 'INBOX.Work': 'Work' });
    const dovecot = view('/', '', folder('INBOX', '/'), folder('INBOX/Receipts', '/'), folder('INBOX/INBOX', '/'));
    assert.deepEqual(byTarget(mapFolders(dovecot, view('.', 'INBOX.', folder('INBOX', '.')))), { INBOX: 'INBOX', 'INBOX/Receipts': 'INBOX.Receipts', 'INBOX/INBOX': 'INBOX.INBOX' });
  });

  test("maps special-use folders to the target's own, subfolders included", () => {
    const src = view('/', '', folder('INBOX', '/'), { ...folder('Sent Items', '/'), specialUse: '\\Sent' }, folder('Sent Items/2019', '/'), folder('Deleted Items', '/', '\\Trash'));
    const tgt = view('.', '', folder('INBOX', '.'), folder('Sent', '.', '\\Sent'), folder('Trash', '.', '\\Trash'));
    const m = mapFolders(src, tgt);
    assert.deepEqual(byTarget(m), { INBOX: 'INBOX', 'Sent Items': 'Sent', 'Sent Items/2019': 'Sent.2019', 'Deleted Items': 'Trash' });
    assert.equal(m.find((x) => x.sourcePath === 'Sent Items')?.specialUse, '\\Sent');
    assert.equal(m.find((x) => x.sourcePath === 'Sent Items')?.targetExists, true);
    assert.equal(m.find((x) => x.sourcePath === 'Sent Items/2019')?.targetExists, false);
  });

  test('the mapping does not change once the first run created folders by the special-use names', () => {
    // Source: a flagged `Sent Items` and a plain `Sent`; the target flags nothing.
    const src = view('.', '', folder('INBOX', '.'), folder('Sent Items', '.', '\\Sent'), folder('Sent Items.2019', '.'), folder('Sent', '.'));
    const first = byTarget(mapFolders(src, view('/', '', folder('INBOX', '/'))));
    assert.deepEqual(first, { INBOX: 'INBOX', 'Sent Items': 'Sent Items', 'Sent Items.2019': 'Sent Items/2019', Sent: 'Sent' });
    // The next run sees what the first created (imapflow guesses the use from the names).
    const created = view('/', '', folder('INBOX', '/'), { ...folder('Sent Items', '/'), specialUse: '\\Sent' }, folder('Sent Items/2019', '/'), { ...folder('Sent', '/'), specialUse: '\\Sent' });
    assert.deepEqual(byTarget(mapFolders(src, created)), first);
    // A target folder named for the use that no source folder is copied to still receives it…
    const exchange = view('/', '', folder('INBOX', '/'), { ...folder('Sent Items', '/'), specialUse: '\\Sent' });
    assert.deepEqual(byTarget(mapFolders(exchange, view('.', '', folder('INBOX', '.'), { ...folder('Sent', '.'), specialUse: '\\Sent' }))), { INBOX: 'INBOX', 'Sent Items': 'Sent' });
    // …and one the target flags does whatever its name.
    assert.deepEqual(byTarget(mapFolders(src, view('/', '', folder('INBOX', '/'), folder('Sent', '/', '\\Sent')))), { INBOX: 'INBOX', 'Sent Items': 'Sent', 'Sent Items.2019': 'Sent/2019', Sent: 'Sent' });
  });

  test("replaces the target's separator inside a name", () => {
    const m = mapFolders(view('/', '', folder('Mr. Smith', '/')), view('.', '', folder('INBOX', '.')));
    assert.equal(m[0]!.targetPath, 'Mr_ Smith');
  });

  test('excludes a folder with its subfolders, by name or alias, case-insensitively', () => {
    const src = view('.', '', folder('INBOX', '.'), folder('Junk E-mail', '.', '\\Junk'), folder('Shared', '.'), folder('Shared.Team', '.'), folder('Shared Stuff', '.'));
    const tgt = view('/', '', folder('INBOX', '/'));
    assert.deepEqual(Object.keys(byTarget(mapFolders(src, tgt, { exclude: ['shared', '#JunkEmail#'] }))), ['INBOX', 'Shared Stuff']);
    assert.deepEqual(Object.keys(byTarget(mapFolders(src, tgt, { include: ['#Inbox#', 'Shared'] }))), ['INBOX', 'Shared', 'Shared.Team']);
  });

  test('on a source with a personal prefix, a pattern may name the folder with the prefix, as the server lists it', () => {
    const src = view('.', 'INBOX.', folder('INBOX', '.'), folder('INBOX.Sent Items', '.'), folder('INBOX.Sent Items.2019', '.'), folder('INBOX.INBOX', '.'), folder('INBOX.Junk', '.'));
    const tgt = view('/', '', folder('INBOX', '/'));
    assert.deepEqual(Object.keys(byTarget(mapFolders(src, tgt, { exclude: ['INBOX.Sent Items', 'inbox.junk'] }))), ['INBOX', 'INBOX.INBOX']);
    assert.deepEqual(Object.keys(byTarget(mapFolders(src, tgt, { exclude: ['INBOX.INBOX'] }))), ['INBOX', 'INBOX.Sent Items', 'INBOX.Sent Items.2019', 'INBOX.Junk'], 'the folder called INBOX, not the inbox');
    assert.deepEqual(patternsMatchingNothing(src, { exclude: ['INBOX.Sent Items', 'Sent Items', 'INBOX.Nothing'] }), ['INBOX.Nothing']);
  });

  test('says which exclude/include patterns match no source folder', () => {
    const src = view('.', '', folder('INBOX', '.'), folder('Junk E-mail', '.', '\\Junk'), folder('Shared.Team', '.'));
    assert.deepEqual(patternsMatchingNothing(src, { exclude: ['Junk', '#JunkEmail#', 'shared', 'Deleted Items'], include: ['#Inbox#', '#SentItems#'] }), ['Junk', 'Deleted Items', '#SentItems#']);
  });

  test('UserRoot maps the folders under it to the top of the target mailbox', () => {
    const src = view('/', '', folder('INBOX', '/'), folder('users/alberta', '/'), folder('users/alberta/Sent', '/'), folder('users/alberta/Projects/X', '/'), folder('users/bob/Sent', '/'));
    const tgt = view('.', '', folder('INBOX', '.'));
    assert.deepEqual(byTarget(mapFolders(src, tgt, { userRoot: '/users/alberta' })), { 'users/alberta': 'INBOX', 'users/alberta/Sent': 'Sent', 'users/alberta/Projects/X': 'Projects.X' });
  });

  test("does not migrate other users' shared mailboxes, unless UserRoot points there", () => {
    const src: ServerView = { ...view('/', '', folder('INBOX', '/'), folder('Work', '/'), folder('users/bob', '/', '\\Noselect'), folder('users/bob/INBOX', '/'), folder('Public/News', '/')), otherUsersPrefixes: ['users/'] };
    const tgt = view('/', '', folder('INBOX', '/'));
    assert.deepEqual(Object.keys(byTarget(mapFolders(src, tgt))), ['INBOX', 'Work', 'Public/News']);
    assert.deepEqual(byTarget(mapFolders(src, tgt, { userRoot: 'users/bob' })), { 'users/bob': 'INBOX', 'users/bob/INBOX': 'INBOX' });
  });

  test('skips \\NonExistent entries and marks \\Noselect ones', () => {
    const m = mapFolders(view('/', '', folder('Gone', '/', '\\NonExistent'), folder('Parent', '/', '\\Noselect'), folder('Parent/Child', '/')), view('/', '', folder('INBOX', '/')));
    assert.deepEqual(m.map((x) => [x.sourcePath, x.selectable]), [['Parent', false], ['Parent/Child', true]]);
  });

  test('attributes in any case, as UW-IMAP sends them (\\NoSelect, \\SENT), count as the attributes', () => {
    const client = { namespaces: { personal: [{ prefix: '', delimiter: '/' }] } } as unknown as ImapFlow;
    const listed = [
      { path: 'Archive', delimiter: '/', flags: new Set(['\\NoSelect', '\\HasChildren']) },
      { path: 'Archive/2019', delimiter: '/', flags: new Set(['\\HasNoChildren']) },
      { path: 'Outbox', delimiter: '/', flags: new Set(['\\SENT']) },
    ] as unknown as ListResponse[];
    const m = mapFolders(serverView(client, listed), view('/', '', folder('INBOX', '/'), folder('Sent', '/', '\\Sent')));
    assert.deepEqual(m.map((x) => [x.sourcePath, x.targetPath, x.selectable]), [['Archive', 'Archive', false], ['Archive/2019', 'Archive/2019', true], ['Outbox', 'Sent', true]]);
  });

  test('views of mail filed elsewhere (\\Flagged, Gmail\'s \\Important) are left out unless included; \\All is kept', () => {
    const src = view('/', '', folder('INBOX', '/'), folder('[Gmail]', '/', '\\Noselect'), folder('[Gmail]/All Mail', '/', '\\All'), folder('[Gmail]/Starred', '/', '\\Flagged'), folder('[Gmail]/Important', '/', '\\Important'), folder('Work', '/'));
    const tgt = view('/', '', folder('INBOX', '/'));
    assert.deepEqual(Object.keys(byTarget(mapFolders(src, tgt))), ['INBOX', '[Gmail]', '[Gmail]/All Mail', 'Work']);
    assert.deepEqual(Object.keys(byTarget(mapFolders(src, tgt, { include: ['[Gmail]/Starred'] }))), ['[Gmail]/Starred']);
  });
});
