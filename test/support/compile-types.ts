/**
 * Compiles type-test fixtures with the TypeScript compiler API, as a hook author's project would
 * (strict, NodeNext), and returns the diagnostics of the fixtures themselves. A fixture marks each
 * line that must not compile with `// @ts-expect-error`; an unused one is a diagnostic too, so a type
 * that stops catching a mistake fails its test as surely as one that starts refusing good code.
 */
import { statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = fileURLToPath(new URL('../..', import.meta.url));

/**
 * Parsed files, kept across the programs of one test file: each program reads ~720 files (Node's
 * types, kysely's, knex's, hookbridge's own), and parsing them again took ~2 of its ~4 seconds. A file
 * is parsed again when it changed on disk since (its modification time and size are in the key).
 */
const parsed = new Map<string, ts.SourceFile>();

function cachingHost(options: ts.CompilerOptions): ts.CompilerHost {
  const host = ts.createCompilerHost(options);
  const read = host.getSourceFile.bind(host);
  host.getSourceFile = (fileName, languageVersion, ...rest) => {
    let modified: string;
    try {
      const { mtimeMs, size } = statSync(fileName);
      modified = `${mtimeMs}\0${size}`;
    } catch {
      return read(fileName, languageVersion, ...rest);
    }
    const key = `${fileName}\0${JSON.stringify(languageVersion)}\0${modified}`;
    let file = parsed.get(key);
    if (!file) {
      file = read(fileName, languageVersion, ...rest);
      if (file) parsed.set(key, file);
    }
    return file;
  };
  return host;
}

export interface CompileOptions {
  /**
   * Where `import ... from 'hookbridge'` goes: `sources` (default) maps it to this checkout's
   * index.ts; `installed` leaves it to node_modules, as in a user's project (the built package).
   */
  hookbridge?: 'sources' | 'installed';
  /** Files compiled but not reported on (declaration files the fixtures need). */
  extra?: string[];
}

export function compileFixtures(files: string[], options: CompileOptions = {}): string[] {
  const compilerOptions: ts.CompilerOptions = {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    strict: true,
    noUncheckedIndexedAccess: true,
    noEmit: true,
    skipLibCheck: true,
    types: ['node'],
    typeRoots: [`${root}node_modules/@types`],
    ...(options.hookbridge === 'installed' ? {} : { paths: { hookbridge: [`${root}index.ts`] } }),
  };
  const program = ts.createProgram({ rootNames: [...(options.extra ?? []), ...files], options: compilerOptions, host: cachingHost(compilerOptions) });
  // Only the fixtures (and the files they name) are checked: hookbridge's own sources are typechecked
  // by `npm run typecheck`, and checking them all again here would take most of the time.
  const reported = [...(options.extra ?? []), ...files];
  const diagnostics = [
    ...program.getOptionsDiagnostics(),
    ...program.getGlobalDiagnostics(),
    ...reported.flatMap((file) => {
      const source = program.getSourceFile(file);
      if (!source) throw new Error(`${file} is not part of the program`);
      return [...program.getSyntacticDiagnostics(source), ...program.getSemanticDiagnostics(source)];
    }),
  ];
  return diagnostics.map(formatDiagnostic);
}

function formatDiagnostic(diagnostic: ts.Diagnostic): string {
  const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n');
  if (!diagnostic.file || diagnostic.start === undefined) return message;
  const { line, character } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start);
  // The line itself too: generated fixtures are gone by the time a failure is read.
  const text = diagnostic.file.text.split('\n')[line]?.trim() ?? '';
  return `${diagnostic.file.fileName}:${line + 1}:${character + 1}: ${message}\n    ${text}`;
}
