import type { TestProject } from 'vitest/node';
import { resolvePostgres, resolveRabbitMq } from './services.ts';
import './global-postgres.ts';

/** Global setup for RabbitMQ tests: Postgres and RabbitMQ, resolved once per run. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const postgres = await resolvePostgres();
  const rabbit = await resolveRabbitMq();
  project.provide('databaseUrl', postgres.url);
  project.provide('amqpUrl', rabbit.url);
  return async () => {
    await rabbit.stop?.();
    await postgres.stop?.();
  };
}
