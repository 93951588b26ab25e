import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const SCRIPT = fileURLToPath(new URL('./consumer-child.ts', import.meta.url));
const PACKAGE = fileURLToPath(new URL('../../../packages/rabbitmq/', import.meta.url));

/** A consumer running in a process of its own (see consumer-child.ts). */
export interface ChildConsumer {
  readonly child: ChildProcess;
  /** Resolves when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Everything it printed so far. */
  output(): string;
  /** Resolves once it printed `ready`; rejects if it exits first. */
  ready(): Promise<void>;
}

/**
 * Starts consumer-child.ts with the test's Node. The child imports the built package, so
 * a `dist` older than `src` is refused with a clear message instead of testing old code.
 */
export function startChildConsumer(env: Record<string, string>): ChildConsumer {
  assertBuilt();
  const child = spawn(process.execPath, [SCRIPT], {
    env: { ...process.env, ...env },
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
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  return {
    child,
    exited,
    output: () => output,
    ready: async () => {
      const deadline = Date.now() + 30_000;
      while (!/^ready$/m.test(output)) {
        if (child.exitCode !== null || child.signalCode !== null) {
          throw new Error(`consumer child exited before it was ready:\n${output}`);
        }
        if (Date.now() > deadline) throw new Error(`consumer child not ready after 30 s:\n${output}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    },
  };
}

/** Stops a child: SIGTERM (graceful close) and waits; SIGKILL after `graceMs`. */
export async function stopChild(consumer: ChildConsumer, graceMs = 10_000): Promise<void> {
  if (consumer.child.exitCode !== null || consumer.child.signalCode !== null) return;
  consumer.child.kill('SIGTERM');
  const timer = setTimeout(() => consumer.child.kill('SIGKILL'), graceMs);
  await consumer.exited;
  clearTimeout(timer);
}

let checked = false;

function assertBuilt(): void {
  if (checked) return;
  const src = Math.max(
    0,
    ...readdirSync(`${PACKAGE}src`)
      .filter((file) => file.endsWith('.ts'))
      .map((file) => statSync(`${PACKAGE}src/${file}`).mtimeMs),
  );
  let built = 0;
  try {
    built = statSync(`${PACKAGE}tsconfig.tsbuildinfo`).mtimeMs; // written by every build of the package
  } catch {
    built = 0;
  }
  if (built < src) {
    throw new Error('packages/rabbitmq was changed since its last build: run `pnpm run build` before these tests.');
  }
  checked = true;
}
