import type { Kysely } from 'kysely';
import { ConfigurationError } from '../errors.js';
import { bool, positiveInteger } from '../option-checks.js';
import { observeOutboxGauges } from '../telemetry/outbox-gauges.js';
import { withTraceHeaders } from '../telemetry/trace-context.js';
import { type OutboxMessage, outboxRows } from './outbox-message.js';
import { type OutboxTables, outboxTables } from './outbox-tables.js';
import { compileClaim } from './sql/claim.js';
import { compileEnqueue } from './sql/enqueue.js';
import { compileBoundedBacklog, compileListFailed, compileRetryFailed, type FailedRow } from './sql/failed.js';
import { compileSettle } from './sql/settle.js';

/** Options of {@link createOutbox}. */
export interface OutboxOptions {
  /** The database the outbox table is in; relays and `failed()`/`retryFailed()` use it. */
  // biome-ignore lint/suspicious/noExplicitAny: any database schema.
  readonly db: Kysely<any>;
  /** Default `'public'`. */
  readonly schema?: string;
  /** Default `'outbox'`. */
  readonly table?: string;
  /**
   * Wake the relays with `NOTIFY` when an enqueueing transaction commits. Default `true`.
   * Postgres serialises the commits of notifying transactions on one lock, which costs
   * many concurrent writers throughput (docs/outbox.md, "Latency"); with `false`, relays
   * find new rows by polling (give them a short `pollIntervalMs`).
   */
  readonly notify?: boolean;
}

/** A message set aside after the broker refused it past the relay's retry policy. */
export interface FailedOutboxMessage {
  /** The row's place in the outbox (a bigint, as text); pass it as `after` to page. */
  readonly sequence: string;
  /** The id consumers deduplicate on. */
  readonly messageId: string;
  /** The topic, or the exchange. */
  readonly destination: string;
  /** The routing key of a message for an exchange; `null` for a topic. */
  readonly routingKey: string | null;
  /** The ordering key, if the message had one. */
  readonly key: string | null;
  /** The broker headers it is published with. */
  readonly headers: Readonly<Record<string, string>>;
  /** Publishes the broker refused. */
  readonly attempts: number;
  /** The broker's last refusal, as text. */
  readonly lastError: string | null;
  /** When it was enqueued. */
  readonly createdAt: Date;
}

/**
 * The outbox's backlog as {@link Outbox.backlog} reads it. `*Estimated` says which figures
 * are estimates from the planner's statistics rather than counts.
 */
export interface OutboxBacklog {
  /** Messages waiting to be published (including those waiting for a retry). */
  readonly pending: number;
  /** `pending` is an estimate past `exactUpTo`. */
  readonly pendingEstimated: boolean;
  /** Messages set aside as failed: `failed()` lists them, `retryFailed()` puts them back. */
  readonly failed: number;
  /** `failed` is an estimate past `exactUpTo`. */
  readonly failedEstimated: boolean;
  /** When the oldest pending message was enqueued (among the first 100 in line); `null` when none is pending. */
  readonly oldestPendingAt: Date | null;
}

/** What relays need of an outbox; not public. */
export interface OutboxConfig {
  // biome-ignore lint/suspicious/noExplicitAny: any database schema.
  readonly db: Kysely<any>;
  readonly tables: OutboxTables;
  readonly claim: ReturnType<typeof compileClaim>;
  readonly settle: ReturnType<typeof compileSettle>;
  /** The relay's `backlog` event: the bounded backlog of {@link Outbox.backlog}. */
  readonly backlog: () => Promise<RelayBacklog>;
}

/** The figures of a relay's `backlog` event. */
export interface RelayBacklog {
  readonly pending: number;
  readonly pendingEstimated: boolean;
  readonly failed: number;
  readonly failedEstimated: boolean;
  readonly oldestPendingMs: number | null;
}

const configs = new WeakMap<Outbox, OutboxConfig>();
const KEYS = new Set(['db', 'schema', 'table', 'notify']);

/**
 * The outbox: messages written in a transaction, published by a relay once it committed
 * (docs/outbox.md). Made by {@link createOutbox}.
 */
