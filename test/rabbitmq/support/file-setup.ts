// The set-up every RabbitMQ fault-test file shares: its database and its own side of the
// broker, made in beforeAll and disposed in afterAll, with a private Postgres cluster for the
// tests that stop it.
import { afterAll, beforeAll } from 'vitest';
import {
  type FileDatabase,
  type FileDatabaseOptions,
  type FileDatabaseSetup,
  openFileDatabase,
  setUpFields,
} from '../../support/file-database.ts';
import { openTestBroker, type TestBroker } from './broker.ts';

/** What the hooks made; read inside the tests (before beforeAll ran, each throws). */
export interface RabbitFileSetup extends FileDatabaseSetup {
  readonly broker: TestBroker;
}

/** Registers the file's beforeAll (database `rabbitmq_<label>`, then broker `<label>`) and afterAll (the reverse) hooks. */
export function setUpRabbitFile(label: string, options: FileDatabaseOptions = {}): RabbitFileSetup {
  let database: FileDatabase | undefined;
  let broker: TestBroker | undefined;
  beforeAll(async () => {
    database = await openFileDatabase(`rabbitmq_${label}`, options);
    broker = await openTestBroker(label);
  });
  afterAll(async () => {
    await broker?.dispose();
    await database?.dispose();
  });
  return setUpFields<RabbitFileSetup>({ t: () => database?.t, broker: () => broker, server: () => database?.server });
}
