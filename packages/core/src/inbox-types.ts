import type { Transaction } from 'kysely';
import type { StoredStatus } from './events.js';
import type { TransactionFence } from './fence.js';
import type { InboxMessage } from './inbox-message.js';
import type { ProcessOutcome } from './outcome.js';

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

/** Options of `Inbox.process`. */
export interface ProcessOptions {
  /**
   * The delivery may be a repeat of one that crashed the process (a RabbitMQ redelivery,
   * the first new Kafka messages after an assignment). Its attempt is counted in Postgres
   * before the handler runs, it runs alone, and past `crashLoopLimit` it is dead-lettered
   * without running. Adapters set this; the hot path never does.
   */
  readonly suspect?: boolean;
  /**
   * Called before each attempt (and so between the retry policy's pauses): adapters
   * heartbeat here and check that they still own the message. If it throws, the call
   * rejects with that error and nothing is committed.
   */
  readonly beforeAttempt?: () => Promise<void> | void;
  /**
   * A position kept in the same transaction (Kafka offsets stored in Postgres): see
   * `TransactionFence` on `@inboxkit/core/adapter`. Adapters set this.
   */
  readonly fence?: TransactionFence;
}

/** Options of `Inbox.processBatch` and `Inbox.processBulk`. */
export interface BatchOptions {
  /**
   * Called before each handler call of the batch (and before a bulk handler), and before
   * each attempt of a message settled alone: adapters heartbeat here and check that they
   * still own the batch. If it throws, the running transaction is rolled back and the
   * call rejects with that error (messages committed before it stay committed).
   */
  readonly beforeMessage?: () => Promise<void> | void;
  /**
   * A position kept in the same transactions (Kafka offsets stored in Postgres): see
   * `TransactionFence` on `@inboxkit/core/adapter`. With it, `outcomes` may stop after the
   * first message that was neither processed nor a duplicate. Adapters set this.
   */
  readonly fence?: TransactionFence;
}

/** What became of each message of a batch, in the order they were given. */
export interface BatchResult<R> {
  readonly outcomes: ProcessOutcome<R>[];
}

/** Options of `Inbox.purge`. */
export interface PurgeOptions {
  /**
   * Delete keys older than this many milliseconds. Default: the inbox's `retentionMs`. On a
   * partitioned table, partitions are dropped only once all their keys are older than
   * both this and the table's own retention floor.
   */
  readonly olderThanMs?: number;
  /** Keys deleted per statement (each its own short transaction). Default `1000`. */
  readonly batchSize?: number;
  /** Called after each delete statement with the keys it deleted (a progress bar's hook). */
  readonly onBatch?: (deleted: number) => void;
}

/** What `Inbox.purge` did. */
export interface PurgeResult {
  /** Keys deleted. */
  readonly deleted: number;
  /** Delete statements run. */
  readonly batches: number;
  /** True when another process was purging and this call did nothing. */
  readonly skipped: boolean;
  /**
   * On a table partitioned by time (docs/retention.md), what maintenance did: partitions
   * created ahead, dropped behind (their keys are not counted in `deleted`), and steps left
   * to the next purge because a lock was not free within a second. Absent on a plain table.
   */
  readonly partitions?: { readonly created: number; readonly dropped: number; readonly blocked: number };
}

/** A stored key, as `Inbox.find` returns it. */
export interface StoredMessage {
  /** The id looked up. */
  readonly messageId: string;
  /** Whether the message was processed or dead-lettered. */
  readonly status: StoredStatus;
  /** The stored result (the handler's, or the dead-letter detail); `undefined` when none was kept. */
  readonly result: unknown;
  /** When the key was stored. */
  readonly processedAt: Date;
}
