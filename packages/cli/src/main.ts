import { hasCode } from '@inboxkit/core';
import { Command, CommanderError } from 'commander';
import { registerDlq } from './commands/dlq.js';
import { registerFind } from './commands/find.js';
import { registerForget } from './commands/forget.js';
import { registerMigrate } from './commands/migrate.js';
import { registerOutbox } from './commands/outbox.js';
import { registerPurge } from './commands/purge.js';
import { registerStatus } from './commands/status.js';
import { CliError, describeError } from './errors.js';

/** The program, with every command; exported for the tests of its help text. */
export function createProgram(): Command {
  const program = new Command('inboxkit')
    .description('Operate the inboxkit Postgres inbox, its outbox and its dead letters')
    .option('--database-url <url>', 'Postgres connection string (default: $DATABASE_URL)')
    .option('--schema <name>', 'schema of the inbox tables', 'public')
    .option('--table <name>', 'name of the inbox table', 'processed_messages')
    .option('--outbox-schema <name>', 'schema of the outbox table (default: --schema)')
    .option('--outbox-table <name>', 'name of the outbox table', 'outbox')
    .option('--brokers <list>', 'Kafka brokers, comma separated (default: $KAFKA_BROKERS)')
    .option('--amqp-url <url>', 'RabbitMQ URL (default: $AMQP_URL)')
    .showHelpAfterError(false)
    .exitOverride();
  registerMigrate(program);
  registerStatus(program);
  registerFind(program);
  registerForget(program);
  registerPurge(program);
  registerDlq(program);
  registerOutbox(program);
  for (const command of [program, ...allCommands(program)]) command.exitOverride();
  return program;
}

function allCommands(command: Command): Command[] {
  return command.commands.flatMap((c) => [c, ...allCommands(c)]);
}

/**
 * Runs the command line and returns the exit code: 0 done, 1 failed, 2 a usage error.
 * Every failure is one line on stderr.
 */
export async function main(argv: readonly string[]): Promise<number> {
  const program = createProgram();
  try {
    await program.parseAsync(argv as string[]);
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Commander printed its message already; help and version are no error.
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') return 0;
      return 2;
    }
    process.stderr.write(`inboxkit: ${describeError(error)}\n`);
    if (error instanceof CliError) return error.exitCode;
    // Core refuses a bad name or id before any statement: a usage error.
    if (hasCode(error, 'INBOX_CONFIGURATION') || hasCode(error, 'INBOX_INVALID_MESSAGE')) return 2;
    return 1;
  }
}
