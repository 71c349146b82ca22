/**
 * Several processes opening one new SQLite file at once (`serve` and `worker` started
 * together, a shell loop of `sync … &`) all bring it up to date: Kysely does not lock
 * migrations on SQLite, and the losers of the race used to fail with "duplicate column".
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { runCli } from './helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'mailferry-migrate-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('processes started together on a new SQLite file all open it', async () => {
  for (let round = 0; round < 3; round++) {
    const db = `sqlite:${join(dir, `state-${round}.sqlite`)}`;
    const runs = await Promise.all(Array.from({ length: 4 }, () => runCli(['batch', 'list', '--db', db, '--json'], { ...process.env, MAILFERRY_HOME: dir })));
    for (const r of runs) assert.equal(r.status, 0, r.stderr);
  }
});
