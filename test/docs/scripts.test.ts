// The scripts and docs name only test projects that exist, and scripts/test.sh lists every
// one: `npm test -- --project <name>` as written in a page must run something.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { markdownFiles, ROOT } from './support/markdown.ts';

function projects(): string[] {
  const config = readFileSync(join(ROOT, 'vitest.config.ts'), 'utf8');
  return [...config.matchAll(/name: '([a-z0-9-]+)'/g)].map((m) => m[1] as string);
}

describe('test project names', () => {
  it('vitest.config.ts defines the projects', () => {
    expect(projects()).toEqual(expect.arrayContaining(['core', 'kafka', 'rabbitmq', 'http', 'docs', 'packages']));
  });

  it('scripts/test.sh lists every project in its usage', () => {
    const usage = readFileSync(join(ROOT, 'scripts/test.sh'), 'utf8')
      .split('\n')
      .filter((line) => line.startsWith('#'))
      .join('\n');
    const missing = projects().filter((name) => !new RegExp(`\\b${name}\\b`).test(usage));
    expect(missing).toEqual([]);
  });

  it('every `--project <name>` in the docs and scripts names a project that exists', () => {
    const known = new Set(projects());
    const files = [
      ...markdownFiles(),
      'scripts/test.sh',
      'scripts/demo.sh',
      'scripts/bench.sh',
      '.ci/run',
      'package.json',
    ];
    const unknown: string[] = [];
    for (const file of files) {
      let text: string;
      try {
        text = readFileSync(join(ROOT, file), 'utf8');
      } catch {
        continue;
      }
      for (const match of text.matchAll(/--project[ =]([a-z0-9-]+)/g)) {
        if (!known.has(match[1] as string)) unknown.push(`${file}: --project ${match[1]}`);
      }
    }
    expect(unknown).toEqual([]);
  });
});
