// Node binaries of the versions the packages promise to run on (package.json "engines": >= 22),
// for tests that run the packed packages on each. The running Node serves when it is that
// major version; another one is installed from the npm registry's `node` package into
// .tools/node<major> (git-ignored) once, as scripts/toolchain.sh installs Node 24, and reused.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** The path of a Node binary of `major` version (installing it under .tools/ the first time). */
export async function nodeBinary(major: number): Promise<string> {
  if (majorOf(process.versions.node) === major) return process.execPath;
  const prefix = join(ROOT, '.tools', `node${major}`);
  const binary = join(prefix, 'node_modules', '.bin', 'node');
  if (!existsSync(binary)) {
    mkdirSync(prefix, { recursive: true });
    writeFileSync(join(prefix, 'package.json'), '{"private":true}\n');
    await run('npm', ['install', '--prefix', prefix, '--no-audit', '--no-fund', '--loglevel=error', `node@${major}`], {
      env: npmEnvironment(),
    });
  }
  const { stdout } = await run(binary, ['-p', 'process.versions.node']);
  const found = stdout.trim();
  if (majorOf(found) !== major) throw new Error(`${binary} is Node ${found}, not Node ${major}`);
  return binary;
}

/** The environment for npm: this process's Node first on PATH, so npm does not run on an older one. */
export function npmEnvironment(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    PATH: `${join(process.execPath, '..')}:${process.env.PATH ?? ''}`,
    npm_config_update_notifier: 'false',
  };
}

function majorOf(version: string): number {
  return Number(version.split('.')[0]);
}
