import type { Kysely } from 'kysely';
import type { InboxTables } from '../identifiers.js';
import type { InboxLogger } from '../logger.js';
import { ATTR } from './attributes.js';
import { compileGaugeQueries, type GaugeFigures } from './gauge-queries.js';
import type { Otel } from './otel-api.js';

/** The gauges' observable instruments, shared by every inbox on one meter. */
export interface GaugeInstruments {
  readonly keys: Otel.ObservableGauge;
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

/** One inbox's gauge figures (see {@link CachedReading}; the oldest key's age still counts from its stored time). */
export class GaugeReader extends CachedReading<GaugeFigures> {
  constructor(db: Kysely<unknown>, tables: InboxTables, consumer: string, intervalMs: number, logger: InboxLogger) {
    const read = compileGaugeQueries(tables);
    super(
      () => read(db, consumer),
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
  const observables = [instruments.keys, instruments.oldestKeyAge, instruments.suspects];
  const tableAttributes = { [ATTR.table]: table };
  const consumerAttributes = { [ATTR.consumer]: consumer };
  const callback: Otel.BatchObservableCallback = async (observer) => {
    const live = ref.deref();
    if (live === undefined) {
      meter.removeBatchObservableCallback(callback, observables);
      return;
    }
    const figures = await live.figures();
    if (figures === undefined) return;
    if (figures.keys !== undefined) observer.observe(instruments.keys, figures.keys, tableAttributes);
    observer.observe(instruments.suspects, figures.suspects, consumerAttributes);
    if (figures.oldestKeyAt !== undefined) {
      const age = Math.max(0, (Date.now() - figures.oldestKeyAt.getTime()) / 1000);
      observer.observe(instruments.oldestKeyAge, age, consumerAttributes);
    }
  };
  meter.addBatchObservableCallback(callback, observables);
}
