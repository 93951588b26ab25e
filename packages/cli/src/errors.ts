/**
 * Errors of the command line, each with a stable `code` and the exit code it ends the
 * process with: 1 for a failure (not found, unreachable service, refused), 2 for a usage
 * error (a bad flag or argument, a confirmation that cannot be asked).
 */
export class CliError extends Error {
  readonly code: string;
  readonly exitCode: 1 | 2;

  constructor(code: string, message: string, exitCode: 1 | 2 = 1, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.exitCode = exitCode;
  }
}

/** A bad flag, argument or combination of them: exit code 2. */
export class UsageError extends CliError {
  constructor(message: string) {
    super('INBOXKIT_CLI_USAGE', message, 2);
  }
}

/** What was asked for does not exist (a key, a consumer, a queue, a topic): exit code 1. */
export class NotFoundError extends CliError {
  constructor(message: string) {
    super('INBOXKIT_CLI_NOT_FOUND', message, 1);
  }
}

/** A service (Postgres, Kafka, RabbitMQ) did not answer: exit code 1. */
export class UnreachableError extends CliError {
  constructor(message: string, cause: unknown) {
    super('INBOXKIT_CLI_UNREACHABLE', message, 1, { cause });
  }
}

/** One line saying what went wrong, whatever was thrown (an AggregateError of a failed connect has no message of its own). */
export function describeError(error: unknown): string {
  if (error instanceof AggregateError && error.message === '') {
    const first = error.errors[0];
    return first === undefined ? 'unknown error' : describeError(first);
  }
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    const message = error.message.length > 0 ? error.message : typeof code === 'string' ? code : error.name;
    return message.split('\n')[0] ?? message;
  }
  return String(error);
}
