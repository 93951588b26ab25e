// The producer side: charge requests, each with its id in the `message-id` header, and some
// of them sent twice, as a client that timed out waiting for the broker's ack would.
//
//   node examples/kafka-payments/producer.ts [count]
//
// Reads KAFKA_BROKERS and KAFKA_TOPIC (default payments.charge-requests).
import { randomBytes } from 'node:crypto';
import { Kafka, logLevel, type Producer } from 'kafkajs';
import type { ChargeRequest } from './consumer.ts';

/** `count` charge requests with ids unique to this call (`ch-<random>-001`...). */
export function chargeRequests(count: number): ChargeRequest[] {
  const run = randomBytes(3).toString('hex');
  return Array.from({ length: count }, (_, i) => ({
    chargeId: `ch-${run}-${String(i + 1).padStart(3, '0')}`,
    userId: `user-${(i % 5) + 1}`,
    amountCents: 100 * ((i % 7) + 1) + 99,
  }));
}

export interface SendResult {
  /** Records sent, re-sends included. */
  readonly records: number;
  /** Ids sent twice. */
  readonly resent: string[];
}

/**
 * Sends the requests; every `resendEvery`-th one is sent a second time, with the same
 * `message-id` header and the same value: the consumer must charge it once.
 */
export async function sendChargeRequests(
  producer: Producer,
  topic: string,
  requests: readonly ChargeRequest[],
  resendEvery = 4,
): Promise<SendResult> {
  const record = (request: ChargeRequest) => ({
    key: request.userId, // one user's requests stay in order on one partition
    value: JSON.stringify(request),
    headers: { 'message-id': request.chargeId },
  });
  const resent = requests.filter((_, i) => i % resendEvery === resendEvery - 1);
  await producer.send({ topic, acks: -1, messages: requests.map(record) });
  // "Did the first send arrive? The call timed out, so send it again." Same id, same value.
  if (resent.length > 0) await producer.send({ topic, acks: -1, messages: resent.map(record) });
  return { records: requests.length + resent.length, resent: resent.map((r) => r.chargeId) };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const kafka = new Kafka({
    clientId: 'kafka-payments-producer',
    brokers: (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(','),
    logLevel: logLevel.NOTHING,
  });
  const producer = kafka.producer();
  await producer.connect();
  const topic = process.env.KAFKA_TOPIC ?? 'payments.charge-requests';
  const requests = chargeRequests(Number(process.argv[2] ?? 20));
  const { records, resent } = await sendChargeRequests(producer, topic, requests);
  await producer.disconnect();
  console.log(
    `sent ${records} records to ${topic}: ${requests.length} charge requests, ${resent.length} of them twice`,
  );
  console.log(`re-sent: ${resent.join(', ')}`);
}
