// Runs the built `inboxkit` bin as a process, the way an operator does.
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../dist/bin.js', import.meta.url));

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** A running `inboxkit`: its process, its output so far, and its end. */
export interface CliProcess {
  readonly child: ChildProcess;
  readonly stdout: () => string;
  readonly done: Promise<CliResult>;
}

/** Starts `inboxkit <args>` with only the given environment (no DATABASE_URL etc. inherited). */
export function startCli(args: readonly string[], env: Record<string, string> = {}): CliProcess {
  const child = spawn(process.execPath, ['--disable-warning=TimeoutNegativeWarning', BIN, ...args], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  const done = new Promise<CliResult>((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return { child, stdout: () => stdout, done };
}

export function runCli(args: readonly string[], env: Record<string, string> = {}): Promise<CliResult> {
  return startCli(args, env).done;
}

/** The one line a failing command writes on stderr. */
export function oneLine(result: CliResult): string {
  const lines = result.stderr.trimEnd().split('\n');
  if (lines.length !== 1) throw new Error(`expected one line on stderr, got:\n${result.stderr}`);
  return lines[0] ?? '';
}

/**
 * Runs `inboxkit <args>` on a pseudo-terminal (util-linux `script`), as an operator at a
 * terminal does: a confirmation is asked, a progress bar drawn. `answer` is typed once the
 * output shows `prompt`.
 */
export function runInTerminal(
  args: readonly string[],
  env: Record<string, string>,
  answer?: { readonly prompt: string; readonly input: string },
): Promise<CliResult> {
  const quote = (word: string) => `'${word.replaceAll("'", `'\\''`)}'`;
  const command = [process.execPath, '--disable-warning=TimeoutNegativeWarning', BIN, ...args].map(quote).join(' ');
  const child = spawn('script', ['-qec', command, '/dev/null'], {
    env: { PATH: process.env.PATH ?? '', TERM: 'xterm', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let answered = false;
  child.stdout?.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
    if (answer !== undefined && !answered && stdout.includes(answer.prompt)) {
      answered = true;
      child.stdin?.write(answer.input);
    }
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  return new Promise((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}
