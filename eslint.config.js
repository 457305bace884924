// Lint for correctness, not taste: typescript-eslint's recommended rules (no type information, so it
// stays fast enough for every `npm test`), with the few this codebase deliberately departs from.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.hookbridge/**', 'test/types/**', 'test/fixtures/**', 'examples/**/node_modules/**', '**/*.d.ts'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    // Extensions, examples and scripts are plain JavaScript run by Node.
    files: ['**/*.js', '**/*.mjs', '**/*.cjs'],
    languageOptions: {
      globals: Object.fromEntries(
        [
          'console',
          'process',
          'fetch',
          'setTimeout',
          'clearTimeout',
          'setInterval',
          'clearInterval',
          'URL',
          'Buffer',
          'AbortSignal',
          'module',
          'require',
          '__dirname',
          'globalThis',
        ].map((name) => [name, 'readonly']),
      ),
    },
  },
  {
    rules: {
      // Directus's hook API is typed with `any` in places (payloads of user tables); say it where it is.
      '@typescript-eslint/no-explicit-any': 'off',
      // `_name` marks a parameter kept for its position.
      // A variable a closure reads before its first assignment is not a constant.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
);
