import type { TestProject } from 'vitest/node';
import { ensureKafka } from './kafka-broker.ts';
import { startPgBouncer } from './pgbouncer.ts';
import { resolvePostgres, resolveRabbitMq } from './services.ts';
import './global-postgres.ts';

/**
 * Global setup of the `pgbouncer` project: Postgres, RabbitMQ and Kafka as for the others,
 * and a private PgBouncer in transaction mode in front of Postgres, through which every test
 * database's connections go (createTestDatabase).
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const postgres = await resolvePostgres();
  const rabbit = await resolveRabbitMq();
  const kafka = await ensureKafka();
  const bouncer = await startPgBouncer({ upstreamUrl: postgres.url });
  project.provide('databaseUrl', postgres.url);
  project.provide('pgbouncerUrl', bouncer.url);
  project.provide('amqpUrl', rabbit.url);
  project.provide('kafkaBrokers', kafka.brokers);
  return async () => {
    await bouncer.stop();
    await kafka.stop?.();
    await rabbit.stop?.();
    await postgres.stop?.();
  };
}
