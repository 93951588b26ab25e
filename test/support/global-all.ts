import type { TestProject } from 'vitest/node';
import { ensureKafka } from './kafka-broker.ts';
import { resolvePostgres, resolveRabbitMq } from './services.ts';
import './global-postgres.ts';

/** Global setup for the examples and the demo: Postgres, RabbitMQ and Kafka. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const postgres = await resolvePostgres();
  const rabbit = await resolveRabbitMq();
  const kafka = await ensureKafka();
  project.provide('databaseUrl', postgres.url);
  project.provide('amqpUrl', rabbit.url);
  project.provide('kafkaBrokers', kafka.brokers);
  return async () => {
    await kafka.stop?.();
    await rabbit.stop?.();
    await postgres.stop?.();
  };
}
