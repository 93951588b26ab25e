// The attribute and instrument names inboxkit emits (docs/telemetry.md lists them). The
// `messaging.*` names are the OpenTelemetry messaging semantic conventions'; the
// `inboxkit.*` ones say what the inbox decided.

export const ATTR = {
  system: 'messaging.system',
  operationType: 'messaging.operation.type',
  operationName: 'messaging.operation.name',
  destinationName: 'messaging.destination.name',
  consumerGroup: 'messaging.consumer.group.name',
  messageId: 'messaging.message.id',
  batchCount: 'messaging.batch.message_count',
  partition: 'messaging.destination.partition.id',
  kafkaOffset: 'messaging.kafka.offset',
  rabbitRoutingKey: 'messaging.rabbitmq.destination.routing_key',
  rabbitDeliveryTag: 'messaging.rabbitmq.message.delivery_tag',
  errorType: 'error.type',
  consumer: 'inboxkit.consumer',
  outcome: 'inboxkit.outcome',
  reason: 'inboxkit.reason',
  attempts: 'inboxkit.attempts',
  previousStatus: 'inboxkit.previous_status',
  settled: 'inboxkit.settled',
  table: 'inboxkit.table',
  /** The topic or queue a consumer reads (metrics; spans name it `process <destination>`). */
  destination: 'inboxkit.destination',
} as const;

export const METRIC = {
  /** Counter: the inbox's outcomes, by consumer, outcome and reason. */
  outcomes: 'inboxkit.inbox.outcomes',
  /** Histogram, seconds: one handler call (a bulk handler's call covers its batch). */
  handlerDuration: 'inboxkit.handler.duration',
  /** Histogram, seconds: from the broker's timestamp to the message's ack or offset commit mark. */
  deliveryLatency: 'inboxkit.delivery.latency',
  /** Gauge: a consumer's keys (exact up to a bound, then estimated). */
  keys: 'inboxkit.inbox.keys',
  /** Gauge: a consumer's keys of dead-lettered messages. */
  deadLetteredKeys: 'inboxkit.inbox.dead_lettered_keys',
  /** Gauge, seconds: age of a consumer's oldest key. */
  oldestKeyAge: 'inboxkit.inbox.oldest_key.age',
  /** Gauge: a consumer's crash-loop suspects (deliveries counted and not finished). */
  suspects: 'inboxkit.inbox.crash_loop_suspects',
  /** Gauge: messages waiting in an outbox (bounded count, then estimated), by table. */
  outboxBacklog: 'inboxkit.outbox.backlog',
  /** Gauge: an outbox's failed messages (set aside), by table. */
  outboxFailed: 'inboxkit.outbox.failed',
  /** Gauge, seconds: age of the oldest message waiting in an outbox (0 when none waits), by table. */
  outboxOldestAge: 'inboxkit.outbox.oldest.age',
} as const;
