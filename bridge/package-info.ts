import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** hookbridge's own package.json, found from this file whether it runs from source or from dist/. */
export function packageInfo(): { name: string; version: string; root: string } {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'hookbridge') return { name: pkg.name, version: pkg.version ?? '0.0.0', root: dir };
    } catch {
      // not here; keep walking up
    }
    const parent = dirname(dir);
    if (parent === dir) return { name: 'hookbridge', version: '0.0.0', root: dir };
    dir = parent;
  }
}
