/**
 * `@inboxkit/core/admin`: the operations an operator runs against the inbox tables (the
 * `inboxkit` CLI is built on it): status figures that never read a whole table, a key's
 * stored row, forgetting keys so a message may run again (docs/design.md, "Operations").
 *
 * @module @inboxkit/core/admin
 */

import type { Kysely } from 'kysely';
import { ConfigurationError } from './errors.js';
import { inboxTables } from './identifiers.js';
import { checkMessageId, MAX_CONSUMER_BYTES, MAX_ID_BYTES } from './inbox-message.js';
import { compileAdminKeys } from './sql/admin-keys.js';
import { compileAdminStatus, type TableStats } from './sql/admin-status.js';
import { type QueryRunner, raw } from './sql/executor.js';

export { DEFAULT_RETENTION_MS } from './inbox-options.js';

/** Options of {@link createInboxAdmin}. */
export interface InboxAdminOptions<DB> {
  /** The database of the inbox tables. */
  readonly db: Kysely<DB>;
  /** Schema of the inbox tables. Default `'public'`. */
  readonly schema?: string;
  /** Name of the inbox table. Default `'processed_messages'`. */
  readonly table?: string;
}

/** Options of {@link InboxAdmin.consumerStatus}. */
export interface StatusOptions {
  /**
   * Keys are counted exactly up to this many per consumer (a bounded scan of the primary
   * key); past it, keys and dead-lettered keys are estimated from the planner's
   * statistics. Default `10000`.
   */
  readonly exactUpTo?: number;
  /** The longest the oldest-key lookup may take, in milliseconds; past it the figure is `null`. Default `5000`. */
  readonly timeoutMs?: number;
}

/** One consumer's figures. `*Estimated` says which are estimates rather than counts. */
export interface ConsumerStatus {
  /** The consumer name. */
  readonly consumer: string;
  /** Keys stored (processed and dead-lettered). */
  readonly keys: number;
  /** `keys` is an estimate (past `exactUpTo`). */
  readonly keysEstimated: boolean;
  /** Keys of dead-lettered messages: a redelivery of one is acked as a duplicate. */
  readonly deadLettered: number;
  /** `deadLettered` is an estimate (past `exactUpTo`). */
  readonly deadLetteredEstimated: boolean;
  /** When the oldest key was stored; `null` when there is none or the lookup timed out (`oldestTimedOut`). */
  readonly oldestKeyAt: Date | null;
  /** The oldest-key lookup ran past `timeoutMs`. */
  readonly oldestTimedOut: boolean;
  /**
   * Crash-loop suspects: deliveries whose attempt was counted and that have not finished
   * (crashed, or running right now). Exact: the attempts table holds only these.
   */
  readonly crashLoopSuspects: number;
  /** The highest attempt count among the suspects. */
  readonly maxAttempts: number | null;
  /** When the latest suspect attempt started; `null` without suspects. */
  readonly lastAttemptAt: Date | null;
}

/** A key as stored, with its crash-loop attempts. */
export interface StoredKey {
  /** The consumer name. */
  readonly consumer: string;
  /** The message id. */
  readonly messageId: string;
  /** `null` when only crash-loop attempts are stored for the id (it never finished). */
  readonly status: 'processed' | 'dead_lettered' | null;
  /** The handler's result, or the dead-letter detail of a dead-lettered key. */
  readonly result: unknown;
  /** SHA-256 of the payload, hex; `null` without a payload or fingerprinting. */
  readonly fingerprint: string | null;
  /** When the key was stored; `null` when only attempts are. */
  readonly processedAt: Date | null;
  /** Crash-loop attempts counted for the id; `null` when none are stored. */
  readonly attempts: number | null;
  /** When the first counted attempt started; `null` when none are stored. */
  readonly firstAttemptAt: Date | null;
  /** When the latest counted attempt started; `null` when none are stored. */
  readonly lastAttemptAt: Date | null;
}

/** What {@link InboxAdmin.forget} deleted. */
export interface ForgetResult {
  /** Ids whose key was deleted. */
  readonly keys: readonly string[];
  /** Ids whose crash-loop attempts were deleted. */
  readonly attempts: readonly string[];
}