export class Outbox {
  readonly #enqueue: ReturnType<typeof compileEnqueue>;
  readonly #listFailed: ReturnType<typeof compileListFailed>;
  readonly #retryFailed: ReturnType<typeof compileRetryFailed>;
  readonly #boundedBacklog: ReturnType<typeof compileBoundedBacklog>;
  // biome-ignore lint/suspicious/noExplicitAny: any database schema.
  readonly #db: Kysely<any>;

  constructor(options: OutboxOptions) {
    if (typeof options !== 'object' || options === null) {
      throw new ConfigurationError('createOutbox() needs an options object: createOutbox({ db }).');
    }
    for (const key of Object.keys(options)) {
      if (!KEYS.has(key)) throw new ConfigurationError(`Unknown option \`${key}\`; known: ${[...KEYS].join(', ')}.`);
    }
    if (typeof options.db?.executeQuery !== 'function') {
      throw new ConfigurationError('Expected `db` to be a Kysely instance.');
    }
    const tables = outboxTables(options.schema, options.table);
    this.#db = options.db;
    this.#enqueue = compileEnqueue(tables, bool('notify', options.notify, true));
    this.#listFailed = compileListFailed(tables);
    this.#retryFailed = compileRetryFailed(tables);
    this.#boundedBacklog = compileBoundedBacklog(tables);
    observeOutboxGauges(this, () => this.backlog(), `${tables.schema}.${tables.table}`);
    configs.set(
      this,
      Object.freeze({
        db: options.db,
        tables,
        claim: compileClaim(tables),
        settle: compileSettle(tables),
        backlog: async () => {
          const { oldestPendingAt, ...counts } = await this.backlog();
          return {
            ...counts,
            oldestPendingMs: oldestPendingAt === null ? null : Math.max(0, Date.now() - oldestPendingAt.getTime()),
          };
        },
      }),
    );
  }

  /**
   * Writes messages in `trx`, to be published once it commits (never if it rolls back). One
   * statement however many messages; messages of one call keep their order. Invalid input
   * throws {@link InvalidOutboxMessageError} (`code: 'INBOX_INVALID_OUTBOX_MESSAGE'`) naming
   * the field, before any statement.
   *
   * A keyed message holds a lock on its key until `trx` ends, so that messages of one key
   * are published in commit order: a second transaction enqueuing the same key waits for
   * the first (docs/outbox.md, "Ordering").
   *
   * @example
   * ```ts
   * await inbox.process(message, async (trx) => {
   *   await trx.insertInto('orders').values(order).execute()
   *   await outbox.enqueue(trx, { topic: 'order.accepted', key: order.id, payload: { id: order.id } })
   * })
   * ```
   */
  // biome-ignore lint/suspicious/noExplicitAny: a transaction (or instance) of any database schema.
  async enqueue(trx: Kysely<any>, message: OutboxMessage | readonly OutboxMessage[]): Promise<void> {
    const messages: readonly OutboxMessage[] = Array.isArray(message) ? message : [message as OutboxMessage];
    // The trace context of now (the handler's span), carried by the relay to the broker.
    const rows = outboxRows(withTraceHeaders(messages));
    if (rows.messageIds.length === 0) return;
    await this.#enqueue(trx, rows);
  }

  /**
   * Failed messages, oldest first, `limit` (default 100) at a time after the sequence
   * `after` (to page); with `messageIds`, only those.
   *
   * @example
   * ```ts
   * for (const m of await outbox.failed()) console.log(m.messageId, m.destination, m.lastError)
   * ```
   */
  async failed(
    options: { readonly limit?: number; readonly after?: string; readonly messageIds?: readonly string[] } = {},
  ): Promise<FailedOutboxMessage[]> {
    const limit = positiveInteger('limit', options.limit, 100, 10_000);
    const after = options.after ?? '0';
    if (!/^[0-9]+$/.test(after)) throw new ConfigurationError('Expected `after` to be a sequence (digits).');
    const ids = options.messageIds;
    if (ids !== undefined && (!Array.isArray(ids) || ids.some((id) => typeof id !== 'string'))) {
      throw new ConfigurationError('Expected `messageIds` to be an array of strings.');
    }
    const rows: FailedRow[] = await this.#listFailed(this.#db, limit, after, ids ?? null);
    return rows.map((row) => ({
      sequence: row.sequence,
      messageId: row.message_id,
      destination: row.destination,
      routingKey: row.routing_key,
      key: row.key,
      headers: row.headers,
      attempts: row.attempts,
      lastError: row.last_error,
      createdAt: row.created_at,
    }));
  }

