/**
 * Compiles type-test fixtures with the TypeScript compiler API, as a hook author's project would
 * (strict, NodeNext), and returns the diagnostics of the fixtures themselves. A fixture marks each
 * line that must not compile with `// @ts-expect-error`; an unused one is a diagnostic too, so a type
 * that stops catching a mistake fails its test as surely as one that starts refusing good code.
 */
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = fileURLToPath(new URL('../..', import.meta.url));

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
  const program = ts.createProgram({
    rootNames: [...(options.extra ?? []), ...files],
    options: {
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
    },
  });
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
