// A project outside the workspace that installs packed packages the way a user installs them
// from the registry: `npm install` of the tarballs, which brings their declared dependencies,
// and of their declared peer dependencies from the registry, nothing else (but @types/node,
// which a TypeScript user has). A file, an export or a dependency the tarballs lack is then
// missing there too, where the workspace would have hidden it.
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { PackedPackage } from '../../../scripts/packages.mjs';
import { npmEnvironment } from '../../support/node-versions.ts';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/**
 * The compiler options a user's project for Node has (strict, Node's ESM resolution), with
 * what Node's type stripping needs (erasable syntax, type-only imports marked), and without
 * skipLibCheck: a declaration file of ours that names a type its package does not bring
 * (such as pg's, from @types/pg) fails here.
 */
const TSCONFIG = {
  compilerOptions: {
    target: 'ES2023',
    lib: ['ES2023'],
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    strict: true,
    noEmit: true,
    skipLibCheck: false,
    erasableSyntaxOnly: true,
    verbatimModuleSyntax: true,
    types: ['node'],
  },
  include: ['*.ts'],
};

export interface ScratchProject {
  readonly dir: string;
  /** The packages installed from tarballs: the one under test and the workspace packages it depends on. */
  readonly tarballs: readonly string[];
  /** The peer dependencies installed from the registry, with the ranges the tarballs declare. */
  readonly peers: Readonly<Record<string, string>>;
}

/**
 * Installs `pkg` (and the workspace packages among its dependencies, from their tarballs in
 * `packed`) with the peer dependencies they declare, optional ones included, into a new
 * folder `parent/<name>`. npm's cache (~/.npm) makes a second run quick.
 */
export async function installScratch(
  parent: string,
  pkg: PackedPackage,
  packed: readonly PackedPackage[],
): Promise<ScratchProject> {
  const byName = new Map(packed.map((p) => [p.name, p]));
  const tarballs: PackedPackage[] = [];
  const pending = [pkg];
  for (let next = pending.shift(); next !== undefined; next = pending.shift()) {
    if (tarballs.includes(next)) continue;
    tarballs.push(next);
    for (const name of Object.keys(next.manifest.dependencies ?? {})) {
      const dependency = byName.get(name);
      if (dependency !== undefined) pending.push(dependency);
    }
  }
  const peers: Record<string, string> = {};
  for (const p of tarballs) {
    for (const [name, range] of Object.entries(p.manifest.peerDependencies ?? {})) {
      if (byName.has(name)) throw new Error(`${p.name} has a workspace package, ${name}, as a peer: not handled here`);
      peers[name] ??= range;
    }
  }
  const dir = join(parent, pkg.name.replace('@', '').replace('/', '-'));
  if (!relative(ROOT, dir).startsWith('..')) throw new Error(`${dir} is inside the workspace`);
  await mkdir(dir, { recursive: true });
  const manifest = {
    name: 'inboxkit-packed-scratch',
    private: true,
    type: 'module',
    dependencies: {
      ...Object.fromEntries(tarballs.map((p) => [p.name, `file:${p.tarball}`])),
      ...peers,
      '@types/node': '^22',
    },
    // A dependency of one tarball on another (`@inboxkit/core: ^0.1.0`) takes the tarball, never the registry.
    overrides: Object.fromEntries(tarballs.map((p) => [p.name, `$${p.name}`])),
  };
  await writeFile(join(dir, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  await writeFile(join(dir, 'tsconfig.json'), `${JSON.stringify(TSCONFIG, null, 2)}\n`);
  try {
    await run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', '--prefer-offline'], {
      cwd: dir,
      env: npmEnvironment(),
      maxBuffer: 16 * 1024 * 1024,
    });
  } catch (error) {
    const { stdout = '', stderr = '' } = error as { stdout?: string; stderr?: string };
    throw new Error(`npm install of ${pkg.name} in ${dir} failed:\n${stdout}${stderr}`);
  }
  return { dir, tarballs: tarballs.map((p) => p.name), peers };
}

/**
 * Writes each of `files` (name: TypeScript source) into the project and type-checks them with
 * the workspace's TypeScript against what the project installed; resolves with tsc's output,
 * empty when they check.
 */
export async function typeCheck(project: ScratchProject, files: Readonly<Record<string, string>>): Promise<string> {
  for (const [name, code] of Object.entries(files)) await writeFile(join(project.dir, name), code);
  try {
    await run(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', project.dir], {
      cwd: project.dir,
      maxBuffer: 16 * 1024 * 1024,
    });
    return '';
  } catch (error) {
    const { stdout = '', stderr = '' } = error as { stdout?: string; stderr?: string };
    return `${stdout}${stderr}`.trim() || String(error);
  }
}
