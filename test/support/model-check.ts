import { spawn } from 'node:child_process';

/** What scripts/model-check.sh printed, and its exit code. */
export interface ModelCheckResult {
  readonly code: number | null;
  readonly output: string;
}

/**
 * Runs scripts/model-check.sh on the checks whose model or name contains `filter` ("inbox",
 * "outbox"). A machine without spin (that cannot install it) gets a non-zero exit code.
 */
export function runModelCheck(filter: string): Promise<ModelCheckResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['scripts/model-check.sh', filter], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk) => {
      output += chunk;
    });
    child.stderr.on('data', (chunk) => {
      output += chunk;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

/** The summary line of one check, e.g. `ok   real-safety  verified: 0 errors, ...`. */
export function checkLine(result: ModelCheckResult, name: string): string {
  const found = result.output.split('\n').find((text) => new RegExp(`^(ok|FAIL) +${name} `).test(text));
  if (found === undefined) throw new Error(`no line for check ${name} in:\n${result.output}`);
  return found;
}
