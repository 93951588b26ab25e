// What adapters tell the telemetry about the messages they process, and the spans they
// drive (docs/telemetry.md). No OpenTelemetry type appears here: `@opentelemetry/api` is
// optional, and these types are on `@inboxkit/core/adapter`.

import type { ProcessOutcome } from '../outcome.js';

/** Headers as brokers hand them over: text, bytes, or lists of either. */
export type CarrierHeaders = Readonly<Record<string, unknown>>;

/** Attribute values as adapters give them; `undefined` ones are left out. */
export type SpanAttributes = Readonly<Record<string, string | number | boolean | undefined>>;

/** A message as an adapter describes it to {@link InboxTelemetry.message} and {@link InboxTelemetry.batch}. */
export interface MessageSource {
  /** `messaging.system`: `'kafka'`, `'rabbitmq'`. */
  readonly system: string;
  /** What the span is named after: `process <destination>` (the topic, the queue). */
  readonly destination: string;
  /** The headers that may carry the producer's trace context (`traceparent`, `tracestate`). */
  readonly headers: CarrierHeaders | undefined;
  /** The span's other attributes (`messaging.destination.name`, the consumer group, partition, offset...). */
  readonly attributes: SpanAttributes;
  /** When the broker stamped the message, in milliseconds since the epoch: the start of the delivery latency. */
  readonly sentAtMs?: number | undefined;
  /**
   * The message object the adapter settles, once known: its dead letter's headers carry
   * this span (`traceHeaders(message)`). A message whose span was started already (a
   * RabbitMQ delivery that joins a batch) is linked from the batch span instead.
   */
  readonly message?: object | undefined;
}

/** One message's process span, as the adapter drives it. */
export interface MessageTrace {
  /** Runs `work` with the span as the active context: the handler's spans are its children. */
  run<T>(work: () => Promise<T>): Promise<T>;
  /** The message object the adapter settles, once it exists (see {@link MessageSource.message}). */
  bind(message: object): void;
  /**
   * Ends the span with what became of the message: its outcome (attributes, status, the
   * error recorded), whether the broker was told to forget it (`settled`: acked, offset
   * marked), and the delivery latency when it was. `thrown`: something outside the inbox
   * failed instead.
   */
  end(outcome: ProcessOutcome | undefined, settled: boolean, thrown?: unknown): void;
}

/** A batch's span: linked to each message's context; one span per message beside it while sampled. */
export interface BatchTrace {
  /** Runs `work` with the batch span as the active context. */
  run<T>(work: () => Promise<T>): Promise<T>;
  /** The message object of member `index`, once it exists. */
  bind(index: number, message: object): void;
  /** Ends every member's span (outcome `i` for member `i`; the first `settled` members were settled) and the batch's. */
  end(outcomes: readonly (ProcessOutcome | undefined)[], settled: number, thrown?: unknown): void;
}
