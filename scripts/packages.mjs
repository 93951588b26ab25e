#!/usr/bin/env node
// The packages as a user gets them from the registry: packed with `pnpm pack`, as `pnpm publish`
// would upload them, then checked as tarballs, not as folders of the workspace.
//
// CLI (`pnpm run check` runs it after the build):
//   node scripts/packages.mjs check
// packs every package that is not private into a temporary folder and runs on each tarball
//   - publint (--strict): package.json fields against the files the tarball holds;
//   - @arethetypeswrong/cli, profile esm-only: every export resolves to JavaScript and to its
//     types under Node's ESM resolution and under bundlers. The packages are ESM only and need
//     Node >= 22, whose require() loads ESM; the CommonJS (node16-cjs) and pre-exports (node10)
//     resolutions are not promised, so the profile leaves them out;
//   - the checks below (tarballContents): README.md, LICENSE (the root's) and CHANGELOG.md are
//     in it, every `bin` is, every package the built code imports is a builtin, the package
//     itself, or one it declares in dependencies or peerDependencies, and every subpath of a
//     workspace package it imports is in that package's `exports`.
// Exit code 0 when every package passes, 1 otherwise (each problem printed).
//
// Library: test/packages/packed.test.ts imports packPackages from here (types in packages.d.mts).
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import ts from 'typescript';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(ROOT, 'node_modules', '.bin');

/** The workspace's packages that are published (not private): folder and package.json. */
export async function publishedPackages() {
  const found = [];
  for (const entry of (await readdir(join(ROOT, 'packages'), { withFileTypes: true })).sort((a, b) =>
    a.name.localeCompare(b.name),
  )) {
    if (!entry.isDirectory()) continue;
    const dir = join(ROOT, 'packages', entry.name);
    const manifest = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8').catch(() => 'null'));
    if (manifest === null || manifest.private === true) continue;
    found.push({ dir, manifest });
  }
  return found;
}

/**
 * Packs every published package into `destination` with `pnpm pack` (workspace: ranges
 * replaced by versions, as `pnpm publish` does). Build first: the tarballs take `dist` as it is.
 */
export async function packPackages(destination) {
  return Promise.all(
    (await publishedPackages()).map(async ({ dir, manifest }) => {
      const { stdout } = await run('pnpm', ['pack', '--json', '--pack-destination', destination], {
        cwd: dir,
        maxBuffer: 16 * 1024 * 1024,
      });
      const packed = JSON.parse(stdout);
      return {
        name: manifest.name,
        version: manifest.version,
        dir,
        manifest,
        tarball: packed.filename,
        files: packed.files.map((file) => file.path),
      };
    }),
  );
}

/** The package an import specifier names (`@scope/name/sub` is `@scope/name`), or undefined for a relative one. */
function packageOf(specifier) {
  if (specifier.startsWith('.') || specifier.startsWith('/')) return undefined;
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
}

const BUILTINS = new Set(builtinModules);

/** The subpaths a package.json's `exports` offers (`.`, `./pg`, ...); undefined without `exports`. */
function exportedSubpaths(manifest) {
  const { exports } = manifest;
  if (exports === undefined) return undefined;
  if (typeof exports === 'string' || Object.keys(exports).every((key) => !key.startsWith('.'))) return new Set(['.']);
  return new Set(Object.keys(exports));
}

/**
 * What is wrong with a packed package's contents (empty when nothing is). `workspace` holds the
 * manifests of the other published packages: an import of one of them must name a subpath its
 * `exports` offers.
 */
