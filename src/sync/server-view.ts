/** What folder-map.ts needs to know about one server, read from an imapflow session. */
import { isImapRefusal } from '../imap/errors.js';
import type { ImapFlow, ListOptions, ListResponse } from 'imapflow';
import { canonicalAttributes } from '../imap/mailbox-attributes.js';
import { type ServerView, userRootPattern } from './folder-map.js';

/**
 * The personal namespace (RFC 2342) as the server announced it: `namespaces.personal[0]`
 * rather than `namespace`, which is the same object unless a session has replaced it to
 * stop imapflow from putting the prefix in front of names outside the personal namespace
 * (`#shared.alice` would become `INBOX.#shared.alice`).
 */
export function personalNamespace(client: ImapFlow): { prefix: string; delimiter: string | null } | undefined {
  const ns = client.namespaces?.personal?.[0] ?? client.namespace;
  return ns ? { prefix: ns.prefix ?? '', delimiter: ns.delimiter ?? null } : undefined;
}

/**
 * A session that works in a UserRoot (SPEC §2, Courier's `#shared.alice`) names folders
 * outside its personal namespace: stop imapflow from putting the personal prefix in front
 * of them (`INBOX.#shared.alice`). Only for such sessions: folder-map.ts still reads the
 * real prefix through personalNamespace().
 */
export function useFullNames(client: ImapFlow): void {
  if (client.namespace) client.namespace = { ...client.namespace, prefix: '' };
}

export function serverView(client: ImapFlow, folders: readonly ListResponse[]): ServerView {
  const ns = personalNamespace(client);
  const inbox = folders.find((f) => f.path.toUpperCase() === 'INBOX');
  const others = client.namespaces?.other;
  return {
    folders: folders.map((f) => ({ path: f.path, delimiter: f.delimiter ?? null, flags: canonicalAttributes(f.flags), specialUse: f.specialUse })),
    prefix: ns?.prefix ?? '',
    delimiter: ns?.delimiter ?? inbox?.delimiter ?? folders.find((f) => f.delimiter)?.delimiter ?? null,
    otherUsersPrefixes: others ? others.map((o) => o.prefix).filter((p) => p !== '') : [],
  };
}

/** imapflow's LIST with any reference and pattern (`list()` always sends `LIST "" "*"`). */
type ListRunner = { run(command: 'LIST', reference: string, pattern: string, options?: ListOptions): Promise<ListResponse[] | undefined> };

/**
 * A side's folders: `LIST "" "*"` and, for a UserRoot that this listing shows nothing of,
 * the root and everything below it listed by name.
 *
 * imapflow's `list()` is `LIST <personal prefix> "*"`, so on a server with a personal
 * prefix (Courier's and classic Cyrus's `INBOX.`) it only shows the personal namespace:
 * a Courier admin's view of a user, the virtual shared folders `#shared.alice` and
 * `#shared.alice.Sent`, is not in it, and without the second listing the UserRoot holds
 * no folder at all. (Which namespaces `*` reaches is also the server's choice, RFC 3501
 * §6.3.8; Dovecot with an empty prefix lists its shared and public namespaces.) The extra LISTs (`LIST "" root` and `LIST "" root<sep>*`) only run when
 * they are needed, so a server whose `*` covers the root pays nothing.
 */
export async function listMailboxFolders(client: ImapFlow, options: ListOptions = {}, userRoot?: string): Promise<ListResponse[]> {
  return readUnreadStatus(client, await listUnder(client, options, userRoot), options);
}

/**
 * Folders whose STATUS answer imapflow could not read (GNU Mailutils' imap4d echoes a
 * name with spaces unquoted: `* STATUS Sent Items (MESSAGES 59)`) get the same figures
 * from EXAMINE (RFC 3501 §6.3.1; RFC 7162 §3.1.2 for HIGHESTMODSEQ), or the folder would
 * count no messages. Only where STATUS was asked for; a folder EXAMINE refuses keeps none.
 */
async function readUnreadStatus(client: ImapFlow, listed: ListResponse[], options: ListOptions): Promise<ListResponse[]> {
  if (!options.statusQuery) return listed;
  for (const f of listed) {
    const st = f.status;
    if (!st || 'error' in st || st.messages !== undefined || st.uidValidity !== undefined || f.flags.has('\\Noselect') || f.flags.has('\\NonExistent')) continue;
    try {
      const mb = await client.mailboxOpen(f.path, { readOnly: true });
      f.status = { path: f.path, messages: mb.exists, uidValidity: mb.uidValidity, uidNext: mb.uidNext, ...(mb.highestModseq !== undefined ? { highestModseq: mb.highestModseq } : {}) };
    } catch (err) {
      if (!isImapRefusal(err)) throw err;
    }
  }
  return listed;
}

async function listUnder(client: ImapFlow, options: ListOptions, userRoot: string | undefined): Promise<ListResponse[]> {
  const listed = await client.list(options);
  if (!userRoot) return listed;
  const delimiter = serverView(client, listed).delimiter;
  const root = userRootPattern(userRoot, delimiter);
  if (root === null) return listed;
  const rootPath = root.toLowerCase();
  const under = (path: string) => {
    const p = path.toLowerCase();
    return p === rootPath || (delimiter !== null && p.startsWith(rootPath + delimiter.toLowerCase()));
  };
  if (listed.some((f) => under(f.path))) return listed;
  const extra: ListResponse[] = [];
  // imapflow puts the personal namespace prefix into an empty LIST reference (its list()
  // is `LIST "INBOX." "*"` on Courier and classic Cyrus), and Courier then looks for
  // `INBOX.#shared.alice`. With the prefix cleared for these two commands the reference
  // stays empty; nothing else runs on this session meanwhile.
  const session = client as unknown as ListRunner & { namespace: ImapFlow['namespace'] };
  const namespace = session.namespace;
  try {
    if (namespace) session.namespace = { ...namespace, prefix: '' };
    extra.push(...((await session.run('LIST', '', root, options)) ?? []));
    if (delimiter) extra.push(...((await session.run('LIST', '', `${root}${delimiter}*`, options)) ?? []));
  } finally {
    session.namespace = namespace;
  }
  const seen = new Set(listed.map((f) => f.path));
  const out = [...listed];
  for (const f of extra) {
    if (seen.has(f.path) || !under(f.path)) continue;
    seen.add(f.path);
    out.push(f);
  }
  return out;
}
