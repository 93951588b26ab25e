import { sql, type Transaction } from 'kysely';
import pRetry, { AbortError } from 'p-retry';
import {
  databaseFailure,
  type FailureKind,
  isLockTimeout,
  isNonRetryable,
  isTransientDatabaseError,
} from './error-classification.js';
import {
  ConfigurationError,
  CrashLoopError,
  DatabaseUnavailableError,
  LockTimeoutError,
  PayloadConflictError,
  toError,
} from './errors.js';
import {
  type DeadLetterReason,
  InboxEmitter,
  type InboxEventName,
  type InboxListener,
  type RetryLaterReason,
  type StoredStatus,
} from './events.js';
import { fingerprint } from './fingerprint.js';
import { runTimed, type TimedCall } from './handler-timeout.js';
import { checkMessageId, checkPayload, type InboxMessage } from './inbox-message.js';
import { compileInboxOptions, type InboxConfig, type InboxOptions } from './inbox-options.js';
import type {
  ConflictOutcome,
  DeadLetterOutcome,
  DuplicateOutcome,
  ProcessedOutcome,
  ProcessOutcome,
  RetryLaterOutcome,
} from './outcome.js';
import { compileClaimMessage } from './sql/claim-message.js';
import { compileClaimMessages } from './sql/claim-messages.js';
import type { QueryRunner, StoredRow } from './sql/executor.js';
import { compilePurgeExpired, compileTryPurgeLock } from './sql/purge-expired.js';
import { compileReadStored } from './sql/read-stored.js';
import { compileClearAttempts, compileRecordAttempt } from './sql/record-attempt.js';
import { compileRecordDeadLetter } from './sql/record-dead-letter.js';
import { compileReleaseMessages } from './sql/release-messages.js';
import { compileStoreResults, resultJson } from './sql/store-results.js';
import { SuspectGate } from './suspect-gate.js';

/** What a handler is told besides its transaction and message. */
export interface HandlerContext {
  /** 1 for the first attempt, then 2, 3... (each attempt is a new transaction). */
  readonly attempt: number;
  /** The inbox's consumer name. */
  readonly consumer: string;
  /**
   * Aborted (with a `HandlerTimeoutError`) when the attempt runs past `handlerTimeoutMs`.
   * Pass it to outside calls, e.g. `fetch(url, { signal })`. Never aborted without a limit.
   */
  readonly signal: AbortSignal;
}

/** Runs one handler call of a batch under `handlerTimeoutMs`, with its context. */
type TimedHandlerCall = <T>(messageId: string, call: (context: HandlerContext) => Promise<T> | T) => Promise<T>;

/**
 * Handles one message. Every write made through `trx` commits together with the
 * message's key, or not at all. What it returns is stored (JSON) and handed to
 * redeliveries as the duplicate's `result`.
 */
export type MessageHandler<DB, M extends InboxMessage, R> = (
  trx: Transaction<DB>,
  message: M,
  context: HandlerContext,
) => Promise<R> | R;

/**
 * Handles all of a batch's *new* messages at once (duplicates already removed), typically
 * with one bulk statement. May return one result per message, in order.
 */
export type BatchHandler<DB, M extends InboxMessage, R> = (
  trx: Transaction<DB>,
  messages: readonly M[],
  context: HandlerContext,
) => Promise<readonly R[] | undefined | void> | readonly R[] | undefined | void;

/** Options of {@link Inbox.process}. */
export interface ProcessOptions {
  /**
   * The delivery may be a repeat of one that crashed the process (a RabbitMQ redelivery,
   * the first new Kafka messages after an assignment). Its attempt is counted in Postgres
   * before the handler runs, it runs alone, and past `crashLoopLimit` it is dead-lettered
   * without running. Adapters set this; the hot path never does.
   */
  readonly suspect?: boolean;
}

/** Options of {@link Inbox.processBatch} and {@link Inbox.processBulk}. */
export interface BatchOptions {
  /**
   * Called before each handler call of the batch (and before a bulk handler): adapters
   * heartbeat here and check that they still own the batch. If it throws, the batch's
   * transaction is rolled back and the call rejects with that error.
   */
  readonly beforeMessage?: () => Promise<void> | void;
}

/** What became of each message of a batch, in the order they were given. */
export interface BatchResult<R> {
  readonly outcomes: ProcessOutcome<R>[];
}

/** Options of {@link Inbox.purge}. */
export interface PurgeOptions {
  /** Delete keys older than this many milliseconds. Default: the inbox's `retentionMs`. */
  readonly olderThanMs?: number;
  /** Keys deleted per statement (each its own short transaction). Default `1000`. */
  readonly batchSize?: number;
}

