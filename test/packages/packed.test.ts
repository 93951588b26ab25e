// The packages as published (docs/releasing.md): each one packed with `pnpm pack`, installed
// from its tarball into a project of its own outside the workspace with only its declared
// dependencies and peers (test/packages/support/scratch.ts), its README's quick start and
// the root README's quick starts type-checked there as written, and the root README's Kafka
// and RabbitMQ consumers run there, on Node 22 and on Node 24, with the `inboxkit` command
// beside them. A file
// left out of "files", an export or a peer missing from package.json fails here, which the
// other tests, on the workspace's own links, cannot see.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { type PackedPackage, packPackages } from '../../scripts/packages.mjs';
import { runnableBlock } from '../docs/support/markdown.ts';
import {
  createFreshTopic,
  type KafkaTestKit,
  kafkaTestKit,
  produce,
  topicSize,
  waitFor,
} from '../kafka/support/kafka-testkit.ts';
import { openTestBroker, type TestBroker, uniqueName } from '../rabbitmq/support/broker.ts';
import { nodeBinary } from '../support/node-versions.ts';
import { withDatabase } from '../support/postgres.ts';
import { exitsWithin, readmeBlock, replaceOnce, runSnippet, type SnippetProcess } from '../support/readme-snippet.ts';
import { installScratch, type ScratchProject, typeCheck } from './support/scratch.ts';

const run = promisify(execFile);

/**
 * The usage example of each package's README, type-checked in that package's project. A
 * fragment gets, before it, only what the README's page gives it around the block.
 */
const QUICK_STARTS = {
  '@inboxkit/core': { readme: 'packages/core/README.md', heading: '## Usage', preamble: '' },
  '@inboxkit/kafka': { readme: 'packages/kafka/README.md', heading: '## Usage', preamble: '' },
  '@inboxkit/rabbitmq': { readme: 'packages/rabbitmq/README.md', heading: '## Usage', preamble: '' },
  '@inboxkit/http': { readme: 'packages/http/README.md', heading: '## Usage', preamble: '' },
} as const;

/**
 * The root README's quick starts (test/docs/quick-starts.test.ts runs them in the workspace),
 * each type-checked in the project of the package it is about: that package's tarball and
 * its declared dependencies and peers are all it may need. Kafka's and RabbitMQ's run below.
 */
const ROOT_QUICK_STARTS = {
  kafka: '@inboxkit/kafka',
  rabbitmq: '@inboxkit/rabbitmq',
  http: '@inboxkit/http',
  outbox: '@inboxkit/rabbitmq',
} as const;

/** Packages checked by running their command rather than by a TypeScript quick start. */
const COMMANDS = ['@inboxkit/cli'] as const;

const NODE_MAJORS = [22, 24] as const;

let scratchRoot: string | undefined;
let packed: PackedPackage[] = [];
const projects = new Map<string, ScratchProject>();
const nodes = new Map<number, string>();

beforeAll(async () => {
  scratchRoot = await mkdtemp(join(tmpdir(), 'inboxkit-packed-'));
  // Node 22 may have to be fetched (once): meanwhile pack and install.
  const [, ...binaries] = await Promise.all([
    (async () => {
      packed = await packPackages(scratchRoot as string);
      // One at a time: two npm installs at once would only compete for the machine's two cores.
      for (const pkg of packed) projects.set(pkg.name, await installScratch(scratchRoot as string, pkg, packed));
    })(),
    ...NODE_MAJORS.map((major) => nodeBinary(major)),
  ]);
  for (const [i, major] of NODE_MAJORS.entries()) nodes.set(major, binaries[i] as string);
}, 600_000);

afterAll(async () => {
  if (scratchRoot !== undefined) await rm(scratchRoot, { recursive: true, force: true });
});

function project(name: string): ScratchProject {
  const found = projects.get(name);
  if (found === undefined) throw new Error(`no project for ${name}: was it packed?`);
  return found;
}

function node(major: number): string {
  const found = nodes.get(major);
  if (found === undefined) throw new Error(`no Node ${major}`);
  return found;
}

