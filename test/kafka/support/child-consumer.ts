// Starts test/kafka/fixtures/consumer-process.ts as a separate Node process (types stripped,
// '@inboxkit/kafka' from packages/kafka/dist: build first), so a test can SIGKILL it.
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const SCRIPT = fileURLToPath(new URL('../fixtures/consumer-process.ts', import.meta.url));

/** What the child reads from INBOXKIT_CHILD (see the fault switches in consumer-process.ts). */
export interface ChildConfig {
  brokers: string[];
  databaseUrl: string;
  topic: string;
  groupId: string;
  consumer: string;
  mode: 'eachMessage' | 'eachBatch';
  maxBatchSize?: number;
  crashLoopLimit?: number;
  killOnHandlerId?: string;
  killAfterProcessed?: number;
  delayMs?: number;
  /** The consumer's session timeout in ms (6000 when unset). */
  sessionTimeout?: number;
  /** The inbox's `lockTimeoutMs` (its default when unset). */
  lockTimeoutMs?: number;
  /** The adapter's `dedup` option (`'ids'` when unset). */
  dedup?: 'ids' | 'offsets' | 'offsets+ids';
  /**
   * The first handler call writes its rows, prints {"event":"in-transaction"} and waits this
   * long before returning (inside its open transaction): the test stops the process there.
   */
  stallFirstCallMs?: number;
}

export interface ChildConsumer {
  readonly process: ChildProcess;
  /** Resolves once the consumer runs (joined its group). */
  readonly running: Promise<void>;
  /** Resolves with the exit code, or the signal that ended it. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Everything it wrote to stderr. */
  stderr(): string;
  /** Everything it wrote to stdout (its JSON event lines). */
  stdout(): string;
  kill(signal?: NodeJS.Signals): void;
}

export function startChildConsumer(config: ChildConfig): ChildConsumer {
  const child = spawn(process.execPath, [SCRIPT], {
    env: { ...process.env, INBOXKIT_CHILD: JSON.stringify(config) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    err += chunk;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  let out = '';
  const running = new Promise<void>((resolve, reject) => {
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
      if (out.includes('"event":"running"')) resolve();
    });
    void exited.then(({ code, signal }) =>
      reject(new Error(`child consumer exited before running (${signal ?? code}): ${err.slice(-2000)}`)),
    );
  });
  running.catch(() => {});
  return {
    process: child,
    running,
    exited,
    stderr: () => err,
    stdout: () => out,
    kill: (signal = 'SIGKILL') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
  };
}
