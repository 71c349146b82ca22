/**
 * `GET /api/dns/:domain?targetMx=HOST[,HOST…]&server=IP[:PORT]`: the cut-over check of SPEC §7, the
 * same object as `mailferry dns check --json`. With `targetMx`, the check is recorded for the
 * 72-hour tracking that batch deletion consults.
 */
import type { FastifyInstance } from 'fastify';
import { checkDomain } from '../dns/check.js';
import type { Store } from '../store/open.js';

export function registerDnsRoutes(app: FastifyInstance, store: Store): void {
  const one = { type: 'string', maxLength: 1000 } as const;
  const querystring = { type: 'object', additionalProperties: false, properties: { targetMx: one, server: one } } as const;
  app.get<{ Params: { domain: string }; Querystring: { targetMx?: string; server?: string } }>('/api/dns/:domain', { schema: { querystring } }, async (req) =>
    checkDomain(store, {
      domain: req.params.domain,
      ...(req.query.targetMx ? { targetMx: req.query.targetMx } : {}),
      ...(req.query.server ? { server: req.query.server } : {}),
    }),
  );
}
