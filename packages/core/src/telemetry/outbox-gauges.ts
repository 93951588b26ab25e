import type { Kysely } from 'kysely';
import { type QueryRunner, raw } from '../sql/executor.js';
import { ATTR, METRIC } from './attributes.js';
import { COUNT_BOUND, GAUGE_STATEMENT_TIMEOUT_MS } from './gauge-bounds.js';
import { CachedReading } from './inbox-gauges.js';
import { INSTRUMENTATION_SCOPE, type Otel, type OtelApi, otelApi, otelLoaded } from './otel-api.js';

/** Where an outbox table is. */
export interface OutboxGaugeTables {
  readonly schema: string;
  readonly table: string;
  /** `"schema"."table"` */
  readonly qualified: string;
}

interface OutboxFigures {
  /** Pending messages, counted up to {@link COUNT_BOUND} on the pending index. */
  readonly backlog: number;
  /** When the oldest pending message was enqueued. */
  readonly oldestAt: Date | undefined;
}

interface OutboxInstruments {
  readonly backlog: Otel.ObservableGauge;
  readonly oldestAge: Otel.ObservableGauge;
}

const instrumentsByMeter = new WeakMap<Otel.Meter, OutboxInstruments>();
/** Each outbox's reading, held as long as the outbox lives (the gauges' callback holds it weakly). */
const readings = new WeakMap<object, CachedReading<OutboxFigures>>();

/**
 * The outbox's gauges (docs/telemetry.md, "Gauges"): its backlog, counted up to a bound on
 * the partial index of pending rows, and the age of its oldest pending message, the first
 * row of that index (`ORDER BY sequence LIMIT 1`); both under a `statement_timeout`, read at
 * most once per `intervalMs`. Nothing when `@opentelemetry/api` is absent or no meter
 * provider is registered when the outbox is made.
 */
export function observeOutboxGauges(
  outbox: object,
  db: Kysely<unknown>,
  tables: OutboxGaugeTables,
  intervalMs = 60_000,
): void {
  const start = (api: OtelApi | null) => {
    try {
      observe(api, outbox, db, tables, intervalMs);
    } catch {
      // A meter provider that throws: the outbox works without its gauges.
    }
  };
  const api = otelApi();
  if (api === undefined) void otelLoaded.then(start);
  else start(api);
}

function observe(
  api: OtelApi | null,
  outbox: object,
  db: Kysely<unknown>,
  tables: OutboxGaugeTables,
  intervalMs: number,
): void {
  if (api === null) return;
  const meter = api.metrics.getMeter(INSTRUMENTATION_SCOPE);
  if (meter === api.createNoopMeter()) return; // no meter provider registered
  let instruments = instrumentsByMeter.get(meter);
  if (instruments === undefined) {
    instruments = {
      backlog: meter.createObservableGauge(METRIC.outboxBacklog, {
        description: 'Messages in the outbox waiting for a relay (counted up to 10000).',
        unit: '{message}',
      }),
      oldestAge: meter.createObservableGauge(METRIC.outboxOldestAge, {
        description: 'Age of the oldest message waiting in the outbox.',
        unit: 's',
      }),
    };
    instrumentsByMeter.set(meter, instruments);
  }
  const timeout = raw<unknown>(`SELECT set_config('statement_timeout', $1, true)`, [`${GAUGE_STATEMENT_TIMEOUT_MS}ms`]);
  const backlogText = `SELECT count(*)::int AS n FROM (SELECT 1 FROM ${tables.qualified} WHERE status = 'pending' LIMIT ${COUNT_BOUND}) bounded`;
  const oldestText = `SELECT created_at FROM ${tables.qualified} WHERE status = 'pending' ORDER BY sequence LIMIT 1`;
  const reading = new CachedReading<OutboxFigures>(
    () =>
      db.transaction().execute(async (trx) => {
        const runner = trx as unknown as QueryRunner;
        await runner.executeQuery(timeout);
        const backlog = (await runner.executeQuery(raw<{ n: number }>(backlogText, []))).rows[0]?.n ?? 0;
        const oldestAt = (await runner.executeQuery(raw<{ created_at: Date }>(oldestText, []))).rows[0]?.created_at;
        return { backlog, oldestAt };
      }),
    intervalMs,
    () => {},
  );
  readings.set(outbox, reading);
  const ref = new WeakRef(reading);
  const { backlog, oldestAge } = instruments;
  const observables = [backlog, oldestAge];
  const attributes = { [ATTR.table]: `${tables.schema}.${tables.table}` };
  const callback: Otel.BatchObservableCallback = async (observer) => {
    const live = ref.deref();
    if (live === undefined) {
      meter.removeBatchObservableCallback(callback, observables);
      return;
    }
    const figures = await live.figures();
    if (figures === undefined) return;
    observer.observe(backlog, figures.backlog, attributes);
    const age = figures.oldestAt === undefined ? 0 : Math.max(0, (Date.now() - figures.oldestAt.getTime()) / 1000);
    observer.observe(oldestAge, age, attributes);
  };
  meter.addBatchObservableCallback(callback, observables);
}
