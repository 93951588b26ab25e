// The process spans (docs/telemetry.md, "Spans"): one per message, its parent the
// producer's context from the message's headers; a batch's span linked to its members'.
import type { ProcessOutcome } from '../outcome.js';
import { ATTR } from './attributes.js';
import type { Otel, OtelApi } from './otel-api.js';
import { bindMessageContext, messageContext } from './trace-context.js';
import type { BatchTrace, CarrierHeaders, MessageSource, MessageTrace, SpanAttributes } from './trace-types.js';

/** Reads a trace context header as text, whatever the broker's client made of it. */
const headerGetter: Otel.TextMapGetter<CarrierHeaders> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => text(carrier[key]),
};

function text(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value instanceof Uint8Array)
    return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('utf8');
  if (Array.isArray(value)) return text(value[value.length - 1]);
  return undefined;
}

/** What the traces need from the inbox's telemetry. */
export interface TraceKit {
  readonly api: OtelApi;
  readonly consumer: string;
  /** Counts an outcome the inbox did not count (a message the adapter could not read). */
  countIfNew(outcome: ProcessOutcome): void;
  /** Records a delivery latency, in seconds. */
  latency(seconds: number, source: MessageSource, outcome: ProcessOutcome): void;
}

const SPAN_KIND_CONSUMER = 4; // SpanKind.CONSUMER
const STATUS_ERROR = 2; // SpanStatusCode.ERROR

export const NO_MESSAGE_TRACE: MessageTrace = Object.freeze({
  run: <T>(work: () => Promise<T>) => work(),
  bind: () => {},
  end: () => {},
});

export const NO_BATCH_TRACE: BatchTrace = Object.freeze({
  run: <T>(work: () => Promise<T>) => work(),
  bind: () => {},
  end: () => {},
});

function spanAttributes(kit: TraceKit, source: MessageSource, extra?: SpanAttributes): Otel.Attributes {
  const attributes: Otel.Attributes = {
    [ATTR.system]: source.system,
    [ATTR.operationType]: 'process',
    [ATTR.operationName]: 'process',
    [ATTR.consumer]: kit.consumer,
  };
  for (const bag of [source.attributes, extra]) {
    if (bag === undefined) continue;
    for (const key in bag) {
      const value = bag[key];
      if (value !== undefined) attributes[key] = value;
    }
  }
  return attributes;
}

/** The producer's context carried by the message's headers, on top of no active context. */
function producerContext(kit: TraceKit, source: MessageSource): Otel.Context {
  const { api } = kit;
  return source.headers === undefined
    ? api.ROOT_CONTEXT
    : api.propagation.extract(api.ROOT_CONTEXT, source.headers, headerGetter);
}

/** A message traced without a span (no SDK registered): its outcome still counted, its latency recorded. */
export function untracedMessage(kit: TraceKit, source: MessageSource): MessageTrace {
  return new SpanTrace(kit, source, undefined, undefined);
}

/** Starts a message's process span, its parent the producer's context. */
export function startMessageTrace(kit: TraceKit, tracer: Otel.Tracer, source: MessageSource): MessageTrace {
  const { api } = kit;
  const parent = producerContext(kit, source);
  const span = tracer.startSpan(
    `process ${source.destination}`,
    { kind: SPAN_KIND_CONSUMER, attributes: spanAttributes(kit, source) },
    parent,
  );
  return new SpanTrace(kit, source, span, api.trace.setSpan(parent, span));
}

class SpanTrace implements MessageTrace {
  readonly #kit: TraceKit;
  readonly #source: MessageSource;
  readonly #span: Otel.Span | undefined;
  readonly #context: Otel.Context | undefined;

  constructor(kit: TraceKit, source: MessageSource, span: Otel.Span | undefined, context: Otel.Context | undefined) {
    this.#kit = kit;
    this.#source = source;
    this.#span = span;
    this.#context = context;
    if (source.message !== undefined) this.bind(source.message);
  }

  run<T>(work: () => Promise<T>): Promise<T> {
    return this.#context === undefined ? work() : this.#kit.api.context.with(this.#context, work);
  }

  bind(message: object): void {
    if (this.#context !== undefined) bindMessageContext(message, this.#context);
  }

  end(outcome: ProcessOutcome | undefined, settled: boolean, thrown?: unknown): void {
    try {
      this.#end(outcome, settled, thrown);
    } catch {
      // Telemetry never fails a delivery: adapters call this in their `finally`.
    }
  }

  #end(outcome: ProcessOutcome | undefined, settled: boolean, thrown?: unknown): void {
    if (outcome !== undefined) {
      this.#kit.countIfNew(outcome);
      const sentAtMs = this.#source.sentAtMs;
      if (settled && sentAtMs !== undefined && Number.isFinite(sentAtMs)) {
        this.#kit.latency(Math.max(0, (Date.now() - sentAtMs) / 1000), this.#source, outcome);
      }
    }
    const span = this.#span;
    if (span === undefined) return;
    if (outcome !== undefined) describeOutcome(span, outcome, settled);
    if (thrown !== undefined) {
      const error = thrown instanceof Error ? thrown : new Error(String(thrown));
      span.recordException(error);
      span.setAttribute(ATTR.errorType, error.name);
      span.setStatus({ code: STATUS_ERROR, message: error.message });
    }
    span.end();
  }
}

