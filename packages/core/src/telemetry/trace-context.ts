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

/**
 * `messages` with the active trace context's headers under their own (a `traceparent` a
 * message sets wins): the outbox captures the context when a message is enqueued, inside
 * the handler's span, not when the relay sends it (docs/telemetry.md, "The outbox"). The
 * same array when there is no context to add.
 */
export function withTraceHeaders<M>(messages: readonly M[]): readonly M[] {
  const trace = traceHeaders();
  if (trace.traceparent === undefined) return messages;
  return messages.map((message) => {
    if (typeof message !== 'object' || message === null) return message; // refused later, naming the field
    const own = (message as { headers?: unknown }).headers ?? undefined;
    if (own !== undefined && (typeof own !== 'object' || Array.isArray(own))) return message;
    const headers = own as Record<string, string> | undefined;
    if (headers?.traceparent !== undefined) return message;
    return { ...message, headers: { ...trace, ...headers } };
  });
}
