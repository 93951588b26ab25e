import { ConfigurationError, toError } from './errors.js';
import type { InboxEventName, InboxListener } from './events.js';
import type { TransactionFence } from './fence.js';
import { InboxContext, partitionLockKey, unavailable } from './inbox-context.js';
import { checkMessageId, checkPayload, type InboxMessage } from './inbox-message.js';
import { compileInboxOptions, type InboxConfig, type InboxOptions } from './inbox-options.js';
import type {
  BatchHandler,
  BatchOptions,
  BatchResult,
  MessageHandler,
  ProcessOptions,
  PurgeOptions,
  PurgeResult,
  StoredMessage,
} from './inbox-types.js';
import type { ConflictOutcome, DeadLetterOutcome, ProcessOutcome } from './outcome.js';
import { processBatch, processBulk } from './process-batch.js';
import { processMessage } from './process-message.js';
import type { QueryRunner } from './sql/executor.js';
import { storableJson } from './storable.js';
import { InboxTelemetry, type TelemetryHost } from './telemetry/inbox-telemetry.js';

export type {
  BatchHandler,
  BatchOptions,
  BatchResult,
  HandlerContext,
  MessageHandler,
  ProcessOptions,
  PurgeOptions,
  PurgeResult,
  StoredMessage,
} from './inbox-types.js';

/** Each inbox's compiled options, for the adapters (`inboxConfig`), not on the public class. */
const configs = new WeakMap<Inbox<unknown>, InboxConfig<unknown>>();

/**
 * The options an inbox was created with, as checked and compiled (adapters read the id
 * limit, the logger and the tables from them). On `@inboxkit/core/adapter`.
 */
export function inboxConfig<DB>(inbox: Inbox<DB>): InboxConfig<DB> {
  const config = configs.get(inbox as Inbox<unknown>);
  if (config === undefined) {
    throw new ConfigurationError('Expected an inbox made by createInbox({ db, consumer }).');
  }
  return config as InboxConfig<DB>;
}

/** Each inbox's telemetry, for the adapters' spans (`inboxTelemetry`). */
const telemetries = new WeakMap<Inbox<unknown>, InboxTelemetry>();

/**
 * The inbox's OpenTelemetry side, for adapters: the process spans of the messages they
 * hand to it (docs/telemetry.md). On `@inboxkit/core/adapter`.
 */
export function inboxTelemetry<DB>(inbox: Inbox<DB>): InboxTelemetry {
  const telemetry = telemetries.get(inbox as Inbox<unknown>);
  if (telemetry === undefined) {
    throw new ConfigurationError('Expected an inbox made by createInbox({ db, consumer }).');
  }
  return telemetry;
}

/**
 * Creates an inbox: the store that makes a handler's effects happen once per message id
 * (the consumer name and the id are the key). The inbox holds no connections of its own
 * and needs no closing: it uses the Kysely instance it is given. Run {@link migrateInbox}
 * first; see {@link InboxOptions} for the options.
 *
 * @throws {@link ConfigurationError} (`code: 'INBOX_CONFIGURATION'`) when an option is
 * missing, unknown or invalid: no Kysely `db`, an empty `consumer`, an unknown option, a
 * `retentionMs` shorter than the longest retry span.
 *
 * @example
 * ```ts
 * import { Kysely, PostgresDialect } from 'kysely'
 * import pg from 'pg'
 * import { createInbox, migrateInbox } from '@inboxkit/core'
 *
 * const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString }) }) })
 * const { error } = await migrateInbox(db)
 * if (error) throw error
 * const inbox = createInbox({ db, consumer: 'payments' })
 *
 * const outcome = await inbox.process({ id: 'charge-42', payload: bytes }, async (trx, message) => {
 *   await trx.insertInto('charges').values({ id: message.id, amount_cents: 1200 }).execute()
 *   return { charged: true }
 * })
 * // outcome.status: 'processed' | 'duplicate' | 'conflict' | 'dead_letter' | 'retry_later'
 * ```
 */
export function createInbox<DB>(options: InboxOptions<DB>): Inbox<DB> {
  return new Inbox(compileInboxOptions(options));
}

