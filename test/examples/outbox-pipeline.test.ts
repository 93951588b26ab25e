// The pipeline under chaos (docs/outbox.md): Kafka -> inboxkit consumer (inbox + outbox.enqueue
// in one transaction) -> two relays -> RabbitMQ -> inboxkit consumer writing one effect row per
// message. Inputs come with duplicates (ids produced again) and many messages per key, while
// every stage (child processes) is SIGKILLed, a relay is killed between the broker's confirm
// and its commit, connections to RabbitMQ are cut (only this test's own, by connection name)
// and the private Postgres restarts. Counted at the end: each input has exactly one effect,
// none is lost, and each key's effects are in the order its inputs were produced.
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createOutbox, migrateOutbox } from '@inboxkit/core';
import type { Producer } from 'kafkajs';
import { sql } from 'kysely';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { createTopics, type KafkaTestKit, kafkaTestKit, topicSize } from '../kafka/support/kafka-testkit.ts';
import {
  closeConnectionsNamed,
  messagesInQueue,
  openTestBroker,
  type TestBroker,
  uniqueName,
  waitFor,
} from '../rabbitmq/support/broker.ts';
import { type FileDatabase, openFileDatabase } from '../support/file-database.ts';
import type { PipelineConfig, PipelineInput } from './support/pipeline-child.ts';

const CHILD = fileURLToPath(new URL('./support/pipeline-child.ts', import.meta.url));
const KEYS = 40;
const PER_KEY = 50;
const DUPLICATES = 600;
const CHUNKS = 25;
const CHUNK_PAUSE_MS = 1000;

let database: FileDatabase;
let kit: KafkaTestKit;
let broker: TestBroker;
const children = new Set<Stage>();

beforeAll(async () => {
  [database, kit, broker] = await Promise.all([
    openFileDatabase('outbox_pipeline', { privatePostgres: true }),
    kafkaTestKit(inject('kafkaBrokers')),
    openTestBroker('outbox-pipeline'),
  ]);
});
afterAll(async () => {
  for (const stage of children) stage.process.kill('SIGKILL');
  await kit?.dispose();
  await broker?.dispose();
  await database?.dispose();
});

/** A running stage: its process and what it printed. */
interface Stage {
  readonly name: string;
  readonly process: ChildProcess;
  readonly exited: Promise<void>;
  output(): string;
}

