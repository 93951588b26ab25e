import type { Kysely } from 'kysely';
import { type ConsumerStatus, createInboxAdmin } from '../admin.js';
import type { InboxTables } from '../identifiers.js';
import type { InboxLogger } from '../logger.js';
import { ATTR } from './attributes.js';
import type { Otel } from './otel-api.js';

/** Keys are counted exactly up to this many per consumer, then estimated (as `inboxkit status`, a little lower). */
export const EXACT_KEYS_UP_TO = 10_000;
/** The longest the oldest-key look-up may take. */
export const OLDEST_KEY_TIMEOUT_MS = 2000;

/** The gauges' observable instruments, shared by every inbox on one meter. */
export interface GaugeInstruments {
  readonly keys: Otel.ObservableGauge;
  readonly deadLetteredKeys: Otel.ObservableGauge;
  readonly oldestKeyAge: Otel.ObservableGauge;
  readonly suspects: Otel.ObservableGauge;
}

/**
 * Figures read from Postgres at most once per `intervalMs`: a collection within the interval
 * reports the figures read last. Concurrent collections share one reading; a reading that
 * fails is logged at debug level and reports nothing.
 */
export class CachedReading<T> {
  readonly #read: () => Promise<T>;
  readonly #intervalMs: number;
  readonly #failed: (error: unknown) => void;
  #figures: T | undefined;
  #readAt = Number.NEGATIVE_INFINITY;
  #reading: Promise<T | undefined> | undefined;

  constructor(read: () => Promise<T>, intervalMs: number, failed: (error: unknown) => void) {
    this.#read = read;
    this.#intervalMs = intervalMs;
    this.#failed = failed;
  }

  figures(): Promise<T | undefined> {
    if (performance.now() - this.#readAt < this.#intervalMs) return Promise.resolve(this.#figures);
    this.#reading ??= this.#read().then(
      (figures) => {
        this.#figures = figures;
        this.#readAt = performance.now();
        this.#reading = undefined;
        return figures;
      },
      (error: unknown) => {
        this.#figures = undefined;
        this.#readAt = performance.now();
        this.#reading = undefined;
        this.#failed(error);
        return undefined;
      },
    );
    return this.#reading;
  }
}

/**
 * One inbox's gauge figures: `inboxkit status`'s bounded queries (`@inboxkit/core/admin`,
 * docs/telemetry.md "Gauges"), kept as {@link CachedReading} says; the oldest key's age
 * still counts from its stored time.
 */
export class GaugeReader extends CachedReading<ConsumerStatus> {
  constructor(db: Kysely<unknown>, tables: InboxTables, consumer: string, intervalMs: number, logger: InboxLogger) {
    const admin = createInboxAdmin({ db, schema: tables.schema, table: tables.table });
    super(
      () => admin.consumerStatus(consumer, { exactUpTo: EXACT_KEYS_UP_TO, timeoutMs: OLDEST_KEY_TIMEOUT_MS }),
      intervalMs,
      (error) => {
        logger.debug({ consumer, err: error }, 'inboxkit: the inbox gauges could not be read; nothing reported');
      },
    );
  }
}

/**
 * Observes an inbox's gauges on every collection of `meter`. The callback holds the
 * reader weakly: once the inbox is garbage, the callback removes itself.
 */
export function observeGauges(
  meter: Otel.Meter,
  instruments: GaugeInstruments,
  reader: GaugeReader,
  table: string,
  consumer: string,
): void {
  const ref = new WeakRef(reader);
  const observables = [instruments.keys, instruments.deadLetteredKeys, instruments.oldestKeyAge, instruments.suspects];
  const consumerAttributes = { [ATTR.consumer]: consumer, [ATTR.table]: table };
  const callback: Otel.BatchObservableCallback = async (observer) => {
    const live = ref.deref();
    if (live === undefined) {
      meter.removeBatchObservableCallback(callback, observables);
      return;
    }
    const figures = await live.figures();
    if (figures === undefined) return;
    observer.observe(instruments.keys, figures.keys, consumerAttributes);
    observer.observe(instruments.deadLetteredKeys, figures.deadLettered, consumerAttributes);
    observer.observe(instruments.suspects, figures.crashLoopSuspects, consumerAttributes);
    if (figures.oldestKeyAt !== null) {
      const age = Math.max(0, (Date.now() - figures.oldestKeyAt.getTime()) / 1000);
      observer.observe(instruments.oldestKeyAge, age, consumerAttributes);
    }
  };
  meter.addBatchObservableCallback(callback, observables);
}
