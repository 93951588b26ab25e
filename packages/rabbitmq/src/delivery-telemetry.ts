import type { MessageSource } from '@inboxkit/core/adapter';
import type { AmqpDelivery } from './amqp-client.js';

/** Below this, an AMQP `timestamp` is taken as seconds (the AMQP 0-9-1 unit), else as milliseconds. */
const SECONDS_BELOW = 100_000_000_000;

/**
 * A delivery as the inbox's telemetry sees it (docs/telemetry.md): the span `process <queue>`
 * with the messaging conventions' RabbitMQ attributes (`messaging.destination.name` is the
 * exchange it was published to, `''` for the default exchange; the queue is the consumer
 * group), its parent the trace context in the message's headers.
 *
 * The delivery latency starts at the message's `timestamp_in_ms` header (RabbitMQ's
 * message-timestamp plugin) or else its `timestamp` property: seconds per AMQP 0-9-1, but
 * publishers often put milliseconds there, so a value under 10^11 counts as seconds.
 */
export function deliverySource(queue: string, raw: AmqpDelivery): MessageSource {
  const { fields, properties } = raw;
  return {
    system: 'rabbitmq',
    destination: queue,
    headers: properties.headers,
    attributes: {
      'messaging.destination.name': fields.exchange,
      'messaging.consumer.group.name': queue,
      'messaging.rabbitmq.destination.routing_key': fields.routingKey === '' ? undefined : fields.routingKey,
      'messaging.rabbitmq.message.delivery_tag': fields.deliveryTag,
    },
    sentAtMs: sentAtMs(properties.headers?.timestamp_in_ms, properties.timestamp),
  };
}

function sentAtMs(header: unknown, timestamp: unknown): number | undefined {
  if (typeof header === 'number' && Number.isFinite(header) && header > 0) return header;
  if (typeof timestamp !== 'number' || !Number.isFinite(timestamp) || timestamp <= 0) return undefined;
  return timestamp < SECONDS_BELOW ? timestamp * 1000 : timestamp;
}

/** The attributes of a batch's span. */
export function batchSource(queue: string) {
  return { system: 'rabbitmq', destination: queue, attributes: { 'messaging.consumer.group.name': queue } };
}
