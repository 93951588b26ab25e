import { sql } from 'kysely';
import { classifyFailure, databaseFailure, type FailureKind } from './error-classification.js';
import {
  ConfigurationError,
  ConnectionBusyError,
  DatabaseUnavailableError,
  PayloadConflictError,
  toError,
} from './errors.js';
import { type DeadLetterReason, InboxEmitter, type RetryLaterReason } from './events.js';
import { fingerprint } from './fingerprint.js';
import { runTimed, type TimedCall } from './handler-timeout.js';
import { checkMessageId, checkPayload, type InboxMessage } from './inbox-message.js';
import type { InboxConfig } from './inbox-options.js';
import type { HandlerContext } from './inbox-types.js';
import type {
  ConflictOutcome,
  DeadLetterOutcome,
  DuplicateOutcome,
  ProcessOutcome,
  RetryLaterOutcome,
} from './outcome.js';
import { type ClaimMessage, compileClaimMessage, compileClaimMessageWithoutFunction } from './sql/claim-message.js';
import { type ClaimMessages, compileClaimMessages, compileClaimMessagesPartitioned } from './sql/claim-messages.js';
import type { QueryRunner, StoredRow } from './sql/executor.js';
import { compileFindClaimFunction, type TableLayout } from './sql/find-claim-function.js';
import { compileDropDetachedPartitions, compileMaintainPartitions } from './sql/maintain-partitions.js';
import { compilePurgeExpired, compileTryPurgeLock } from './sql/purge-expired.js';
import { compileReadStored } from './sql/read-stored.js';
import { compileClearAttempts, compileRecordAttempt, compileUncountAttempt } from './sql/record-attempt.js';
import {
  compileRecordDeadLetter,
  compileRecordDeadLetterPartitioned,
  type RecordDeadLetter,
} from './sql/record-dead-letter.js';
import { compileReleaseMessages } from './sql/release-messages.js';
import { compileStoreResults } from './sql/store-results.js';
import { SuspectGate } from './suspect-gate.js';

/** Runs one handler call of a batch under `handlerTimeoutMs`, with its context. */
export type TimedHandlerCall = <T>(messageId: string, call: (context: HandlerContext) => Promise<T> | T) => Promise<T>;

/** An adapter's `beforeMessage`/`beforeAttempt` failed: rolled back, and rethrown to the caller as it is. */
export class HookFailed extends Error {
  readonly error: unknown;
  constructor(error: unknown) {
    super('inboxkit: an adapter hook failed');
    this.error = error;
  }
}

/** How long lock contention is waited out before the message is handed back. */
const CONTENTION_WAIT_MS = 10_000;
/** How long the database has to answer the reachability probe. */
const PROBE_TIMEOUT_MS = 5_000;
const PROBE = sql.raw('SELECT 1');
const SIDE_TIMEOUT: unique symbol = Symbol('side connection timeout');

/**
 * What the single-message and batch paths share: the compiled options and statements,
 * the events, the suspect gate, and the small decisions both make the same way (how an
 * outcome is built and reported, how a failure is sorted). One per inbox, built once.
 */
export class InboxContext<DB> {
  readonly config: InboxConfig<DB>;
  readonly consumer: string;
  readonly events: InboxEmitter;
  readonly gate = new SuspectGate();
  /** The inbox's own statements, compiled once (`sql/`, one statement per file). */
  readonly sql;
  /** The claim this inbox uses, once {@link findClaim} has decided; `undefined` before. */
  claim: ClaimMessage | undefined;
  /** The batch claim and the dead-letter record for the table's layout (plain until {@link findClaim} finds it partitioned). */
  claimMany: ClaimMessages;
  recordDeadLetter: RecordDeadLetter;
  /** Whether the table is partitioned by time, once {@link findClaim} has looked; `undefined` before. */
  partitioned: boolean | undefined;
  #findingClaim: Promise<ClaimMessage> | undefined;

  constructor(config: InboxConfig<DB>) {
    this.config = config;
    this.consumer = config.consumer;
    this.events = new InboxEmitter(config.logger);
    const { tables, lockTimeoutMs, handlerTimeoutMs } = config;
    this.sql = {
      claimMessage: compileClaimMessage(tables, lockTimeoutMs, handlerTimeoutMs),
      claimMessageWithoutFunction: compileClaimMessageWithoutFunction(tables, lockTimeoutMs, handlerTimeoutMs),
      findClaimFunction: compileFindClaimFunction(tables),
      claimMessages: compileClaimMessages(tables, lockTimeoutMs, handlerTimeoutMs),
      claimMessagesPartitioned: compileClaimMessagesPartitioned(tables, lockTimeoutMs, handlerTimeoutMs),
      readStored: compileReadStored(tables),
      storeResults: compileStoreResults(tables),
      releaseMessages: compileReleaseMessages(tables),
      recordDeadLetter: compileRecordDeadLetter(tables, lockTimeoutMs),
      recordDeadLetterPartitioned: compileRecordDeadLetterPartitioned(tables, lockTimeoutMs),
      maintainPartitions: compileMaintainPartitions(tables),
      dropDetachedPartitions: compileDropDetachedPartitions(tables),
      recordAttempt: compileRecordAttempt(tables),
      uncountAttempt: compileUncountAttempt(tables),
      clearAttempts: compileClearAttempts(tables),
      purge: compilePurgeExpired(tables),
      tryPurgeLock: compileTryPurgeLock(),
    } as const;
    this.claimMany = this.sql.claimMessages;
    this.recordDeadLetter = this.sql.recordDeadLetter;
  }

