/**
 * Batches over HTTP (SPEC §4, §6): the same operations as `mailferry batch …`, on the same
 * core functions, answering JSON. `check-logins` and `verify` run in the background, claimed
 * in the database (src/batch/background-task.ts); their results appear in the batch detail.
 */
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { claimTask, runClaimed, runLoginCheck, taskStates } from '../batch/background-task.js';
import { checkLogins } from '../batch/check-logins.js';
import { createBatch, type StartPlan } from '../batch/create.js';
import { continueRemoval, cutOverState, deleteBatch, retryMailboxes, startBatch, stopBatch, syncNow } from '../batch/lifecycle.js';
import { batchNameProblem, MAILBOX_STATUSES } from '../batch/status.js';
import { requireBatch } from '../batch/store.js';
import { parseReceivedAfter, parseStartAt } from '../batch/time-input.js';
import { updateBatch } from '../batch/update.js';
import { verifyBatch } from '../batch/verify.js';
import { loadBatchDetail, loadBatchList, loadBatchView, loadMailboxPage, type MailboxQuery } from '../batch/view.js';
import type { BatchRow, MailboxStatus } from '../store/schema.js';
import { addressKey, addressProblem } from '../csv/address.js';
import { fileTooLarge, MAX_FILE_BYTES } from '../csv/index.js';
import { buildReport, reportCsv } from '../report/batch-report.js';
import type { SecretKey } from '../secrets/index.js';
import type { Store } from '../store/open.js';
import { badRequest, notFound } from './errors.js';
import { fileBodySchema, uploadedFile, UPLOAD_BODY_LIMIT, validationJson } from './csv-routes.js';

export interface BatchRouteDeps {
  store: Store;
  key: () => SecretKey;
  logger: Logger;
}

interface NameParams {
  name: string;
}

interface CreateBody {
  name: string;
  csv?: string;
  csvBase64?: string;
  endpoint: string;
  target: string;
  exclude?: string[];
  include?: string[];
  receivedAfter?: string;
  badItemLimit?: number;
  notify?: string[];
  start?: 'manual' | 'now' | 'at';
  startAt?: string;
}

/** How long the batch page's cut-over state is kept (cutOverOf). */
const CUT_OVER_KEPT_MS = 5_000;

const strings = { type: 'array', items: { type: 'string', minLength: 1, maxLength: 1000 }, maxItems: 200 } as const;

const createSchema = {
  body: {
    type: 'object',
    required: ['name', 'endpoint', 'target'],
    additionalProperties: false,
    properties: {
      name: { type: 'string' },
      csv: { type: 'string' },
      csvBase64: { type: 'string' },
      endpoint: { type: 'string' },
      target: { type: 'string' },
      exclude: strings,
      include: strings,
      receivedAfter: { type: 'string' },
      badItemLimit: { type: 'integer', minimum: 0 },
      notify: strings,
      start: { enum: ['manual', 'now', 'at'] },
      startAt: { type: 'string' },
    },
  },
} as const;

/** Query parameters are one value each: `?q=a&q=b` is refused, not a 500 (fastify makes it an array). */
const one = { type: 'string', maxLength: 1000 } as const;
const pageQuerySchema = { type: 'object', additionalProperties: false, properties: { status: one, q: one, offset: { type: 'string', pattern: '^[0-9]{1,9}$' }, limit: { type: 'string', pattern: '^[0-9]{1,9}$' } } } as const;

const userSchema = { body: { type: ['object', 'null'], additionalProperties: false, properties: { user: { type: 'string', maxLength: 1000 }, content: { type: 'boolean' } } } } as const;

function startPlan(b: CreateBody): StartPlan {
  if (b.start === 'at') {
    if (!b.startAt) throw badRequest('startAt is required when start is "at"');
    return { kind: 'at', at: parseStartAt(b.startAt, 'startAt') };
  }
  // Never dropped: a startAt without start "at" would leave the batch Created for good.
  if (b.startAt !== undefined) throw badRequest(`startAt is only for start "at", not ${b.start === undefined ? 'a batch started by hand' : `start "${b.start}"`}`);
  return b.start === 'now' ? { kind: 'now' } : { kind: 'manual' };
}

