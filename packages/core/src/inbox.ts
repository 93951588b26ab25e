import { sql, type Transaction } from 'kysely';
import pRetry, { AbortError } from 'p-retry';
import { classifyFailure, type FailureKind, isLockTimeout } from './error-classification.js';
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
import { compileClearAttempts, compileRecordAttempt, compileUncountAttempt } from './sql/record-attempt.js';
import { compileRecordDeadLetter } from './sql/record-dead-letter.js';
import { compileReleaseMessages } from './sql/release-messages.js';
import { compileStoreResults, resultJson } from './sql/store-results.js';
import { storableJson } from './storable.js';
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
  /**
   * Called before each attempt (and before each pause between attempts ends): adapters
   * heartbeat here and check that they still own the message. If it throws, the call
   * rejects with that error and nothing is committed.
   */
  readonly beforeAttempt?: () => Promise<void> | void;
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

/** How one batch transaction ended (see {@link Inbox.processBatch}). */
type BatchPass<R> =
  /** Committed: every entry has its outcome. */
  | { readonly kind: 'committed'; readonly outcomes: Map<number, ProcessOutcome<R>> }
  /**
   * The savepoint pass stopped at the first failing handler, `culprit` (a position in the
   * entries): the entries before it committed with their outcomes; it and those after it
   * were released and are to be run again.
   */
  | { readonly kind: 'prefix'; readonly outcomes: Map<number, ProcessOutcome<R>>; readonly culprit: number }
  /** The optimistic pass was rolled back because a handler threw. */
  | { readonly kind: 'handler_failed' }
  /** Rolled back for a reason that is not a handler call's: to be narrowed down to the culprit. */
  | { readonly kind: 'failed'; readonly error: Error }
  /** Rolled back; nothing was decided (database gone, a key held by another delivery, lasting contention). */
  | { readonly kind: 'retry_later'; readonly reason: RetryLaterReason; readonly error: Error };

/** Runs the handlers of one batch pass, in entry order; records the culprit of a savepoint pass in `stop`. */
type RunHandlers<DB, M, R> = (
  trx: Transaction<DB>,
  entries: readonly Entry<M>[],
  timed: TimedHandlerCall,
  stop: { culprit?: number },
) => Promise<Map<number, R>>;

/** Thrown inside an optimistic batch transaction to roll it back when one handler failed. */
class OptimisticBatchFailed extends Error {}

/** An adapter's `beforeMessage`/`beforeAttempt` failed: rolled back, and rethrown to the caller as it is. */
class HookFailed extends Error {
  readonly error: unknown;
  constructor(error: unknown) {
    super('inboxkit: beforeMessage failed');
    this.error = error;
  }
}

/** A suspect's attempt found its count past `crashLoopLimit`: dead-letter it unrun. */
class CrashLoopDetected extends Error {
  readonly crashes: number;
  readonly firstAttemptAt: Date;
  constructor(crashes: number, firstAttemptAt: Date) {
    super('inboxkit: crash loop');
    this.crashes = crashes;
    this.firstAttemptAt = firstAttemptAt;
  }
}

const SIDE_TIMEOUT: unique symbol = Symbol('side connection timeout');

