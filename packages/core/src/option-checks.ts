import { ConfigurationError } from './errors.js';
import type { InboxLogger } from './logger.js';

// Checks of single options, shared by core and the adapters so that every package words
// its configuration errors alike: each names the option and says what it expected.

/** A positive whole number, or `fallback` when absent. */
export function positiveInteger(
  option: string,
  value: unknown,
  fallback: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    throw new ConfigurationError(`Expected \`${option}\` to be a positive whole number, got ${String(value)}.`);
  }
  if (value > max) {
    throw new ConfigurationError(`Expected \`${option}\` to be at most ${max}, got ${value}.`);
  }
  return value;
}

/** A boolean, or `fallback` when absent. */
export function bool(option: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') {
    throw new ConfigurationError(`Expected \`${option}\` to be a boolean, got ${typeof value}.`);
  }
  return value;
}

/** A pino-compatible logger, or `undefined` when absent. */
export function checkLogger(logger: InboxLogger | undefined): InboxLogger | undefined {
  if (logger === undefined) return undefined;
  for (const method of ['debug', 'info', 'warn', 'error'] as const) {
    if (typeof (logger as Partial<InboxLogger>)[method] !== 'function') {
      throw new ConfigurationError(`Expected \`logger\` to have a ${method}() method (a pino logger fits).`);
    }
  }
  return logger;
}
