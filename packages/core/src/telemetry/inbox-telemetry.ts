import type { InboxEmitter } from '../events.js';
import type { InboxConfig } from '../inbox-options.js';
import type { BatchResult } from '../inbox-types.js';
import type { ProcessOutcome } from '../outcome.js';
import { ATTR, METRIC } from './attributes.js';
import { type GaugeInstruments, GaugeReader, observeGauges } from './inbox-gauges.js';
import {
  NO_BATCH_TRACE,
  NO_MESSAGE_TRACE,
  startBatchTrace,
  startMessageTrace,
  type TraceKit,
  untracedMessage,
} from './message-trace.js';
import { INSTRUMENTATION_SCOPE, type Otel, type OtelApi, otelApi, otelLoaded } from './otel-api.js';
import type { BatchTrace, MessageSource, MessageTrace, SpanAttributes } from './trace-types.js';

interface Instruments extends GaugeInstruments {
  readonly outcomes: Otel.Counter;
  readonly handlerDuration: Otel.Histogram;
  readonly deliveryLatency: Otel.Histogram;
}

/** Instruments are made once per meter (an SDK warns about the same name made twice). */
const instrumentsByMeter = new WeakMap<Otel.Meter, Instruments>();

function instrumentsOf(meter: Otel.Meter): Instruments {
  let instruments = instrumentsByMeter.get(meter);
  if (instruments === undefined) {
    instruments = {
      outcomes: meter.createCounter(METRIC.outcomes, {
        description:
          'What the inbox decided for each message: processed, duplicate, conflict, dead_letter, retry_later.',
        unit: '{message}',
      }),
      handlerDuration: meter.createHistogram(METRIC.handlerDuration, {
        description: 'Time spent in one handler call (a bulk handler call covers its batch).',
        unit: 's',
      }),
      deliveryLatency: meter.createHistogram(METRIC.deliveryLatency, {
        description: "From the broker's timestamp of a message to its ack or offset commit.",
        unit: 's',
      }),
      keys: meter.createObservableGauge(METRIC.keys, {
        description: "The consumer's keys: counted up to 10000, then estimated from the planner's statistics.",
        unit: '{key}',
      }),
      deadLetteredKeys: meter.createObservableGauge(METRIC.deadLetteredKeys, {
        description: "The consumer's keys of dead-lettered messages (estimated with the keys).",
        unit: '{key}',
      }),
      oldestKeyAge: meter.createObservableGauge(METRIC.oldestKeyAge, {
        description: "Age of the consumer's oldest key: keys older than the retention window wait for a purge.",
        unit: 's',
      }),
      suspects: meter.createObservableGauge(METRIC.suspects, {
        description: 'Deliveries whose crash-loop attempt was counted and that have not finished (crashed or running).',
        unit: '{message}',
      }),
    };
    instrumentsByMeter.set(meter, instruments);
  }
  return instruments;
}

/**
 * A message or batch handler, as the facade hands it over.
 *
 * @inline
 */
// biome-ignore lint/suspicious/noExplicitAny: any handler shape; only its call is timed.
type Handler = (...args: any[]) => unknown;

/** Telemetry once `@opentelemetry/api` is loaded. */
interface Active extends TraceKit {
  readonly instruments: Instruments;
  /** False when the meter provider was the API's no-op one when the inbox was made: nothing to count or time. */
  readonly metered: boolean;
  readonly handlerOk: Otel.Attributes;
}

/** A tracer provider as the API's proxy holds it: the SDK's, or the no-op one until an SDK is registered. */
type ProxyProvider = Otel.TracerProvider & { getDelegate?: () => Otel.TracerProvider };

/** Tracers by provider: a registration after the inbox was made is picked up at the next message. */
const tracersByProvider = new WeakMap<Otel.TracerProvider, Otel.Tracer>();

/**
 * The tracer of the SDK registered now, or `undefined` without one: then no span is started
 * at all, which is what keeps the API nearly free (docs/telemetry.md, "Cost").
 */
function currentTracer(api: OtelApi, noop: Otel.TracerProvider | undefined): Otel.Tracer | undefined {
  const global = api.trace.getTracerProvider() as ProxyProvider;
  const provider = typeof global.getDelegate === 'function' ? global.getDelegate() : global;
  if (provider === noop) return undefined;
  let tracer = tracersByProvider.get(provider);
  if (tracer === undefined) {
    tracer = provider.getTracer(INSTRUMENTATION_SCOPE);
    tracersByProvider.set(provider, tracer);
  }
  return tracer;
}