/** What {@link Inbox.purge} did. */
export interface PurgeResult {
  /** Keys deleted. */
  readonly deleted: number;
  /** Delete statements run. */
  readonly batches: number;
  /** True when another process was purging and this call did nothing. */
  readonly skipped: boolean;
}

/** A stored key, as {@link Inbox.find} returns it. */
export interface StoredMessage {
  readonly messageId: string;
  readonly status: StoredStatus;
  readonly result: unknown;
  readonly processedAt: Date;
}

/** A message of a batch after validation. */
interface Entry<M> {
  readonly index: number;
  readonly id: string;
  readonly hash: Buffer | null;
  readonly message: M;
}

/** Thrown inside an optimistic batch transaction to roll it back when one handler failed. */
class OptimisticBatchFailed extends Error {}

/** Errors in the batch's own statements that are to be handed back, not retried. */
class BatchAbandoned extends Error {
  readonly reason: RetryLaterReason;
  readonly error: Error;

  constructor(reason: RetryLaterReason, error: Error) {
    super(error.message);
    this.reason = reason;
    this.error = error;
  }
}

const SAVEPOINT = sql.raw('SAVEPOINT inboxkit_message');
const RELEASE_SAVEPOINT = sql.raw('RELEASE SAVEPOINT inboxkit_message');
const ROLLBACK_TO_SAVEPOINT = sql.raw('ROLLBACK TO SAVEPOINT inboxkit_message');
const PROBE = sql.raw('SELECT 1');

/**
 * Creates an inbox: the store that makes a handler's effects happen once per message id.
 *
 * @example
 * ```ts
 * import { Kysely, PostgresDialect } from 'kysely'
 * import pg from 'pg'
 * import { createInbox, migrateInbox } from '@inboxkit/core'
 *
 * const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString }) }) })
 * await migrateInbox(db)
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
 * needs no closing: it uses the Kysely instance it was given.
 */
export class Inbox<DB> {
  /** The options as checked and compiled at construction. */
  readonly config: InboxConfig<DB>;
  readonly #events: InboxEmitter;
  readonly #gate = new SuspectGate();
  readonly #claimMessage;
  readonly #claimMessages;
  readonly #readStored;
  readonly #storeResults;
  readonly #releaseMessages;
  readonly #recordDeadLetter;
  readonly #recordAttempt;
  readonly #clearAttempts;
  readonly #purge;
  readonly #purgeLock;

  /** @internal Use {@link createInbox}. */
  constructor(config: InboxConfig<DB>) {
    this.config = config;
    this.#events = new InboxEmitter(config.logger);
    const { tables, lockTimeoutMs } = config;
    this.#claimMessage = compileClaimMessage(tables, lockTimeoutMs);
    this.#claimMessages = compileClaimMessages(tables, lockTimeoutMs);
    this.#readStored = compileReadStored(tables);
    this.#storeResults = compileStoreResults(tables);
    this.#releaseMessages = compileReleaseMessages(tables);
    this.#recordDeadLetter = compileRecordDeadLetter(tables);
    this.#recordAttempt = compileRecordAttempt(tables);
    this.#clearAttempts = compileClearAttempts(tables);
    this.#purge = compilePurgeExpired(tables);
    this.#purgeLock = compileTryPurgeLock();
  }

  /** The consumer name: the first half of every key. */
  get consumer(): string {
    return this.config.consumer;
  }

  /** Adds an event listener; returns a function that removes it. A throwing listener is logged, never rethrown. */
  on<E extends InboxEventName>(event: E, listener: InboxListener<E>): () => void {
    return this.#events.on(event, listener);
  }

  /** Removes an event listener. */
  off<E extends InboxEventName>(event: E, listener: InboxListener<E>): void {
    this.#events.off(event, listener);
  }

  // ---------------------------------------------------------------------------------------
  // One message (DESIGN.md section 3)
  // ---------------------------------------------------------------------------------------

