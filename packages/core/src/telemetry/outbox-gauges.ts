import { ATTR, METRIC } from './attributes.js';
import { CachedReading } from './inbox-gauges.js';
import { INSTRUMENTATION_SCOPE, type Otel, type OtelApi, otelApi, otelLoaded } from './otel-api.js';

/** What the outbox's gauges report: `outbox.backlog()`'s bounded figures. */
export interface OutboxFigures {
  readonly pending: number;
  readonly failed: number;
  readonly oldestPendingAt: Date | null;
}

interface OutboxInstruments {
  readonly backlog: Otel.ObservableGauge;
  readonly failed: Otel.ObservableGauge;
  readonly oldestAge: Otel.ObservableGauge;
}

const instrumentsByMeter = new WeakMap<Otel.Meter, OutboxInstruments>();
/** Each outbox's reading, held as long as the outbox lives (the gauges' callback holds it weakly). */
const readings = new WeakMap<object, CachedReading<OutboxFigures>>();

/**
 * The outbox's gauges (docs/telemetry.md, "Gauges"): `outbox.backlog()`'s figures (pending
 * and failed messages, exact up to a bound then estimated, and the oldest pending one),
 * read at most once per `intervalMs`. Nothing when `@opentelemetry/api` is absent or no
 * meter provider is registered when the outbox is made.
 */
export function observeOutboxGauges(
  outbox: object,
  read: () => Promise<OutboxFigures>,
  table: string,
  intervalMs = 60_000,
): void {
  const start = (api: OtelApi | null) => {
    try {
      observe(api, outbox, read, table, intervalMs);
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
  read: () => Promise<OutboxFigures>,
  table: string,
  intervalMs: number,
): void {
  if (api === null) return;
  const meter = api.metrics.getMeter(INSTRUMENTATION_SCOPE);
  if (meter === api.createNoopMeter()) return; // no meter provider registered
  let instruments = instrumentsByMeter.get(meter);
  if (instruments === undefined) {
    instruments = {
      backlog: meter.createObservableGauge(METRIC.outboxBacklog, {
        description: 'Messages in the outbox waiting for a relay (counted up to 10000, then estimated).',
        unit: '{message}',
      }),
      failed: meter.createObservableGauge(METRIC.outboxFailed, {
        description: 'Messages the broker refused past the retry policy, set aside until retried on request.',
        unit: '{message}',
      }),
      oldestAge: meter.createObservableGauge(METRIC.outboxOldestAge, {
        description: 'Age of the oldest message waiting in the outbox (0 when none waits).',
        unit: 's',
      }),
    };
    instrumentsByMeter.set(meter, instruments);
  }
  const reading = new CachedReading<OutboxFigures>(read, intervalMs, () => {});
  readings.set(outbox, reading);
  const ref = new WeakRef(reading);
  const { backlog, failed, oldestAge } = instruments;
  const observables = [backlog, failed, oldestAge];
  const attributes = { [ATTR.table]: table };
  const callback: Otel.BatchObservableCallback = async (observer) => {
    const live = ref.deref();
    if (live === undefined) {
      meter.removeBatchObservableCallback(callback, observables);
      return;
    }
    const figures = await live.figures();
    if (figures === undefined) return;
    observer.observe(backlog, figures.pending, attributes);
    observer.observe(failed, figures.failed, attributes);
    const oldest = figures.oldestPendingAt;
    observer.observe(oldestAge, oldest === null ? 0 : Math.max(0, (Date.now() - oldest.getTime()) / 1000), attributes);
  };
  meter.addBatchObservableCallback(callback, observables);
}