/**
 * The inbox. Create it with {@link createInbox}. It holds no connections of its own and
 * needs no closing: it uses the Kysely instance it was given. The algorithm lives beside
 * it: `process-message.ts` (one message) and `process-batch.ts` (many), their SQL in
 * `sql/`, one statement per file.
 */
export class Inbox<DB> {
  readonly #ctx: InboxContext<DB>;
  readonly #telemetry: InboxTelemetry;

  /** @internal Use {@link createInbox}. */
  constructor(config: InboxConfig<DB>) {
    this.#ctx = new InboxContext(config);
    this.#telemetry = new InboxTelemetry(this.#ctx as unknown as TelemetryHost);
    configs.set(this as Inbox<unknown>, config as InboxConfig<unknown>);
    telemetries.set(this as Inbox<unknown>, this.#telemetry);
  }

  /** The consumer name: the first half of every key. */
  get consumer(): string {
    return this.#ctx.consumer;
  }

  /** Adds an event listener; returns a function that removes it. A throwing listener is logged, never rethrown. */
  on<E extends InboxEventName>(event: E, listener: InboxListener<E>): () => void {
    return this.#ctx.events.on(event, listener);
  }

  /** Removes an event listener. */
  /** Removes a listener added with `on`. */
  off<E extends InboxEventName>(event: E, listener: InboxListener<E>): void {
    this.#ctx.events.off(event, listener);
  }

  /**
   * Processes one message effectively once:
   *
   * 1. `BEGIN`; claim the key `(consumer, message.id)` with an insert that does nothing on
   *    conflict. A key already there makes the message a duplicate (or a conflict, when
   *    its payload fingerprint differs) and the handler does not run.
   * 2. Run the handler with the transaction; store its result; `COMMIT`.
   * 3. A handler error rolls everything back; failed attempts are retried with backoff,
   *    each a new transaction; permanent errors and exhausted retries come back as
   *    `dead_letter`. Lock contention is waited out without spending retries. A database
   *    that does not answer gives `retry_later`, never a verdict.
   *
   * Never throws for a message's sake: every outcome is a value. Only the caller's own
   * programming errors (a handler that is not a function; an `isolationLevel` other than
   * READ COMMITTED on a partitioned table, a `ConfigurationError`) and a throwing
   * `beforeAttempt` reject.
   */
  process<M extends InboxMessage, R>(
    message: M,
    handler: MessageHandler<DB, M, R>,
    options: ProcessOptions = {},
  ): Promise<ProcessOutcome<R>> {
    if (this.#telemetry.unmetered) return processMessage(this.#ctx, message, handler, options);
    return this.#telemetry.process(handler, (timed) => processMessage(this.#ctx, message, timed, options));
  }

  /**
   * Processes a batch in one transaction, with one handler call per new message.
   *
   * All keys are claimed in one statement; duplicates (also within the batch: the first
   * occurrence runs) are set aside before any handler runs. Handlers run without
   * savepoints while they succeed. When one fails, the transaction is rolled back and run
   * again with a savepoint around each message up to the first that fails: the messages
   * before it commit, it goes through {@link process} alone (with the retry policy), and
   * the rest of the batch follows, so effects commit in the order of the messages. A
   * failure that is no handler call's (a failing commit, say) runs the rest one message
   * at a time, so the culprit settles alone.
   */
  processBatch<M extends InboxMessage, R>(
    messages: readonly M[],
    handler: MessageHandler<DB, M, R>,
    options: BatchOptions = {},
  ): Promise<BatchResult<R>> {
    if (this.#telemetry.unmetered) return processBatch(this.#ctx, messages, handler, options);
    return this.#telemetry.batch(handler, (timed) => processBatch(this.#ctx, messages, timed, options));
  }

  /**
   * Processes a batch in one transaction with one handler call for all its new messages,
   * so the handler can write them in bulk (one `INSERT ... SELECT FROM unnest(...)`): the
   * fastest shape. If the bulk handler fails, the batch is run again one message at a
   * time (each a one-message array inside a savepoint) up to the first that fails, exactly
   * as {@link processBatch} does.
   */
  processBulk<M extends InboxMessage, R>(
    messages: readonly M[],
    handler: BatchHandler<DB, M, R>,
    options: BatchOptions = {},
  ): Promise<BatchResult<R>> {
    if (this.#telemetry.unmetered) return processBulk(this.#ctx, messages, handler, options);
    return this.#telemetry.batch(handler, (timed) => processBulk(this.#ctx, messages, timed, options));
  }

  /**
   * Records a dead-lettered message so that a redelivery is acked as a duplicate instead
   * of being dead-lettered again. Call it after the dead-letter publish was confirmed and
   * before acking. Nothing is recorded for a message without a valid id (one that could
   * not be a key: none, too long, holding NUL) or for a conflict (its key already holds
   * the first content). Error details are stored with NUL and lone surrogates replaced,
   * since Postgres cannot hold them.
   *
   * Only an unreachable database makes it throw: the message is already in the
   * dead-letter destination, so any other failure (a key held by another delivery past
   * `lockTimeoutMs`, say) is logged and the caller may ack; a redelivery of the same id
   * would then be handled again, never lost.
   *
   * With a `fence` (adapters: Kafka offsets stored in Postgres), it runs in a transaction
   * that locks the fence's position first: a message the position covers already is left
   * alone; otherwise the key is recorded (when the fence claims ids) and the position moved
   * past the message, in one commit, so that it is never applied again. A conflict and a
   * message without a usable id then move the position too.
   *
   * @throws {DatabaseUnavailableError} when Postgres does not answer: do not ack then.
   */
  async recordDeadLetter(
    message: InboxMessage,
    outcome: DeadLetterOutcome | ConflictOutcome,
    options: { readonly fence?: TransactionFence } = {},
  ): Promise<void> {
    const { fence } = options;
    let id: string | undefined = outcome.status === 'conflict' ? undefined : outcome.messageId;
    if (id !== undefined) {
      try {
        checkMessageId(id, this.#ctx.config.maxIdLength);
      } catch {
        id = undefined;
      }
    }
    if (fence === undefined) {
      if (id !== undefined) await this.#recordDeadLetterKey(message, outcome as DeadLetterOutcome, id);
      return;
    }
    const record = fence.claimIds && message.id === id ? id : undefined;
    try {
      // Which statement records a key (a partitioned table has its own) is decided once.
      if (record !== undefined && this.#ctx.claim === undefined) await this.#ctx.findClaim();
      await this.#ctx.config.db.transaction().execute(async (trx) => {
        const runner = trx as unknown as QueryRunner;
        if ((await fence.enter(runner, [message]))(message)) {
          await fence.leave(runner, undefined);
          return;
        }
        if (record !== undefined) {
          const [hash, detail] = this.#deadLetterRow(message, outcome as DeadLetterOutcome, record);
          await this.#ctx.recordDeadLetter(runner, this.consumer, record, hash, detail);
        }
        await fence.leave(runner, message);
      });
    } catch (thrown) {
      const error = toError(thrown);
      if ((await this.#ctx.classify(error)) === 'unavailable') throw unavailable(error);
      this.#ctx.config.logger.warn(
        { consumer: this.consumer, messageId: id, err: error },
        'inboxkit: dead letter published but its position not recorded; a redelivery would be handled again',
      );
    }
  }

  /** The key and detail a dead letter is recorded with. */
  #deadLetterRow(message: InboxMessage, outcome: DeadLetterOutcome, id: string): [Buffer | null, string] {
    const detail = storableJson({
      reason: outcome.reason,
      attempts: outcome.attempts,
      error: {
        name: outcome.error.name,
        message: outcome.error.message,
        code: (outcome.error as { code?: unknown }).code,
      },
      deadLetteredAt: new Date().toISOString(),
    });
    let hash: Buffer | null = null;
    try {
      hash = this.#ctx.fingerprint(checkPayload(message.payload, id));
    } catch {
      hash = null;
    }
    return [hash, detail];
  }

  async #recordDeadLetterKey(message: InboxMessage, outcome: DeadLetterOutcome, id: string): Promise<void> {
    const [hash, detail] = this.#deadLetterRow(message, outcome, id);
    try {
      if (this.#ctx.claim === undefined) await this.#ctx.findClaim();
      await this.#ctx.recordDeadLetter(this.#ctx.runner, this.consumer, id, hash, detail);
    } catch (thrown) {
      const error = toError(thrown);
      if ((await this.#ctx.classify(error)) === 'unavailable') throw unavailable(error);
      this.#ctx.config.logger.warn(
        { consumer: this.consumer, messageId: id, err: error },
        'inboxkit: dead letter published but not recorded; a redelivery of the same id would be handled again',
      );
    }
  }

  /** The stored key of a message id, or `undefined` when the inbox has none. */
  async find(messageId: string): Promise<StoredMessage | undefined> {
    const row = (await this.#ctx.sql.readStored(this.#ctx.runner, this.consumer, [messageId])).get(messageId);
    if (row === undefined) return undefined;
    return { messageId, status: row.status, result: row.result ?? undefined, processedAt: row.processed_at };
  }

  /**
   * Deletes this consumer's keys older than the retention window, `batchSize` at a time,
   * each delete its own short transaction. Safe to run from several processes at once: each
   * batch's transaction takes an advisory lock first, so one purger deletes at a time; a
   * purge that finds the lock taken at its first batch returns `skipped: true` at once, and
   * one that finds it taken later stops there and leaves the rest to the one holding it.
   * The lock is transaction-scoped, so purge works behind PgBouncer in transaction mode
   * (docs/pgbouncer.md). Run it on a schedule (every few minutes); see docs/retention.md.
   *
   * On a table partitioned by time (`migrateInbox(db, { partitioned })`, docs/retention.md)
   * it deletes no keys: it creates the partitions ahead and drops those whose keys are all
   * expired, one purger per table at a time (the others return `skipped: true`).
   */
  async purge(options: PurgeOptions = {}): Promise<PurgeResult> {
    const olderThanMs = options.olderThanMs ?? this.#ctx.config.retentionMs;
    const batchSize = options.batchSize ?? 1000;
    if (!Number.isFinite(olderThanMs) || olderThanMs < 0) {
      throw new ConfigurationError(`Expected \`olderThanMs\` to be a non-negative number, got ${String(olderThanMs)}.`);
    }
    if (!Number.isInteger(batchSize) || batchSize <= 0 || batchSize > 100_000) {
      throw new ConfigurationError(
        `Expected \`batchSize\` to be a whole number from 1 to 100000, got ${String(batchSize)}.`,
      );
    }
    const { db, consumer, tables } = this.#ctx.config;
    const { purge, tryPurgeLock, findClaimFunction, maintainPartitions, dropDetachedPartitions } = this.#ctx.sql;
    const lockKey = `inboxkit:purge:${tables.qualified}:${consumer}`;
    const before = new Date(Date.now() - olderThanMs);
    // One short transaction holding the purge lock, or `undefined` when another purger has it.
    const whileLeading = <T>(work: (runner: QueryRunner) => Promise<T>, key = lockKey): Promise<T | undefined> =>
      db.transaction().execute(async (trx) => {
        const runner = trx as unknown as QueryRunner;
        return (await tryPurgeLock(runner, key)) ? work(runner) : undefined;
      });
    if ((await findClaimFunction(this.#ctx.runner)).partitioned) {
      // A partitioned table: drop partitions instead of deleting keys, one maintainer per
      // table (the partitions hold every consumer's keys), then this consumer's attempts.
      const partitions = await whileLeading(
        (runner) => maintainPartitions(runner, olderThanMs),
        partitionLockKey(tables.qualified),
      );
      if (partitions !== undefined) {
        // The detached partitions are dropped apart, so that claims never wait on the unlinking.
        await whileLeading(dropDetachedPartitions, partitionLockKey(tables.qualified));
        await whileLeading((runner) => purge.purgeAttempts(runner, consumer, before));
      }
      const result = { deleted: 0, batches: 0, skipped: partitions === undefined, ...(partitions && { partitions }) };
      this.#ctx.events.emit('purged', { consumer, ...result });
      return result;
    }
    let deleted = 0;
    let batches = 0;
    for (;;) {
      const count = await whileLeading((runner) => purge.purgeBatch(runner, consumer, before, batchSize));
      if (count === undefined) break;
      batches++;
      deleted += count;
      options.onBatch?.(count);
      if (count < batchSize) {
        await whileLeading((runner) => purge.purgeAttempts(runner, consumer, before));
        break;
      }
    }
    const result = { deleted, batches, skipped: batches === 0 };
    this.#ctx.events.emit('purged', { consumer, ...result });
    return result;
  }
}