describe('packed with pnpm pack, installed from the tarball outside the workspace', () => {
  it('every published package is checked here', () => {
    expect(packed.map((pkg) => pkg.name).sort()).toEqual([...Object.keys(QUICK_STARTS), ...COMMANDS].sort());
  });

  it('installs only the tarballs and their declared peers', () => {
    // The adapters depend on core: its tarball, not a copy from the registry.
    expect(project('@inboxkit/kafka').tarballs).toEqual(['@inboxkit/kafka', '@inboxkit/core']);
    // Optional peers are installed too (core's @opentelemetry/api): the quick starts then run
    // with the API and no SDK, as most applications will (its absence is tested in core).
    expect(Object.keys(project('@inboxkit/kafka').peers).sort()).toEqual([
      '@opentelemetry/api',
      'kafkajs',
      'kysely',
      'pg',
    ]);
  });

  it.each(Object.entries(QUICK_STARTS))('%s: the README usage example type-checks', async (name, quickStart) => {
    const code = quickStart.preamble + readmeBlock(quickStart.readme, quickStart.heading);
    const output = await typeCheck(project(name), { 'quick-start.ts': code });
    expect(output, `tsc in ${project(name).dir}`).toBe('');
  });

  it.each(Object.entries(ROOT_QUICK_STARTS))(
    "the root README's %s quick start type-checks in %s's project",
    async (run, name) => {
      const output = await typeCheck(project(name), { [`readme-${run}.ts`]: runnableBlock('README.md', run).code });
      expect(output, `tsc in ${project(name).dir}`).toBe('');
    },
  );
});

describe.each(NODE_MAJORS)('on Node %i, from the installed tarballs', (major) => {
  let running: SnippetProcess | undefined;
  const databases: BareDatabase[] = [];
  afterEach(() => {
    running?.dispose();
    running = undefined;
  });
  afterAll(async () => {
    for (const database of databases.splice(0)) await database.dispose();
  });

  it("the README's Kafka quick start consumes a record once and exits on SIGTERM", async () => {
    const database = await bareDatabase(`kafka_${major}`);
    databases.push(database);
    const kit: KafkaTestKit = await kafkaTestKit(inject('kafkaBrokers'));
    try {
      const { topic, groupId } = await createFreshTopic(kit.admin, { topic: 'packed', group: 'packed', partitions: 1 });
      const code = replaceOnce(runnableBlock('README.md', 'kafka').code, [
        ["topics: ['charges']", `topics: ['${topic}']`],
        ["groupId: 'payments'", `groupId: '${groupId}'`],
      ]);
      running = runSnippet(
        code,
        { DATABASE_URL: database.url, KAFKA_BROKERS: inject('kafkaBrokers').join(',') },
        { directory: project('@inboxkit/kafka').dir, node: node(major) },
      );
      const child = running;
      // It reads the topic from the beginning: the record and its copy may go out at once.
      const id = `packed-${topic}`;
      const value = JSON.stringify({ userId: 'u-1', amountCents: 1200 });
      await produce(kit.producer, topic, [
        { id, value },
        { id, value },
      ]);
      await waitFor(
        async () => {
          if (child.process.exitCode !== null) throw new Error(`the quick start exited early:\n${child.output()}`);
          const [offsets] = await kit.admin.fetchOffsets({ groupId, topics: [topic] });
          return offsets?.partitions[0]?.offset === '2';
        },
        { what: 'both records to be settled', timeoutMs: 120_000 },
      );
      expect(await database.count(id)).toBe(1);
      expect(await topicSize(kit.admin, `${topic}.dlq`)).toBe(0);
      child.process.kill('SIGTERM');
      const exit = await exitsWithin(child.exited, 20_000); // a liveness bound, generous for a loaded machine
      expect(exit, child.output()).toEqual({ code: 0, signal: null });
    } finally {
      await kit.dispose();
    }
  });

  it("the README's RabbitMQ quick start stores its charge once and exits on SIGTERM; inboxkit finds its key", async () => {
    const database = await bareDatabase(`rabbitmq_${major}`);
    databases.push(database);
    const broker: TestBroker = await openTestBroker(`packed-${major}`);
    try {
      const queue = uniqueName('packed');
      broker.track(queue, `${queue}.dlq`);
      const code = replaceOnce(runnableBlock('README.md', 'rabbitmq').code, [
        ["queue: 'charges'", `queue: '${queue}'`],
      ]);
      running = runSnippet(
        code,
        { DATABASE_URL: database.url, AMQP_URL: inject('amqpUrl') },
        { directory: project('@inboxkit/rabbitmq').dir, node: node(major) },
      );
      const child = running;
      const exitedEarly = () => {
        if (child.process.exitCode !== null) throw new Error(`the quick start exited early:\n${child.output()}`);
      };
      await waitFor(
        async () => {
          exitedEarly();
          return queueExists(queue);
        },
        { what: `the quick start to declare ${queue}`, timeoutMs: 90_000 },
      );
      const message = { id: 'charge-42', body: { userId: 'u-1', amountCents: 1200 } };
      await broker.publish(queue, [message, message]);
      await waitFor(
        async () => {
          exitedEarly();
          return (await database.count('charge-42')) > 0 && (await broker.count(queue)) === 0;
        },
        { what: 'charge-42 to be stored and both copies taken' },
      );
      child.process.kill('SIGTERM');
      const exit = await exitsWithin(child.exited, 20_000); // a liveness bound, generous for a loaded machine
      expect(exit, child.output()).toEqual({ code: 0, signal: null });
      expect(await broker.count(queue)).toBe(0);
      expect(await broker.count(`${queue}.dlq`)).toBe(0);
      expect(await database.count('charge-42')).toBe(1);

      // The inboxkit command, from its tarball, on the same Node: its bin, its shebang, its imports.
      const migrate = await inboxkit(major, ['migrate'], database.url);
      expect(migrate.code, migrate.output).toBe(0);
      const find = await inboxkit(major, ['find', 'payments.charges', 'charge-42', '--json'], database.url);
      expect(find.code, find.output).toBe(0);
      expect(JSON.parse(find.stdout)).toMatchObject({
        messageId: 'charge-42',
        status: 'processed',
        result: { chargeId: 'charge-42' },
      });
    } finally {
      await broker.dispose();
    }
  });
});

