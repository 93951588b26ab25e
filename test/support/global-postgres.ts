import type { TestProject } from 'vitest/node';
import { resolvePostgres } from './services.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    databaseUrl: string;
    amqpUrl: string;
    kafkaBrokers: string[];
    /** Only in the `pgbouncer` project: its PgBouncer in front of `databaseUrl`. */
    pgbouncerUrl: string | undefined;
  }
}

/** Global setup: resolves Postgres once per run and hands its URL to the test files. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const service = await resolvePostgres();
  project.provide('databaseUrl', service.url);
  return async () => {
    await service.stop?.();
  };
}