  // --- the claim: through the claim function, or without it -------------------------------

  /**
   * Decides, once per inbox and outside any message's transaction, which claim it uses:
   * the claim function of migration 0002, or, on a database migrated only to 0001, the
   * insert and a second statement for a duplicate (with one warning advising the
   * migration). Concurrent first messages share one look-up. A look-up that fails (the
   * database does not answer) decides nothing: that message claims without the function,
   * which works on every schema, and the next one asks again.
   *
   * A partitioned table (docs/retention.md) is claimed only through its claim functions,
   * under READ COMMITTED: without them, or under another isolation level, it rejects
   * with {@link ConfigurationError} (and `process` and the batch entry points reject with
   * it), since `ON CONFLICT` cannot deduplicate across partitions.
   */
  findClaim(): Promise<ClaimMessage> {
    if (this.claim !== undefined) return Promise.resolve(this.claim);
    this.#findingClaim ??= this.sql
      .findClaimFunction(this.runner)
      .then(
        (layout) => this.#useLayout(layout),
        () => this.sql.claimMessageWithoutFunction,
      )
      .finally(() => {
        this.#findingClaim = undefined;
      });
    return this.#findingClaim;
  }

  #useLayout(layout: TableLayout): ClaimMessage {
    this.partitioned = layout.partitioned;
    if (layout.partitioned) {
      const { tables, isolationLevel } = this.config;
      if (!layout.claimFunction) {
        throw new ConfigurationError(
          `The inbox table ${tables.qualified} is partitioned but its claim function ${tables.claimFunction} is missing or not executable by this role: run migrateInbox(db, { partitioned }) (docs/retention.md).`,
        );
      }
      if (isolationLevel !== 'read committed') {
        throw new ConfigurationError(
          `The inbox table ${tables.qualified} is partitioned: its keys are deduplicated only under \`isolationLevel: 'read committed'\`, not '${isolationLevel}' (docs/retention.md).`,
        );
      }
      this.claimMany = this.sql.claimMessagesPartitioned;
      this.recordDeadLetter = this.sql.recordDeadLetterPartitioned;
      this.claim = this.sql.claimMessage;
      return this.claim;
    }
    if (!layout.claimFunction) this.#warnNoClaimFunction();
    this.claimMany = this.sql.claimMessages;
    this.recordDeadLetter = this.sql.recordDeadLetter;
    this.claim = layout.claimFunction ? this.sql.claimMessage : this.sql.claimMessageWithoutFunction;
    return this.claim;
  }

  /**
   * A claim on a partitioned table found no partition for its `processed_at` (23514: no
   * purge ran for longer than the partitions made ahead last): creates the current one and
   * those ahead now, behind the maintenance lock (waiting for it, as a purger may hold it),
   * dropping nothing. The caller then claims again.
   */
  async makePartitions(): Promise<void> {
    const { db, tables } = this.config;
    await db.transaction().execute(async (trx) => {
      const runner = trx as unknown as QueryRunner;
      await sql`SELECT pg_advisory_xact_lock(hashtextextended(${partitionLockKey(tables.qualified)}, 0))`.execute(trx);
      await this.sql.maintainPartitions(runner, KEEP_EVERYTHING_MS);
    });
  }

  /**
   * The claim function went away after it was found (42883: a database restored or
   * migrated down; 42501: its EXECUTE privilege revoked): claim without it from now on.
   * The caller runs the attempt again; the message is neither retried nor dead-lettered
   * for it (a claim without the function that fails too is an ordinary failed attempt).
   */
  claimFunctionMissing(): void {
    if (this.partitioned === true) {
      // No claim without the function on a partitioned table: look again, which refuses.
      this.claim = undefined;
      return;
    }
    if (this.claim === this.sql.claimMessageWithoutFunction) return;
    this.claim = this.sql.claimMessageWithoutFunction;
    this.#warnNoClaimFunction();
  }

  #warnNoClaimFunction(): void {
    this.config.logger.warn(
      { consumer: this.consumer, claimFunction: this.config.tables.claimFunction },
      'inboxkit: the claim function of migration 0002 is missing (or not executable by this role): run migrateInbox (or apply packages/core/sql/0002_claim_function.sql); until then a duplicate costs one more statement',
    );
  }

  /** The Kysely instance as the statements take it. */
  get runner(): QueryRunner {
    return this.config.db as unknown as QueryRunner;
  }

  fingerprint(payload: InboxMessage['payload']): Buffer | null {
    return this.config.fingerprintPayloads ? fingerprint(payload) : null;
  }

  /**
   * A message's key and payload fingerprint, or the `invalid_message` dead letter it gets
   * when its id or payload breaks a rule (reported here).
   */
  keyOf(message: InboxMessage, fingerprinted = true): { id: string; hash: Buffer | null } | DeadLetterOutcome {
    try {
      const id = checkMessageId((message as Partial<InboxMessage> | null | undefined)?.id, this.config.maxIdLength);
      const payload = checkPayload(message.payload, id);
      return { id, hash: fingerprinted ? this.fingerprint(payload) : null };
    } catch (error) {
      return this.deadLetter(messageIdOf(error), 'invalid_message', toError(error), 0, new Date());
    }
  }

  // --- outcomes: built and reported in one place ------------------------------------------

  /** A stored key seen again: a duplicate, or a conflict when the fingerprints differ. Not reported. */
  fromStored(id: string, hash: Buffer | null, stored: StoredRow): DuplicateOutcome | ConflictOutcome {
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

  /** Reports an outcome that is final for the inbox (processed, duplicate, conflict). */
  report(outcome: ProcessOutcome<unknown>, durationMs = 0): void {
    const { consumer } = this;
    switch (outcome.status) {
      case 'processed':
        this.events.emit('processed', {
          consumer,
          messageId: outcome.messageId,
          attempts: outcome.attempts,
          durationMs,
        });
        return;
      case 'duplicate':
        this.events.emit('duplicate', {
          consumer,
          messageId: outcome.messageId,
          previousStatus: outcome.previousStatus,
        });
        return;
      case 'conflict':
        this.events.emit('conflict', { consumer, messageId: outcome.messageId });
        return;
      default:
        return;
    }
  }

  /** A message a fence's position already covers: a duplicate whose result is not kept. Not reported. */
  covered(id: string): DuplicateOutcome {
    return {
      status: 'duplicate',
      messageId: id,
      result: undefined,
      previousStatus: 'processed',
      processedAt: undefined,
    };
  }

  conflict(id: string): ConflictOutcome {
    const outcome: ConflictOutcome = {
      status: 'conflict',
      messageId: id,
      error: new PayloadConflictError(this.consumer, id),
    };
    this.report(outcome);
    return outcome;
  }

  /** What a copy of a message within one batch becomes, given its first occurrence's outcome. */
  copyOutcome<R>(first: ProcessOutcome<R>, id: string): ProcessOutcome<R> {
    let copy: DuplicateOutcome;
    switch (first.status) {
      case 'processed':
        copy = {
          status: 'duplicate',
          messageId: id,
          result: first.result,
          previousStatus: 'processed',
          processedAt: undefined,
        };
        break;
      case 'dead_letter':
        copy = {
          status: 'duplicate',
          messageId: id,
          result: undefined,
          previousStatus: 'dead_lettered',
          processedAt: undefined,
        };
        break;
      case 'duplicate':
        copy = { ...first, messageId: id };
        break;
      default:
        return first;
    }
    this.report(copy);
    return copy;
  }

  deadLetter(
    messageId: string | undefined,
    reason: DeadLetterReason,
    error: Error,
    attempts: number,
    firstSeenAt: Date,
  ): DeadLetterOutcome {
    this.events.emit('deadLetter', { consumer: this.consumer, messageId, reason, attempts, error });
    this.config.logger.warn(
      { consumer: this.consumer, messageId, outcome: 'dead_letter', reason, attempts, err: error },
      'inboxkit: message to be dead-lettered',
    );
    return { status: 'dead_letter', messageId, reason, error, attempts, firstSeenAt };
  }

  retryLater(
    messageId: string | undefined,
    reason: RetryLaterReason,
    error: Error,
    attempts: number,
  ): RetryLaterOutcome {
    this.events.emit('retryLater', { consumer: this.consumer, messageId, reason, error });
    this.config.logger.warn(
      { consumer: this.consumer, messageId, outcome: 'retry_later', reason, attempts, err: error },
      'inboxkit: message handed back to be retried later',
    );
    return { status: 'retry_later', messageId, reason, error, attempts };
  }

  // --- failures ---------------------------------------------------------------------------

  /** Sorts a failure; whether the database is gone is asked of the database (see `classifyFailure`). */
  classify(error: Error): Promise<FailureKind> {
    return classifyFailure(error, this.config.retry, () => this.databaseAnswers());
  }

  /** True when Postgres answers `SELECT 1` within {@link PROBE_TIMEOUT_MS}. */
  async databaseAnswers(): Promise<boolean> {
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

  /** When lock contention met at `now` stops being waited out. */
  contentionDeadline(): number {
    return performance.now() + Math.max(CONTENTION_WAIT_MS, 2 * this.config.lockTimeoutMs);
  }

  /** The pause before contention is tried again: the retry policy's backoff, never under 10 ms. */
  contentionPause(wait: number): Promise<void> {
    const { minTimeout, maxTimeout, factor, randomize } = this.config.retry;
    const base = Math.max(10, Math.min(minTimeout * Math.max(factor, 1) ** wait, maxTimeout));
    return delay(randomize ? base * (1 + Math.random()) : base);
  }

  // --- handler calls ----------------------------------------------------------------------

  /** Runs one handler call under `handlerTimeoutMs`. */
  timedCall(messageId: string): TimedCall {
    return { timeoutMs: this.config.handlerTimeoutMs, messageId };
  }

  /** The timed call of a batch's handlers, with their context. */
  timedHandler(): TimedHandlerCall {
    const { consumer } = this;
    return (messageId, call) => runTimed(this.timedCall(messageId), (signal) => call({ attempt: 1, consumer, signal }));
  }

  /** Runs an adapter's hook; its failure is marked so that it reaches the caller as it is. */
  async hook(hook: (() => Promise<void> | void) | undefined): Promise<void> {
    if (hook === undefined) return;
    try {
      await hook();
    } catch (error) {
      throw new HookFailed(error);
    }
  }

  /**
   * Runs one autocommit statement on a connection other than the attempt's (the crash-loop
   * count). Bounded as a whole, getting the connection and running the statement: past
   * `max(lockTimeoutMs, 1 s)` (every pool connection busy, a pooler such as PgBouncer
   * queueing it, a lock on the row) it fails with {@link ConnectionBusyError}, which the
   * attempt waits out like contention, without spending the retry budget. So does a
   * statement that fails for want of a connection (a pooler's `query_wait_timeout`). When
   * an abandoned statement still completes later, `late` gets its result (the count is then
   * taken back). A pool of one connection can never give it.
   */
  async onSideConnection<T>(
    work: (runner: QueryRunner) => Promise<T>,
    late?: (result: T) => Promise<void>,
  ): Promise<T> {
    const { db, lockTimeoutMs } = this.config;
    const call: { abandoned: boolean } = { abandoned: false };
    const done = db.connection().execute(async (connection) => {
      if (call.abandoned) return SIDE_TIMEOUT;
      return work(connection as unknown as QueryRunner);
    });
    const waitMs = Math.max(lockTimeoutMs, 1000);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<typeof SIDE_TIMEOUT>((resolve) => {
      timer = setTimeout(() => resolve(SIDE_TIMEOUT), waitMs);
    });
    let first: T | typeof SIDE_TIMEOUT;
    try {
      first = await Promise.race([done, timedOut]);
    } catch (error) {
      if (databaseFailure(error) === undefined) throw error;
      throw new ConnectionBusyError(
        `The crash-loop count of a redelivered message failed on its second connection: ${toError(error).message}`,
        { cause: error },
      );
    } finally {
      clearTimeout(timer);
    }
    if (first !== SIDE_TIMEOUT) return first;
    call.abandoned = true;
    done.then(
      (result) => {
        if (result !== SIDE_TIMEOUT && late !== undefined) return late(result);
      },
      () => {},
    );
    throw new ConnectionBusyError(
      `The crash-loop count of a redelivered message did not get a second connection through within ${waitMs} ms: every pool connection is busy, or the count waits on a lock (crash-loop protection needs a pool of at least two).`,
    );
  }
}

/** The key of the lock one partition maintainer holds at a time (`purge()` and {@link InboxContext.makePartitions}). */
export function partitionLockKey(qualified: string): string {
  return `inboxkit:partitions:${qualified}`;
}

/** An age no key reaches: maintenance that only creates partitions. */
const KEEP_EVERYTHING_MS = 100 * 365 * 86_400_000;

/** True for a claim on a partitioned table that found no partition for its row (23514). */
export function isNoPartition(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === '23514';
}

/** A database failure as the outcome carries it. */
export function unavailable(error: Error): DatabaseUnavailableError {
  return error instanceof DatabaseUnavailableError
    ? error
    : new DatabaseUnavailableError(`Postgres is unavailable: ${error.message}`, { cause: error });
}

/** The message id an invalid message's error names, if any. */
export function messageIdOf(error: unknown): string | undefined {
  const id = (error as { messageId?: unknown } | null)?.messageId;
  return typeof id === 'string' ? id : undefined;
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