/**
 * Administration of an inbox's tables: the queries behind `inboxkit status`, `find` and
 * `forget`. It holds no connections of its own.
 *
 * @example
 * ```ts
 * import { createInboxAdmin } from '@inboxkit/core/admin'
 * const admin = createInboxAdmin({ db })
 * for (const consumer of await admin.consumers()) console.log(await admin.consumerStatus(consumer))
 * await admin.forgetDeadLettered('payments', ['charge-42']) // charge-42 may be redelivered and run
 * ```
 */
export function createInboxAdmin<DB>(options: InboxAdminOptions<DB>): InboxAdmin {
  return new InboxAdmin(options as InboxAdminOptions<unknown>);
}

/** See {@link createInboxAdmin}. */
export class InboxAdmin {
  readonly #db: Kysely<unknown>;
  readonly #status: ReturnType<typeof compileAdminStatus>;
  readonly #keys: ReturnType<typeof compileAdminKeys>;

  /** @internal Use {@link createInboxAdmin}. */
  constructor(options: InboxAdminOptions<unknown>) {
    const tables = inboxTables(options.schema, options.table);
    this.#db = options.db;
    this.#status = compileAdminStatus(tables);
    this.#keys = compileAdminKeys(tables);
  }

  get #runner(): QueryRunner {
    return this.#db as unknown as QueryRunner;
  }

  /** The consumers with keys or crash-loop attempts, in name order (one index probe per consumer). */
  consumers(): Promise<string[]> {
    return this.#status.consumers(this.#runner);
  }

  /** Whether the consumer has any key or attempt (two index probes). */
  hasConsumer(consumer: string): Promise<boolean> {
    return this.#keys.consumerKnown(this.#runner, checkConsumer(consumer));
  }

  /** A consumer's figures, without reading the whole table (see {@link StatusOptions}). */
  async consumerStatus(consumer: string, options: StatusOptions = {}): Promise<ConsumerStatus> {
    checkConsumer(consumer);
    const exactUpTo = options.exactUpTo ?? 10_000;
    const timeoutMs = options.timeoutMs ?? 5000;
    if (!Number.isInteger(exactUpTo) || exactUpTo < 1) {
      throw new ConfigurationError(`Expected \`exactUpTo\` to be a positive whole number, got ${String(exactUpTo)}.`);
    }
    const counted = await this.#status.boundedCount(this.#runner, consumer, exactUpTo + 1);
    let keys = counted.keys;
    let deadLettered = counted.deadLettered;
    const estimated = counted.keys > exactUpTo;
    if (estimated) {
      const stats = await this.#status.stats(this.#runner);
      const estimate = stats === undefined ? undefined : estimateConsumer(stats, consumer);
      keys = Math.max(exactUpTo + 1, Math.round(estimate?.keys ?? 0));
      deadLettered = Math.round(estimate === undefined ? deadLettered : keys * estimate.deadLetteredShare);
    }
    const oldest = await this.#oldest(consumer, timeoutMs);
    const attempts = await this.#status.attempts(this.#runner, consumer);
    return {
      consumer,
      keys,
      keysEstimated: estimated,
      deadLettered,
      deadLetteredEstimated: estimated,
      oldestKeyAt: oldest.at,
      oldestTimedOut: oldest.timedOut,
      crashLoopSuspects: attempts.suspects,
      maxAttempts: attempts.maxAttempts,
      lastAttemptAt: attempts.lastAttemptAt,
    };
  }

  async #oldest(consumer: string, timeoutMs: number): Promise<{ at: Date | null; timedOut: boolean }> {
    try {
      // A transaction of its own: statement_timeout local to it, and a timeout aborts only it.
      const at = await this.#db.transaction().execute(async (trx) => {
        const runner = trx as unknown as QueryRunner;
        await runner.executeQuery(setStatementTimeout(timeoutMs));
        return this.#status.oldest(runner, consumer);
      });
      return { at, timedOut: false };
    } catch (error) {
      if ((error as { code?: unknown }).code === '57014') return { at: null, timedOut: true };
      throw error;
    }
  }

  /** The stored key of a message id (and its crash-loop attempts), or `undefined`. */
  async find(consumer: string, messageId: string): Promise<StoredKey | undefined> {
    return (await this.read(consumer, [messageId])).get(messageId);
  }

  /** The stored keys of some message ids; ids without a key or attempts are absent. */
  async read(consumer: string, messageIds: readonly string[]): Promise<Map<string, StoredKey>> {
    checkConsumer(consumer);
    const ids = messageIds.map(checkId);
    const rows = await this.#keys.read(this.#runner, consumer, ids);
    return new Map(
      rows.map((row) => [
        row.message_id,
        {
          consumer,
          messageId: row.message_id,
          status: row.status,
          result: row.result ?? undefined,
          fingerprint: row.payload_hash === null ? null : row.payload_hash.toString('hex'),
          processedAt: row.processed_at,
          attempts: row.attempts,
          firstAttemptAt: row.first_attempt_at,
          lastAttemptAt: row.last_attempt_at,
        },
      ]),
    );
  }

  /**
   * Deletes keys whatever their status, with their crash-loop attempts, in one
   * transaction: a redelivery of these ids runs its handler again. For a processed key
   * that means its effects may happen twice: forget only what you know did not apply.
   */
  async forget(consumer: string, messageIds: readonly string[]): Promise<ForgetResult> {
    checkConsumer(consumer);
    const ids = messageIds.map(checkId);
    return this.#db
      .transaction()
      .execute((trx) => this.#keys.forget(trx as unknown as QueryRunner, consumer, ids, false));
  }

  /**
   * Deletes only dead-lettered keys (a processed key keeps deduplicating), so that a
   * replayed dead letter runs its handler instead of being acked as a duplicate. Waits at
   * most `lockTimeoutMs` (default 10 s) for a key another delivery holds, then throws
   * (SQLSTATE 55P03). Returns the ids whose key was deleted.
   */
  async forgetDeadLettered(
    consumer: string,
    messageIds: readonly string[],
    options: { readonly lockTimeoutMs?: number } = {},
  ): Promise<string[]> {
    checkConsumer(consumer);
    const ids = messageIds.map(checkId);
    const lockTimeoutMs = options.lockTimeoutMs ?? 10_000;
    const result = await this.#db.transaction().execute(async (trx) => {
      const runner = trx as unknown as QueryRunner;
      await this.#keys.setLockTimeout(runner, lockTimeoutMs);
      return this.#keys.forget(runner, consumer, ids, true);
    });
    return result.keys;
  }

  /**
   * Counts a consumer's keys stored before `before`, up to `bound` (a bounded index scan):
   * the total of a purge's progress bar.
   */
  countExpired(consumer: string, before: Date, bound = 1_000_000): Promise<number> {
    return this.#status.boundedExpired(this.#runner, checkConsumer(consumer), before, bound);
  }
}