  /**
   * Processes one message effectively once:
   *
   * 1. `BEGIN`; claim the key `(consumer, message.id)` with an insert that does nothing on
   *    conflict. A key already there makes the message a duplicate (or a conflict, when
   *    its payload fingerprint differs) and the handler does not run.
   * 2. Run the handler with the transaction; store its result; `COMMIT`.
   * 3. A handler error rolls everything back; transient errors are retried with backoff,
   *    each attempt a new transaction; permanent ones and exhausted retries come back as
   *    `dead_letter`. An unreachable database comes back as `retry_later`, never as done.
   *
   * Never throws for a message's sake: every outcome is a value. Only the caller's own
   * programming errors (a handler that is not a function) throw.
   */
  async process<M extends InboxMessage, R>(
    message: M,
    handler: MessageHandler<DB, M, R>,
    options: ProcessOptions = {},
  ): Promise<ProcessOutcome<R>> {
    if (typeof handler !== 'function') {
      throw new ConfigurationError('inbox.process(message, handler): `handler` must be a function.');
    }
    const started = performance.now();
    let id: string;
    let hash: Buffer | null;
    try {
      id = checkMessageId((message as Partial<InboxMessage> | null | undefined)?.id, this.config.maxIdLength);
      hash = this.#fingerprint(checkPayload(message.payload, id));
    } catch (error) {
      return this.#deadLetter(messageIdOf(error), 'invalid_message', toError(error), 0, new Date());
    }
    const suspect = options.suspect === true;
    if (suspect) await this.#gate.enterExclusive();
    else {
      const waiting = this.#gate.enterShared();
      if (waiting !== undefined) await waiting;
    }
    try {
      if (suspect || this.config.duplicateFastPath) {
        const early = await this.#lookUpFirst(id, hash, suspect);
        if (early !== undefined) return early;
      }
      const outcome = await this.#processWithRetries(message, id, hash, handler, suspect);
      if (outcome.status === 'processed') {
        this.#events.emit('processed', {
          consumer: this.consumer,
          messageId: id,
          attempts: outcome.attempts,
          durationMs: performance.now() - started,
        });
      }
      return outcome;
    } finally {
      if (suspect) this.#gate.leaveExclusive();
      else this.#gate.leaveShared();
    }
  }

  /** One attempt: one transaction. Throws the handler's error (or our own statements'). */
  async #attempt<M extends InboxMessage, R>(
    message: M,
    id: string,
    hash: Buffer | null,
    handler: MessageHandler<DB, M, R>,
    attempt: number,
    suspect: boolean,
  ): Promise<ProcessedOutcome<R> | DuplicateOutcome | ConflictOutcome> {
    const { db, consumer, isolationLevel, storeResults } = this.config;
    return db
      .transaction()
      .setIsolationLevel(isolationLevel)
      .execute(async (trx) => {
        const runner = trx as unknown as QueryRunner;
        let pid: number | undefined;
        try {
          pid = await this.#claimMessage(runner, consumer, id, hash);
        } catch (error) {
          if (isLockTimeout(error)) throw new LockTimeoutError(id, this.config.lockTimeoutMs, { cause: error });
          throw error;
        }
        if (pid === undefined) {
          const stored = (await this.#readStored(runner, consumer, [id])).get(id);
          if (stored === undefined) {
            throw new Error(`inboxkit: key ${JSON.stringify(id)} was neither claimed nor found; retrying`);
          }
          return this.#fromStored(id, hash, stored);
        }
        const result = await runTimed(this.#timedCall(id, pid), (signal) =>
          handler(trx, message, { attempt, consumer, signal }),
        );
        if (suspect) await this.#clearAttempts(runner, consumer, id);
        if (storeResults) {
          const json = resultJson(result);
          if (json !== undefined) await this.#storeResults(runner, consumer, [id], [json]);
        }
        return { status: 'processed', messageId: id, result, attempts: attempt } as const;
      });
  }

  /** Attempts with p-retry until processed, duplicate, conflict, dead-lettered or handed back. */
  async #processWithRetries<M extends InboxMessage, R>(
    message: M,
    id: string,
    hash: Buffer | null,
    handler: MessageHandler<DB, M, R>,
    suspect: boolean,
  ): Promise<ProcessOutcome<R>> {
    const policy = this.config.retry;
    const firstSeenAt = new Date();
    let attempts = 0;
    let lastKind = 'transient' as FailureKind;
    let lastError: Error | undefined;
    let refused = false;
    try {
      const outcome = await pRetry(
        async (attemptNumber) => {
          attempts = attemptNumber;
          try {
            return await this.#attempt(message, id, hash, handler, attemptNumber, suspect);
          } catch (thrown) {
            const error = toError(thrown);
            lastError = error;
            lastKind = await this.#classify(error);
            if (lastKind !== 'transient') throw new AbortError(error);
            throw error;
          }
        },
        {
          retries: policy.retries,
          factor: policy.factor,
          minTimeout: policy.minTimeout,
          maxTimeout: policy.maxTimeout,
          randomize: policy.randomize,
          maxRetryTime: policy.maxRetryTime,
          shouldRetry: async ({ error, attemptNumber, retriesLeft, retryDelay }) => {
            const again =
              policy.shouldRetry === undefined || (await policy.shouldRetry({ error, attemptNumber, retriesLeft }));
            if (!again) refused = true;
            else {
              this.#events.emit('retry', {
                consumer: this.consumer,
                messageId: id,
                attempt: attemptNumber,
                delayMs: retryDelay,
                error,
              });
            }
            return again;
          },
        },
      );
      if (outcome.status === 'duplicate') this.#emitDuplicate(outcome);
      if (outcome.status === 'conflict') this.#events.emit('conflict', { consumer: this.consumer, messageId: id });
      return outcome;
    } catch (thrown) {
      const error = lastError ?? toError(thrown);
      switch (lastKind) {
        case 'unavailable':
          return this.#retryLater(
            id,
            'database_unavailable',
            new DatabaseUnavailableError(`Postgres is unavailable: ${error.message}`, { cause: error }),
            attempts,
          );
        case 'lock_timeout':
          return this.#retryLater(id, 'lock_timeout', error, attempts);
        case 'permanent':
          return this.#deadLetter(id, 'non_retryable', error, attempts, firstSeenAt);
        default:
          return this.#deadLetter(
            id,
            refused || error instanceof TypeError ? 'non_retryable' : 'retries_exhausted',
            error,
            attempts,
            firstSeenAt,
          );
      }
    }
  }

  /**
   * The read before the transaction that DESIGN.md allows as a fast path: a key already
   * stored is a duplicate (or a conflict) without a transaction. Used by suspects and by
   * `duplicateFastPath`. A suspect not found then has its attempt counted and committed
   * before the handler runs; past the limit it is dead-lettered without running.
   */
  async #lookUpFirst(id: string, hash: Buffer | null, suspect: boolean): Promise<ProcessOutcome<never> | undefined> {
    const { db, consumer, crashLoopLimit } = this.config;
    const runner = db as unknown as QueryRunner;
    try {
      const stored = (await this.#readStored(runner, consumer, [id])).get(id);
      if (stored !== undefined) {
        const outcome = this.#fromStored(id, hash, stored);
        if (outcome.status === 'duplicate') this.#emitDuplicate(outcome);
        else this.#events.emit('conflict', { consumer, messageId: id });
        return outcome;
      }
      if (!suspect) return undefined;
      const { attempts, firstAttemptAt } = await this.#recordAttempt(runner, consumer, id);
      if (attempts > crashLoopLimit) {
        return this.#deadLetter(id, 'crash_loop', new CrashLoopError(id, attempts - 1), attempts - 1, firstAttemptAt);
      }
      return undefined;
    } catch (thrown) {
      const error = toError(thrown);
      if ((await this.#classify(error)) === 'unavailable') {
        return this.#retryLater(
          id,
          'database_unavailable',
          new DatabaseUnavailableError(`Postgres is unavailable: ${error.message}`, { cause: error }),
          0,
        );
      }
      throw error;
    }
  }

  // ---------------------------------------------------------------------------------------
  // Many messages in one transaction (DESIGN.md sections 6 and 8)
  // ---------------------------------------------------------------------------------------

  /**
   * Processes a batch in one transaction, with one handler call per new message.
   *
   * All keys are claimed in one statement; duplicates (also within the batch: the first
   * occurrence runs) are set aside before any handler runs. Handlers run without
   * savepoints while they succeed; when one fails, the transaction is rolled back and run
   * again with a savepoint around each message, so the failing ones are set aside without
   * undoing the others. Those then go through {@link process} one by one, with the retry
   * policy, and end processed or dead-lettered.
   */
  async processBatch<M extends InboxMessage, R>(
    messages: readonly M[],
    handler: MessageHandler<DB, M, R>,
    options: BatchOptions = {},
  ): Promise<BatchResult<R>> {
    if (typeof handler !== 'function') {
      throw new ConfigurationError('inbox.processBatch(messages, handler): `handler` must be a function.');
    }
    return this.#runBatch(messages, handler, async (trx, entries, timed, savepoints, failed) => {
      if (savepoints) return this.#savepointPass(trx, entries, timed, handler, options, failed);
      const results = new Map<number, R>();
      for (const entry of entries) {
        await options.beforeMessage?.();
        try {
          results.set(entry.index, await timed(entry.id, (context) => handler(trx, entry.message, context)));
        } catch (error) {
          failed.set(entry.index, toError(error));
          throw new OptimisticBatchFailed();
        }
      }
      return results;
    });
  }

  /**
   * Processes a batch in one transaction with one handler call for all its new messages,
   * so the handler can write them in bulk (one `INSERT ... SELECT FROM unnest(...)`): the
   * fastest shape. If the bulk handler fails, the batch falls back to one handler call per
   * message (each with a one-message array, inside a savepoint) to find the culprits,
   * which then go through {@link process} with the retry policy.
   */
  async processBulk<M extends InboxMessage, R>(
    messages: readonly M[],
    handler: BatchHandler<DB, M, R>,
    options: BatchOptions = {},
  ): Promise<BatchResult<R>> {
    if (typeof handler !== 'function') {
      throw new ConfigurationError('inbox.processBulk(messages, handler): `handler` must be a function.');
    }
    const single: MessageHandler<DB, M, R> = async (trx, message, context) => {
      const results = await handler(trx, [message], context);
      return results?.[0] as R;
    };
    return this.#runBatch(messages, single, async (trx, entries, timed, savepoints, failed) => {
      if (savepoints) {
        return this.#savepointPass(trx, entries, timed, single, options, failed);
      }
      await options.beforeMessage?.();
      const results = new Map<number, R>();
      let returned: readonly R[] | undefined | void;
      try {
        returned = await timed(entries[0]?.id ?? '', (context) =>
          handler(
            trx,
            entries.map((entry) => entry.message),
            context,
          ),
        );
      } catch (error) {
        const first = entries[0];
        if (first !== undefined) failed.set(first.index, toError(error));
        throw new OptimisticBatchFailed();
      }
      if (returned !== undefined && returned !== null) {
        entries.forEach((entry, i) => {
          results.set(entry.index, returned[i] as R);
        });
      }
      return results;
    });
  }

  /**
   * The second pass of a batch whose optimistic pass failed: one message at a time, each
   * inside a savepoint, so a failing handler is rolled back alone. A database failure
   * still abandons the whole batch.
   */
  async #savepointPass<M extends InboxMessage, R>(
    trx: Transaction<DB>,
    entries: readonly Entry<M>[],
    timed: TimedHandlerCall,
    single: MessageHandler<DB, M, R>,
    options: BatchOptions,
    failed: Map<number, Error>,
  ): Promise<Map<number, R>> {
    const results = new Map<number, R>();
    for (const entry of entries) {
      await options.beforeMessage?.();
      await SAVEPOINT.execute(trx);
      try {
        results.set(entry.index, await timed(entry.id, (context) => single(trx, entry.message, context)));
        await RELEASE_SAVEPOINT.execute(trx);
      } catch (error) {
        if (databaseFailure(error) === 'database') throw error;
        await ROLLBACK_TO_SAVEPOINT.execute(trx);
        failed.set(entry.index, toError(error));
      }
    }
    return results;
  }

  /** The batch algorithm shared by both handler shapes. */
  async #runBatch<M extends InboxMessage, R>(
    messages: readonly M[],
    single: MessageHandler<DB, M, R>,
    runHandlers: (
      trx: Transaction<DB>,
      entries: readonly Entry<M>[],
      timed: TimedHandlerCall,
      savepoints: boolean,
      failed: Map<number, Error>,
    ) => Promise<Map<number, R>>,
  ): Promise<BatchResult<R>> {
    if (!Array.isArray(messages)) {
      throw new ConfigurationError('inbox.processBatch(messages, ...): `messages` must be an array.');
    }
    const outcomes: (ProcessOutcome<R> | undefined)[] = new Array(messages.length);
    const entries: Entry<M>[] = [];
    const firstOf = new Map<string, Entry<M>>();
    const copies: { index: number; of: Entry<M> }[] = [];

    // 1. Validate, fingerprint, and set aside copies of an id already in this batch.
    messages.forEach((message, index) => {
      let id: string;
      let hash: Buffer | null;
      try {
        id = checkMessageId((message as Partial<InboxMessage> | null | undefined)?.id, this.config.maxIdLength);
        hash = this.#fingerprint(checkPayload(message.payload, id));
      } catch (error) {
        outcomes[index] = this.#deadLetter(messageIdOf(error), 'invalid_message', toError(error), 0, new Date());
        return;
      }
      const first = firstOf.get(id);
      if (first === undefined) {
        const entry = { index, id, hash, message };
        firstOf.set(id, entry);
        entries.push(entry);
      } else if (first.hash !== null && hash !== null && !first.hash.equals(hash)) {
        outcomes[index] = this.#conflict(id);
      } else {
        copies.push({ index, of: first });
      }
    });

    const waiting = this.#gate.enterShared();
    if (waiting !== undefined) await waiting;
    let setAside: Entry<M>[] = [];
    try {
      // 2. Optimistic pass; on a handler failure, a second pass with savepoints.
      if (entries.length > 0) {
        try {
          let pass = await this.#batchTransaction(entries, runHandlers, false);
          if (pass === 'handler_failed') pass = await this.#batchTransaction(entries, runHandlers, true);
          if (pass === 'handler_failed') throw new Error('inboxkit: savepoint pass reported an optimistic failure');
          for (const [index, outcome] of pass.outcomes) outcomes[index] = outcome;
          setAside = entries.filter((entry) => pass.failed.has(entry.index));
        } catch (error) {
          if (!(error instanceof BatchAbandoned)) throw error;
          for (const entry of entries) {
            outcomes[entry.index] = this.#retryLater(entry.id, error.reason, error.error, 0);
          }
        }
      }
    } finally {
      this.#gate.leaveShared();
    }

    // 3. Messages whose handler failed go through the single-message path and its retries.
    for (const entry of setAside) {
      outcomes[entry.index] = await this.process(entry.message, single);
    }

    // 4. A copy of an id within the batch follows its first occurrence.
    for (const { index, of } of copies) {
      outcomes[index] = this.#copyOutcome(outcomes[of.index] as ProcessOutcome<R>, of.id);
    }
    return { outcomes: outcomes as ProcessOutcome<R>[] };
  }

  /**
   * One batch transaction. Returns `'handler_failed'` when an optimistic pass was rolled
   * back because a handler threw; throws {@link BatchAbandoned} when the database is gone
   * or a key stayed locked.
   */
  async #batchTransaction<M extends InboxMessage, R>(
    entries: readonly Entry<M>[],
    runHandlers: (
      trx: Transaction<DB>,
      entries: readonly Entry<M>[],
      timed: TimedHandlerCall,
      savepoints: boolean,
      failed: Map<number, Error>,
    ) => Promise<Map<number, R>>,
    savepoints: boolean,
  ): Promise<'handler_failed' | { outcomes: Map<number, ProcessOutcome<R>>; failed: Map<number, Error> }> {
    const { db, consumer, isolationLevel, storeResults, retry } = this.config;
    const ids = entries.map((entry) => entry.id);
    const hashes = entries.map((entry) => entry.hash);
    for (let attempt = 1; ; attempt++) {
      const failed = new Map<number, Error>();
      const outcomes = new Map<number, ProcessOutcome<R>>();
      try {
        await db
          .transaction()
          .setIsolationLevel(isolationLevel)
          .execute(async (trx) => {
            const runner = trx as unknown as QueryRunner;
            let claimed: Set<string>;
            let pid: number | undefined;
            try {
              ({ claimed, pid } = await this.#claimMessages(runner, consumer, ids, hashes));
            } catch (error) {
              if (isLockTimeout(error)) {
                throw new BatchAbandoned(
                  'lock_timeout',
                  new LockTimeoutError(ids[0] ?? '', this.config.lockTimeoutMs, { cause: error }),
                );
              }
              throw error;
            }
            const fresh = entries.filter((entry) => claimed.has(entry.id));
            if (fresh.length < entries.length) {
              const others = entries.filter((entry) => !claimed.has(entry.id));
              const stored = await this.#readStored(
                runner,
                consumer,
                others.map((entry) => entry.id),
              );
              for (const entry of others) {
                const row = stored.get(entry.id);
                outcomes.set(
                  entry.index,
                  row === undefined
                    ? this.#retryLater(
                        entry.id,
                        'lock_timeout',
                        new LockTimeoutError(entry.id, this.config.lockTimeoutMs),
                        0,
                      )
                    : this.#fromStored(entry.id, entry.hash, row),
                );
              }
            }
            if (fresh.length === 0) return;
            const timed: TimedHandlerCall = (messageId, call) =>
              runTimed(this.#timedCall(messageId, pid), (signal) => call({ attempt: 1, consumer, signal }));
            const results = await runHandlers(trx, fresh, timed, savepoints, failed);
            if (failed.size > 0) {
              await this.#releaseMessages(
                runner,
                consumer,
                fresh.filter((entry) => failed.has(entry.index)).map((entry) => entry.id),
              );
            }
            const storedIds: string[] = [];
            const storedJson: string[] = [];
            for (const entry of fresh) {
              if (failed.has(entry.index)) continue;
              const result = results.get(entry.index) as R;
              outcomes.set(entry.index, { status: 'processed', messageId: entry.id, result, attempts: 1 });
              if (storeResults) {
                const json = resultJson(result);
                if (json !== undefined) {
                  storedIds.push(entry.id);
                  storedJson.push(json);
                }
              }
            }
            if (storedIds.length > 0) await this.#storeResults(runner, consumer, storedIds, storedJson);
          });
      } catch (error) {
        if (error instanceof OptimisticBatchFailed) return 'handler_failed';
        if (error instanceof BatchAbandoned) throw error;
        const kind = databaseFailure(error);
        if (kind !== undefined) {
          throw new BatchAbandoned(
            'database_unavailable',
            new DatabaseUnavailableError(`Postgres is unavailable: ${toError(error).message}`, { cause: error }),
          );
        }
        if (isTransientDatabaseError(error) && attempt <= retry.retries) {
          await delay(Math.min(retry.minTimeout * 2 ** (attempt - 1), retry.maxTimeout));
          continue;
        }
        throw error;
      }
      for (const outcome of outcomes.values()) {
        if (outcome.status === 'processed') {
          this.#events.emit('processed', {
            consumer,
            messageId: outcome.messageId,
            attempts: 1,
            durationMs: 0,
          });
        } else if (outcome.status === 'duplicate') this.#emitDuplicate(outcome);
        else if (outcome.status === 'conflict')
          this.#events.emit('conflict', { consumer, messageId: outcome.messageId });
      }
      return { outcomes, failed };
    }
  }

  // ---------------------------------------------------------------------------------------
  // Dead letters, lookups, retention
  // ---------------------------------------------------------------------------------------

  /**
   * Records a dead-lettered message so that a redelivery is acked as a duplicate instead
   * of being dead-lettered again. Call it after the dead-letter publish was confirmed and
   * before acking. Nothing is recorded for a message without a valid id or for a conflict
   * (its key already holds the first content).
   *
   * @throws {DatabaseUnavailableError} when Postgres cannot be reached: do not ack then.
   */
  async recordDeadLetter(message: InboxMessage, outcome: DeadLetterOutcome | ConflictOutcome): Promise<void> {
    if (outcome.status === 'conflict' || outcome.messageId === undefined) return;
    const detail = JSON.stringify({
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
      hash = this.#fingerprint(checkPayload(message.payload, outcome.messageId));
    } catch {
      hash = null;
    }
    try {
      await this.#recordDeadLetter(
        this.config.db as unknown as QueryRunner,
        this.consumer,
        outcome.messageId,
        hash,
        detail,
      );
    } catch (error) {
      if (databaseFailure(error) !== undefined) {
        throw new DatabaseUnavailableError(`Postgres is unavailable: ${toError(error).message}`, { cause: error });
      }
      throw error;
    }
  }

  /** The stored key of a message id, or `undefined` when the inbox has none. */
  async find(messageId: string): Promise<StoredMessage | undefined> {
    const row = (await this.#readStored(this.config.db as unknown as QueryRunner, this.consumer, [messageId])).get(
      messageId,
    );
    if (row === undefined) return undefined;
    return { messageId, status: row.status, result: row.result ?? undefined, processedAt: row.processed_at };
  }

  /**
   * Deletes this consumer's keys older than the retention window, `batchSize` at a time,
   * each delete its own short transaction. Safe to run from several processes at once: one
   * holds an advisory lock and does the work, the others return `skipped: true` at once.
   * Run it on a schedule (every few minutes); see README "Retention".
   */
  async purge(options: PurgeOptions = {}): Promise<PurgeResult> {
    const olderThanMs = options.olderThanMs ?? this.config.retentionMs;
    const batchSize = options.batchSize ?? 1000;
    if (!Number.isFinite(olderThanMs) || olderThanMs < 0) {
      throw new ConfigurationError(`Expected \`olderThanMs\` to be a non-negative number, got ${String(olderThanMs)}.`);
    }
    if (!Number.isInteger(batchSize) || batchSize <= 0 || batchSize > 100_000) {
      throw new ConfigurationError(
        `Expected \`batchSize\` to be a whole number from 1 to 100000, got ${String(batchSize)}.`,
      );
    }
    const { db, consumer, tables } = this.config;
    const lockKey = `inboxkit:purge:${tables.qualified}:${consumer}`;
    const before = new Date(Date.now() - olderThanMs);
    const result = await db.connection().execute(async (connection) => {
      const runner = connection as unknown as QueryRunner;
      if (!(await this.#purgeLock.tryLock(runner, lockKey))) return { deleted: 0, batches: 0, skipped: true };
      try {
        let deleted = 0;
        let batches = 0;
        for (;;) {
          const count = await this.#purge.purgeBatch(runner, consumer, before, batchSize);
          batches++;
          deleted += count;
          if (count < batchSize) break;
        }
        await this.#purge.purgeAttempts(runner, consumer, before);
        return { deleted, batches, skipped: false };
      } finally {
        await this.#purgeLock.unlock(runner, lockKey);
      }
    });
    this.#events.emit('purged', { consumer, ...result });
    return result;
  }

  // ---------------------------------------------------------------------------------------
  // Helpers
  // ---------------------------------------------------------------------------------------

  /** What {@link runTimed} needs for one handler call on the connection `pid`. */
  #timedCall(messageId: string, pid: number | undefined): TimedCall {
    const { handlerTimeoutMs, db, logger } = this.config;
    return { timeoutMs: handlerTimeoutMs, messageId, pid, db: db as unknown as QueryRunner, logger };
  }

  #fingerprint(payload: InboxMessage['payload']): Buffer | null {
    return this.config.fingerprintPayloads ? fingerprint(payload) : null;
  }

  /** A stored key seen again: a duplicate, or a conflict when the fingerprints differ. */
  #fromStored(id: string, hash: Buffer | null, stored: StoredRow): DuplicateOutcome | ConflictOutcome {
    if (hash !== null && stored.payload_hash !== null && !hash.equals(stored.payload_hash)) {
      return { status: 'conflict', messageId: id, error: new PayloadConflictError(this.consumer, id) };
    }
    return {
      status: 'duplicate',
      messageId: id,
      result: stored.status === 'processed' ? (stored.result ?? undefined) : undefined,
      previousStatus: stored.status,
      processedAt: stored.processed_at,
    };
  }

  #conflict(id: string): ConflictOutcome {
    this.#events.emit('conflict', { consumer: this.consumer, messageId: id });
    return { status: 'conflict', messageId: id, error: new PayloadConflictError(this.consumer, id) };
  }

  #copyOutcome<R>(first: ProcessOutcome<R>, id: string): ProcessOutcome<R> {
    switch (first.status) {
      case 'processed':
        return this.#emitDuplicate({
          status: 'duplicate',
          messageId: id,
          result: first.result,
          previousStatus: 'processed',
          processedAt: undefined,
        });
      case 'dead_letter':
        return this.#emitDuplicate({
          status: 'duplicate',
          messageId: id,
          result: undefined,
          previousStatus: 'dead_lettered',
          processedAt: undefined,
        });
      case 'duplicate':
        return this.#emitDuplicate({ ...first, messageId: id });
      default:
        return first;
    }
  }

  #emitDuplicate(outcome: DuplicateOutcome): DuplicateOutcome {
    this.#events.emit('duplicate', {
      consumer: this.consumer,
      messageId: outcome.messageId,
      previousStatus: outcome.previousStatus,
    });
    return outcome;
  }

  #deadLetter(
    messageId: string | undefined,
    reason: DeadLetterReason,
    error: Error,
    attempts: number,
    firstSeenAt: Date,
  ): DeadLetterOutcome {
    this.#events.emit('deadLetter', { consumer: this.consumer, messageId, reason, attempts, error });
    this.config.logger.warn(
      { consumer: this.consumer, messageId, reason, attempts, err: error },
      'inboxkit: message to be dead-lettered',
    );
    return { status: 'dead_letter', messageId, reason, error, attempts, firstSeenAt };
  }

  #retryLater(
    messageId: string | undefined,
    reason: RetryLaterReason,
    error: Error,
    attempts: number,
  ): RetryLaterOutcome {
    this.#events.emit('retryLater', { consumer: this.consumer, messageId, reason, error });
    this.config.logger.warn(
      { consumer: this.consumer, messageId, reason, err: error },
      'inboxkit: message handed back to be retried later',
    );
    return { status: 'retry_later', messageId, reason, error, attempts };
  }

  /**
   * Sorts a failure. A socket error raised by the handler may come from its own call to
   * another service rather than from Postgres: the database is probed to tell them apart.
   */
  async #classify(error: Error): Promise<FailureKind> {
    if (error instanceof LockTimeoutError) return 'lock_timeout';
    const failure = databaseFailure(error);
    if (failure === 'database') return 'unavailable';
    if (failure === 'socket') return (await this.#databaseReachable()) ? 'transient' : 'unavailable';
    if (isNonRetryable(error, this.config.retry)) return 'permanent';
    return 'transient';
  }

  async #databaseReachable(): Promise<boolean> {
    try {
      await PROBE.execute(this.config.db);
      return true;
    } catch {
      return false;
    }
  }
}

function messageIdOf(error: unknown): string | undefined {
  const id = (error as { messageId?: unknown } | null)?.messageId;
  return typeof id === 'string' ? id : undefined;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
