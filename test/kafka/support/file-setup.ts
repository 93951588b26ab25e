// The set-up every Kafka fault-test file shares: its database and Kafka clients, made in
// beforeAll and disposed in afterAll, with a private Postgres cluster or a private broker
// for the tests that stop one.
import { afterAll, beforeAll, inject } from 'vitest';
import {
  type FileDatabase,
  type FileDatabaseOptions,
  type FileDatabaseSetup,
  openFileDatabase,
  setUpFields,
} from '../../support/file-database.ts';
import { type KafkaBroker, startKafkaBroker } from '../../support/kafka-broker.ts';
import { chargesWithDuplicates, createFreshTopic, type KafkaTestKit, kafkaTestKit, produce } from './kafka-testkit.ts';

export interface KafkaFileOptions extends FileDatabaseOptions {
  /** A private broker on free ports (startKafkaBroker) instead of the shared one, for tests that stop it. */
  readonly privateBroker?: boolean;
}

/** What the hooks made; read inside the tests (before beforeAll ran, each throws). */
export interface KafkaFileSetup extends FileDatabaseSetup {
  readonly kit: KafkaTestKit;
  /** Only with `privateBroker`. */
  readonly broker: KafkaBroker;
}

/** Registers the file's beforeAll (database, broker, clients) and afterAll (the reverse) hooks. */
export function setUpKafkaFile(label: string, options: KafkaFileOptions = {}): KafkaFileSetup {
  let database: FileDatabase | undefined;
  let broker: KafkaBroker | undefined;
  let kit: KafkaTestKit | undefined;
  beforeAll(async () => {
    [broker, database] = await Promise.all([
      options.privateBroker ? startKafkaBroker() : undefined,
      openFileDatabase(label, options),
    ]);
    kit = await kafkaTestKit(broker?.brokers ?? inject('kafkaBrokers'));
  });
  afterAll(async () => {
    await kit?.dispose();
    await broker?.dispose();
    await database?.dispose();
  });
  return setUpFields<KafkaFileSetup>({
    t: () => database?.t,
    kit: () => kit,
    server: () => database?.server,
    broker: () => broker,
  });
}

/**
 * Empties the ledger, creates a fresh 4-partition topic (and its `.dlq`) and fills it with
 * `total` charges of which 30% are copies (chargesWithDuplicates); returns how many ids are distinct.
 */
export async function seedDuplicateCharges(
  setup: KafkaFileSetup,
  labels: { topic: string; group: string; prefix: string; total: number },
): Promise<{ topic: string; groupId: string; distinct: number }> {
  const { t, kit } = setup;
  await t.db.deleteFrom('ledger').execute();
  const { topic, groupId } = await createFreshTopic(kit.admin, {
    topic: labels.topic,
    group: labels.group,
    partitions: 4,
  });
  const records = chargesWithDuplicates(labels.prefix, labels.total, 0.3);
  const distinct = new Set(records.map((r) => r.id)).size;
  await produce(kit.producer, topic, records);
  return { topic, groupId, distinct };
}
