// Every TypeScript block of the READMEs and docs/ type-checks, strict, against the workspace's
// packages, as its own module: a renamed option, a removed export or a wrong signature in a
// snippet fails here with the Markdown file and line. A block that uses names it does not
// define names a context (test/docs/contexts/NAME.ts, prepended) in a comment before its
// fence; see test/docs/support/markdown.ts. Every block marked to run has a test that runs it.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { allCodeBlocks, type CodeBlock, isTypeScript, ROOT, where } from './support/markdown.ts';
import { RUNNABLE } from './support/runnable.ts';

const run = promisify(execFile);
const CHECK_DIR = join(ROOT, 'test/docs/.check');

/** The context's declarations, without the `export {}` that makes the context file a module. */
function contextOf(block: CodeBlock): string {
  const name = block.attributes.context;
  if (name === undefined) return '';
  const path = join(ROOT, 'test/docs/contexts', `${name}.ts`);
  if (!existsSync(path)) throw new Error(`${where(block)}: no context file test/docs/contexts/${name}.ts`);
  return readFileSync(path, 'utf8');
}

interface Generated {
  readonly block: CodeBlock;
  readonly file: string;
  /** Lines before the block's first line in the generated file. */
  readonly offset: number;
}

describe('the TypeScript blocks of the docs', () => {
  const blocks = allCodeBlocks();
  const typescript = blocks.filter(isTypeScript);

  it('are found (the collector sees the READMEs and docs/)', () => {
    expect(typescript.length).toBeGreaterThan(20);
    expect(new Set(typescript.map((block) => block.file))).toContain('README.md');
  });

  it('type-check, each as its own module', async () => {
    rmSync(CHECK_DIR, { recursive: true, force: true });
    mkdirSync(CHECK_DIR, { recursive: true });
    const generated: Generated[] = typescript.map((block, i) => {
      const context = contextOf(block);
      const head = context === '' ? '' : `${context.trimEnd()}\n`;
      const name = `${String(i).padStart(3, '0')}-${block.file.replace(/[^\w]+/g, '_')}-${block.line}.ts`;
      writeFileSync(join(CHECK_DIR, name), `${head}${block.code}\nexport {};\n`);
      return { block, file: name, offset: head === '' ? 0 : head.split('\n').length - 1 };
    });
    writeFileSync(
      join(CHECK_DIR, 'tsconfig.json'),
      JSON.stringify({
        extends: '../../../tsconfig.base.json',
        compilerOptions: {
          noEmit: true,
          composite: false,
          declaration: false,
          declarationMap: false,
          sourceMap: false,
          allowImportingTsExtensions: true,
          // Snippets show declarations a reader fills in; an unused one is not an error.
          noUnusedLocals: false,
          lib: ['ES2023', 'DOM'],
        },
        include: ['*.ts'],
      }),
    );
    const tsc = join(ROOT, 'node_modules/typescript/bin/tsc');
    let output = '';
    try {
      await run(process.execPath, [tsc, '-p', CHECK_DIR, '--pretty', 'false'], { cwd: ROOT, maxBuffer: 1 << 24 });
    } catch (error) {
      output = String((error as { stdout?: string }).stdout ?? error);
    }
    // test/docs/.check/007-README_md-120.ts(12,5): error TS2304: ... -> README.md:131:5 ...
    const problems = output
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => {
        const match = /^(?:.*[\\/])?([^\\/()]+\.ts)\((\d+),(\d+)\): (.*)$/.exec(line);
        const found = match && generated.find((g) => g.file === match[1]);
        if (!match || !found) return line;
        const lineInFile = Number(match[2]);
        const lineInBlock = lineInFile - found.offset;
        const at =
          lineInBlock >= 1
            ? `${found.block.file}:${found.block.line + lineInBlock - 1}:${match[3]}`
            : `${where(found.block)} (in its context ${found.block.attributes.context}, line ${lineInFile})`;
        return `${at} ${match[4]}`;
      });
    expect(problems, problems.join('\n')).toEqual([]);
  }, 180_000);

  it('name contexts that exist and only known attributes', () => {
    const known = new Set(['context', 'run', ...RUNNABLE.flatMap((r) => r.attributes ?? [])]);
    const problems: string[] = [];
    for (const block of blocks) {
      for (const key of Object.keys(block.attributes)) {
        if (!known.has(key)) problems.push(`${where(block)}: unknown snippet attribute ${key}`);
      }
      if (block.attributes.context !== undefined && !isTypeScript(block)) {
        problems.push(`${where(block)}: a context is for TypeScript blocks`);
      }
      if (block.attributes.context !== undefined) {
        if (!existsSync(join(ROOT, 'test/docs/contexts', `${block.attributes.context}.ts`))) {
          problems.push(`${where(block)}: no test/docs/contexts/${block.attributes.context}.ts`);
        }
      }
    }
    expect(problems).toEqual([]);
  });

  it('that are marked to run are each run by a test, and every such test finds its block', () => {
    const marked = blocks.filter((block) => block.attributes.run !== undefined);
    const unclaimed = marked.filter(
      (block) => !RUNNABLE.some((r) => r.run === block.attributes.run && r.files.includes(block.file)),
    );
    expect(unclaimed.map((block) => `${where(block)} run=${block.attributes.run}`)).toEqual([]);
    const orphans = RUNNABLE.flatMap((r) =>
      r.files
        .filter((file) => !marked.some((block) => block.file === file && block.attributes.run === r.run))
        .map((file) => `${r.test} expects a block run=${r.run} in ${file}`),
    );
    expect(orphans).toEqual([]);
  });
});
