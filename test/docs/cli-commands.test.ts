// Every `inboxkit ...` command line the READMEs and docs show names a command the CLI has and
// only options that command takes (asked of the built CLI's own --help), so a renamed flag
// cannot linger in a page. What the commands do is tested in packages/cli/test.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { markdownFiles, ROOT } from './support/markdown.ts';

const run = promisify(execFile);
const BIN = join(ROOT, 'packages/cli/dist/bin.js');

interface Mention {
  readonly where: string;
  readonly words: string[];
}

/** `inboxkit ...` in code blocks and inline code, split into words up to a comment or a pipe. */
function mentions(): Mention[] {
  const found: Mention[] = [];
  for (const file of markdownFiles()) {
    const lines = readFileSync(join(ROOT, file), 'utf8').split('\n');
    let inFence = false;
    for (const [i, line] of lines.entries()) {
      if (/^\s*(```|~~~)/.test(line)) {
        inFence = !inFence;
        continue;
      }
      const pieces = inFence ? [line] : [...line.matchAll(/`([^`]+)`/g)].map((m) => m[1] as string);
      for (const piece of pieces) {
        for (const match of piece.matchAll(/(?:^|[\s;&(])inboxkit\s+([a-z][^#|;&)]*)/g)) {
          const words = (match[1] as string).trim().split(/\s+/);
          found.push({ where: `${file}:${i + 1}`, words });
        }
      }
    }
  }
  return found;
}

const helpCache = new Map<string, Promise<string>>();
function help(path: string[]): Promise<string> {
  const key = path.join(' ');
  let cached = helpCache.get(key);
  if (cached === undefined) {
    cached = run(process.execPath, [BIN, ...path, '--help'], { env: { ...process.env, COLUMNS: '200' } }).then(
      ({ stdout }) => stdout,
      (error: { stdout?: string }) => error.stdout ?? '',
    );
    helpCache.set(key, cached);
  }
  return cached;
}

/** The subcommand names a help text lists under "Commands:". */
function subcommands(text: string): Set<string> {
  const section = text.split(/^Commands:$/m)[1] ?? '';
  return new Set([...section.matchAll(/^\s{2}([a-z][\w-]*)/gm)].map((m) => m[1] as string));
}

describe('inboxkit command lines in the docs', () => {
  it('are found', () => {
    expect(mentions().length).toBeGreaterThan(10);
  });

  it('name commands and options the CLI has', async () => {
    const problems: string[] = [];
    const top = await help([]);
    expect(subcommands(top).size, top).toBeGreaterThan(3);
    for (const { where, words } of mentions()) {
      // The command path: words while they name a subcommand.
      const path: string[] = [];
      let rest = words;
      for (;;) {
        const next = rest[0];
        if (next === undefined || next.startsWith('-')) break;
        const commands = subcommands(await help(path));
        if (!commands.has(next)) break;
        path.push(next);
        rest = rest.slice(1);
      }
      if (path.length === 0) {
        // `inboxkit` as a word in prose, e.g. "the inboxkit command": only a first word that
        // looks like a command is a claim.
        if (rest[0] !== undefined && /^[a-z]+$/.test(rest[0]) && rest.length > 1 && rest[1]?.startsWith('-')) {
          problems.push(`${where}: inboxkit ${rest[0]} is not a command`);
        }
        continue;
      }
      const text = await help(path);
      for (const word of rest) {
        const flag = /^(--[a-z][\w-]*)/.exec(word)?.[1];
        if (flag === undefined || flag === '--help') continue;
        if (!new RegExp(`(^|[\\s,])${flag}\\b`, 'm').test(text)) {
          problems.push(`${where}: inboxkit ${path.join(' ')} has no option ${flag}`);
        }
      }
    }
    expect(problems).toEqual([]);
  });
});
