import type { IsolationLevel, Kysely } from 'kysely';
import { ConfigurationError } from './errors.js';
import { type InboxTables, inboxTables } from './identifiers.js';
import { MAX_CONSUMER_BYTES, MAX_ID_BYTES } from './inbox-message.js';
import { type InboxLogger, silentLogger } from './logger.js';
import { bool, checkLogger, positiveInteger } from './option-checks.js';
import { compileRetryPolicy, type RetryOptions, type RetryPolicy, retrySpanMs } from './retry-policy.js';
import { compileTelemetryOptions, type TelemetryConfig, type TelemetryOptions } from './telemetry/telemetry-options.js';

/**
 * Isolation levels the inbox accepts; the insert-first algorithm is correct under each on a
 * plain table. A table partitioned by time is claimed only under READ COMMITTED
 * (docs/retention.md).
 */
export type InboxIsolationLevel = Extract<IsolationLevel, 'read committed' | 'repeatable read' | 'serializable'>;

/**
 * Options of {@link createInbox}. Every option is checked once, at construction; a wrong
 * one throws {@link ConfigurationError} naming it.
 */
export interface InboxOptions<DB> {
  /** A Kysely instance over the PostgreSQL dialect (pg). The inbox never destroys it. */
  readonly db: Kysely<DB>;
  /**
   * The name of the consuming service or handler. Keys are `(consumer, message id)`: the
   * same message handled by two consumers is processed once by each.
   *
   * @example 'payments.charge-captured'
   */
  readonly consumer: string;
  /** Schema of the inbox tables. Default `'public'`. */
  readonly schema?: string;
  /** Name of the inbox table. Default `'processed_messages'`. */
  readonly table?: string;
  /**
   * Isolation level of every transaction. Default `'read committed'`, the only one a table
   * partitioned by time accepts (another makes `process` reject with `ConfigurationError`).
   */
  readonly isolationLevel?: InboxIsolationLevel;
  /**
   * How long a delivery waits for another in-flight delivery of the same id, in
   * milliseconds, before it is handed back as `retry_later`. Applies to the handler's own
   * statements too (it is the transaction's `lock_timeout`). Default `5000`.
   */
  readonly lockTimeoutMs?: number;
  /**
   * Longest accepted message id, in characters. Default `255`, at most `2000`; an id is
   * also refused past 2,000 bytes of UTF-8 (what a Postgres index entry can hold).
   */
  readonly maxIdLength?: number;
  /**
   * Keep a SHA-256 fingerprint of each payload so that an id reused for different content
   * is reported as a conflict instead of a duplicate. Default `true`.
   */
  readonly fingerprintPayloads?: boolean;
  /**
   * Keep what the handler returns (as JSON) so a redelivery gets it back. Costs one
   * statement per message that returns something other than `undefined`. Default `true`.
   */
  readonly storeResults?: boolean;
  /**
   * Look the key up before opening a transaction, so a duplicate costs one statement
   * instead of a transaction of three. Every new message pays that look-up (one more round
   * trip), so turn it on where redeliveries are frequent (more than about a third of the
   * traffic: a duplicate saves two round trips, a new message pays one). The insert-first transaction still decides for keys not found. Default `false`.
   */
  readonly duplicateFastPath?: boolean;
  /**
   * Longest time one handler attempt may take, in milliseconds. When it runs out, the
   * handler's `context.signal` is aborted (pass it to `fetch` and other outside calls), the
   * statement the attempt is running in Postgres is cancelled, and once the handler returns
   * or throws, its transaction is rolled back and the attempt fails with
   * `HandlerTimeoutError` (retried, then dead-lettered). A handler that ignores the signal
   * while it waits on something else is still waited for. Keep it well under kafkajs'
   * `sessionTimeout` and RabbitMQ's `consumer_timeout`. Default: no limit.
   */
  readonly handlerTimeoutMs?: number;
  /** In-process retries of a failing handler. See {@link RetryOptions}. */
  readonly retry?: RetryOptions;
  /**
   * How long keys are kept, in milliseconds: `purge()` deletes older ones. Must be longer
   * than the broker's redelivery window and than the retry span. Default 7 days.
   */
  readonly retentionMs?: number;
  /**
   * How many times a redelivered message may start its handler without finishing (the
   * process crashed each time) before it is dead-lettered without running. Default `3`.
   */
  readonly crashLoopLimit?: number;
  /** A pino-compatible logger. Default: silent. */
  readonly logger?: InboxLogger;
  /**
   * OpenTelemetry spans and metrics, made when `@opentelemetry/api` is installed: `false`
   * for none, or {@link TelemetryOptions}. Default `true` (a no-op until an SDK is
   * registered). See docs/telemetry.md.
   */
  readonly telemetry?: boolean | TelemetryOptions;
}

