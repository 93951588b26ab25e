import type { MessageSource } from '@inboxkit/core/adapter';
import type { KafkaRecord } from './kafka-client.js';

/**
 * A record as the inbox's telemetry sees it (docs/telemetry.md): the span `process <topic>`
 * with the messaging conventions' Kafka attributes, its parent the trace context in the
 * record's headers, and the record's timestamp as the start of its delivery latency.
 */
export function recordSource(
  groupId: string | undefined,
  topic: string,
  partition: number,
  record: KafkaRecord,
): MessageSource {
  const sentAtMs = Number(record.timestamp);
  return {
    system: 'kafka',
    destination: topic,
    headers: record.headers,
    attributes: {
      'messaging.destination.name': topic,
      'messaging.consumer.group.name': groupId,
      'messaging.destination.partition.id': String(partition),
      'messaging.kafka.offset': Number(record.offset),
    },
    sentAtMs: Number.isFinite(sentAtMs) && sentAtMs > 0 ? sentAtMs : undefined,
  };
}

/** The attributes of a batch's span: its topic, partition and group. */
export function batchSource(groupId: string | undefined, topic: string, partition: number) {
  return {
    system: 'kafka',
    destination: topic,
    attributes: {
      'messaging.destination.name': topic,
      'messaging.consumer.group.name': groupId,
      'messaging.destination.partition.id': String(partition),
    },
  };
}
