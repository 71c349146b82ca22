/** What folder-map.ts needs to know about one server, read from an imapflow session. */
import type { ImapFlow, ListResponse } from 'imapflow';
import type { ServerView } from './folder-map.js';

export function serverView(client: ImapFlow, folders: readonly ListResponse[]): ServerView {
  const ns = client.namespace;
  const inbox = folders.find((f) => f.path.toUpperCase() === 'INBOX');
  const others = client.namespaces?.other;
  return {
    folders: folders.map((f) => ({ path: f.path, delimiter: f.delimiter ?? null, flags: f.flags, specialUse: f.specialUse })),
    prefix: ns?.prefix ?? '',
    delimiter: ns?.delimiter ?? inbox?.delimiter ?? folders.find((f) => f.delimiter)?.delimiter ?? null,
    otherUsersPrefixes: others ? others.map((o) => o.prefix).filter((p) => p !== '') : [],
  };
}
