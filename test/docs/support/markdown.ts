// The code blocks of the project's Markdown, for the tests that check them (test/docs/).
//
// The convention (docs/README.md, "How the docs are tested"): every ```ts block is a module
// that type-checks; a block that uses names it does not define gets them from a context file,
// named by an HTML comment on the line before its fence, which the reader does not see:
//
//   <!-- snippet: context=db -->
//   ```ts
//
// `run=NAME` marks a block a test runs as a program (test/docs/quick-starts.test.ts), `run=sql`
// a SQL recipe a test executes. Further `key=value` words are for the test that runs it.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export interface CodeBlock {
  /** The Markdown file, from the repository root. */
  readonly file: string;
  /** The 1-based line of the block's first code line. */
  readonly line: number;
  /** The fence's language: ts, sql, sh, ... */
  readonly lang: string;
  /** The words of the `<!-- snippet: ... -->` comment before the fence: `context=db` is { context: 'db' }, a bare word is ''. */
  readonly attributes: Readonly<Record<string, string>>;
  readonly code: string;
  /** The last heading above the block. */
  readonly heading: string;
}

/** The Markdown files whose blocks are checked: the READMEs and docs/, not the generated API reference. */
export function markdownFiles(): string[] {
  const files = ['README.md', 'bench/README.md', 'model/README.md', 'CONTRIBUTING.md'];
  for (const dir of ['packages', 'examples']) {
    for (const name of readdirSync(join(ROOT, dir))) files.push(`${dir}/${name}/README.md`);
  }
  const walk = (dir: string): void => {
    for (const name of readdirSync(join(ROOT, dir)).sort()) {
      const path = `${dir}/${name}`;
      if (path === 'docs/api') continue;
      if (statSync(join(ROOT, path)).isDirectory()) walk(path);
      else if (name.endsWith('.md')) files.push(path);
    }
  };
  walk('docs');
  return files.filter((file) => {
    try {
      return statSync(join(ROOT, file)).isFile();
    } catch {
      return false;
    }
  });
}

const SNIPPET_COMMENT = /^<!--\s*snippet:(.*?)-->\s*$/;

function parseAttributes(text: string, where: string): Record<string, string> {
  const attributes: Record<string, string> = {};
  for (const word of text.trim().split(/\s+/).filter(Boolean)) {
    const eq = word.indexOf('=');
    const key = eq < 0 ? word : word.slice(0, eq);
    if (key in attributes) throw new Error(`${where}: snippet attribute ${key} given twice`);
    attributes[key] = eq < 0 ? '' : word.slice(eq + 1);
  }
  return attributes;
}

/** Every fenced block of `file` (a path from the repository root), with its snippet attributes. */
export function codeBlocks(file: string): CodeBlock[] {
  const lines = readFileSync(join(ROOT, file), 'utf8').split('\n');
  const blocks: CodeBlock[] = [];
  let heading = '';
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string;
    const open = /^(\s*)(`{3,}|~{3,})\s*([\w+-]*)(.*)$/.exec(line);
    if (open === null) {
      if (/^#{1,6}\s/.test(line)) heading = line.trim();
      else if (SNIPPET_COMMENT.test(line.trim())) {
        const next = lines[i + 1] ?? '';
        if (!/^\s*(`{3,}|~{3,})/.test(next)) {
          throw new Error(`${file}:${i + 1}: a snippet comment must be on the line right before a code fence`);
        }
      }
      continue;
    }
    const [, indent = '', fence = '```', lang = ''] = open;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length; j++) {
      const candidate = lines[j] as string;
      if (candidate.trim().startsWith(fence) && candidate.trim().replace(/[`~]/g, '') === '') break;
      body.push(candidate.startsWith(indent) ? candidate.slice(indent.length) : candidate);
    }
    if (j >= lines.length) throw new Error(`${file}:${i + 1}: code fence never closed`);
    const comment = SNIPPET_COMMENT.exec((lines[i - 1] ?? '').trim());
    blocks.push({
      file,
      line: i + 2,
      lang: lang.toLowerCase(),
      attributes: comment === null ? {} : parseAttributes(comment[1] ?? '', `${file}:${i}`),
      code: body.join('\n'),
      heading,
    });
    i = j;
  }
  return blocks;
}

/** Every block of every checked file. */
export function allCodeBlocks(): CodeBlock[] {
  return markdownFiles().flatMap((file) => codeBlocks(file));
}

/** Whether a block is TypeScript (and so type-checked). */
export function isTypeScript(block: CodeBlock): boolean {
  return block.lang === 'ts' || block.lang === 'typescript';
}

/** `file:line`, for messages. */
export function where(block: CodeBlock): string {
  return `${block.file}:${block.line}`;
}

/** The one block of `file` marked `run=name` (throws when there is none or more than one). */
export function runnableBlock(file: string, name: string): CodeBlock {
  const found = codeBlocks(file).filter((block) => block.attributes.run === name);
  if (found.length !== 1) {
    throw new Error(`${file} has ${found.length} blocks marked <!-- snippet: run=${name} -->, expected one`);
  }
  return found[0] as CodeBlock;
}

export function fromRoot(path: string): string {
  return relative(ROOT, path);
}
