/**
 * mailferry's version, from the package.json of the installed package: found by walking up
 * from the running file (dist/mailferry.mjs in the bundle, dist/src/cli/ compiled), since
 * the two layouts put it at different depths. "unknown" if there is none (a copied bundle).
 */
import { readFileSync, realpathSync } from 'node:fs';
import path from 'node:path';

export function packageVersion(entry: string | undefined = process.argv[1]): string {
  if (!entry) return 'unknown';
  let dir: string;
  try {
    dir = path.dirname(realpathSync(entry));
  } catch {
    return 'unknown';
  }
  for (let i = 0; i < 5; i++) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'mailferry' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // no package.json here: look further up
    }
    const up = path.dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return 'unknown';
}
