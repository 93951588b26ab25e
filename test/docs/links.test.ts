// Links between the docs resolve: every relative link of the READMEs and docs/ names a file
// that exists and, with a #fragment into a Markdown file, a heading of that file (GitHub's
// anchors). Every docs/*.md the code's comments cite exists. A page moved or a heading
// renamed fails here instead of leaving a reader at a dead end.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { markdownFiles, ROOT } from './support/markdown.ts';

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/<[^>]+>/g, '')
    .replace(/[`*_]/g, (c) => (c === '_' ? '_' : ''))
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

/** The anchors of a Markdown file, with GitHub's -1, -2 suffixes for repeated headings. */
function anchors(file: string): Set<string> {
  const seen = new Map<string, number>();
  const result = new Set<string>();
  let inFence = false;
  for (const line of readFileSync(join(ROOT, file), 'utf8').split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) inFence = !inFence;
    if (inFence) continue;
    const heading = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (heading === null) continue;
    const base = slug(heading[1] as string);
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    result.add(count === 0 ? base : `${base}-${count}`);
  }
  for (const match of readFileSync(join(ROOT, file), 'utf8').matchAll(/<a (?:name|id)="([^"]+)"/g)) {
    result.add(match[1] as string);
  }
  return result;
}

/** Links outside code: `[text](target)`, not images of remote URLs. */
function links(file: string): { target: string; line: number }[] {
  const found: { target: string; line: number }[] = [];
  let inFence = false;
  for (const [i, line] of readFileSync(join(ROOT, file), 'utf8').split('\n').entries()) {
    if (/^\s*(```|~~~)/.test(line)) inFence = !inFence;
    if (inFence) continue;
    const withoutCode = line.replace(/`[^`]*`/g, '');
    for (const match of withoutCode.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
      found.push({ target: match[1] as string, line: i + 1 });
    }
  }
  return found;
}

describe('links in the docs', () => {
  it('resolve to files that exist, and to headings that exist', () => {
    const broken: string[] = [];
    for (const file of markdownFiles()) {
      for (const { target, line } of links(file)) {
        if (/^[a-z]+:/i.test(target)) continue; // https:, mailto:
        const [path = '', fragment] = target.split('#');
        const resolved = path === '' ? file : normalize(join(dirname(file), decodeURIComponent(path)));
        if (!existsSync(join(ROOT, resolved))) {
          broken.push(`${file}:${line}: ${target} (no ${resolved})`);
          continue;
        }
        if (fragment !== undefined && resolved.endsWith('.md') && !anchors(resolved).has(fragment)) {
          broken.push(`${file}:${line}: ${target} (no heading #${fragment} in ${resolved})`);
        }
      }
    }
    expect(broken).toEqual([]);
  });

  it('the docs pages the code cites exist', () => {
    const missing: string[] = [];
    const walk = (dir: string): void => {
      for (const name of readdirSync(join(ROOT, dir))) {
        const path = `${dir}/${name}`;
        if (name === 'node_modules' || name === 'dist') continue;
        if (statSync(join(ROOT, path)).isDirectory()) walk(path);
        else if (/\.(ts|mts|mjs|sh)$/.test(name)) {
          for (const match of readFileSync(join(ROOT, path), 'utf8').matchAll(/\bdocs\/[\w/-]+\.md\b/g)) {
            if (!existsSync(join(ROOT, match[0]))) missing.push(`${relative(ROOT, join(ROOT, path))}: ${match[0]}`);
          }
        }
      }
    };
    for (const dir of ['packages', 'test', 'bench', 'scripts', 'examples']) walk(dir);
    expect([...new Set(missing)]).toEqual([]);
  });
});
