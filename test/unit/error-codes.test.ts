/**
 * One list of error codes (hooks/error-codes.ts): the README's table is exactly that list, and every
 * `E_...` code the source names is in it.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { ERROR_CODES, errorCodeTable } from '../../hooks/error-codes.js';
import { readmeTable } from '../support/readme.js';

const root = join(import.meta.dirname, '..', '..');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return name.endsWith('.ts') || name.endsWith('.sql') ? [path] : [];
  });
}

it("the README's table of error codes is the list", () => {
  expect(readmeTable('## Errors and exit codes', '| code | meaning |')).toBe(errorCodeTable());
});

it('every code the source names is in the list', () => {
  const named = new Set<string>();
  for (const file of [...sourceFiles(join(root, 'bridge')), ...sourceFiles(join(root, 'hooks')), ...sourceFiles(join(root, 'sql'))]) {
    if (file.endsWith('error-codes.ts')) continue;
    for (const match of readFileSync(file, 'utf8').matchAll(/'(E_[A-Z][A-Z_]+)'/g)) named.add(match[1]!);
  }
  expect(named.size).toBeGreaterThan(20);
  expect([...named].filter((code) => !(code in ERROR_CODES))).toEqual([]);
});
