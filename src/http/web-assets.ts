/**
 * The web admin page's files (built by scripts/bundle.mjs into dist/web/: the page, its
 * script compiled from src/web/client/, its style sheet), served as they are. They hold no
 * data: everything the page shows comes from the API with the admin token.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { packageRoot } from '../cli/version.js';

const FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
};

/** The page may run only its own script and talk only to this server. */
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

export function registerWebAssets(app: FastifyInstance, dir = path.join(packageRoot() ?? '.', 'dist', 'web')): void {
  for (const [url, { file, type }] of Object.entries(FILES)) {
    app.get(url, async (_req, reply) => {
      let body: Buffer;
      try {
        body = await readFile(path.join(dir, file));
      } catch {
        return reply.code(404).type('text/plain; charset=utf-8').send(`the web page is not built (${path.join(dir, file)} is missing): run npm run build`);
      }
      return reply
        .type(type)
        .header('content-security-policy', CSP)
        .header('x-content-type-options', 'nosniff')
        .header('referrer-policy', 'no-referrer')
        .header('cache-control', 'no-cache')
        .send(body);
    });
  }
}
