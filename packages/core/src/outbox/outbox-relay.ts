import { type Kysely, sql } from 'kysely';
import { type Backoff, type BackoffOptions, backoffDelayMs, compileBackoff } from '../backoff.js';
import { databaseFailure } from '../error-classification.js';
import { ConfigurationError, hasCode, toError } from '../errors.js';
import { type InboxLogger, silentLogger } from '../logger.js';
import { checkLogger, positiveInteger } from '../option-checks.js';
import { storableText } from '../storable.js';
import { type Outbox, type OutboxConfig, outboxConfig } from './outbox.js';
import { type ListenOptions, OutboxListener } from './outbox-listener.js';
import {
  OutboxRelayEmitter,
  type OutboxRelayEventName,
  type OutboxRelayListener,
  type RelayPauseReason,
} from './outbox-relay-events.js';
import type { ClaimedRow } from './sql/claim.js';
import type { Refusal } from './sql/settle.js';

/** A message as a relay hands it to the broker. */
export interface OutboxRecord {
  readonly messageId: string;
  /** The topic, or the exchange. */
  readonly destination: string;
  /** RabbitMQ only; `null` for topic messages. */
  readonly routingKey: string | null;
  readonly key: string | null;
  readonly headers: Readonly<Record<string, string>>;
  readonly payload: Buffer;
  /** Refusals so far. */
  readonly attempts: number;
}

/**
 * Publishes a batch and resolves once the broker answered for each message: `undefined`
 * where it confirmed, the error where it refused (counted against that message). Throws
 * (best a {@link "@inboxkit/core"!BrokerUnavailableForRelayError}) when the broker could not be asked at all:
 * nothing is counted and the relay pauses.
 */
export type OutboxPublish = (records: readonly OutboxRecord[]) => Promise<ReadonlyArray<Error | undefined>>;

/** How often and how long a refused message is retried before it is set aside as failed. */
export interface RelayRetryOptions extends BackoffOptions {
  /** Refusals before the message is set aside. Default `10`. */
  readonly maxAttempts?: number;
}

/** The options every relay takes (the Kafka and RabbitMQ relays add their client's). */
export interface OutboxRelayOptions {
  /** The outbox to publish from. */
  readonly outbox: Outbox;
  /** A name for logs and events. Default `'relay'`. */
  readonly name?: string;
  /** Messages claimed and published at once. Default `100`. */
  readonly batchSize?: number;
  /**
   * How often an idle relay looks for messages without being woken, in milliseconds
   * (messages whose retry is due, notifications lost while `LISTEN` reconnected). Default `1000`.
   */
  readonly pollIntervalMs?: number;
  /**
   * Where the `LISTEN` connection comes from: `{ connectionString }` or `{ pool }` (a
   * node-postgres pool, one client kept). Without it the relay only polls. Behind PgBouncer
   * in transaction mode, give a connection string straight to Postgres.
   */
  readonly listen?: ListenOptions | false;
  /** Refused messages: default `{ maxAttempts: 10, minDelayMs: 1000, maxDelayMs: 60000, factor: 2 }`. */
  readonly retry?: RelayRetryOptions;
  /** The pause while Postgres or the broker is away. Default `{ minDelayMs: 100, maxDelayMs: 30000, factor: 2 }`. */
  readonly pause?: BackoffOptions;
  /** A pino-compatible logger. Default: silent. */
  readonly logger?: InboxLogger;
}

/** What an adapter gives the relay engine besides the options. */
export interface OutboxRelayEngineOptions extends OutboxRelayOptions {
  readonly publish: OutboxPublish;
  /** Called by `close()` after the last publish (the adapter's own clean-up). */
  readonly onClose?: () => Promise<void>;
}

const KEYS = new Set(['outbox', 'name', 'batchSize', 'pollIntervalMs', 'listen', 'retry', 'pause', 'logger']);
const RETRY_DEFAULTS: Backoff = Object.freeze({ minDelayMs: 1000, maxDelayMs: 60_000, factor: 2 });
const PAUSE_DEFAULTS: Backoff = Object.freeze({ minDelayMs: 100, maxDelayMs: 30_000, factor: 2 });
const PROBE_TIMEOUT_MS = 5000;

