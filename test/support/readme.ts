import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..', '..');

/** The markdown table under README.md's `heading` that starts with the `header` row, as written. */
export function readmeTable(heading: string, header: string): string {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf(heading));
  return section.slice(section.indexOf(header)).split('\n\n')[0]!.trimEnd();
}
