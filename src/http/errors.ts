/**
 * How the API answers a refusal: the status code a client can act on, and the same plain
 * sentence the CLI prints. Messages come from mailferry's own errors, which never hold a
 * password (the sync engine scrubs what servers echo, src/secrets/scrub.ts).
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { BatchError, DeleteTooEarlyError } from '../batch/errors.js';
import { TimeInputError } from '../batch/time-input.js';
import { DnsLookupError, DnsUsageError } from '../dns/errors.js';
import { EndpointNameTakenError } from '../endpoint/manage.js';
import { EndpointSettingError } from '../endpoint/settings.js';
import { SecretKeyError } from '../secrets/index.js';
import { EndpointInUseError } from '../store/endpoints.js';

/** A refusal a route decides itself. */
export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
  ) {
    super(message);
  }
}

export const notFound = (what: string) => new HttpError(404, what);
export const badRequest = (why: string) => new HttpError(400, why);

function statusOf(err: Error): number {
  if (err instanceof HttpError) return err.statusCode;
  if (err instanceof DeleteTooEarlyError) return 409;
  // "no batch named …", "batch … has no mailbox …": the thing asked for is not there.
  if (err instanceof BatchError) return /^no (batch|migration endpoint|migration target) named|has no mailbox/.test(err.message) ? 404 : 409;
  if (err instanceof TimeInputError || err instanceof EndpointSettingError || err instanceof DnsUsageError) return 400;
  // The resolver asked could not answer: an upstream failure, not this server's.
  if (err instanceof DnsLookupError) return 502;
  if (err instanceof EndpointNameTakenError || err instanceof EndpointInUseError) return 409;
  if (err instanceof SecretKeyError) return 500;
  const fe = err as FastifyError;
  if (fe.validation) return 400;
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) return fe.statusCode;
  return 500;
}

/**
 * The core's refusals name CLI flags (`--max-concurrent-migrations must be…`, `Use --force`);
 * over HTTP they name the JSON field or query parameter instead (`maxConcurrentMigrations`,
 * `force=true`).
 */
export function apiWording(message: string): string {
  return message
    .replace(/Use --force to delete it anyway\./g, 'Add ?force=true to delete it anyway.')
    // Only a flag the sentence is about ("--tls must be …", "the --target-mx host …"); a command
    // suggested in full ("mailferry dns check D --target-mx HOST") keeps its flags.
    .replace(/(^|the |[("'])--([a-z]+(?:-[a-z]+)*)(?= must| is| and| host|["')])/g, (_m, before: string, flag: string) => before + flag.replace(/-([a-z])/g, (_x, c: string) => c.toUpperCase()));
}

/** A schema refusal that names the field: ajv's "must NOT have additional properties" does not say which. */
function validationWording(err: FastifyError): string | null {
  const first = err.validation?.[0] as { keyword?: string; params?: { additionalProperty?: string }; instancePath?: string } | undefined;
  if (first?.keyword === 'additionalProperties' && first.params?.additionalProperty) {
    const where = first.instancePath ? ` in ${first.instancePath.slice(1).replace(/\//g, '.')}` : '';
    return `unknown field "${first.params.additionalProperty}"${where} (${err.validationContext ?? 'body'})`;
  }
  return null;
}

export function sendError(err: Error, req: FastifyRequest, reply: FastifyReply): void {
  const status = statusOf(err);
  if (status >= 500) req.log.error({ err: { name: err.name, message: err.message } }, 'request failed');
  const message = validationWording(err as FastifyError) ?? err.message;
  const body: { error: string; kind?: string; warnings?: string[] } = { error: status < 500 ? apiWording(message) : message };
  if (err instanceof DeleteTooEarlyError) {
    body.kind = 'delete-too-early';
    body.warnings = err.warnings.map(apiWording);
  }
  void reply.code(status).header('cache-control', 'no-store').send(body);
}
