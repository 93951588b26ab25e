// The database of one fault-test file (Kafka or RabbitMQ): on the shared server, or on a
// private cluster of its own when the test stops and starts Postgres.
import { createTestDatabase, type TestDatabase } from './postgres.ts';
import { type PrivatePostgres, startPrivatePostgres } from './private-postgres.ts';

export interface FileDatabaseOptions {
  /** A private cluster under the database (startPrivatePostgres), for tests that stop Postgres. */
  readonly privatePostgres?: boolean;
  readonly poolSize?: number;
}

export interface FileDatabase {
  readonly t: TestDatabase;
  /** The private cluster, when one was asked for. */
  readonly server: PrivatePostgres | undefined;
  /** Drops the database (ignoring a failure on a private cluster the test may have left down), then the cluster. */
  dispose(): Promise<void>;
}

/** Creates the file's test database, on a private cluster started first when `privatePostgres` is set. */
export async function openFileDatabase(label: string, options: FileDatabaseOptions = {}): Promise<FileDatabase> {
  const server = options.privatePostgres ? await startPrivatePostgres() : undefined;
  let t: TestDatabase;
  try {
    t = await createTestDatabase(label, {
      ...(server === undefined ? {} : { url: server.url }),
      ...(options.poolSize === undefined ? {} : { poolSize: options.poolSize }),
    });
  } catch (error) {
    server?.dispose();
    throw error;
  }
  return {
    t,
    server,
    async dispose() {
      if (server === undefined) {
        await t.dispose();
        return;
      }
      await t.dispose().catch(() => {});
      server.dispose();
    },
  };
}

/** The database part of a file's set-up, as the tests read it (see setUpFields). */
export interface FileDatabaseSetup {
  readonly t: TestDatabase;
  /** Only with `privatePostgres`. */
  readonly server: PrivatePostgres;
}

/**
 * What a file's beforeAll made, as an object to read inside the tests: each field calls its
 * reader when read, and throws while that gives undefined (not asked for, or beforeAll failed).
 */
export function setUpFields<T extends object>(readers: { [K in keyof T]: () => T[K] | undefined }): T {
  const fields = {} as T;
  for (const name of Object.keys(readers) as (keyof T & string)[]) {
    Object.defineProperty(fields, name, {
      enumerable: true,
      get: () => {
        const value = readers[name]();
        if (value === undefined)
          throw new Error(`the file's set-up has no ${name}: not asked for, or beforeAll failed`);
        return value;
      },
    });
  }
  return fields;
}
