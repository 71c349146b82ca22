/**
 * The HTTP side of `mailferry serve --listen` (SPEC: "a web admin page, a CLI, or the HTTP
 * API. All three drive the same core"): the JSON API under /api/, guarded by the admin
 * token, and the web page that uses it.
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import type { Logger } from 'pino';
import type { SecretKey } from '../secrets/index.js';
import type { Store } from '../store/open.js';
import type { AdminToken } from './admin-token.js';
import { registerBatchRoutes } from './batch-routes.js';
import { registerCsvRoutes } from './csv-routes.js';
import { registerDnsRoutes } from './dns-routes.js';
import { registerEndpointRoutes } from './endpoint-routes.js';
import { sendError } from './errors.js';
import { registerWebAssets } from './web-assets.js';

export interface HttpAppDeps {
  store: Store;
  /** The secret key, loaded when a route first needs it (`create`: may make the key file). */
  key: (create?: boolean) => SecretKey;
  token: AdminToken;
  logger: Logger;
  /** Where the built page is (default: the package's dist/web). */
  webDir?: string;
}

/** `Authorization: Bearer TOKEN` (RFC 6750 §2.1). */
function bearer(header: string | undefined): string | null {
  const m = /^Bearer +(\S+)\s*$/i.exec(header ?? '');
  return m ? m[1]! : null;
}

export async function buildHttpApp(deps: HttpAppDeps): Promise<FastifyInstance> {
  // pino's Logger is a FastifyBaseLogger; typed as such so the app is the plain FastifyInstance routes take.
  // No line per request: the web page polls every two seconds. Errors are logged (errors.ts).
  const app = Fastify({
    loggerInstance: deps.logger.child({ component: 'http' }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    // Bodies are taken as sent: no 123 turned into "123", and a misspelt field ("exlude") is
    // refused, not silently dropped (fastify's defaults do both).
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false } },
  });
  app.setErrorHandler((err, req, reply) => sendError(err as Error, req, reply));
  app.setNotFoundHandler((req, reply) => void reply.code(404).send({ error: `no such page or API: ${req.method} ${req.url.split('?')[0]}` }));
  // The API in a plugin of its own, guarded by its own hook: the hook then runs for exactly
  // the routes registered inside, whatever spelling of the path reached them. (A check of
  // the raw URL let `/%61pi/batches` through: the router decodes it to `/api/batches`.)
  await app.register(async (api) => {
    api.addHook('onRequest', async (req, reply) => {
      const given = bearer(req.headers.authorization);
      if (given === null || !deps.token.matches(given)) {
        return reply.code(401).header('www-authenticate', 'Bearer realm="mailferry"').send({ error: 'the admin token is missing or wrong (see the admin-token file named when serve started, or MAILFERRY_ADMIN_TOKEN)' });
      }
    });
    api.addHook('onSend', async (_req, reply) => {
      reply.header('cache-control', 'no-store');
    });
    api.get('/api/health', async () => ({ ok: true }));
    registerBatchRoutes(api, { store: deps.store, key: () => deps.key(false), logger: deps.logger });
    registerEndpointRoutes(api, { store: deps.store, key: (create) => deps.key(create) });
    registerCsvRoutes(api);
    registerDnsRoutes(api, deps.store);
  });
  registerWebAssets(app, deps.webDir);
  await app.ready();
  return app;
}

export interface RunningHttp {
  url: string;
  close(): Promise<void>;
}

export async function listenHttp(deps: HttpAppDeps, host: string, port: number): Promise<RunningHttp> {
  const app = await buildHttpApp(deps);
  await app.listen({ host, port });
  const addr = app.server.address();
  const bound = typeof addr === 'object' && addr ? addr : { address: host, port, family: 'IPv4' };
  const shownHost = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
  return { url: `http://${shownHost}:${bound.port}`, close: () => app.close() };
}
