/**
 * Reads a whole mailbox into a comparable form (per folder: each message's SHA-256, flags,
 * internal date), so tests can assert exactness message by message.
 */
import { createHash } from 'node:crypto';
import { ImapFlow } from 'imapflow';
import type { ImapEndpoint } from '../../src/imap/endpoint.js';
import { canonicalAttributes } from '../../src/imap/mailbox-attributes.js';

export interface SnapshotMessage {
  uid: number;
  sha256: string;
  flags: string[];
  internalDate: number;
  size: number;
}

export type MailboxSnapshot = Map<string, SnapshotMessage[]>;

export async function connect(endpoint: ImapEndpoint, user: string, pass: string): Promise<ImapFlow> {
  const log = (level: string) => (o: Record<string, unknown>) => {
    if (process.env.MAILFERRY_TEST_IMAP_LOG) process.stderr.write(`imapflow ${level} ${endpoint.port} ${JSON.stringify(o)}\n`);
  };
  const logger = { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') };
  const c = new ImapFlow({ host: endpoint.host, port: endpoint.port, secure: endpoint.tls === 'implicit', doSTARTTLS: endpoint.tls === 'starttls' ? true : false, tls: { rejectUnauthorized: false }, auth: { user, pass }, logger, disableAutoIdle: true });
  // Not thrown from here (the pending command rejects), but said: when a test session's
  // connection goes away, the reason is otherwise lost ("Connection not available").
  c.on('error', (err: Error & { code?: string }) => process.stderr.write(`test IMAP session to ${endpoint.host}:${endpoint.port} (${user}): ${err.code ?? ''} ${err.message}\n`));
  await c.connect();
  return c;
}

export async function snapshot(endpoint: ImapEndpoint, user: string, pass: string): Promise<MailboxSnapshot> {
  const c = await connect(endpoint, user, pass);
  try {
    const out: MailboxSnapshot = new Map();
    for (const f of await c.list()) {
      const attributes = canonicalAttributes(f.flags);
      if (attributes.has('\\Noselect') || attributes.has('\\NonExistent')) continue;
      const mb = await c.mailboxOpen(f.path, { readOnly: true });
      const msgs: SnapshotMessage[] = [];
      if (mb.exists > 0) {
        for await (const m of c.fetch('1:*', { uid: true, flags: true, internalDate: true, size: true, source: true }, { uid: true })) {
          msgs.push({
            uid: m.uid,
            sha256: createHash('sha256').update(m.source!).digest('hex'),
            flags: [...(m.flags ?? [])].filter((x) => x !== '\\Recent').sort(),
            internalDate: new Date(m.internalDate!).getTime(),
            size: m.size ?? 0,
          });
        }
      }
      out.set(f.path, msgs);
    }
    return out;
  } finally {
    await c.logout().catch(() => c.close());
  }
}

/** A message's identity for multiset comparison: content, flags and internal date. */
export function messageKey(m: SnapshotMessage): string {
  return `${m.sha256}|${m.flags.join(' ')}|${m.internalDate}`;
}

export function multiset(msgs: readonly SnapshotMessage[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of msgs) out.set(messageKey(m), (out.get(messageKey(m)) ?? 0) + 1);
  return out;
}

/**
 * Compares source and target given a folder mapping (source path -> target path). Returns
 * a list of human-readable differences, empty when every source folder's messages are on
 * the target exactly once with the same bytes, flags and internal date.
 */
export function compareMailboxes(source: MailboxSnapshot, target: MailboxSnapshot, mapPath: (sourcePath: string) => string | null): string[] {
  const problems: string[] = [];
  const expected = new Map<string, SnapshotMessage[]>();
  for (const [path, msgs] of source) {
    const t = mapPath(path);
    if (t === null) continue;
    expected.set(t, [...(expected.get(t) ?? []), ...msgs]);
  }
  for (const [t, msgs] of expected) {
    const got = target.get(t);
    if (!got) {
      problems.push(`target folder ${t} is missing`);
      continue;
    }
    const want = multiset(msgs);
    const have = multiset(got);
    for (const [k, n] of want) {
      const h = have.get(k) ?? 0;
      if (h !== n) problems.push(`${t}: message ${k.slice(0, 80)} expected ${n}×, found ${h}×`);
    }
    for (const [k, n] of have) if (!want.has(k)) problems.push(`${t}: unexpected message ${k.slice(0, 80)} (${n}×)`);
  }
  return problems;
}