/**
 * Checks the relay options an adapter was given, dropping the adapter's own keys (`own`),
 * and names what is wrong.
 */
export function relayOptions<T extends OutboxRelayOptions>(options: T, own: readonly string[]): OutboxRelayOptions {
  if (typeof options !== 'object' || options === null) {
    throw new ConfigurationError('A relay needs an options object with at least `outbox`.');
  }
  const known = new Set([...KEYS, ...own]);
  for (const key of Object.keys(options)) {
    if (!known.has(key)) throw new ConfigurationError(`Unknown option \`${key}\`; known: ${[...known].join(', ')}.`);
  }
  const picked: Record<string, unknown> = {};
  for (const key of KEYS) if (key in options) picked[key] = (options as Record<string, unknown>)[key];
  return picked as unknown as OutboxRelayOptions;
}

/**
 * Publishes committed outbox messages and deletes them once the broker confirmed
 * (docs/outbox.md). Made by a broker's relay (`createKafkaRelay`, `createRabbitRelay`); it
 * starts at once and runs until {@link close}.
 */
export class OutboxRelay {
  /** The relay's name, in logs and events. */
  readonly name: string;
  readonly #config: OutboxConfig;
  readonly #publish: OutboxPublish;
  readonly #onClose: (() => Promise<void>) | undefined;
  readonly #batchSize: number;
  readonly #pollIntervalMs: number;
  readonly #maxAttempts: number;
  readonly #retry: Backoff;
  readonly #pause: Backoff;
  readonly #logger: InboxLogger;
  readonly #events: OutboxRelayEmitter;
  readonly #listener: OutboxListener | undefined;
  readonly #stop = new AbortController();
  #woken = false;
  /** Where the next claim's walk over the keys starts (see `sql/claim.ts`). */
  #fromKey = '';
  #wakeUp: (() => void) | undefined;
  #loop: Promise<void> | undefined;
  #closed: Promise<void> | undefined;