/** Whether `queue` exists (asked on a connection of its own: a missing queue closes the channel that asks). */
async function queueExists(queue: string): Promise<boolean> {
  const probe = await openTestBroker('packed-probe');
  try {
    await probe.channel.checkQueue(queue);
    return true;
  } catch {
    return false;
  } finally {
    await probe.dispose().catch(() => {});
  }
}

/** Runs the `inboxkit` bin the CLI's project installed, with Node `major` first on PATH (its `#!/usr/bin/env node`). */
async function inboxkit(
  major: number,
  args: string[],
  databaseUrl: string,
): Promise<{ code: number; stdout: string; output: string }> {
  const bin = join(project('@inboxkit/cli').dir, 'node_modules', '.bin', 'inboxkit');
  const env = { ...process.env, DATABASE_URL: databaseUrl, PATH: `${dirname(node(major))}:${process.env.PATH ?? ''}` };
  try {
    const { stdout, stderr } = await run(bin, args, { env });
    return { code: 0, stdout, output: stdout + stderr };
  } catch (error) {
    const { code, stdout = '', stderr = '' } = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof code === 'number' ? code : -1, stdout, output: `${stdout}${stderr}` || String(error) };
  }
}

/** A database of its own with only the quick starts' `charges` table: the packed code creates the inbox's. */
interface BareDatabase {
  readonly url: string;
  /** Rows of `charges` whose id is like `pattern`. */
  count(pattern: string): Promise<number>;
  dispose(): Promise<void>;
}

async function bareDatabase(label: string): Promise<BareDatabase> {
  const adminUrl = inject('databaseUrl');
  const name = `ik_packed_${label}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  const url = withDatabase(adminUrl, name);
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  await pool.query('CREATE TABLE charges (id text PRIMARY KEY, user_id text NOT NULL, amount_cents integer NOT NULL)');
  return {
    url,
    async count(pattern) {
      const { rows } = await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM charges WHERE id LIKE $1', [
        pattern,
      ]);
      return rows[0]?.n ?? 0;
    },
    async dispose() {
      await pool.end();
      const cleanup = new pg.Client({ connectionString: adminUrl });
      await cleanup.connect();
      try {
        await cleanup.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await cleanup.end();
      }
    },
  };
}