/** The options, checked and compiled once, handed down the hot path. */
export interface InboxConfig<DB> {
  readonly db: Kysely<DB>;
  readonly consumer: string;
  readonly tables: InboxTables;
  readonly isolationLevel: InboxIsolationLevel;
  readonly lockTimeoutMs: number;
  readonly maxIdLength: number;
  readonly fingerprintPayloads: boolean;
  readonly storeResults: boolean;
  readonly duplicateFastPath: boolean;
  readonly handlerTimeoutMs: number | undefined;
  readonly retry: RetryPolicy;
  readonly retentionMs: number;
  readonly crashLoopLimit: number;
  readonly logger: InboxLogger;
  readonly telemetry: TelemetryConfig;
}

const KNOWN = new Set([
  'db',
  'consumer',
  'schema',
  'table',
  'isolationLevel',
  'lockTimeoutMs',
  'maxIdLength',
  'fingerprintPayloads',
  'storeResults',
  'duplicateFastPath',
  'handlerTimeoutMs',
  'retry',
  'retentionMs',
  'crashLoopLimit',
  'logger',
  'telemetry',
]);
const ISOLATION_LEVELS = new Set<string>(['read committed', 'repeatable read', 'serializable']);
export const DAY_MS = 24 * 60 * 60 * 1000;
/** `retentionMs` when none is given: 7 days. */
export const DEFAULT_RETENTION_MS = 7 * DAY_MS;

export function compileInboxOptions<DB>(options: InboxOptions<DB>): InboxConfig<DB> {
  if (typeof options !== 'object' || options === null) {
    throw new ConfigurationError('createInbox() needs an options object: createInbox({ db, consumer }).');
  }
  for (const key of Object.keys(options)) {
    if (!KNOWN.has(key)) {
      throw new ConfigurationError(`Unknown option \`${key}\`; known options: ${[...KNOWN].join(', ')}.`);
    }
  }
  const db = options.db as unknown;
  if (
    typeof db !== 'object' ||
    db === null ||
    typeof (db as { transaction?: unknown }).transaction !== 'function' ||
    typeof (db as { executeQuery?: unknown }).executeQuery !== 'function'
  ) {
    throw new ConfigurationError(
      'Expected `db` to be a Kysely instance (new Kysely({ dialect: new PostgresDialect(...) })).',
    );
  }
  if ((db as { isTransaction?: unknown }).isTransaction === true) {
    throw new ConfigurationError('Expected `db` to be a Kysely instance, not a transaction: the inbox opens its own.');
  }
  if (typeof options.consumer !== 'string' || options.consumer.trim().length === 0) {
    throw new ConfigurationError(
      'Expected `consumer` to be a non-empty string naming the consuming service, e.g. consumer: "payments.charges".',
    );
  }
  if (Buffer.byteLength(options.consumer, 'utf8') > MAX_CONSUMER_BYTES || options.consumer.includes('\u0000')) {
    throw new ConfigurationError(
      `Expected \`consumer\` to be at most ${MAX_CONSUMER_BYTES} bytes of UTF-8 without NUL characters: it is half of every key in a Postgres index.`,
    );
  }
  const isolationLevel = options.isolationLevel ?? 'read committed';
  if (!ISOLATION_LEVELS.has(isolationLevel)) {
    throw new ConfigurationError(
      `Expected \`isolationLevel\` to be one of ${[...ISOLATION_LEVELS].join(', ')}; got ${JSON.stringify(isolationLevel)}.`,
    );
  }
  const retry = compileRetryPolicy(options.retry);
  const config: InboxConfig<DB> = {
    db: options.db,
    consumer: options.consumer,
    tables: inboxTables(options.schema, options.table),
    isolationLevel,
    lockTimeoutMs: positiveInteger('lockTimeoutMs', options.lockTimeoutMs, 5000),
    maxIdLength: positiveInteger('maxIdLength', options.maxIdLength, 255, MAX_ID_BYTES),
    fingerprintPayloads: bool('fingerprintPayloads', options.fingerprintPayloads, true),
    storeResults: bool('storeResults', options.storeResults, true),
    duplicateFastPath: bool('duplicateFastPath', options.duplicateFastPath, false),
    handlerTimeoutMs:
      options.handlerTimeoutMs === undefined
        ? undefined
        : positiveInteger('handlerTimeoutMs', options.handlerTimeoutMs, 0, 2_147_483_647),
    retry,
    retentionMs: positiveInteger('retentionMs', options.retentionMs, DEFAULT_RETENTION_MS),
    crashLoopLimit: positiveInteger('crashLoopLimit', options.crashLoopLimit, 3, 1000),
    logger: checkLogger(options.logger) ?? silentLogger,
    telemetry: compileTelemetryOptions(options.telemetry),
  };
  const span = retrySpanMs(retry) + config.lockTimeoutMs;
  if (config.retentionMs <= span) {
    throw new ConfigurationError(
      `\`retentionMs\` (${config.retentionMs} ms) is shorter than the longest retry span (${Math.ceil(span)} ms with these retry options): a key could be purged while its message is still being retried. Raise retentionMs (default 7 days) or shorten the retries.`,
    );
  }
  return Object.freeze(config);
}