  constructor(options: OutboxRelayEngineOptions) {
    const { publish, onClose, ...rest } = options;
    relayOptions(rest, []);
    if (typeof publish !== 'function') throw new ConfigurationError('Expected `publish` to be a function.');
    this.#config = outboxConfig(options.outbox);
    this.#publish = publish;
    this.#onClose = onClose;
    if (options.name !== undefined && (typeof options.name !== 'string' || options.name.length === 0)) {
      throw new ConfigurationError('Expected `name` to be a non-empty string.');
    }
    this.name = options.name ?? 'relay';
    this.#batchSize = positiveInteger('batchSize', options.batchSize, 100, 10_000);
    this.#pollIntervalMs = positiveInteger('pollIntervalMs', options.pollIntervalMs, 1000);
    const { maxAttempts, ...retryBackoff } = options.retry ?? {};
    this.#maxAttempts = positiveInteger('retry.maxAttempts', maxAttempts, 10);
    this.#retry = compileBackoff('retry', options.retry === undefined ? undefined : retryBackoff, RETRY_DEFAULTS);
    this.#pause = compileBackoff('pause', options.pause, PAUSE_DEFAULTS);
    this.#logger = checkLogger(options.logger) ?? silentLogger;
    this.#events = new OutboxRelayEmitter(this.#logger);
    const listen = options.listen;
    if (listen !== undefined && listen !== false) {
      const valid =
        typeof listen === 'object' &&
        listen !== null &&
        (('connectionString' in listen && typeof listen.connectionString === 'string') ||
          ('pool' in listen && typeof listen.pool?.connect === 'function'));
      if (!valid) {
        throw new ConfigurationError(
          'Expected `listen` to be `{ connectionString }`, `{ pool }` (a node-postgres pool) or false.',
        );
      }
      this.#listener = new OutboxListener(
        listen,
        this.#config.tables.channel,
        () => this.#wake(),
        this.#logger,
        this.#pause,
      );
    }
  }

  /** Starts the relay (the adapters' factories call it). */
  start(): this {
    if (this.#loop !== undefined || this.#closed !== undefined) return this;
    this.#listener?.start();
    this.#loop = this.#run();
    return this;
  }

  /** Adds a listener; returns a function that removes it. */
  on<E extends OutboxRelayEventName>(event: E, listener: OutboxRelayListener<E>): () => void {
    return this.#events.on(event, listener);
  }

  /** Removes a listener added with `on`. */
  off<E extends OutboxRelayEventName>(event: E, listener: OutboxRelayListener<E>): void {
    this.#events.off(event, listener);
  }

  /**
   * Stops claiming, waits for the batch in flight (its publishes confirmed and deleted, or
   * rolled back), closes the `LISTEN` connection and the adapter's clients. Idempotent:
   * called twice, it returns the same promise.
   */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#stop.abort();
      this.#wakeUp?.();
      const steps: Promise<unknown>[] = [
        (this.#loop ?? Promise.resolve()).catch((error) => this.#logger.error({ err: error }, 'inboxkit: relay loop')),
        this.#listener?.close() ?? Promise.resolve(),
      ];
      await Promise.allSettled(steps);
      if (this.#onClose !== undefined) {
        await this.#onClose().catch((error) =>
          this.#logger.warn({ err: error }, 'inboxkit: closing the relay client failed'),
        );
      }
    })();
    return this.#closed;
  }

  #wake(): void {
    this.#woken = true;
    this.#wakeUp?.();
  }

  async #run(): Promise<void> {
    const signal = this.#stop.signal;
    let failures = 0;
    let pausedAt = 0;
    while (!signal.aborted) {
      let claimed: number;
      try {
        claimed = await this.#cycle();
        if (failures > 0) {
          this.#events.emit('resumed', { relay: this.name, pausedMs: Date.now() - pausedAt });
          this.#logger.info({ relay: this.name }, 'inboxkit: the outbox relay resumed');
          failures = 0;
        }
      } catch (thrown) {
        const error = toError(thrown);
        if (failures === 0) pausedAt = Date.now();
        failures++;
        const reason = await this.#pauseReason(error);
        const delayMs = backoffDelayMs(this.#pause, failures);
        this.#events.emit('paused', { relay: this.name, reason, delayMs, error });
        this.#logger.warn({ err: error, relay: this.name, reason, delayMs }, 'inboxkit: the outbox relay pauses');
        await this.#sleep(delayMs, false);
        continue;
      }
      if (claimed > 0) continue;
      const woken = await this.#sleep(this.#pollIntervalMs, true);
      if (!woken && !signal.aborted && this.#events.has('backlog')) {
        try {
          const backlog = await this.#config.backlog();
          this.#events.emit('backlog', { relay: this.name, ...backlog });
        } catch {
          // the next cycle reports an outage
        }
      }
    }
  }

  /**
   * Sleeps `ms`, or less when closed (or, with `wakeable`, when notified). True when it was
   * woken rather than timed out.
   */
  #sleep(ms: number, wakeable: boolean): Promise<boolean> {
    if (this.#stop.signal.aborted) return Promise.resolve(false);
    if (wakeable && this.#woken) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => finish(false), ms);
      const finish = (woken: boolean): void => {
        clearTimeout(timer);
        this.#wakeUp = undefined;
        resolve(woken);
      };
      this.#wakeUp = () => {
        if (this.#stop.signal.aborted) finish(false);
        else if (wakeable) finish(true);
      };
    });
  }

  async #pauseReason(error: Error): Promise<RelayPauseReason> {
    if (hasCode(error, 'INBOX_OUTBOX_BROKER_UNAVAILABLE')) return 'broker_unavailable';
    if (databaseFailure(error) !== undefined && !(await this.#databaseAnswers())) return 'database_unavailable';
    return 'error';
  }

  async #databaseAnswers(): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        sql`SELECT 1`.execute(this.#config.db).then(() => true),
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

  /**
   * One claim, publish, settle, commit (docs/design.md, "The outbox"). Returns how many rows
   * were claimed. A throw rolls the claim back: nothing is counted against the messages.
   */
  async #cycle(): Promise<number> {
    this.#woken = false;
    const { db, claim, settle } = this.#config;
    const notices: (() => void)[] = [];
    const claimed = await (db as Kysely<unknown>).transaction().execute(async (trx) => {
      const { rows, nextKey } = await claim(trx, this.#batchSize, this.#fromKey);
      this.#fromKey = nextKey ?? '';
      if (rows.length === 0) return 0;
      const started = performance.now();
      const records = rows.map(toRecord);
      const results = await this.#publishNarrowed(records);
      await haltForCrashTest();
      const confirmed: string[] = [];
      const confirmedIds: string[] = [];
      const refusals: Refusal[] = [];
      rows.forEach((row, i) => {
        const error = results[i];
        if (error === undefined) {
          confirmed.push(row.sequence);
          confirmedIds.push(row.message_id);
          return;
        }
        const attempts = row.attempts + 1;
        const fail = attempts >= this.#maxAttempts;
        const delayMs = fail ? 0 : backoffDelayMs(this.#retry, attempts);
        refusals.push({
          sequence: row.sequence,
          error: storableText(`${error.name}: ${error.message}`),
          delayMs,
          fail,
        });
        notices.push(() => {
          if (fail) {
            this.#events.emit('failed', { relay: this.name, messageId: row.message_id, attempts, error });
            this.#logger.error(
              { err: error, relay: this.name, messageId: row.message_id, attempts },
              'inboxkit: an outbox message was refused past the retry policy and set aside as failed',
            );
          } else {
            this.#events.emit('refused', { relay: this.name, messageId: row.message_id, attempts, delayMs, error });
            this.#logger.warn(
              { err: error, relay: this.name, messageId: row.message_id, attempts, delayMs },
              'inboxkit: the broker refused an outbox message; it is retried',
            );
          }
        });
      });
      await settle(trx, confirmed, refusals);
      if (confirmed.length > 0) {
        const durationMs = performance.now() - started;
        notices.unshift(() =>
          this.#events.emit('published', {
            relay: this.name,
            count: confirmed.length,
            messageIds: confirmedIds,
            durationMs,
          }),
        );
      }
      return rows.length;
    });
    for (const notice of notices) notice();
    return claimed;
  }

  /**
   * Publishes the batch; the messages the broker refused in it are published again one at
   * a time, so that a poison message (one whose error fails the whole request or closes the
   * channel) is told apart from the innocent messages beside it, and only its own refusal
   * is counted.
   */
  async #publishNarrowed(records: readonly OutboxRecord[]): Promise<(Error | undefined)[]> {
    const results = await this.#publishChecked(records);
    if (records.length === 1) return results;
    for (let i = 0; i < records.length; i++) {
      if (results[i] === undefined) continue;
      const [solo] = await this.#publishChecked([records[i] as OutboxRecord]);
      results[i] = solo;
    }
    return results;
  }

  async #publishChecked(records: readonly OutboxRecord[]): Promise<(Error | undefined)[]> {
    const results = await this.#publish(records);
    if (!Array.isArray(results) || results.length !== records.length) {
      throw new TypeError(
        `The relay's publish step returned ${String(results?.length)} results for ${records.length} messages.`,
      );
    }
    return results.map((result) => (result === undefined ? undefined : toError(result)));
  }
}

function toRecord(row: ClaimedRow): OutboxRecord {
  return {
    messageId: row.message_id,
    destination: row.destination,
    routingKey: row.routing_key,
    key: row.key,
    headers: row.headers,
    payload: row.payload,
    attempts: row.attempts,
  };
}

/**
 * The crash tests' hook: with `INBOXKIT_TEST_RELAY_HALT_AFTER_CONFIRM=1` the relay stops
 * for good between the broker's confirm and the deletion's commit and says so on stdout;
 * the test then SIGKILLs the process there. Never set it in production.
 */
function haltForCrashTest(): void | Promise<never> {
  if (process.env.INBOXKIT_TEST_RELAY_HALT_AFTER_CONFIRM !== '1') return;
  process.stdout.write('inboxkit-relay-halted-after-confirm\n');
  return new Promise<never>(() => {});
}

/** Makes and starts a relay over an adapter's publish step (`@inboxkit/core/adapter`). */
export function createOutboxRelay(options: OutboxRelayEngineOptions): OutboxRelay {
  return new OutboxRelay(options).start();
}
