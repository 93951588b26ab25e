// Checks that the committed API reference (docs/api/, Markdown made by TypeDoc with
// typedoc-plugin-markdown) is what `pnpm run docs` makes from the sources now:
//
//   1. Every public entry point of a package (its package.json `exports`, but
//      `./package.json`) is an entry point of TypeDoc (packages/<name>/typedoc.json), and
//      every package with a library API is one of the root typedoc.json's packages.
//   2. TypeDoc regenerates the reference into a temporary folder (validation on, warnings
//      are errors: an undocumented export or a broken link fails here), and the result
//      must equal docs/api/ file for file.
//
// It reads the packages' built type declarations for imports across packages: run it after
// `tsc -b` (`pnpm run docs:check` and `pnpm run check` do).

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';

const root = join(import.meta.dirname, '..');
const committed = join(root, 'docs/api');
const fix = 'run `pnpm run docs` and commit docs/api/';
const problems = [];

const readJson = (file) => JSON.parse(readFileSync(join(root, file), 'utf8'));
const typedoc = readJson('typedoc.json');
const documented = new Set(typedoc.entryPoints);

// 1. Entry points.
for (const name of readdirSync(join(root, 'packages')).sort()) {
  const dir = `packages/${name}`;
  let manifest;
  try {
    manifest = readJson(`${dir}/package.json`);
  } catch {
    continue;
  }
  const subpaths = Object.keys(manifest.exports ?? {}).filter((key) => key !== './package.json');
  if (subpaths.length === 0) {
    if (documented.has(dir)) problems.push(`${dir} has no library exports but is listed in typedoc.json`);
    continue;
  }
  if (!documented.has(dir)) {
    problems.push(`${dir} exports ${subpaths.join(', ')} but is not in typedoc.json's entryPoints`);
    continue;
  }
  let entries = [];
  try {
    entries = readJson(`${dir}/typedoc.json`).entryPoints ?? [];
  } catch {
    problems.push(`${dir}/typedoc.json is missing: it lists the package's entry points for TypeDoc`);
  }
  const expected = subpaths.map((subpath) => (subpath === '.' ? 'src/index.ts' : `src/${subpath.slice(2)}.ts`));
  for (const entry of expected) {
    if (!entries.includes(entry)) problems.push(`${dir}/typedoc.json does not list ${entry} (package.json exports)`);
  }
  for (const entry of entries) {
    if (!expected.includes(entry))
      problems.push(`${dir}/typedoc.json lists ${entry}, which package.json does not export`);
  }
}

// 2. Regenerate and compare.
const out = mkdtempSync(join(tmpdir(), 'inboxkit-api-'));
try {
  const typedocBin = join(root, 'node_modules/typedoc/bin/typedoc');
  const run = spawnSync(process.execPath, [typedocBin, '--out', out, '--logLevel', 'Warn'], {
    cwd: root,
    encoding: 'utf8',
  });
  if (run.status !== 0) {
    process.stderr.write(run.stdout + run.stderr);
    problems.push('TypeDoc failed (above): fix the doc comments it names, then run `pnpm run docs`');
  } else {
    const fresh = listFiles(out);
    const old = listFiles(committed);
    for (const file of fresh.keys()) {
      if (!old.has(file)) problems.push(`docs/api/${file} is missing`);
      else if (!old.get(file).equals(fresh.get(file))) problems.push(`docs/api/${file} is out of date`);
    }
    for (const file of old.keys()) {
      if (!fresh.has(file)) problems.push(`docs/api/${file} is no longer generated`);
    }
  }
} finally {
  rmSync(out, { recursive: true, force: true });
}

if (problems.length > 0) {
  const shown = problems.slice(0, 20);
  if (problems.length > shown.length) shown.push(`... and ${problems.length - shown.length} more`);
  console.error(`docs:check: the API reference in docs/api/ is not current:\n  ${shown.join('\n  ')}\nTo fix: ${fix}.`);
  process.exit(1);
}
console.log('docs:check: docs/api/ matches the sources.');

/** The files under `dir`, by path relative to it, with their contents. */
function listFiles(dir) {
  const files = new Map();
  const walk = (current) => {
    let names;
    try {
      names = readdirSync(current);
    } catch {
      return;
    }
    for (const name of names) {
      const path = join(current, name);
      if (statSync(path).isDirectory()) walk(path);
      else files.set(relative(dir, path).split('\\').join('/'), readFileSync(path));
    }
  };
  walk(dir);
  return files;
}
