/**
 * The corpus generator is the yardstick for every exactness test, so it is tested on its own:
 * determinism, size budget, the presence of each awkward kind of message, and the byte-level
 * rules IMAP imposes (CRLF only, no NUL, valid flags and folder names).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ImapFlow } from 'imapflow';
import { defaultFolders, generateCorpus, loadCorpus, sha256, type CorpusMessage } from '../src/lab/corpus.js';

const CRLF2 = Buffer.from('\r\n\r\n');

function headerBlock(raw: Buffer): Buffer {
  const end = raw.indexOf(CRLF2);
  return end < 0 ? raw : raw.subarray(0, end + 2);
}

function bodyOf(raw: Buffer): Buffer {
  const end = raw.indexOf(CRLF2);
  return end < 0 ? Buffer.alloc(0) : raw.subarray(end + 4);
}

/** Logical (unfolded) header fields of the top-level header block. */
function headers(raw: Buffer): string[] {
  const text = headerBlock(raw).toString('latin1');
  return text
    .split('\r\n')
    .reduce<string[]>((acc, line) => {
      if (/^[ \t]/.test(line) && acc.length > 0) acc[acc.length - 1] += line;
      else if (line) acc.push(line);
      return acc;
    }, []);
}

function has8bit(buf: Buffer): boolean {
  for (const b of buf) if (b >= 0x80) return true;
  return false;
}

function isUtf8(buf: Buffer): boolean {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(buf);
    return true;
  } catch {
    return false;
  }
}

function fingerprint(m: CorpusMessage): string {
  return `${m.folder.join('\u0000')}|${m.flags.join(' ')}|${m.internalDate.toISOString()}|${sha256(m.raw)}`;
}

/** Problems with line endings and NUL; empty when the message is clean. */
function lineProblems(raw: Buffer): string[] {
  const problems: string[] = [];
  for (let i = 0; i < raw.length; i++) {
    const b = raw[i];
    if (b === 0) problems.push(`NUL at ${i}`);
    else if (b === 0x0a && (i === 0 || raw[i - 1] !== 0x0d)) problems.push(`bare LF at ${i}`);
    else if (b === 0x0d && raw[i + 1] !== 0x0a) problems.push(`bare CR at ${i}`);
    if (problems.length > 3) break;
  }
  return problems;
}