/** The API's no-op tracer provider (what a proxy delegates to before an SDK is registered). */
function noopTracerProvider(api: OtelApi): Otel.TracerProvider | undefined {
  const ProxyProviderClass = (api as { ProxyTracerProvider?: new () => ProxyProvider }).ProxyTracerProvider;
  return typeof ProxyProviderClass === 'function' ? new ProxyProviderClass().getDelegate?.() : undefined;
}

/** What the telemetry needs from its inbox. */
export interface TelemetryHost {
  readonly config: InboxConfig<unknown>;
  readonly events: InboxEmitter;
}

/**
 * One inbox's OpenTelemetry spans and metrics (docs/telemetry.md). The facade counts
 * outcomes and times handler calls; adapters start the process spans through
 * {@link message} and {@link batch} (`inboxTelemetry(inbox)` on `@inboxkit/core/adapter`).
 * Without `@opentelemetry/api`, or with `telemetry: false`, every method is a pass-through.
 */
export class InboxTelemetry {
  readonly #host: TelemetryHost;
  readonly #consumer: string;
  /** `undefined` while the API is being imported, `null` when off. */
  #active: Active | null | undefined;
  /** Outcomes counted by the facade, so an adapter's span does not count them again. */
  readonly #counted = new WeakSet<object>();
  readonly #outcomeAttributes = new Map<string, Otel.Attributes>();
  readonly #latencyAttributes = new Map<string, Otel.Attributes>();
  #noopTracerProvider: Otel.TracerProvider | undefined;
  /** Kept here so that the gauges' callback, which holds it weakly, lives as long as the inbox. */
  #gauges: GaugeReader | undefined;

