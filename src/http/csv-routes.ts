/**
 * `POST /api/csv/check`: the migration file check of SPEC §1 (`mailferry csv check`) for the
 * web page's upload form and for scripts. The file is sent as its bytes — a `text/csv`
 * body, or base64 in JSON (`{ "csvBase64": … }`) — never decoded by the browser first, so a
 * file that is not UTF-8 is told as such, and a BOM is seen.
 */
import type { FastifyInstance } from 'fastify';
import { fileTooLarge, MAX_FILE_BYTES, type Problem, validateMigrationFile, type ValidationResult } from '../csv/index.js';
import { badRequest } from './errors.js';

/** As `csv check --json` prints it (password-free: problems name lines and columns only). */
export function validationJson(v: ValidationResult, preview = 0): Record<string, unknown> {
  if (v.valid) {
    // The first rows as the admin will see them in the batch (never the password), so a file
    // with its columns in the wrong order is noticed before anything is stored.
    const first = v.rows.slice(0, preview).map((r) => ({ line: r.line, emailAddress: r.emailAddress, userName: r.userName, userRoot: r.userRoot ?? null }));
    return { valid: true, rows: v.rows.length, errors: [], ...(preview ? { preview: first } : {}) };
  }
  return { valid: false, rows: v.rows, errors: v.errors.map((e: Problem) => ({ line: e.line ?? null, ...(e.column ? { column: e.column } : {}), check: e.check, message: e.message })) };
}

/** The file's bytes from a JSON body: `csvBase64` (as uploaded) or `csv` (text, taken as UTF-8). */
export function uploadedFile(body: { csv?: unknown; csvBase64?: unknown }): Buffer {
  if (typeof body !== 'object' || body === null) throw badRequest('send the migration file as csvBase64 (its bytes in base64) or csv (its text)');
  if (body.csvBase64 !== undefined && body.csv !== undefined) throw badRequest('send the migration file once: csvBase64 or csv, not both');
  if (body.csvBase64 !== undefined) {
    if (typeof body.csvBase64 !== 'string') throw badRequest('csvBase64 must be a string (the file\'s bytes in base64)');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body.csvBase64)) throw badRequest('csvBase64 is not base64');
    return Buffer.from(body.csvBase64, 'base64');
  }
  if (body.csv !== undefined) {
    if (typeof body.csv !== 'string') throw badRequest('csv must be a string (the file\'s text)');
    return Buffer.from(body.csv, 'utf8');
  }
  throw badRequest('the migration file is missing: send csvBase64 (its bytes in base64) or csv (its text)');
}

/** Rows shown back by the check (the web page's preview). */
const PREVIEW_ROWS = 5;

/** A JSON body holding only the file. */
export const fileBodySchema = { type: 'object', additionalProperties: false, properties: { csv: { type: 'string' }, csvBase64: { type: 'string' } } } as const;

/** JSON with a base64 file: 4/3 of the file's limit, plus room for the other fields. */
export const UPLOAD_BODY_LIMIT = Math.ceil((MAX_FILE_BYTES * 4) / 3) + 64 * 1024;

export function registerCsvRoutes(app: FastifyInstance): void {
  app.addContentTypeParser(['text/csv', 'text/plain', 'application/octet-stream'], { parseAs: 'buffer', bodyLimit: UPLOAD_BODY_LIMIT }, (_req, body, done) => done(null, body));

  app.post<{ Body: Buffer | { csv?: string; csvBase64?: string } }>('/api/csv/check', { bodyLimit: UPLOAD_BODY_LIMIT }, async (req) => {
    if (!Buffer.isBuffer(req.body) && req.body && typeof req.body === 'object') {
      // A raw text/csv body has no fields; a JSON one has only the file (the route takes both, so no schema checks this).
      const extra = Object.keys(req.body).filter((k) => k !== 'csv' && k !== 'csvBase64');
      if (extra.length) throw badRequest(`unknown field${extra.length === 1 ? '' : 's'}: ${extra.join(', ')} (send csvBase64 or csv)`);
    }
    const file = Buffer.isBuffer(req.body) ? req.body : uploadedFile(req.body ?? {});
    return validationJson(file.length > MAX_FILE_BYTES ? fileTooLarge(file.length) : await validateMigrationFile(file), PREVIEW_ROWS);
  });
}
