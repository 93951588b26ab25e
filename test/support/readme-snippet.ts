// Runs a README's quick start as its own Node process (types stripped), as a user would copy
// it, so a test can check what the snippet does as written: for instance that it exits on
// SIGTERM. The program is written beside this file so that it resolves the workspace's
// packages ('@inboxkit/*' from their dist: build first), or into a project of its own (the
// packed packages' test), and removed afterwards.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** The first ```ts block after the line `heading` of a README (a path from the repository root). */
export function readmeBlock(readme: string, heading: string): string {
  const text = readFileSync(`${ROOT}${readme}`, 'utf8');
  const start = text.split('\n').findIndex((line) => line.trim() === heading);
  if (start < 0) throw new Error(`${readme} has no heading ${JSON.stringify(heading)}`);
  const rest = text.split('\n').slice(start + 1);
  const open = rest.findIndex((line) => line.trim() === '```ts');
  const close = rest.findIndex((line, i) => i > open && line.trim() === '```');
  if (open < 0 || close < 0) throw new Error(`${readme} has no \`\`\`ts block after ${JSON.stringify(heading)}`);
  return rest.slice(open + 1, close).join('\n');
}

/**
 * `code` with each `[from, to]` replaced once (names a test must make unique, such as a topic
 * or a queue); throws when one is missing, so a README that changed fails loudly here.
 */
export function replaceOnce(code: string, replacements: readonly (readonly [string, string])[]): string {
  let result = code;
  for (const [from, to] of replacements) {
    if (!result.includes(from)) throw new Error(`the snippet no longer contains ${JSON.stringify(from)}`);
    result = result.split(from).join(to);
  }
  return result;
}

export interface SnippetProcess {
  readonly process: ChildProcess;
  /** Resolves with the exit code, or the signal that ended it. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Everything it wrote to stdout and stderr. */
  output(): string;
  /** SIGKILLs it if it still runs, and removes the program file. */
  dispose(): void;
}

/** Where a snippet runs, when not in the workspace with this process's Node. */
export interface SnippetOptions {
  /** The folder the program is written to, whose node_modules it resolves from. Default: test/support. */
  readonly directory?: string;
  /** The Node binary that runs it. Default: this process's. */
  readonly node?: string;
}

/**
 * Writes `code` as a program in test/support (or `options.directory`) and runs it with `env`
 * added to the environment.
 */
export function runSnippet(code: string, env: Record<string, string>, options: SnippetOptions = {}): SnippetProcess {
  const file = join(options.directory ?? `${ROOT}test/support`, `.snippet-${randomBytes(4).toString('hex')}.ts`);
  writeFileSync(file, code);
  const child = spawn(options.node ?? process.execPath, ['--disable-warning=TimeoutNegativeWarning', file], {
    env: { ...process.env, KAFKAJS_NO_PARTITIONER_WARNING: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (exitCode, signal) => resolve({ code: exitCode, signal }));
  });
  return {
    process: child,
    exited,
    output: () => output,
    dispose: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      rmSync(file, { force: true });
    },
  };
}

/** Whether `exited` settles within `ms` (a liveness bound, not a timing measurement). */
export async function exitsWithin(
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>,
  ms: number,
): Promise<{ code: number | null; signal: NodeJS.Signals | null } | 'still running'> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'still running'>((resolve) => {
    timer = setTimeout(() => resolve('still running'), ms);
  });
  try {
    return await Promise.race([exited, late]);
  } finally {
    clearTimeout(timer);
  }
}
