/**
 * Two `mailferry worker` processes sharing one PostgreSQL database: no mailbox is ever
 * synced by both at once, and the endpoint's max concurrent migrations holds across them,
 * judged from the recorded runs (owner, start, end) and from live leases sampled meanwhile.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { findBatch } from '../src/batch/store.js';
import { loadBatchDetail } from '../src/batch/view.js';
import type { Store } from '../src/store/open.js';
import type { SyncRunRow } from '../src/store/schema.js';
import { CLI, runCli } from './helpers/cli.js';
import { type BatchLab, loadMailbox, postgresUnavailable, startBatchLab, until } from './helpers/batch-lab.js';
import { expectedTargetPath } from './helpers/lab-pair.js';
import { compareMailboxes, snapshot } from './helpers/mailbox-snapshot.js';

/** Most runs open at one moment; a run ending when another starts does not overlap it. */
function peakOverlap(runs: readonly Pick<SyncRunRow, 'started_at' | 'ended_at'>[]): number {
  const events = runs.flatMap((r) => [
    { t: r.started_at, d: 1 },
    { t: r.ended_at ?? Number.MAX_SAFE_INTEGER, d: -1 },
  ]);
  events.sort((a, b) => a.t - b.t || a.d - b.d);
  let open = 0;
  let peak = 0;
  for (const e of events) peak = Math.max(peak, (open += e.d));
  return peak;
}

const LIMIT = 3;

describe('two workers on PostgreSQL', async () => {
  const skip = await postgresUnavailable();
  if (skip) process.stderr.write(`# skipping the two-worker PostgreSQL test: ${skip}\n`);
  let lab: BatchLab;
  let store: Store;
  let loaded: number[];
  const children: ChildProcess[] = [];

  before(async () => {
    if (skip) return;
    lab = await startBatchLab({ dialect: 'postgres', users: 6, maxConcurrentMigrations: LIMIT });
    loaded = await Promise.all(lab.users.map((u, i) => loadMailbox(lab, u, 400, 2000 + i)));
    store = await lab.db.open();
  });
  after(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await store?.close();
    await lab?.stop();
  });

  test('no mailbox synced twice at once; max concurrent migrations holds across workers', { skip: skip ?? false }, async () => {
    const created = await runCli(['batch', 'create', 'shared', '--csv', lab.csv(lab.users.map((u) => ({ user: u }))), '--endpoint', 'src', '--target', 'tgt', '--autostart'], lab.env);
    assert.equal(created.status, 0, created.stderr);
    // Each worker may hold two mailboxes: together they could run four, so only the shared
    // limit keeps it at three; and reaching three takes both of them.
    const exits: Promise<number | null>[] = [];
    const outputs: string[] = [];
    for (const concurrency of ['2', '2']) {
      const child = spawn(process.execPath, [CLI, 'worker', '--concurrency', concurrency, '--lease-ttl', '3s', '--log-level', 'warn'], { env: lab.env, stdio: ['ignore', 'ignore', 'pipe'] });
      const i = outputs.push('') - 1;
      child.stderr!.on('data', (d: Buffer) => (outputs[i] += d.toString()));
      children.push(child);
      exits.push(new Promise((r) => child.on('close', (code) => r(code))));
    }
    let livePeak = 0;
    const d = await until('the batch to be Synced', 180_000, async () => {
      const live = await store.db.selectFrom('batch_mailbox').select((eb) => eb.fn.countAll<number>().as('n')).where('lease_kind', '=', 'initial').where('lease_expires_at', '>=', Date.now()).executeTakeFirstOrThrow();
      livePeak = Math.max(livePeak, Number(live.n));
      const x = await loadBatchDetail(store.db, (await findBatch(store.db, 'shared'))!);
      return x.batch.status === 'Synced' && x;
    }, 50);
    for (const c of children) c.kill('SIGTERM');
    assert.deepEqual(await Promise.all(exits), [0, 0], outputs.join('\n'));

    const runs = await store.db.selectFrom('sync_run').selectAll().where('kind', '=', 'initial').orderBy('started_at').execute();
    const owners = new Set(runs.map((r) => r.owner));
    assert.equal(owners.size, 2, `both workers synced mailboxes (${[...owners].join(', ')})`);
    const byMailbox = new Map<number, SyncRunRow[]>();
    for (const r of runs) byMailbox.set(r.mailbox_id, [...(byMailbox.get(r.mailbox_id) ?? []), r]);
    for (const [id, rs] of byMailbox) assert.equal(peakOverlap(rs), 1, `mailbox ${id} was synced by ${rs.map((r) => r.owner).join(' and ')} at once`);
    const peak = peakOverlap(runs);
    assert.ok(peak <= LIMIT && livePeak <= LIMIT, `at most ${LIMIT} migrations at once (runs: ${peak}, live leases: ${livePeak})`);
    assert.equal(peak, LIMIT, 'the limit was reached, so the test exercised it');
    assert.ok(runs.every((r) => r.outcome === 'synced'));

    for (const [i, u] of lab.users.entries()) {
      assert.equal(d.mailboxes.find((m) => m.emailAddress === u.address)!.copied, loaded[i]);
      const problems = compareMailboxes(await snapshot(lab.source.endpoint(), u.user, u.password), await snapshot(lab.target.endpoint(), u.address, 'unused-Target-Pw1'), (p) => expectedTargetPath(p));
      assert.deepEqual(problems, [], `${u.address} is exact`);
    }
  });
});
