/** A source and a target Dovecot as the tests and benchmark use them. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDovecot, type DovecotOptions } from '../../src/lab/dovecot.js';
import type { Pair } from './cli.js';

export const TARGET_SPECIAL_USE = { '\\Sent': 'Sent', '\\Drafts': 'Drafts', '\\Trash': 'Trash', '\\Junk': 'Junk', '\\Archive': 'Archive' } as const;

/** Where the default corpus's source folders land on the target (test-side expectation). */
const SPECIAL_MAP: Record<string, string> = { 'Sent Items': 'Sent', Drafts: 'Drafts', 'Deleted Items': 'Trash', 'Junk E-mail': 'Junk', Archive: 'Archive' };

export function expectedTargetPath(sourcePath: string, sourceSep = '.', targetSep = '/'): string {
  const segs = sourcePath.split(sourceSep);
  const top = SPECIAL_MAP[segs[0]!];
  if (top) segs[0] = top;
  return segs.join(targetSep);
}

export interface LabPair extends Pair {
  dir: string;
  db: string;
  stop(): Promise<void>;
}

export async function startPair(opts: { source?: Partial<DovecotOptions>; target?: Partial<DovecotOptions>; extraTargetUsers?: string[] } = {}): Promise<LabPair> {
  const source = await startDovecot({ name: 'source', separator: '.', users: [{ username: 'alice', password: 'source-secret-1' }], ...opts.source });
  const target = await startDovecot({
    name: 'target',
    separator: '/',
    users: [{ username: 'alice', password: 'target-secret-2' }, ...(opts.extraTargetUsers ?? []).map((u) => ({ username: u, password: 'target-secret-2' }))],
    specialUse: { ...TARGET_SPECIAL_USE },
    ...opts.target,
  });
  const dir = mkdtempSync(join(tmpdir(), 'mailferry-test-'));
  return {
    source,
    target,
    sourceUser: 'alice',
    sourcePass: 'source-secret-1',
    targetUser: 'alice',
    targetPass: 'target-secret-2',
    dir,
    db: join(dir, 'state.sqlite'),
    async stop() {
      await Promise.allSettled([source.stop(), target.stop()]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