function startStage(name: string, config: PipelineConfig, env: Record<string, string> = {}): Stage {
  const child = spawn(process.execPath, ['--disable-warning=TimeoutNegativeWarning', CHILD], {
    env: { ...process.env, ...env, PIPELINE: JSON.stringify(config) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
  });
  const stage: Stage = {
    name,
    process: child,
    exited: new Promise((resolve) => child.once('exit', () => resolve())),
    output: () => output,
  };
  children.add(stage);
  void stage.exited.then(() => children.delete(stage));
  return stage;
}

async function ready(stage: Stage): Promise<void> {
  await waitFor(
    `${stage.name} ready`,
    () => {
      if (stage.process.exitCode !== null) throw new Error(`${stage.name} exited:\n${stage.output()}`);
      return /^ready$/m.test(stage.output());
    },
    60_000,
  );
}

async function kill(stage: Stage): Promise<void> {
  stage.process.kill('SIGKILL');
  await stage.exited;
}

async function stop(stage: Stage): Promise<void> {
  if (stage.process.exitCode !== null || stage.process.signalCode !== null) return;
  stage.process.kill('SIGTERM');
  const timer = setTimeout(() => stage.process.kill('SIGKILL'), 15_000);
  await stage.exited;
  clearTimeout(timer);
}

/** Each key's inputs in order (seq 1..PER_KEY), keys interleaved, with copies of earlier inputs. */
function inputs(run: string): { records: PipelineInput[]; distinct: PipelineInput[] } {
  let seed = 7;
  const random = (): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const distinct: PipelineInput[] = [];
  for (let seq = 1; seq <= PER_KEY; seq++) {
    for (let k = 0; k < KEYS; k++) {
      distinct.push({ inputId: `${run}-k${k}-${seq}`, key: `k${k}`, seq });
    }
  }
  const records = [...distinct];
  for (let i = 0; i < DUPLICATES; i++) {
    const original = distinct[Math.floor(random() * distinct.length)] as PipelineInput;
    const at = records.indexOf(original) + 1 + Math.floor(random() * 200);
    records.splice(Math.min(at, records.length), 0, original);
  }
  return { records, distinct };
}

async function produceChunk(producer: Producer, topic: string, chunk: readonly PipelineInput[]): Promise<void> {
  await producer.send({
    topic,
    acks: -1,
    messages: chunk.map((input) => ({
      key: input.key,
      value: JSON.stringify(input),
      headers: { 'message-id': input.inputId },
    })),
  });
}

it('applies every input exactly once downstream, in key order, while stages die, connections drop and Postgres restarts', async () => {
  const { t } = database;
  const server = database.server as NonNullable<FileDatabase['server']>;
  const migrated = await migrateOutbox(t.db);
  if (migrated.error) throw migrated.error;
  await sql`CREATE TABLE pipeline_effects (id bigserial PRIMARY KEY, input_id text NOT NULL, key text NOT NULL,
    seq integer NOT NULL)`.execute(t.db);
  const run = uniqueName('pipe').replaceAll('.', '-');
  const topic = `ik-${run}`;
  await createTopics(kit.admin, [
    { topic, numPartitions: 4 },
    { topic: `${topic}.dlq`, numPartitions: 1 },
  ]);
  const queue = uniqueName('outbox-pipeline');
  await broker.declareQueue(queue);
  await broker.declareQueue(`${queue}.dlq`);

  const base = { databaseUrl: t.url, amqpUrl: inject('amqpUrl'), queue };
  const configs = {
    ingest: {
      ...base,
      role: 'ingest',
      connectionName: `${run} ingest`,
      kafkaBrokers: inject('kafkaBrokers'),
      topic,
      groupId: `${run}-ingest`,
    },
    relayA: { ...base, role: 'relay', connectionName: `${run} relay-a` },
    relayB: { ...base, role: 'relay', connectionName: `${run} relay-b` },
    deliver: { ...base, role: 'deliver', connectionName: `${run} deliver` },
  } satisfies Record<string, PipelineConfig>;
  type Name = keyof typeof configs;
  const stages = new Map<Name, Stage>();
  const everyDeliver: Stage[] = [];
  const start = async (name: Name, env: Record<string, string> = {}): Promise<void> => {
    const stage = startStage(name, configs[name], env);
    stages.set(name, stage);
    if (name === 'deliver') everyDeliver.push(stage);
    await ready(stage);
  };
  const faults: string[] = [];
  const killAndRestart = async (name: Name): Promise<void> => {
    await kill(stages.get(name) as Stage);
    faults.push(`SIGKILL ${name}`);
    await start(name);
  };
  const cut = async (name: Name): Promise<number> => {
    const closed = await closeConnectionsNamed(configs[name].connectionName);
    faults.push(`cut ${name} (${closed})`);
    return closed;
  };
  const deliverDuplicates = (): number =>
    everyDeliver.reduce((n, stage) => n + (stage.output().match(/^duplicate /gm)?.length ?? 0), 0);

  // Relay A stops for good between the broker's confirm and its commit on its first batch;
  // relay B starts once it did (so that A surely gets one).
  await Promise.all([
    start('ingest'),
    start('relayA', { INBOXKIT_TEST_RELAY_HALT_AFTER_CONFIRM: '1' }),
    start('deliver'),
  ]);
  const { records, distinct } = inputs(run);
  const producer = kit.producer;
  const chunkSize = Math.ceil(records.length / CHUNKS);
  const produced = (async () => {
    for (let i = 0; i < records.length; i += chunkSize) {
      await produceChunk(producer, topic, records.slice(i, i + chunkSize));
      await new Promise((resolve) => setTimeout(resolve, CHUNK_PAUSE_MS));
    }
  })();

  const started = Date.now();
  const at = async (ms: number): Promise<void> => {
    const wait = started + ms - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  };
  const relayA = stages.get('relayA') as Stage;
  await waitFor('relay A halted after a confirm', () => relayA.output().includes('halted-after-confirm'), 30_000);
  await Promise.all([killAndRestart('relayA'), start('relayB')]);
  await at(3_000);
  await killAndRestart('ingest');
  const cuts: number[] = [];
  await at(6_000);
  cuts.push(await cut('relayB'));
  await at(9_000);
  await killAndRestart('deliver');
  await at(12_000);
  server.restart();
  faults.push('Postgres restarted');
  await at(15_000);
  await killAndRestart('relayB');
  await at(17_000);
  const deliverCut = await cut('deliver');
  await at(19_000);
  cuts.push(await cut('relayA'));
  await at(21_000);
  await killAndRestart('ingest');
  await at(23_000);
  await Promise.all([killAndRestart('relayA'), killAndRestart('deliver')]);
  await produced;

  const effects = async (): Promise<number> => {
    const { rows } = await sql<{ n: number }>`SELECT count(DISTINCT input_id)::int AS n FROM pipeline_effects`.execute(
      t.db,
    );
    return rows[0]?.n ?? 0;
  };
  const outboxRows = async (): Promise<number> => {
    const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox`.execute(t.db);
    return rows[0]?.n ?? -1;
  };
  // Until every input has its effect, or nothing has moved for 10 s with the outbox and the
  // queue empty (a lost message: the counts below then say which).
  let last = { applied: -1, at: Date.now() };
  await waitFor(
    'every input applied downstream, or the pipeline idle',
    async () => {
      const applied = await effects();
      if (applied >= distinct.length) return true;
      if (applied !== last.applied) last = { applied, at: Date.now() };
      const idle = (await outboxRows()) === 0 && (await broker.count(queue)) === 0;
      return idle && Date.now() - last.at > 10_000;
    },
    120_000,
    250,
  );
  await waitFor('the outbox emptied', async () => (await outboxRows()) === 0, 30_000, 250);
  await waitFor('every delivery acked', async () => (await messagesInQueue(queue)) === 0, 30_000, 250);
  await new Promise((resolve) => setTimeout(resolve, 1000)); // a late copy would show now
  await Promise.all([...stages.values()].map(stop));

  // Every input: exactly one effect, none lost, none extra.
  const { rows: applied } = await sql<{ input_id: string; key: string; seq: number }>`
    SELECT input_id, key, seq FROM pipeline_effects ORDER BY id`.execute(t.db);
  expect(applied.length, 'effect rows').toBe(distinct.length);
  expect(new Set(applied.map((r) => r.input_id))).toEqual(new Set(distinct.map((d) => d.inputId)));
  // Each key's effects in the order its inputs were produced.
  const perKey = new Map<string, number[]>();
  for (const row of applied) perKey.set(row.key, [...(perKey.get(row.key) ?? []), row.seq]);
  const inOrder = Array.from({ length: PER_KEY }, (_, i) => i + 1);
  for (let k = 0; k < KEYS; k++) expect(perKey.get(`k${k}`), `key k${k}`).toEqual(inOrder);

  // Nothing left behind or set aside anywhere.
  expect(await outboxRows()).toBe(0);
  expect(await createOutbox({ db: t.db }).failed()).toEqual([]);
  const { rows: inboxes } = await sql<{ consumer: string; status: string; n: number }>`
    SELECT consumer, status, count(*)::int AS n FROM processed_messages GROUP BY 1, 2 ORDER BY 1, 2`.execute(t.db);
  expect(inboxes).toEqual([
    { consumer: 'pipeline.deliver', status: 'processed', n: distinct.length },
    { consumer: 'pipeline.ingest', status: 'processed', n: distinct.length },
  ]);
  expect(await topicSize(kit.admin, `${topic}.dlq`)).toBe(0);
  expect(await broker.count(`${queue}.dlq`)).toBe(0);

  // The faults did happen: relay A's confirmed batch was sent again (the consumer downstream
  // skipped the copies), the deliver connection was cut, and at least one relay's.
  expect(deliverDuplicates(), 'copies skipped downstream').toBeGreaterThan(0);
  expect(deliverCut, faults.join(', ')).toBe(1);
  expect(
    cuts.reduce((a, b) => a + b, 0),
    faults.join(', '),
  ).toBeGreaterThanOrEqual(1);
}, 240_000);
