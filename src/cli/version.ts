/**
 * mailferry's installed package: its root (found by walking up from the running file —
 * dist/mailferry.mjs in the bundle, dist/src/cli/ compiled, dist/test/ in tests — since the
 * layouts put package.json at different depths) and its version.
 */
import { readFileSync, realpathSync } from 'node:fs';
import path from 'node:path';

/** The directory holding mailferry's package.json, or null (a copied bundle). */
export function packageRoot(entry: string | undefined = process.argv[1]): string | null {
  if (!entry) return null;
  let dir: string;
  try {
    dir = path.dirname(realpathSync(entry));
  } catch {
    return null;
  }
  for (let i = 0; i < 5; i++) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string };
      if (pkg.name === 'mailferry') return dir;
    } catch {
      // no package.json here: look further up
    }
    const up = path.dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return null;
}

export function packageVersion(entry: string | undefined = process.argv[1]): string {
  const root = packageRoot(entry);
  if (!root) return 'unknown';
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version?: string };
  return typeof pkg.version === 'string' ? pkg.version : 'unknown';
}