function setStatementTimeout(timeoutMs: number) {
  return raw(`SELECT set_config('statement_timeout', $1, true)`, [`${Math.max(1, Math.round(timeoutMs))}ms`]);
}

/** A consumer's share of the table's rows and of dead-lettered rows, from pg_stats. */
function estimateConsumer(stats: TableStats, consumer: string): { keys: number; deadLetteredShare: number } {
  const rows = Math.max(0, stats.reltuples);
  const index = stats.consumerValues.indexOf(consumer);
  let share: number;
  if (index >= 0) {
    share = stats.consumerFreqs[index] ?? 0;
  } else {
    const common = stats.consumerFreqs.reduce((sum, f) => sum + f, 0);
    const distinct = stats.consumerDistinct ?? 1;
    const distinctCount = distinct < 0 ? -distinct * rows : distinct;
    const others = Math.max(1, distinctCount - stats.consumerValues.length);
    share = Math.max(0, 1 - common) / others;
  }
  const deadIndex = stats.statusValues.indexOf('dead_lettered');
  const deadLetteredShare = deadIndex >= 0 ? (stats.statusFreqs[deadIndex] ?? 0) : 0;
  return { keys: rows * share, deadLetteredShare };
}

function checkConsumer(consumer: string): string {
  if (typeof consumer !== 'string' || consumer.length === 0) {
    throw new ConfigurationError('Expected a consumer name: a non-empty string.');
  }
  if (Buffer.byteLength(consumer, 'utf8') > MAX_CONSUMER_BYTES || consumer.includes('\u0000')) {
    throw new ConfigurationError(
      `A consumer name is at most ${MAX_CONSUMER_BYTES} bytes without NUL; got ${JSON.stringify(consumer.slice(0, 64))}.`,
    );
  }
  return consumer;
}

/** An id the inbox could hold as a key; anything else cannot be stored, so it is refused. */
function checkId(id: string): string {
  return checkMessageId(id, MAX_ID_BYTES);
}