  /**
   * The backlog: pending and failed messages and the oldest pending one, without reading
   * the whole table. Counts are exact when the table holds at most `exactUpTo` rows
   * (default 10,000); past that, pending messages are counted exactly up to `exactUpTo` on
   * the pending index and estimated beyond, and failed ones are estimated from the
   * planner's statistics (as fresh as the last `ANALYZE`). The oldest pending message is
   * the earliest enqueued among the first 100 in line.
   *
   * @example
   * ```ts
   * const { pending, failed, oldestPendingAt } = await outbox.backlog()
   * ```
   */
  async backlog(options: { readonly exactUpTo?: number } = {}): Promise<OutboxBacklog> {
    const exactUpTo = positiveInteger('exactUpTo', options.exactUpTo, 10_000, 100_000_000);
    const row = await this.#boundedBacklog(this.#db, exactUpTo + 1);
    const oldestPendingAt = row.oldest_pending_at;
    if (row.sampled <= exactUpTo) {
      return {
        pending: row.sampled_pending,
        pendingEstimated: false,
        failed: row.sampled_failed,
        failedEstimated: false,
        oldestPendingAt,
      };
    }
    const rows = Math.max(0, row.reltuples ?? 0);
    const share = (status: string) => {
      const index = row.status_vals?.indexOf(status) ?? -1;
      return index < 0 ? 0 : (row.status_freqs?.[index] ?? 0);
    };
    const pendingEstimated = row.pending > exactUpTo;
    return {
      pending: pendingEstimated ? Math.max(row.pending, Math.round(rows * share('pending'))) : row.pending,
      pendingEstimated,
      failed: Math.max(row.sampled_failed, Math.round(rows * share('failed'))),
      failedEstimated: true,
      oldestPendingAt,
    };
  }

  /**
   * Puts failed messages back in line (all of them, or those with these ids) with a fresh
   * retry budget, and wakes the relays. Returns how many.
   *
   * @example
   * ```ts
   * await outbox.retryFailed(['order-17-accepted'])
   * ```
   */
  async retryFailed(messageIds?: readonly string[]): Promise<number> {
    if (messageIds !== undefined && (!Array.isArray(messageIds) || messageIds.some((id) => typeof id !== 'string'))) {
      throw new ConfigurationError('Expected `messageIds` to be an array of strings.');
    }
    return this.#retryFailed(this.#db, messageIds ?? null);
  }
}

/**
 * Makes an outbox on the table {@link migrateOutbox} created: {@link Outbox.enqueue} writes
 * messages in your transaction, and a relay (`createKafkaRelay` of `@inboxkit/kafka`,
 * `createRabbitRelay` of `@inboxkit/rabbitmq`) publishes them once it committed
 * (docs/outbox.md). It holds no connections of its own.
 *
 * @throws {@link ConfigurationError} (`code: 'INBOX_CONFIGURATION'`) for an unknown option,
 * a `db` that is not a Kysely instance, or an invalid schema or table name.
 *
 * @example
 * ```ts
 * import { createOutbox, migrateOutbox } from '@inboxkit/core'
 *
 * const { error } = await migrateOutbox(db)
 * if (error) throw error
 * const outbox = createOutbox({ db })
 * await db.transaction().execute(async (trx) => {
 *   await trx.insertInto('orders').values(order).execute()
 *   await outbox.enqueue(trx, { topic: 'order.accepted', key: order.id, payload: { id: order.id } })
 * })
 * ```
 */
export function createOutbox(options: OutboxOptions): Outbox {
  return new Outbox(options);
}

/** The outbox's internals, for relays (`@inboxkit/core/adapter`). */
export function outboxConfig(outbox: Outbox): OutboxConfig {
  const config = configs.get(outbox);
  if (config === undefined) throw new ConfigurationError('Expected `outbox` to be made by createOutbox().');
  return config;
}