/** How long lock contention is waited out in process before the message is handed back. */
const CONTENTION_WAIT_MS = 10_000;
/** How long the database has to answer the reachability probe. */
const PROBE_TIMEOUT_MS = 5_000;

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
  readonly #uncountAttempt;
  readonly #clearAttempts;
  readonly #purge;
  readonly #purgeLock;

  /** @internal Use {@link createInbox}. */
  constructor(config: InboxConfig<DB>) {
    this.config = config;
    this.#events = new InboxEmitter(config.logger);
    const { tables, lockTimeoutMs, handlerTimeoutMs } = config;
    this.#claimMessage = compileClaimMessage(tables, lockTimeoutMs, handlerTimeoutMs);
    this.#claimMessages = compileClaimMessages(tables, lockTimeoutMs, handlerTimeoutMs);
    this.#readStored = compileReadStored(tables);
    this.#storeResults = compileStoreResults(tables);
    this.#releaseMessages = compileReleaseMessages(tables);
    this.#recordDeadLetter = compileRecordDeadLetter(tables, lockTimeoutMs);
    this.#recordAttempt = compileRecordAttempt(tables);
    this.#uncountAttempt = compileUncountAttempt(tables);
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
  // One message (docs/design.md, "The algorithm")
  // ---------------------------------------------------------------------------------------

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
   * programming errors (a handler that is not a function) and a throwing `beforeAttempt`
   * reject.
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
        const early = await this.#lookUpFirst(id, hash);
        if (early !== undefined) return early;
      }
      const outcome = await this.#processWithRetries(message, id, hash, handler, suspect, options.beforeAttempt);
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

  /**
   * One attempt: one transaction. Throws the handler's error (or our own statements'), or
   * {@link CrashLoopDetected} for a suspect past `crashLoopLimit`.
   *
   * A suspect's attempt is counted once its claim went through, so waiting on a key that
   * another delivery holds never counts, and the count is committed before the handler
   * runs, so it survives the process dying. It is written on a second connection, since
   * the claim's transaction cannot commit it early. An attempt that fails without a crash
   * takes its count back while its key is still held: only a real crash stays counted,
   * and no other delivery of the id ever sees the count of an attempt still running
   * (docs/design.md, "Crash loops"; model/inbox.pml checks this).
   */
  async #attempt<M extends InboxMessage, R>(
    message: M,
    id: string,
    hash: Buffer | null,
    handler: MessageHandler<DB, M, R>,
    attempt: number,
    suspect: boolean,
  ): Promise<ProcessedOutcome<R> | DuplicateOutcome | ConflictOutcome> {
    const { db, consumer, isolationLevel, storeResults, crashLoopLimit } = this.config;
    return db
      .transaction()
      .setIsolationLevel(isolationLevel)
      .execute(async (trx) => {
        const runner = trx as unknown as QueryRunner;
        if (!(await this.#claim(runner, id, hash))) {
          const stored = (await this.#readStored(runner, consumer, [id])).get(id);
          if (stored === undefined) {
            throw new Error(`inboxkit: key ${JSON.stringify(id)} was neither claimed nor found; retrying`);
          }
          return this.#fromStored(id, hash, stored);
        }
        if (suspect) {
          const counted = await this.#onSideConnection((side) => this.#recordAttempt(side, consumer, id));
          if (counted.attempts > crashLoopLimit) {
            await this.#onSideConnection((side) => this.#uncountAttempt(side, consumer, id)).catch(() => {});
            throw new CrashLoopDetected(counted.attempts - 1, counted.firstAttemptAt);
          }
        }
        try {
          const result = await runTimed(this.#timedCall(id), (signal) =>
            handler(trx, message, { attempt, consumer, signal }),
          );
          if (suspect) await this.#clearAttempts(runner, consumer, id);
          if (storeResults) {
            const json = resultJson(result);
            if (json !== undefined) await this.#storeResults(runner, consumer, [id], [json]);
          }
          return { status: 'processed', messageId: id, result, attempts: attempt } as const;
        } catch (error) {
          if (suspect) await this.#uncount(id);
          throw error;
        }
      });
  }

  /** The claim; its own lock timeout becomes a {@link LockTimeoutError}. */
  async #claim(runner: QueryRunner, id: string, hash: Buffer | null): Promise<boolean> {
    try {
      return await this.#claimMessage(runner, this.consumer, id, hash);
    } catch (error) {
      if (isLockTimeout(error)) throw new LockTimeoutError(id, this.config.lockTimeoutMs, { cause: error });
      throw error;
    }
  }

  /**
   * Attempts with p-retry until processed, duplicate, conflict, dead-lettered or handed
   * back. Lock contention is waited out inside one p-retry attempt, so it does not spend
   * the retry budget; past {@link CONTENTION_WAIT_MS} the message is handed back.
   */
  async #processWithRetries<M extends InboxMessage, R>(
    message: M,
    id: string,
    hash: Buffer | null,
    handler: MessageHandler<DB, M, R>,
    suspect: boolean,
    beforeAttempt: (() => Promise<void> | void) | undefined,
  ): Promise<ProcessOutcome<R>> {
    const policy = this.config.retry;
    const firstSeenAt = new Date();
    const contentionDeadline = performance.now() + Math.max(CONTENTION_WAIT_MS, 2 * this.config.lockTimeoutMs);
    let attempts = 0;
    let lastKind = 'transient' as FailureKind;
    let lastError: Error | undefined;
    let refused = false;
    let crashLoop: CrashLoopDetected | undefined;
    try {
      const outcome = await pRetry(
        async (attemptNumber) => {
          attempts = attemptNumber;
          for (let wait = 0; ; wait++) {
            await this.#hook(beforeAttempt);
            try {
              return await this.#attempt(message, id, hash, handler, attemptNumber, suspect);
            } catch (thrown) {
              if (thrown instanceof CrashLoopDetected) {
                crashLoop = thrown;
                throw new AbortError(thrown);
              }
              const error = toError(thrown);
              lastError = error;
              lastKind = await this.#classify(error);
              if (lastKind === 'contention' && performance.now() < contentionDeadline) {
                await delay(this.#contentionPause(wait));
                continue;
              }
              if (lastKind !== 'transient') throw new AbortError(error);
              throw error;
            }
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
      if (thrown instanceof HookFailed) throw thrown.error;
      if (crashLoop !== undefined) {
        const { crashes, firstAttemptAt } = crashLoop;
        return this.#deadLetter(id, 'crash_loop', new CrashLoopError(id, crashes), crashes, firstAttemptAt);
      }
      const error = lastError ?? toError(thrown);
      switch (lastKind) {
        case 'unavailable':
          return this.#retryLater(id, 'database_unavailable', unavailable(error), attempts);
        case 'lock_timeout':
        case 'contention':
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
   * The read before the transaction that the algorithm allows as a fast path: a key
   * already stored is a duplicate (or a conflict) without a transaction. Used by suspects
   * and by `duplicateFastPath`.
   */
  async #lookUpFirst(id: string, hash: Buffer | null): Promise<ProcessOutcome<never> | undefined> {
    const { db, consumer } = this.config;
    try {
      const stored = (await this.#readStored(db as unknown as QueryRunner, consumer, [id])).get(id);
      if (stored === undefined) return undefined;
      const outcome = this.#fromStored(id, hash, stored);
      if (outcome.status === 'duplicate') this.#emitDuplicate(outcome);
      else this.#events.emit('conflict', { consumer, messageId: id });
      return outcome;
    } catch (thrown) {
      const error = toError(thrown);
      if ((await this.#classify(error)) === 'unavailable') {
        return this.#retryLater(id, 'database_unavailable', unavailable(error), 0);
      }
      // The transaction that follows decides, with the retry policy.
      return undefined;
    }
  }

  /** Takes back a suspect's counted attempt (best effort: a failure leaves one count too many, logged). */
  async #uncount(id: string): Promise<void> {
    try {
      await this.#onSideConnection((side) => this.#uncountAttempt(side, this.consumer, id));
    } catch (error) {
      this.config.logger.warn(
        { consumer: this.consumer, messageId: id, err: error },
        'inboxkit: could not take back the crash-loop count of an attempt that did not crash',
      );
    }
  }

  /**
   * Runs one autocommit statement on a connection other than the attempt's (the crash-loop
   * count). Waiting for it is bounded: with every pool connection taken it fails as
   * {@link DatabaseUnavailableError} after `max(lockTimeoutMs, 1 s)` instead of waiting
   * forever, and a pool of one connection can never give it.
   */
  async #onSideConnection<T>(work: (runner: QueryRunner) => Promise<T>): Promise<T> {
    const { db, lockTimeoutMs } = this.config;
    const call: { state: 'waiting' | 'running' | 'abandoned' } = { state: 'waiting' };
    const done = db.connection().execute(async (connection) => {
      if (call.state === 'abandoned') return undefined as T;
      call.state = 'running';
      return work(connection as unknown as QueryRunner);
    });
    const waitMs = Math.max(lockTimeoutMs, 1000);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<typeof SIDE_TIMEOUT>((resolve) => {
      timer = setTimeout(() => resolve(SIDE_TIMEOUT), waitMs);
    });
    try {
      const first = await Promise.race([done, timedOut]);
      if (first !== SIDE_TIMEOUT) return first;
      if (call.state === 'running') return await done;
      call.state = 'abandoned';
      done.catch(() => {});
      throw new DatabaseUnavailableError(
        `No second pool connection within ${waitMs} ms for the crash-loop count of a redelivered message: every connection is busy (crash-loop protection needs a pool of at least two).`,
      );
    } finally {
      clearTimeout(timer);
    }
  }

  // ---------------------------------------------------------------------------------------
  // Many messages in one transaction (docs/design.md, "Batches")
  // ---------------------------------------------------------------------------------------

  /**
   * Processes a batch in one transaction, with one handler call per new message.
   *
   * All keys are claimed in one statement; duplicates (also within the batch: the first
   * occurrence runs) are set aside before any handler runs. Handlers run without
   * savepoints while they succeed. When one fails, the transaction is rolled back and run
   * again with a savepoint around each message up to the first that fails: the messages
   * before it commit, it goes through {@link process} alone (with the retry policy), and
   * the rest of the batch follows, so effects commit in the order of the messages. A
   * failure that is no handler call's (a result that cannot be stored, a failing commit)
   * runs the rest one message at a time, so the culprit settles alone.
   */
  async processBatch<M extends InboxMessage, R>(
    messages: readonly M[],
    handler: MessageHandler<DB, M, R>,
    options: BatchOptions = {},
  ): Promise<BatchResult<R>> {
    if (typeof handler !== 'function') {
      throw new ConfigurationError('inbox.processBatch(messages, handler): `handler` must be a function.');
    }
    return this.#runBatch(messages, handler, options, async (trx, entries, timed) => {
      const results = new Map<number, R>();
      for (const entry of entries) {
        await this.#hook(options.beforeMessage);
        try {
          results.set(entry.index, await timed(entry.id, (context) => handler(trx, entry.message, context)));
        } catch {
          throw new OptimisticBatchFailed();
        }
      }
      return results;
    });
  }

  /**
   * Processes a batch in one transaction with one handler call for all its new messages,
   * so the handler can write them in bulk (one `INSERT ... SELECT FROM unnest(...)`): the
   * fastest shape. If the bulk handler fails, the batch is run again one message at a
   * time (each a one-message array inside a savepoint) up to the first that fails, exactly
   * as {@link processBatch} does.
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
    return this.#runBatch(messages, single, options, async (trx, entries, timed) => {
      await this.#hook(options.beforeMessage);
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
      } catch {
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

  /** The batch algorithm shared by both handler shapes. */
  async #runBatch<M extends InboxMessage, R>(
    messages: readonly M[],
    single: MessageHandler<DB, M, R>,
    options: BatchOptions,
    optimistic: RunHandlers<DB, M, R>,
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

    // 2. Optimistic passes; a failing handler is found with savepoints and settled alone,
    //    in order; a failure outside the handlers settles the rest one at a time.
    const savepoints: RunHandlers<DB, M, R> = (trx, pass, timed, stop) =>
      this.#savepointPass(trx, pass, timed, single, options, stop);
    const alone = (entry: Entry<M>) => this.process(entry.message, single, { beforeAttempt: options.beforeMessage });
    let rest: readonly Entry<M>[] = entries;
    while (rest.length > 0) {
      let pass = await this.#batchPass(rest, optimistic);
      if (pass.kind === 'handler_failed') pass = await this.#batchPass(rest, savepoints);
      if (pass.kind === 'committed' || pass.kind === 'prefix') {
        for (const [index, outcome] of pass.outcomes) outcomes[index] = outcome;
      }
      if (pass.kind === 'committed') break;
      if (pass.kind === 'retry_later') {
        for (const entry of rest) outcomes[entry.index] = this.#retryLater(entry.id, pass.reason, pass.error, 0);
        break;
      }
      const culprit = pass.kind === 'prefix' ? pass.culprit : 0;
      const settleAlone = pass.kind === 'prefix' ? rest.slice(culprit, culprit + 1) : rest;
      let handedBack: ProcessOutcome<R> | undefined;
      for (const entry of settleAlone) {
        const outcome = handedBack ?? (await alone(entry));
        outcomes[entry.index] = outcome;
        // What follows a message handed back must not commit before it.
        if (outcome.status === 'retry_later') handedBack = outcome;
      }
      rest = pass.kind === 'prefix' ? rest.slice(culprit + 1) : [];
      if (handedBack !== undefined) {
        for (const entry of rest) outcomes[entry.index] = handedBack;
        break;
      }
    }

    // 3. A copy of an id within the batch follows its first occurrence.
    for (const { index, of } of copies) {
      outcomes[index] = this.#copyOutcome(outcomes[of.index] as ProcessOutcome<R>, of.id);
    }
    return { outcomes: outcomes as ProcessOutcome<R>[] };
  }

  /**
   * The pass that finds the first failing handler: one message at a time, each inside a
   * savepoint. At the first failure its savepoint is rolled back and the pass stops
   * there (`stop.culprit`); the messages before it commit. A savepoint that cannot be
   * rolled back (the connection is gone) fails the whole pass with the handler's error.
   */
  async #savepointPass<M extends InboxMessage, R>(
    trx: Transaction<DB>,
    entries: readonly Entry<M>[],
    timed: TimedHandlerCall,
    single: MessageHandler<DB, M, R>,
    options: BatchOptions,
    stop: { culprit?: number },
  ): Promise<Map<number, R>> {
    const results = new Map<number, R>();
    for (const [position, entry] of entries.entries()) {
      await this.#hook(options.beforeMessage);
      await SAVEPOINT.execute(trx);
      try {
        results.set(entry.index, await timed(entry.id, (context) => single(trx, entry.message, context)));
        await RELEASE_SAVEPOINT.execute(trx);
      } catch (error) {
        try {
          await ROLLBACK_TO_SAVEPOINT.execute(trx);
        } catch {
          throw error;
        }
        stop.culprit = position;
        return results;
      }
    }
    return results;
  }

  /**
   * One batch transaction: claim every key in one statement, run the handlers over the
   * new ones, store results, commit. A savepoint pass that stopped at a culprit releases
   * the keys from the culprit on and commits the rest. Lock contention in our own
   * statements is waited out; other failures are sorted into a {@link BatchPass}.
   */
  async #batchPass<M extends InboxMessage, R>(
    entries: readonly Entry<M>[],
    runHandlers: RunHandlers<DB, M, R>,
  ): Promise<BatchPass<R>> {
    const { db, consumer, isolationLevel, storeResults, lockTimeoutMs } = this.config;
    const ids = entries.map((entry) => entry.id);
    const hashes = entries.map((entry) => entry.hash);
    const contentionDeadline = performance.now() + Math.max(CONTENTION_WAIT_MS, 2 * lockTimeoutMs);
    for (let wait = 0; ; wait++) {
      const outcomes = new Map<number, ProcessOutcome<R>>();
      const stop: { culprit?: number } = {};
      try {
        await db
          .transaction()
          .setIsolationLevel(isolationLevel)
          .execute(async (trx) => {
            const runner = trx as unknown as QueryRunner;
            let claimed: Set<string>;
            try {
              claimed = await this.#claimMessages(runner, consumer, ids, hashes);
            } catch (error) {
              if (isLockTimeout(error)) throw new LockTimeoutError(ids[0] ?? '', lockTimeoutMs, { cause: error });
              throw error;
            }
            const fresh = entries.filter((entry) => claimed.has(entry.id));
            const stored =
              fresh.length < entries.length
                ? await this.#readStored(
                    runner,
                    consumer,
                    entries.filter((entry) => !claimed.has(entry.id)).map((entry) => entry.id),
                  )
                : new Map<string, StoredRow>();
            const results =
              fresh.length === 0 ? new Map<number, R>() : await runHandlers(trx, fresh, this.#timedHandler(), stop);
            // The culprit of a savepoint pass and the fresh messages after it are not done.
            const culpritEntry = stop.culprit === undefined ? undefined : fresh[stop.culprit];
            const cut = culpritEntry === undefined ? entries.length : entries.indexOf(culpritEntry);
            const undone = fresh.slice(stop.culprit ?? fresh.length);
            if (undone.length > 0)
              await this.#releaseMessages(
                runner,
                consumer,
                undone.map((entry) => entry.id),
              );
            const storedIds: string[] = [];
            const storedJson: string[] = [];
            for (const entry of entries.slice(0, cut)) {
              if (!claimed.has(entry.id)) {
                const row = stored.get(entry.id);
                outcomes.set(
                  entry.index,
                  row === undefined
                    ? this.#retryLater(entry.id, 'lock_timeout', new LockTimeoutError(entry.id, lockTimeoutMs), 0)
                    : this.#fromStored(entry.id, entry.hash, row),
                );
                continue;
              }
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
            if (culpritEntry !== undefined) stop.culprit = cut;
          });
      } catch (thrown) {
        if (thrown instanceof OptimisticBatchFailed) return { kind: 'handler_failed' };
        if (thrown instanceof HookFailed) throw thrown.error;
        const error = toError(thrown);
        const kind = await this.#classify(error);
        if (kind === 'contention' && performance.now() < contentionDeadline) {
          await delay(this.#contentionPause(wait));
          continue;
        }
        if (kind === 'unavailable')
          return { kind: 'retry_later', reason: 'database_unavailable', error: unavailable(error) };
        if (kind === 'lock_timeout' || kind === 'contention')
          return { kind: 'retry_later', reason: 'lock_timeout', error };
        return { kind: 'failed', error };
      }
      this.#emitBatchOutcomes(outcomes);
      return stop.culprit === undefined
        ? { kind: 'committed', outcomes }
        : { kind: 'prefix', outcomes, culprit: stop.culprit };
    }
  }

  #emitBatchOutcomes(outcomes: Map<number, ProcessOutcome<unknown>>): void {
    const { consumer } = this;
    for (const outcome of outcomes.values()) {
      if (outcome.status === 'processed') {
        this.#events.emit('processed', { consumer, messageId: outcome.messageId, attempts: 1, durationMs: 0 });
      } else if (outcome.status === 'duplicate') this.#emitDuplicate(outcome);
      else if (outcome.status === 'conflict') this.#events.emit('conflict', { consumer, messageId: outcome.messageId });
    }
  }

  // ---------------------------------------------------------------------------------------
  // Dead letters, lookups, retention
  // ---------------------------------------------------------------------------------------

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
   * @throws {DatabaseUnavailableError} when Postgres does not answer: do not ack then.
   */
  async recordDeadLetter(message: InboxMessage, outcome: DeadLetterOutcome | ConflictOutcome): Promise<void> {
    if (outcome.status === 'conflict' || outcome.messageId === undefined) return;
    const id = outcome.messageId;
    try {
      checkMessageId(id, this.config.maxIdLength);
    } catch {
      return;
    }
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
      hash = this.#fingerprint(checkPayload(message.payload, id));
    } catch {
      hash = null;
    }
    try {
      await this.#recordDeadLetter(this.config.db as unknown as QueryRunner, this.consumer, id, hash, detail);
    } catch (thrown) {
      const error = toError(thrown);
      if ((await this.#classify(error)) === 'unavailable') throw unavailable(error);
      this.config.logger.warn(
        { consumer: this.consumer, messageId: id, err: error },
        'inboxkit: dead letter published but not recorded; a redelivery of the same id would be handled again',
      );
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

  /** Runs one handler call under `handlerTimeoutMs`. */
  #timedCall(messageId: string): TimedCall {
    return { timeoutMs: this.config.handlerTimeoutMs, messageId };
  }

  /** The timed call of a batch's handlers, with their context. */
  #timedHandler(): TimedHandlerCall {
    const { consumer } = this;
    return (messageId, call) =>
      runTimed(this.#timedCall(messageId), (signal) => call({ attempt: 1, consumer, signal }));
  }

  /** Runs an adapter's hook; its failure is marked so that it reaches the caller as it is. */
  async #hook(hook: (() => Promise<void> | void) | undefined): Promise<void> {
    if (hook === undefined) return;
    try {
      await hook();
    } catch (error) {
      throw new HookFailed(error);
    }
  }

  /** The pause before contention is tried again: the policy's backoff, never under 10 ms. */
  #contentionPause(wait: number): number {
    const { minTimeout, maxTimeout, randomize } = this.config.retry;
    const base = Math.max(10, Math.min(minTimeout * 2 ** wait, maxTimeout));
    return randomize ? base * (1 + Math.random()) : base;
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

  /** Sorts a failure; whether the database is gone is asked of the database (see {@link classifyFailure}). */
  #classify(error: Error): Promise<FailureKind> {
    return classifyFailure(error, this.config.retry, () => this.#databaseReachable());
  }

  /** True when Postgres answers `SELECT 1` within {@link PROBE_TIMEOUT_MS}. */
  async #databaseReachable(): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        PROBE.execute(this.config.db).then(() => true),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), PROBE_TIMEOUT_MS);
        }),
      ]);
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
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

function unavailable(error: Error): DatabaseUnavailableError {
  return error instanceof DatabaseUnavailableError
    ? error
    : new DatabaseUnavailableError(`Postgres is unavailable: ${error.message}`, { cause: error });
}
