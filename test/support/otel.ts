// The OpenTelemetry SDK as an application registers it, with in-memory exporters, for the
// telemetry tests (docs/telemetry.md): spans are read back as they ended, metrics collected
// on demand. Registration is global: each test file runs in a worker of its own.
import { context, metrics, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import {
  type DataPoint,
  type Histogram,
  MeterProvider,
  MetricReader,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';

/** A reader that exports nothing: the test collects when it wants to. */
class OnDemandReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

export interface OtelSdk {
  /** Spans that ended, oldest first. */
  spans(): ReadableSpan[];
  /** Collects every instrument now (gauge callbacks run). */
  collect(): Promise<ResourceMetrics>;
  /** The data points of one instrument in a collection. */
  points(collected: ResourceMetrics, name: string): DataPoint<number | Histogram>[];
  reset(): void;
  shutdown(): Promise<void>;
}

/** Registers a tracer provider, a meter provider, the async-hooks context manager and the W3C propagator. */
export function registerOtelSdk(): OtelSdk {
  const exporter = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const reader = new OnDemandReader();
  const meterProvider = new MeterProvider({ readers: [reader] });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(tracerProvider);
  metrics.setGlobalMeterProvider(meterProvider);
  return {
    spans: () => exporter.getFinishedSpans(),
    async collect() {
      const { resourceMetrics, errors } = await reader.collect();
      if (errors.length > 0) throw errors[0];
      return resourceMetrics;
    },
    points(collected, name) {
      for (const scope of collected.scopeMetrics) {
        for (const metric of scope.metrics) {
          if (metric.descriptor.name === name) return metric.dataPoints as DataPoint<number | Histogram>[];
        }
      }
      return [];
    },
    reset: () => exporter.reset(),
    async shutdown() {
      await tracerProvider.shutdown();
      await meterProvider.shutdown();
      trace.disable();
      metrics.disable();
      propagation.disable();
      context.disable();
    },
  };
}

/** The sum of a counter's points whose attributes include `match`. */
export function counterSum(points: DataPoint<number | Histogram>[], match: Record<string, unknown>): number {
  return points
    .filter((point) => Object.entries(match).every(([key, value]) => point.attributes[key] === value))
    .reduce((sum, point) => sum + (point.value as number), 0);
}

/** How many values a histogram recorded under attributes that include `match`. */
export function histogramCount(points: DataPoint<number | Histogram>[], match: Record<string, unknown>): number {
  return points
    .filter((point) => Object.entries(match).every(([key, value]) => point.attributes[key] === value))
    .reduce((sum, point) => sum + (point.value as Histogram).count, 0);
}

/** `traceparent` of a span: how a producer hands its context to the broker. */
export function traceparentOf(span: { spanContext(): { traceId: string; spanId: string } }): string {
  const { traceId, spanId } = span.spanContext();
  return `00-${traceId}-${spanId}-01`;
}