  /** @internal Made by the inbox. */
  constructor(host: TelemetryHost) {
    this.#host = host;
    this.#consumer = host.config.consumer;
    if (!host.config.telemetry.enabled) {
      this.#active = null;
      return;
    }
    const api = otelApi();
    if (api === undefined) void otelLoaded.then((loaded) => this.#activate(loaded));
    else this.#activate(api);
  }

  /** True when nothing is recorded: no `@opentelemetry/api`, or `telemetry: false`. */
  get off(): boolean {
    return this.#active === null;
  }

  /**
   * True when the facade may skip counting and timing: telemetry off, or no meter provider
   * registered when the inbox was made. False while the API is still being imported.
   */
  get unmetered(): boolean {
    return this.#active === null || (this.#active !== undefined && !this.#active.metered);
  }

  #activate(api: OtelApi | null): Active | null {
    if (this.#active !== undefined) return this.#active;
    if (api === null) {
      this.#active = null;
      return null;
    }
    try {
      return this.#start(api);
    } catch (error) {
      // A meter or tracer provider that throws must not take the consumer down with it.
      this.#host.config.logger.warn(
        { consumer: this.#consumer, err: error },
        'inboxkit: OpenTelemetry could not be set up for this inbox; it runs without spans and metrics',
      );
      this.#active = null;
      return null;
    }
  }

  #start(api: OtelApi): Active {
    const { config, events } = this.#host;
    const meter = api.metrics.getMeter(INSTRUMENTATION_SCOPE);
    const instruments = instrumentsOf(meter);
    const consumer = this.#consumer;
    this.#noopTracerProvider = noopTracerProvider(api);
    const active: Active = {
      api,
      consumer,
      instruments,
      metered: meter !== api.createNoopMeter(),
      handlerOk: { [ATTR.consumer]: consumer },
      countIfNew: (outcome) => {
        if (!this.#counted.has(outcome)) this.#count(active, outcome);
      },
      latency: (seconds, source, outcome) => {
        instruments.deliveryLatency.record(seconds, this.#latencyAttributesOf(source, outcome));
      },
    };
    this.#active = active;
    // A failed attempt that is retried is recorded on the span active around the call
    // (the adapter's process span).
    events.on('retry', ({ error, attempt, delayMs }) => {
      const span = api.trace.getActiveSpan();
      if (span === undefined || !span.isRecording()) return;
      span.recordException(error);
      span.addEvent('inboxkit.retry', { 'inboxkit.attempt': attempt, 'inboxkit.retry.delay_ms': delayMs });
    });
    if (config.telemetry.gauges && active.metered) {
      this.#gauges = new GaugeReader(
        config.db,
        config.tables,
        consumer,
        config.telemetry.gaugeIntervalMs,
        config.logger,
      );
      observeGauges(meter, instruments, this.#gauges, `${config.tables.schema}.${config.tables.table}`, consumer);
    }
    return active;
  }

  async #ready(): Promise<Active | null> {
    return this.#active ?? this.#activate(await otelLoaded);
  }

  /**
   * `inbox.process` with its outcome counted and its handler calls timed.
   *
   * @typeParam H - The handler's type.
   * @typeParam R - What the handler returns.
   */
  async process<H extends Handler, R>(
    handler: H,
    run: (handler: H) => Promise<ProcessOutcome<R>>,
  ): Promise<ProcessOutcome<R>> {
    const active = this.#active ?? (await this.#ready());
    if (active === null || !active.metered || typeof handler !== 'function') return run(handler);
    const outcome = await run(this.#timed(active, handler));
    this.#count(active, outcome);
    return outcome;
  }

  /**
   * `inbox.processBatch` / `processBulk` with their outcomes counted and handler calls timed.
   *
   * @typeParam H - The handler's type.
   * @typeParam R - What the handler returns.
   */
  async batch<H extends Handler, R>(handler: H, run: (handler: H) => Promise<BatchResult<R>>): Promise<BatchResult<R>> {
    const active = this.#active ?? (await this.#ready());
    if (active === null || !active.metered || typeof handler !== 'function') return run(handler);
    const result = await run(this.#timed(active, handler));
    for (const outcome of result.outcomes) this.#count(active, outcome);
    return result;
  }

  /**
   * Starts the process span of one message (not active yet: see {@link MessageTrace.run}),
   * its parent the trace context in the message's headers. `source` may be a function,
   * called only when something is recorded: with no SDK the adapter builds nothing.
   */
  message(source: MessageSource | (() => MessageSource)): MessageTrace {
    const active = this.#active;
    if (active === undefined || active === null) return NO_MESSAGE_TRACE;
    const tracer = currentTracer(active.api, this.#noopTracerProvider);
    if (tracer === undefined && !active.metered) return NO_MESSAGE_TRACE;
    const described = typeof source === 'function' ? source() : source;
    return tracer === undefined ? untracedMessage(active, described) : startMessageTrace(active, tracer, described);
  }

  /**
   * Starts the span of a batch processed in one transaction, linked to each member's
   * context. `members` may be a function, called only when something is recorded.
   */
  batchTrace(
    batch: { readonly system: string; readonly destination: string; readonly attributes: SpanAttributes },
    members: readonly MessageSource[] | (() => readonly MessageSource[]),
  ): BatchTrace {
    const active = this.#active;
    if (active === undefined || active === null) return NO_BATCH_TRACE;
    const tracer = currentTracer(active.api, this.#noopTracerProvider);
    if (tracer === undefined && !active.metered) return NO_BATCH_TRACE;
    return startBatchTrace(active, tracer, batch, typeof members === 'function' ? members() : members);
  }

  /** The handler, timed into the handler-duration histogram. */
  #timed<H extends Handler>(active: Active, handler: H): H {
    const histogram = active.instruments.handlerDuration;
    const ok = active.handlerOk;
    const consumer = this.#consumer;
    const timed = async (...args: Parameters<H>): Promise<unknown> => {
      const started = performance.now();
      try {
        const result = await handler(...args);
        histogram.record((performance.now() - started) / 1000, ok);
        return result;
      } catch (error) {
        histogram.record((performance.now() - started) / 1000, {
          [ATTR.consumer]: consumer,
          [ATTR.errorType]: error instanceof Error ? error.name : typeof error,
        });
        throw error;
      }
    };
    return timed as H;
  }

  #count(active: Active, outcome: ProcessOutcome): void {
    this.#counted.add(outcome);
    const reason =
      outcome.status === 'dead_letter' || outcome.status === 'retry_later'
        ? outcome.reason
        : outcome.status === 'conflict'
          ? 'payload_conflict'
          : undefined;
    const key = `${outcome.status}\u0000${reason ?? ''}`;
    let attributes = this.#outcomeAttributes.get(key);
    if (attributes === undefined) {
      attributes = { [ATTR.consumer]: this.#consumer, [ATTR.outcome]: outcome.status };
      if (reason !== undefined) attributes[ATTR.reason] = reason;
      this.#outcomeAttributes.set(key, attributes);
    }
    active.instruments.outcomes.add(1, attributes);
  }

  #latencyAttributesOf(source: MessageSource, outcome: ProcessOutcome): Otel.Attributes {
    const key = `${source.system}\u0000${source.destination}\u0000${outcome.status}`;
    let attributes = this.#latencyAttributes.get(key);
    if (attributes === undefined) {
      attributes = {
        [ATTR.consumer]: this.#consumer,
        [ATTR.system]: source.system,
        [ATTR.destination]: source.destination,
        [ATTR.outcome]: outcome.status,
      };
      // Bounded: destinations are a consumer's topics or queue.
      if (this.#latencyAttributes.size < 1000) this.#latencyAttributes.set(key, attributes);
    }
    return attributes;
  }
}
