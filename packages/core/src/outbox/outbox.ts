import type { Kysely } from 'kysely';
import { ConfigurationError } from '../errors.js';
import { bool, positiveInteger } from '../option-checks.js';
import { observeOutboxGauges } from '../telemetry/outbox-gauges.js';
import { withTraceHeaders } from '../telemetry/trace-context.js';
import { type OutboxMessage, outboxRows } from './outbox-message.js';
import { type OutboxTables, outboxTables } from './outbox-tables.js';
import { compileClaim } from './sql/claim.js';
import { compileEnqueue } from './sql/enqueue.js';
import { compileBacklog, compileListFailed, compileRetryFailed, type FailedRow } from './sql/failed.js';
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
  readonly messageId: string;
  /** The topic, or the exchange. */
  readonly destination: string;
  readonly routingKey: string | null;
  readonly key: string | null;
  readonly headers: Readonly<Record<string, string>>;
  readonly attempts: number;
  readonly lastError: string | null;
  readonly createdAt: Date;
}

/** What relays need of an outbox; not public. */
export interface OutboxConfig {
  // biome-ignore lint/suspicious/noExplicitAny: any database schema.
  readonly db: Kysely<any>;
  readonly tables: OutboxTables;
  readonly claim: ReturnType<typeof compileClaim>;
  readonly settle: ReturnType<typeof compileSettle>;
  readonly backlog: ReturnType<typeof compileBacklog>;
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
    observeOutboxGauges(this, options.db, tables);
    configs.set(
      this,
      Object.freeze({
        db: options.db,
        tables,
        claim: compileClaim(tables),
        settle: compileSettle(tables),
        backlog: compileBacklog(tables),
      }),
    );
  }

  /**
   * Writes messages in `trx`, to be published once it commits (never if it rolls back). One
   * statement however many messages; messages of one call keep their order. Invalid input
   * throws {@link InvalidOutboxMessageError} naming the field, before any statement.
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
   * `after` (to page).
   *
   * @example
   * ```ts
   * for (const m of await outbox.failed()) console.log(m.messageId, m.destination, m.lastError)
   * ```
   */
  async failed(options: { readonly limit?: number; readonly after?: string } = {}): Promise<FailedOutboxMessage[]> {
    const limit = positiveInteger('limit', options.limit, 100, 10_000);
    const after = options.after ?? '0';
    if (!/^[0-9]+$/.test(after)) throw new ConfigurationError('Expected `after` to be a sequence (digits).');
    const rows: FailedRow[] = await this.#listFailed(this.#db, limit, after);
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
 * Makes an outbox on the table `migrateOutbox` created.
 *
 * @example
 * ```ts
 * const outbox = createOutbox({ db })
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
