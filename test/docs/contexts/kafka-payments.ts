// The names the fragments of examples/kafka-payments/README.md take from the example's own
// files (consumer.ts, producer.ts): its types come from there, so a fragment that no longer
// matches the example fails to type-check.
type Example = typeof import('../../../examples/kafka-payments/consumer.ts');
type PaymentsDB = import('../../../examples/kafka-payments/consumer.ts').PaymentsDB;
type ChargeRequest = import('../../../examples/kafka-payments/consumer.ts').ChargeRequest;
type ChargeMessages = readonly import('@inboxkit/kafka').KafkaInboxMessage<ChargeRequest>[];

declare const runInboxConsumer: typeof import('@inboxkit/kafka').runInboxConsumer;
declare const kafka: import('kafkajs').Kafka;
declare const kafkaConsumer: import('kafkajs').Consumer;
declare const inbox: import('@inboxkit/core').Inbox<PaymentsDB>;
declare const config: Parameters<Example['startPaymentsConsumer']>[0];
declare function writeCharges(trx: import('kysely').Transaction<PaymentsDB>, messages: ChargeMessages): Promise<void>;
declare function writeLedger(trx: import('kysely').Transaction<PaymentsDB>, messages: ChargeMessages): Promise<void>;
declare let stopping: boolean;
declare const running: Awaited<ReturnType<Example['startPaymentsConsumer']>>;
declare const producer: import('kafkajs').Producer;
declare const topic: string;
declare const requests: readonly ChargeRequest[];

export {};
