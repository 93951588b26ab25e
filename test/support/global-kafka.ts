import type { TestProject } from 'vitest/node';
import { ensureKafka } from './kafka-broker.ts';
import { resolvePostgres } from './services.ts';
import './global-postgres.ts';

/** Global setup for Kafka tests: Postgres and a Kafka broker, resolved once per run. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const postgres = await resolvePostgres();
  const kafka = await ensureKafka();
  project.provide('databaseUrl', postgres.url);
  project.provide('kafkaBrokers', kafka.brokers);
  return async () => {
    await kafka.stop?.();
    await postgres.stop?.();
  };
}
