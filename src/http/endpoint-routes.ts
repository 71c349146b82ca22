/**
 * Source endpoints and targets over HTTP (SPEC §3): list, create (tested first, stored only
 * when the test passes), test again, delete. `/api/endpoints` are sources, `/api/targets`
 * targets, as `mailferry endpoint|target`. Passwords travel in the request body only and
 * are never sent back.
 */
import type { FastifyInstance } from 'fastify';
import { changeEndpoint, createEndpoint, ROLE_NOUN, testLogin } from '../endpoint/manage.js';
import { publicEndpointView } from '../endpoint/settings.js';
import { testEndpointSettings } from '../endpoint/test-settings.js';
import { decryptSecret, type SecretKey } from '../secrets/index.js';
import { deleteEndpoint, findEndpoint, listEndpoints } from '../store/endpoints.js';
import type { Store } from '../store/open.js';
import type { EndpointRole } from '../store/schema.js';
import { notFound } from './errors.js';

interface CreateBody {
  name: string;
  host: string;
  port?: number;
  tls?: string;
  auth?: string;
  acceptUntrustedCert?: boolean;
  maxConcurrentMigrations?: number;
  maxConcurrentIncrementalSyncs?: number;
  adminUser?: string;
  adminPassword?: string;
  impersonation?: string;
  separator?: string;
  testUser?: string;
  testPassword?: string;
}

const text = { type: 'string', maxLength: 1000 } as const;
const createSchema = {
  body: {
    type: 'object',
    required: ['name', 'host'],
    additionalProperties: false,
    properties: {
      name: text,
      host: text,
      port: { type: 'integer' },
      tls: text,
      auth: text,
      acceptUntrustedCert: { type: 'boolean' },
      maxConcurrentMigrations: { type: 'integer' },
      maxConcurrentIncrementalSyncs: { type: 'integer' },
      adminUser: text,
      adminPassword: text,
      impersonation: text,
      separator: text,
      testUser: text,
      testPassword: text,
    },
  },
} as const;

const testSchema = { body: { type: ['object', 'null'], additionalProperties: false, properties: { testUser: text, testPassword: text } } } as const;
const updateSchema = { body: { ...createSchema.body, required: [], properties: (({ name: _name, ...rest }) => rest)(createSchema.body.properties) } } as const;

export function registerEndpointRoutes(app: FastifyInstance, deps: { store: Store; key: (create?: boolean) => SecretKey }): void {
  const { store } = deps;
  for (const [role, base] of [
    ['source', '/api/endpoints'],
    ['target', '/api/targets'],
  ] as [EndpointRole, string][]) {
    const mustFind = async (name: string) => {
      const row = await findEndpoint(store.db, role, name);
      if (!row) throw notFound(`no ${ROLE_NOUN[role]} named "${name}"`);
      return row;
    };

    app.get(base, async () => (await listEndpoints(store.db, role)).map(publicEndpointView));
    app.get<{ Params: { name: string } }>(`${base}/:name`, async (req) => publicEndpointView(await mustFind(req.params.name)));

    app.post<{ Body: CreateBody }>(base, { schema: createSchema }, async (req, reply) => {
      const { name, adminPassword, testUser, testPassword, ...settings } = req.body;
      const r = await createEndpoint(store, () => deps.key(true), { role, name, settings, adminPassword, testUser: testUser || undefined, testPassword });
      if (!r.stored) return reply.code(422).send({ stored: false, test: r.test });
      return reply.code(201).send({ stored: true, ...publicEndpointView(r.row), test: r.test });
    });

    // `update`: only the fields sent change; `adminPassword` replaces the stored one (a rotated password).
    app.patch<{ Params: { name: string }; Body: Omit<CreateBody, 'name'> }>(`${base}/:name`, { schema: updateSchema }, async (req, reply) => {
      await mustFind(req.params.name);
      const { adminPassword, testUser, testPassword, ...changes } = req.body;
      const r = await changeEndpoint(store, (create) => deps.key(create), { role, name: req.params.name, changes, newAdminPassword: adminPassword || undefined, testUser: testUser || undefined, testPassword });
      if (!r.stored) return reply.code(422).send({ stored: false, test: r.test });
      return { stored: true, ...publicEndpointView(r.row), test: r.test };
    });

    app.post<{ Params: { name: string }; Body: { testUser?: string; testPassword?: string } | undefined }>(`${base}/:name/test`, { schema: testSchema }, async (req) => {
      const row = await mustFind(req.params.name);
      const testUser = req.body?.testUser || undefined;
      const password = role === 'source' ? req.body?.testPassword : row.password_enc ? decryptSecret(deps.key(false), row.password_enc) : undefined;
      return testEndpointSettings(row, testLogin(role, row, testUser, password), testUser);
    });

    app.delete<{ Params: { name: string } }>(`${base}/:name`, async (req) => {
      if (!(await deleteEndpoint(store.db, role, req.params.name))) throw notFound(`no ${ROLE_NOUN[role]} named "${req.params.name}"`);
      return { deleted: true };
    });
  }
}
