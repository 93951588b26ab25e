import { type Otel, otelApi } from './otel-api.js';

/** The trace context of each message whose span an adapter started, for its dead letter's headers. */
const messageContexts = new WeakMap<object, object>();

export function bindMessageContext(message: object, context: object): void {
  messageContexts.set(message, context);
}

export function messageContext(message: object): object | undefined {
  return messageContexts.get(message);
}

/**
 * The trace context headers (W3C `traceparent` and `tracestate` with the SDK's default
 * propagator) of `message`'s process span when an adapter traced it, else of the active
 * context; `{}` without `@opentelemetry/api` or without a registered propagator. Adapters
 * put them on the dead letters they publish, over the original message's, so the trace
 * goes on through the dead-letter destination. On `@inboxkit/core/adapter`.
 *
 * @example
 * ```ts
 * headers: { ...original.headers, ...failureHeaders, ...traceHeaders(message) }
 * ```
 */
export function traceHeaders(message?: object): Record<string, string> {
  const api = otelApi();
  const carrier: Record<string, string> = {};
  if (api === null || api === undefined) return carrier;
  const context =
    (message === undefined ? undefined : (messageContexts.get(message) as Otel.Context | undefined)) ??
    api.context.active();
  api.propagation.inject(context, carrier);
  return carrier;
}