// RFC 3501 flag: a system flag, or an atom (no atom-specials: ( ) { SP CTL % * " \ ]).
const SYSTEM_FLAGS = new Set(['\\Seen', '\\Answered', '\\Flagged', '\\Draft']);
const ATOM = /^[^\x00-\x20\x7f-\uffff(){%*"\\\]]+$/;

const corpus300 = [...generateCorpus({ messages: 300, seed: 1 }).messages()];

test('same seed gives identical messages, and messageAt matches iteration', () => {
  const a = generateCorpus({ messages: 150, seed: 7, averageSize: 15_000 });
  const b = generateCorpus({ messages: 150, seed: 7, averageSize: 15_000 });
  const fa = [...a.messages()].map(fingerprint);
  const fb = [...b.messages()].map(fingerprint);
  assert.equal(fa.length, 150);
  assert.deepEqual(fa, fb);
  // A second pass over the same corpus object is identical too (no hidden iterator state).
  assert.deepEqual([...a.messages()].map(fingerprint), fa);
  for (const i of [0, 1, 42, 77, 149]) assert.equal(a.messageAt && fingerprint(a.messageAt(i)), fa[i], `messageAt(${i})`);
});

test('different seeds give different messages', () => {
  const a = new Set([...generateCorpus({ messages: 100, seed: 1, averageSize: 10_000 }).messages()].map((m) => sha256(m.raw)));
  const b = [...generateCorpus({ messages: 100, seed: 2, averageSize: 10_000 }).messages()].map((m) => sha256(m.raw));
  const same = b.filter((h) => a.has(h)).length;
  assert.ok(same <= 2, `${same} identical messages across seeds`);
});

test('count is honoured, including extra-large messages of exact size', () => {
  const c = generateCorpus({ messages: 123, seed: 3, averageSize: 8_000, extraLarge: [100_000, 1_500_001] });
  assert.equal(c.count, 125);
  const all = [...c.messages()];
  assert.equal(all.length, 125);
  const exact = all.filter((m) => m.raw.length === 100_000 || m.raw.length === 1_500_001);
  assert.equal(exact.length, 2);
  for (const m of exact) assert.deepEqual(m.folder, ['INBOX']);
  assert.equal([...generateCorpus({ messages: 0 }).messages()].length, 0);
});

test('average size is honoured within 15%', () => {
  for (const [messages, averageSize, seed] of [
    [500, 20_000, 1],
    [500, 20_000, 9],
    [800, 36_000, 4],
  ] as const) {
    let bytes = 0;
    let n = 0;
    for (const m of generateCorpus({ messages, averageSize, seed }).messages()) {
      bytes += m.raw.length;
      n++;
    }
    const avg = bytes / n;
    assert.ok(Math.abs(avg / averageSize - 1) <= 0.15, `seed ${seed}: average ${avg.toFixed(0)} vs ${averageSize}`);
  }
});

test('sizes range from about 1 KB to big messages, never above maxSize', () => {
  const maxSize = 2 * 1024 * 1024;
  const sizes = [...generateCorpus({ messages: 1000, averageSize: 30_000, maxSize, seed: 5 }).messages()].map((m) => m.raw.length);
  const max = Math.max(...sizes);
  assert.ok(max <= maxSize, `largest ${max} > maxSize`);
  assert.ok(max >= 1024 * 1024, `no big message (largest ${max})`);
  assert.ok(sizes.filter((s) => s < 3000).length >= 20, 'too few small messages');
  assert.ok(sizes.filter((s) => s > 100_000).length >= 10, 'too few messages with sizeable attachments');
});

test('every awkward kind occurs in a 300-message corpus', () => {
  for (const seed of [1, 2, 3]) {
    const msgs = seed === 1 ? corpus300 : [...generateCorpus({ messages: 300, seed }).messages()];
    const found = (name: string, pred: (m: CorpusMessage) => boolean): void => {
      assert.ok(msgs.some(pred), `seed ${seed}: no ${name}`);
    };
    const hdrs = (m: CorpusMessage): string[] => headers(m.raw);
    found('message without Message-ID', (m) => m.raw.length > 300 && !hdrs(m).some((h) => /^message-id:/i.test(h)));
    found('raw 8-bit header', (m) => has8bit(headerBlock(m.raw)));
    found('UTF-8 B encoded word', (m) => /=\?utf-8\?B\?[A-Za-z0-9+/=]+\?=/i.test(headerBlock(m.raw).toString('latin1')));
    found('ISO-8859-1 Q encoded word', (m) => /=\?iso-8859-1\?Q\?[^?\s]+\?=/i.test(headerBlock(m.raw).toString('latin1')));
    found('encoded word in From', (m) => hdrs(m).some((h) => /^from:.*=\?[^?]+\?[BQ]\?/i.test(h)));
    found('base64 attachment', (m) => /^Content-Disposition: attachment/im.test(m.raw.toString('latin1')) && /Content-Transfer-Encoding: base64/i.test(m.raw.toString('latin1')));
    found('multipart/alternative', (m) => /multipart\/alternative/i.test(headerBlock(m.raw).toString('latin1')));
    found('plain single-part text', (m) => hdrs(m).some((h) => /^content-type: text\/plain/i.test(h)));
    found('8-bit UTF-8 body', (m) => /Content-Transfer-Encoding: 8bit/i.test(m.raw.toString('latin1')) && has8bit(bodyOf(m.raw)) && isUtf8(bodyOf(m.raw)));
    found('8-bit non-UTF-8 body', (m) => has8bit(bodyOf(m.raw)) && !isUtf8(bodyOf(m.raw)));
    found('forwarded message/rfc822', (m) => /Content-Type: message\/rfc822/i.test(m.raw.toString('latin1')));
    found('Received chain', (m) => hdrs(m).filter((h) => /^received:/i.test(h)).length >= 3);
    found('very long folded header', (m) => hdrs(m).some((h) => h.length > 998));
    found('message without trailing CRLF', (m) => !m.raw.subarray(-2).equals(Buffer.from('\r\n')));
    found('minimal message', (m) => m.raw.length < 300 && hdrs(m).length <= 4);
    found('message in a non-ASCII folder', (m) => m.folder.some((s) => /[^\x20-\x7e]/.test(s)));
    found("message in a folder with '&'", (m) => m.folder.some((s) => s.includes('&')));
    found('message over 1 MB', (m) => m.raw.length > 1024 * 1024);
    // Duplicates: identical bytes, flags and internal date, twice in the same folder.
    const seen = new Map<string, number>();
    for (const m of msgs) seen.set(fingerprint(m), (seen.get(fingerprint(m)) ?? 0) + 1);
    assert.ok([...seen.values()].some((n) => n === 2), `seed ${seed}: no exact duplicate pair`);
  }
});

test('messages use CRLF only, contain no NUL, and respect line limits and MIME structure', () => {
  const msgs = [...corpus300, ...generateCorpus({ messages: 60, seed: 11, averageSize: 5_000, extraLarge: [40_000] }).messages()];
  for (const [i, m] of msgs.entries()) {
    assert.deepEqual(lineProblems(m.raw), [], `message ${i}`);
    const text = m.raw.toString('latin1');
    const long = text.split('\r\n').find((l) => l.length > 998);
    assert.equal(long, undefined, `message ${i} has a line over 998 bytes`);
    assert.ok(headerBlock(m.raw).length < m.raw.length || m.raw.length < 300, `message ${i} has no body separator`);
    // Every declared boundary is used and closed, so the MIME tree parses.
    for (const [, boundary] of text.matchAll(/boundary="([^"]+)"/g)) {
      assert.ok(text.includes(`\r\n--${boundary}\r\n`), `message ${i}: boundary ${boundary} never opened`);
      assert.ok(text.includes(`\r\n--${boundary}--`), `message ${i}: boundary ${boundary} never closed`);
    }
  }
});

test('Message-IDs are unique except for exact duplicates', () => {
  const ids = new Map<string, string>();
  for (const m of corpus300) {
    const id = headers(m.raw).find((h) => /^message-id:/i.test(h));
    if (!id) continue;
    const prev = ids.get(id);
    if (prev !== undefined) assert.equal(prev, sha256(m.raw), `Message-ID reused by a different message: ${id}`);
    ids.set(id, sha256(m.raw));
  }
  assert.ok(ids.size > 250);
});

test('folder names contain no forbidden characters and the tree is complete', () => {
  const c = generateCorpus({ messages: 300, seed: 1 });
  for (const f of c.folders) for (const seg of f.path) assert.ok(!/[./]/.test(seg), `forbidden character in ${seg}`);
  const keys = new Set(c.folders.map((f) => JSON.stringify(f.path)));
  assert.equal(keys.size, c.folders.length, 'duplicate folders');
  c.folders.forEach((f, i) => {
    if (f.path.length > 1) {
      const parent = JSON.stringify(f.path.slice(0, -1));
      assert.ok(c.folders.slice(0, i).some((g) => JSON.stringify(g.path) === parent), `parent of ${f.path.join('/')} missing or later`);
    }
  });
  const uses = c.folders.map((f) => f.specialUse).filter(Boolean).sort();
  assert.deepEqual(uses, ['\\Archive', '\\Drafts', '\\Junk', '\\Sent', '\\Trash']);
  assert.ok(c.folders.some((f) => f.path.length >= 4), 'no 4-level chain');
  assert.ok(c.folders.some((f) => f.path.some((s) => /\p{Extended_Pictographic}/u.test(s))), 'no emoji folder');
  // The empty folder exists and receives no message.
  const used = new Set(corpus300.map((m) => JSON.stringify(m.folder)));
  assert.ok(!used.has(JSON.stringify(['Empty Folder'])));
  assert.ok(keys.has(JSON.stringify(['Empty Folder'])));
  // Most mail is in INBOX and Sent, with a long tail.
  const inboxSent = corpus300.filter((m) => m.folder.length === 1 && ['INBOX', 'Sent Items'].includes(m.folder[0] as string)).length;
  assert.ok(inboxSent > 120 && inboxSent < 270, `INBOX+Sent hold ${inboxSent}/300`);
  assert.ok(used.size >= 15, `only ${used.size} folders hold mail`);

  // Other forbidden characters are replaced in names; messages follow the renamed folders.
  const d = generateCorpus({ messages: 100, seed: 1, forbiddenChars: '&/.' });
  for (const f of d.folders) for (const seg of f.path) assert.ok(!/[&/.]/.test(seg), `forbidden character in ${seg}`);
  for (const m of d.messages()) for (const seg of m.folder) assert.ok(!seg.includes('&'));
  assert.throws(() => generateCorpus({ messages: 1, folders: [{ path: ['a.b'] }, { path: ['a_b'] }] }), /duplicate folder/);
  // Missing ancestors are added ahead of their children.
  const e = generateCorpus({ messages: 5, folders: [{ path: ['INBOX'] }, { path: ['x', 'y', 'z'] }] });
  assert.deepEqual(
    e.folders.map((f) => f.path.join('/')),
    ['INBOX', 'x', 'x/y', 'x/y/z'],
  );
  assert.equal(defaultFolders().length, c.folders.length);
});

test('flags are valid IMAP flags with a realistic mix', () => {
  const counts = new Map<string, number>();
  for (const m of corpus300) {
    for (const f of m.flags) {
      counts.set(f, (counts.get(f) ?? 0) + 1);
      if (f.startsWith('\\')) assert.ok(SYSTEM_FLAGS.has(f), `bad system flag ${f}`);
      else assert.match(f, ATOM);
    }
    assert.equal(new Set(m.flags).size, m.flags.length, 'repeated flag');
    if (m.folder[0] === 'Drafts') assert.ok(m.flags.includes('\\Draft'));
  }
  const seen = counts.get('\\Seen') ?? 0;
  assert.ok(seen > 200 && seen < 300, `\\Seen on ${seen}/300`);
  for (const f of ['\\Answered', '\\Flagged', '\\Draft', '$Junk']) assert.ok((counts.get(f) ?? 0) > 0, `no ${f}`);
  assert.ok(![...counts.keys()].some((f) => f === '\\Recent' || f === '\\Deleted'));
  const withDeleted = [...generateCorpus({ messages: 800, seed: 1, averageSize: 4000, includeDeleted: true }).messages()];
  assert.ok(withDeleted.some((m) => m.flags.includes('\\Deleted')));
});

test('internal dates are whole seconds, 2010–2025, ascending per folder, near the Date header', () => {
  const lastByFolder = new Map<string, number>();
  let checkedDate = 0;
  for (const m of corpus300) {
    const t = m.internalDate.getTime();
    assert.equal(t % 1000, 0);
    assert.ok(t >= Date.UTC(2010, 0, 1) && t < Date.UTC(2026, 0, 1), m.internalDate.toISOString());
    const key = m.folder.join('/');
    assert.ok(t >= (lastByFolder.get(key) ?? 0), `dates not ascending in ${key}`);
    lastByFolder.set(key, t);
    if (m.folder[1] === '2019') assert.equal(m.internalDate.getUTCFullYear(), 2019);
    const date = headers(m.raw).find((h) => /^date:/i.test(h));
    if (date) {
      const parsed = Date.parse(date.slice(5).replace(/\([^)]*\)/g, '').trim());
      assert.ok(Math.abs(parsed - t) < 3600_000, `Date header ${date} far from ${m.internalDate.toISOString()}`);
      checkedDate++;
    }
  }
  assert.ok(checkedDate > 250);
});

