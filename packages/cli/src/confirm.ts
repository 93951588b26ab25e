import { createInterface } from 'node:readline/promises';
import { UsageError } from './errors.js';

/**
 * Asks a yes/no question on the terminal. `--yes` answers it; without a terminal to ask
 * and without `--yes`, the command is refused (exit code 2) rather than run unconfirmed.
 */
export async function confirm(what: string, question: string, yes: boolean | undefined): Promise<boolean> {
  if (yes === true) return true;
  if (process.stdin.isTTY !== true) {
    throw new UsageError(`${what}: refused without confirmation, and there is no terminal to ask on; pass --yes.`);
  }
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(`${question} [y/N] `);
    return /^y(es)?$/i.test(answer.trim());
  } finally {
    rl.close();
  }
}