/** Outcome attributes and status; the error of a failed outcome recorded. */
function describeOutcome(span: Otel.Span, outcome: ProcessOutcome, settled: boolean): void {
  if (outcome.messageId !== undefined) span.setAttribute(ATTR.messageId, outcome.messageId);
  span.setAttribute(ATTR.outcome, outcome.status);
  span.setAttribute(ATTR.settled, settled);
  switch (outcome.status) {
    case 'processed':
      span.setAttribute(ATTR.attempts, outcome.attempts);
      return;
    case 'duplicate':
      span.setAttribute(ATTR.previousStatus, outcome.previousStatus);
      return;
    case 'conflict':
      span.setAttribute(ATTR.reason, 'payload_conflict');
      failed(span, outcome.error, `payload_conflict: ${outcome.error.message}`);
      return;
    case 'dead_letter':
      span.setAttribute(ATTR.reason, outcome.reason);
      span.setAttribute(ATTR.attempts, outcome.attempts);
      failed(span, outcome.error, `${outcome.reason}: ${outcome.error.message}`);
      return;
    case 'retry_later':
      span.setAttribute(ATTR.reason, outcome.reason);
      failed(span, outcome.error, `${outcome.reason}: ${outcome.error.message}`);
      return;
  }
}

function failed(span: Otel.Span, error: Error, message: string): void {
  span.recordException(error);
  span.setAttribute(ATTR.errorType, error.name);
  span.setStatus({ code: STATUS_ERROR, message });
}

/**
 * Starts a batch's span (a new trace, linked to each member's context) and, while it is
 * sampled, a span per member that is not traced yet, its parent the producer's context and
 * linked to the batch span. Members already traced (bound to their own span) are linked.
 */
export function startBatchTrace(
  kit: TraceKit,
  tracer: Otel.Tracer | undefined,
  batch: { readonly system: string; readonly destination: string; readonly attributes: SpanAttributes },
  members: readonly MessageSource[],
): BatchTrace {
  const { api } = kit;
  if (tracer === undefined) {
    // No SDK: the members' outcomes and latencies only (members traced by their own span have theirs).
    const untraced = members.map((member) =>
      member.message !== undefined && messageContext(member.message) !== undefined
        ? undefined
        : untracedMessage(kit, member),
    );
    return {
      run: (work) => work(),
      bind: () => {},
      end: (outcomes, settled) => {
        untraced.forEach((trace, i) => {
          trace?.end(outcomes[i], i < settled);
        });
      },
    };
  }
  const links: Otel.Link[] = [];
  const parents: (Otel.Context | undefined)[] = [];
  for (const member of members) {
    const own = member.message === undefined ? undefined : (messageContext(member.message) as Otel.Context | undefined);
    const context = own ?? producerContext(kit, member);
    parents.push(own === undefined ? context : undefined);
    const spanContext = api.trace.getSpanContext(context);
    if (spanContext !== undefined && api.isSpanContextValid(spanContext)) links.push({ context: spanContext });
  }
  const source: MessageSource = { ...batch, headers: undefined };
  const span = tracer.startSpan(
    `process ${batch.destination}`,
    {
      kind: SPAN_KIND_CONSUMER,
      attributes: spanAttributes(kit, source, { [ATTR.batchCount]: members.length }),
      links,
    },
    api.ROOT_CONTEXT,
  );
  const batchLink: Otel.Link[] = [{ context: span.spanContext() }];
  const recording = span.isRecording();
  const traces = members.map((member, i) => {
    const parent = parents[i];
    if (parent === undefined) return undefined; // traced by its own span
    if (!recording) return new SpanTrace(kit, member, undefined, undefined);
    const memberSpan = tracer.startSpan(
      `process ${member.destination}`,
      { kind: SPAN_KIND_CONSUMER, attributes: spanAttributes(kit, member), links: batchLink },
      parent,
    );
    return new SpanTrace(kit, member, memberSpan, api.trace.setSpan(parent, memberSpan));
  });
  const context = api.trace.setSpan(api.ROOT_CONTEXT, span);
  return {
    run: (work) => api.context.with(context, work),
    bind: (index, message) => {
      traces[index]?.bind(message);
    },
    end: (outcomes, settled, thrown) => {
      traces.forEach((trace, i) => {
        trace?.end(outcomes[i], i < settled, thrown);
      });
      try {
        if (thrown !== undefined) {
          const error = thrown instanceof Error ? thrown : new Error(String(thrown));
          span.recordException(error);
          span.setStatus({ code: STATUS_ERROR, message: error.message });
        }
        span.end();
      } catch {
        // Telemetry never fails a delivery.
      }
    },
  };
}