export function registerBatchRoutes(app: FastifyInstance, deps: BatchRouteDeps): void {
  const { store } = deps;

  app.get('/api/batches', async () => loadBatchList(store.db));

  /**
   * The batch and its mailboxes. A batch may hold 50,000 mailboxes, and the page asks every
   * two seconds: `status` (one status, or `problems` for Failed ones and those with a last
   * error), `q` (part of the address) and `offset`/`limit` choose the mailboxes sent;
   * `mailboxesMatching` says how many match. The batch's totals always cover all of them.
   */
  // Where the cut-over stands reads every mailbox of the batch (~0.2 s for 50,000) and
  // changes at the pace of syncs and MX checks, not of the page's 2-second polls: kept for
  // a few seconds per batch, and forgotten on any change made through the API (an MX
  // check, a sync now). `batch delete` always works it out afresh.
  const cutOvers = new Map<number, { at: number; value: Awaited<ReturnType<typeof cutOverState>> }>();
  // Counts the changes: a state worked out while one was made is not kept.
  let changes = 0;
  const cutOverOf = async (row: BatchRow, now: number) => {
    const kept = cutOvers.get(row.id);
    if (kept && now - kept.at < CUT_OVER_KEPT_MS) return kept.value;
    const before = changes;
    const value = await cutOverState(store.db, row, now);
    if (changes === before) cutOvers.set(row.id, { at: now, value });
    return value;
  };
  // Before a change (what is kept may be stale from then on) and after it (a state worked
  // out meanwhile may predate it).
  const forget = async (req: { method: string; url: string }) => {
    if (req.method === 'GET' && !req.url.startsWith('/api/dns/')) return;
    changes++;
    cutOvers.clear();
  };
  app.addHook('onRequest', forget);
  app.addHook('onResponse', forget);

  app.get<{ Params: NameParams; Querystring: { status?: string; q?: string; offset?: string; limit?: string } }>('/api/batches/:name', { schema: { querystring: pageQuerySchema } }, async (req) => {
    const row = await requireBatch(store.db, req.params.name);
    const now = Date.now();
    const { status, q } = req.query;
    if (status && status !== 'problems' && !MAILBOX_STATUSES.includes(status as MailboxStatus)) throw badRequest(`status must be problems or one of ${MAILBOX_STATUSES.join(', ')}, not "${status}"`);
    const whole = (v: string | undefined, what: string) => {
      if (v === undefined) return undefined;
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) throw badRequest(`${what} must be a whole number, not "${v}"`);
      return n;
    };
    const page = await loadMailboxPage(store.db, row.id, { status: (status || undefined) as MailboxQuery['status'], addressContains: q, offset: whole(req.query.offset, 'offset'), limit: whole(req.query.limit, 'limit') }, now);
    const batch = await loadBatchView(store.db, row, now);
    // Where the cut-over stands (SPEC §7): what `batch delete` would warn about now, and the
    // mail domains whose MX mailferry has not checked yet (so it cannot track their 72 hours).
    const cutOver = await cutOverOf(row, now);
    return { batch, mailboxes: page.mailboxes, mailboxesMatching: page.matching, ...taskStates(row, now), cutOver };
  });

  app.post<{ Body: CreateBody }>('/api/batches', { schema: createSchema, bodyLimit: UPLOAD_BODY_LIMIT }, async (req, reply) => {
    const b = req.body;
    const nameProblem = batchNameProblem(b.name);
    if (nameProblem) throw badRequest(nameProblem);
    for (const a of b.notify ?? []) {
      const problem = addressProblem(a);
      if (problem) throw badRequest(`notify "${a}" is not an e-mail address: it ${problem}`);
    }
    const csv = uploadedFile(b);
    if (csv.length > MAX_FILE_BYTES) return reply.code(422).send(validationJson(fileTooLarge(csv.length)));
    const r = await createBatch(
      store,
      {
        name: b.name,
        csv,
        endpoint: b.endpoint,
        target: b.target,
        exclude: b.exclude ?? [],
        include: b.include ?? [],
        notify: b.notify ?? [],
        receivedAfter: b.receivedAfter ? parseReceivedAfter(b.receivedAfter, 'receivedAfter') : null,
        badItemLimit: b.badItemLimit ?? null,
        start: startPlan(b),
      },
      deps.key(),
    );
    if (!r.created) return reply.code(422).send(validationJson(r.validation));
    return reply.code(201).send(await loadBatchDetail(store.db, r.batch));
  });

  // `batch update`: a file of corrected rows (a new password, user name or UserRoot) and added mailboxes.
  app.post<{ Params: NameParams; Body: { csv?: string; csvBase64?: string } }>('/api/batches/:name/update', { bodyLimit: UPLOAD_BODY_LIMIT, schema: { body: fileBodySchema } }, async (req, reply) => {
    const csv = uploadedFile(req.body ?? {});
    if (csv.length > MAX_FILE_BYTES) return reply.code(422).send(validationJson(fileTooLarge(csv.length)));
    const r = await updateBatch(store, req.params.name, csv, deps.key());
    if (!r.updated) return reply.code(422).send(validationJson(r.validation));
    return { changed: r.changed, added: r.added, unchanged: r.unchanged, notInFile: r.notInFile };
  });

  // Check logins of a big batch takes minutes, more than a reverse proxy waits for one
  // answer: it runs in the background, claimed in the database (background-task.ts: a second
  // click, on any serve, would try every password again, which lockout policies count); its
  // result shows in the batch detail.
  app.post<{ Params: NameParams }>('/api/batches/:name/check-logins', async (req, reply) => {
    const name = req.params.name;
    const batch = await requireBatch(store.db, name);
    if (!(await claimTask(store, batch.id, 'login_check'))) return reply.code(409).send({ error: `the logins of batch "${name}" are being checked already` });
    void runLoginCheck(store, batch.id, () => checkLogins(store, batch, { key: deps.key(), logger: deps.logger })).catch((err: unknown) =>
      deps.logger.warn({ batch: name, err: (err as Error).message }, 'check logins could not finish'),
    );
    return reply.code(202).send({ running: true });
  });

  app.post<{ Params: NameParams }>('/api/batches/:name/start', async (req) => startBatch(store, req.params.name));
  app.post<{ Params: NameParams }>('/api/batches/:name/stop', async (req) => stopBatch(store, req.params.name));
  app.post<{ Params: NameParams }>('/api/batches/:name/sync-now', async (req) => ({ mailboxes: await syncNow(store, req.params.name) }));
  app.post<{ Params: NameParams; Body: { user?: string } | undefined }>('/api/batches/:name/retry', { schema: userSchema }, async (req) => ({
    retrying: await retryMailboxes(store, req.params.name, req.body?.user || undefined),
  }));

  app.post<{ Params: NameParams; Body: { user?: string; content?: boolean } | undefined }>('/api/batches/:name/verify', { schema: userSchema }, async (req, reply) => {
    const name = req.params.name;
    const batch = await requireBatch(store.db, name);
    const user = req.body?.user || undefined;
    // Said now, not found later in the log: the verification itself answers after this request.
    if (user && !(await store.db.selectFrom('batch_mailbox').select('id').where('batch_id', '=', batch.id).where('email_key', 'in', [user.trim().toLowerCase(), addressKey(user.trim())]).executeTakeFirst())) {
      throw notFound(`batch "${name}" has no mailbox ${user}`);
    }
    if (!(await claimTask(store, batch.id, 'verify'))) return reply.code(409).send({ error: `batch "${name}" is already being verified` });
    void runClaimed(store, batch.id, 'verify', () => verifyBatch(store, batch, { key: deps.key(), logger: deps.logger, content: !!req.body?.content, ...(user ? { user } : {}) })).catch((err: unknown) =>
      deps.logger.warn({ batch: name, err: (err as Error).message }, 'verify failed'),
    );
    return reply.code(202).send({ verifying: true });
  });

  app.delete<{ Params: NameParams; Querystring: { force?: string } }>('/api/batches/:name', { schema: { querystring: { type: 'object', additionalProperties: false, properties: { force: { enum: ['true', 'false', '1', '0'] } } } } }, async (req) => {
    const r = await deleteBatch(store, req.params.name, { force: req.query.force === 'true' || req.query.force === '1' });
    // One more pass right away; mailboxes a worker holds go at its next heartbeat.
    const after = r.removed ? r : { ...r, ...(await continueRemoval(store, r.batchId)) };
    return { removed: after.removed, remaining: after.remaining };
  });

  app.get<{ Params: NameParams; Querystring: { format?: 'csv' | 'json' } }>('/api/batches/:name/report', { schema: { querystring: { type: 'object', additionalProperties: false, properties: { format: { enum: ['csv', 'json'] } } } } }, async (req, reply) => {
    const report = await buildReport(store.db, await requireBatch(store.db, req.params.name));
    if (req.query.format === 'csv') {
      return reply
        .header('content-type', 'text/csv; charset=utf-8')
        .header('content-disposition', `attachment; filename="mailferry-${req.params.name}-report.csv"`)
        .send(reportCsv(report));
    }
    return report;
  });
}
