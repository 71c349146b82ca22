/**
 * Creates folders on a server, all commands pipelined on one connection: `CREATE`, then
 * `SUBSCRIBE`, then `STATUS (UIDVALIDITY UIDNEXT)` for each (RFC 3501 §6.3.3, §6.3.6,
 * §6.3.10), written back to back and answered in order. The STATUS answers are what the
 * sync needs of a new folder before appending to it.
 *
 * Why not imapflow's mailboxCreate: it runs CREATE and then SUBSCRIBE one at a time, two
 * round trips per folder. A first sync of a mailbox with 25 folders spent 50 round trips
 * on that before copying anything: 1 s at a 20 ms round trip, ~35 ms even on loopback.
 *
 * Order matters only for parents and children, and it holds: a server executes one
 * connection's commands in the order sent unless it can prove the outcome is the same
 * (RFC 3501 §5.5), and callers list parents first. A folder that exists already
 * (`NO [ALREADYEXISTS]`, RFC 5530 §3) is fine; SUBSCRIBE failures are ignored (a server may
 * not support subscriptions for every folder; the folder itself is what matters).
 *
 * A folder that is only the parent of others (an intermediate level, or a source folder
 * that holds no mail itself) is created as a container: its name with the hierarchy
 * separator appended, which declares that names will be created under it (RFC 3501
 * §6.3.3). Servers that keep folders as files (mbox: Dovecot's `mbox:`, GNU Mailutils'
 * imap4d) or as directories (Dovecot sdbox, Courier) then make a directory, which can hold
 * subfolders; created as a mailbox, an mbox file cannot, and every subfolder was refused.
 * Servers that need no declaration ignore it (MUST, same section) and make a mailbox, as
 * Dovecot's Maildir++ does. A server that refuses the declared form gets the plain name.
 */
import type { ImapEndpoint, ImapLogin } from './endpoint.js';
import { RawConnection, type UntaggedResponse } from './raw-connection.js';

/** A created folder's STATUS (RFC 3501 §7.2.4); absent values were not sent. */
export interface CreatedFolder {
  uidValidity?: number;
  uidNext?: number;
}

export interface CreatedFolders {
  /** STATUS of the folders created (or found existing), by path. */
  created: Map<string, CreatedFolder>;
  /** Folders the server refused to create (tagged NO/BAD other than ALREADYEXISTS), with
   * its answer, e.g. Dovecot's `NO [CANNOT] Invalid mailbox name`: one folder the target
   * cannot hold must not keep the others from being created. */
  refused: Map<string, string>;
}

/** A folder to create: a mailbox (a bare path), or a container only for folders below it. */
export type FolderToCreate = string | { container: string; delimiter: string };

export async function createFolders(endpoint: ImapEndpoint, login: ImapLogin, folders: readonly FolderToCreate[], opts: { idleTimeoutMs?: number } = {}): Promise<CreatedFolders> {
  const out = new Map<string, CreatedFolder>();
  const refused = new Map<string, string>();
  if (folders.length === 0) return { created: out, refused };
  // STATUS answers are matched to folders by the name the server echoes (RFC 3501 §7.2.4:
  // `* STATUS mailbox (…)`), compared with the name as sent. A name echoed in another form
  // (another case of INBOX) is simply not matched: the sync then asks again. GNU Mailutils'
  // imap4d echoes names unquoted, spaces and all (`* STATUS Sent Items (…)`): the last
  // alternative takes everything up to the attribute list.
  const byWireName = new Map<string, string>();
  const onUntagged = (r: UntaggedResponse): void => {
    if (r.kind !== 'STATUS') return;
    const m = /^\* STATUS (?:"((?:[^"\\]|\\.)*)"|\{\d+\+?\}|(\S+)|(.+)) \(([^()]*)\)\s*$/i.exec(r.line);
    if (!m) return;
    const wire = m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : (m[2] ?? m[3] ?? r.literals[0]?.toString('utf8') ?? '');
    const path = byWireName.get(wire);
    if (path === undefined) return;
    const st: CreatedFolder = {};
    const v = /UIDVALIDITY (\d+)/i.exec(m[4]!);
    const n = /UIDNEXT (\d+)/i.exec(m[4]!);
    if (v) st.uidValidity = Number(v[1]);
    if (n) st.uidNext = Number(n[1]);
    out.set(path, st);
  };
  const conn = await RawConnection.connect(endpoint, { onUntagged, ...(opts.idleTimeoutMs !== undefined ? { idleTimeoutMs: opts.idleTimeoutMs } : {}) });
  try {
    await conn.login(login);
    const send = (folder: FolderToCreate, asContainer: boolean) => {
      const path = typeof folder === 'string' ? folder : folder.container;
      const name = conn.mailboxName(path);
      const create = conn.send([`CREATE ${asContainer && typeof folder !== 'string' ? conn.mailboxName(path + folder.delimiter) : name}`]).done;
      const subscribe = conn.send([`SUBSCRIBE ${name}`]).done;
      // A container has no messages, so no STATUS the sync needs (and a \Noselect one has none).
      const status = asContainer ? Promise.resolve(undefined) : conn.send([`STATUS ${name} (UIDVALIDITY UIDNEXT)`]).done;
      // mailboxName quotes (and escapes " and \): the wire name is what is between the quotes.
      if (!asContainer) byWireName.set(name.slice(1, -1).replace(/\\(.)/g, '$1'), path);
      // Awaited below; never an unhandled rejection if the connection drops first.
      subscribe.catch(() => undefined);
      status.catch(() => undefined);
      return { folder, path, create, subscribe, status };
    };
    const answer = async (sent: ReturnType<typeof send>[]) => {
      for (const s of sent) {
        const r = await s.create;
        if (r.status !== 'OK' && r.code !== 'ALREADYEXISTS') refused.set(s.path, `${r.status}${r.code ? ` [${r.code}]` : ''} ${r.text}`);
        else refused.delete(s.path);
      }
      await Promise.all(sent.map((s) => s.status));
      await Promise.allSettled(sent.map((s) => s.subscribe));
    };
    await answer(folders.map((f) => send(f, typeof f !== 'string')));
    // A server that refused a declared container gets it again as a plain name, and what
    // was refused after it (its subfolders, if the server needs a parent first), in order.
    if (folders.some((f) => typeof f !== 'string' && refused.has(f.container))) {
      await answer(folders.filter((f) => refused.has(typeof f === 'string' ? f : f.container)).map((f) => send(f, false)));
    }
    // A container is needed only by the folders below it, which say for themselves whether
    // they could be made (a server that makes parents by itself may answer a parent's own
    // CREATE with a plain NO "exists"): its refusal alone fails nothing.
    for (const f of folders) if (typeof f !== 'string') refused.delete(f.container);
    for (const path of refused.keys()) out.delete(path);
    return { created: out, refused };
  } finally {
    await conn.logout();
  }
}