test('loadCorpus creates folders with the separator and appends every message', async () => {
  const c = generateCorpus({ messages: 40, seed: 2, averageSize: 3000 });
  const created: string[] = [];
  const appended: Array<{ path: string; size: number; flags: string[]; date: Date }> = [];
  const fake = {
    async mailboxCreate(path: string) {
      created.push(path);
      return { path, created: true };
    },
    async append(path: string, raw: Buffer, flags: string[], date: Date) {
      appended.push({ path, size: raw.length, flags, date });
      return { destination: path };
    },
    async list() {
      return [];
    },
  };
  const res = await loadCorpus(fake as unknown as ImapFlow, c, { separator: '.' });
  assert.equal(res.appended, 40);
  assert.equal(appended.length, 40);
  const all = [...c.messages()];
  assert.equal(res.bytes, all.reduce((s, m) => s + m.raw.length, 0));
  assert.ok(!created.includes('INBOX'));
  assert.ok(created.includes('Archive.2019.Ärger & Co'));
  assert.ok(created.indexOf('Archive.2019') < created.indexOf('Archive.2019.Ärger & Co'));
  assert.deepEqual(
    appended.map((a) => a.path),
    all.map((m) => m.folder.join('.')),
  );
  assert.deepEqual(appended[0]?.flags, all[0]?.flags);
});