export async function tarballContents(pkg, workspace = new Map()) {
  const problems = [];
  const files = new Set(pkg.files);
  for (const required of ['package.json', 'README.md', 'LICENSE', 'CHANGELOG.md']) {
    if (!files.has(required)) problems.push(`${required} is not in the tarball (package.json "files")`);
  }
  if (files.has('LICENSE')) {
    const [own, root] = await Promise.all([
      readFile(join(pkg.dir, 'LICENSE'), 'utf8'),
      readFile(join(ROOT, 'LICENSE'), 'utf8'),
    ]);
    if (own !== root) problems.push('LICENSE differs from the repository root LICENSE');
  }
  const bins = typeof pkg.manifest.bin === 'string' ? [pkg.manifest.bin] : Object.values(pkg.manifest.bin ?? {});
  for (const bin of bins) {
    if (!files.has(bin.replace(/^\.\//, ''))) problems.push(`bin ${bin} is not in the tarball`);
  }
  const declared = new Set([
    pkg.name,
    ...Object.keys(pkg.manifest.dependencies ?? {}),
    ...Object.keys(pkg.manifest.peerDependencies ?? {}),
    ...Object.keys(pkg.manifest.optionalDependencies ?? {}),
  ]);
  for (const file of pkg.files) {
    if (!/^dist\/.*\.(js|d\.ts)$/.test(file)) continue;
    const text = await readFile(join(pkg.dir, file), 'utf8');
    // TypeScript's own pre-parser: imports, exports from, import() and require(), not comments.
    const { importedFiles } = ts.preProcessFile(text, true, true);
    for (const { fileName } of importedFiles) {
      const name = packageOf(fileName);
      if (name === undefined || fileName.startsWith('node:') || BUILTINS.has(name)) continue;
      if (!declared.has(name)) {
        problems.push(`${file} imports '${fileName}', which is neither a dependency nor a peer dependency`);
        continue;
      }
      const subpaths = workspace.has(name) ? exportedSubpaths(workspace.get(name)) : undefined;
      const subpath = `.${fileName.slice(name.length)}`;
      if (subpaths !== undefined && !subpaths.has(subpath)) {
        problems.push(`${file} imports '${fileName}', which ${name} does not export (package.json "exports")`);
      }
    }
  }
  return problems;
}

/** Runs a tool of the workspace (node_modules/.bin); resolves with its output and whether it passed. */
async function tool(name, args) {
  try {
    const { stdout, stderr } = await run(join(BIN, name), args, {
      cwd: ROOT,
      env: { ...process.env, FORCE_COLOR: '0', NO_COLOR: '1' },
      maxBuffer: 16 * 1024 * 1024,
    });
    return { ok: true, output: stdout + stderr };
  } catch (error) {
    return { ok: false, output: `${error.stdout ?? ''}${error.stderr ?? ''}` || String(error) };
  }
}

async function check() {
  const destination = await mkdtemp(join(tmpdir(), 'inboxkit-check-'));
  try {
    const packed = await packPackages(destination);
    const results = await Promise.all(
      packed.map(async (pkg) => {
        const [publint, attw, contents] = await Promise.all([
          tool('publint', ['run', pkg.tarball, '--strict']),
          tool('attw', [pkg.tarball, '--profile', 'esm-only', '--no-definitely-typed', '--format', 'ascii']),
          tarballContents(pkg, new Map(packed.map((other) => [other.name, other.manifest]))),
        ]);
        return { pkg, publint, attw, contents };
      }),
    );
    let failed = false;
    for (const { pkg, publint, attw, contents } of results) {
      const problems = [];
      if (!publint.ok) problems.push(`publint:\n${publint.output.trim()}`);
      if (!attw.ok) problems.push(`attw:\n${attw.output.trim()}`);
      problems.push(...contents);
      if (problems.length === 0) continue;
      failed = true;
      console.error(`${pkg.name}:\n  ${problems.join('\n').replaceAll('\n', '\n  ')}`);
    }
    if (!failed)
      console.log(`packages: ${packed.map((pkg) => pkg.name).join(', ')} pass publint, attw and the tarball checks`);
    return failed ? 1 : 0;
  } finally {
    await rm(destination, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === (await import('node:fs')).realpathSync(process.argv[1])) {
  const [command] = process.argv.slice(2);
  if (command !== 'check') {
    console.error('usage: node scripts/packages.mjs check');
    process.exit(2);
  }
  process.exit(await check());
}
