import { execFileSync, spawnSync } from 'node:child_process';
import { dockerAvailable } from './docker.ts';

/** A service the tests use, and how to stop it when the run started it. */
export interface ResolvedService {
  readonly url: string;
  readonly stop?: () => Promise<void>;
}

/**
 * Postgres for the tests (docs/design.md, "Tests and services"): `DATABASE_URL` when set; else a
 * testcontainers Postgres when a Docker engine answers; else the machine's own server on
 * 127.0.0.1:5432, started if it is down.
 */
export async function resolvePostgres(): Promise<ResolvedService> {
  const fromEnv = process.env.DATABASE_URL;
  if (fromEnv) return { url: fromEnv };
  if (await dockerAvailable()) {
    const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
    const container = await new PostgreSqlContainer('postgres:16-alpine').start();
    return { url: container.getConnectionUri(), stop: async () => void (await container.stop()) };
  }
  const url = 'postgres://postgres@127.0.0.1:5432/postgres';
  if (!pgReady()) {
    runScript('postgres');
    if (!pgReady()) throw new Error(`Postgres is not answering on 127.0.0.1:5432 and could not be started`);
  }
  return { url };
}

/**
 * RabbitMQ for the tests: `AMQP_URL` when set; else testcontainers when Docker answers;
 * else the machine's own broker on 127.0.0.1:5672, started if it is down.
 */
export async function resolveRabbitMq(): Promise<ResolvedService> {
  const fromEnv = process.env.AMQP_URL;
  if (fromEnv) return { url: fromEnv };
  if (await dockerAvailable()) {
    const { RabbitMQContainer } = await import('@testcontainers/rabbitmq');
    const container = await new RabbitMQContainer('rabbitmq:3.13-management-alpine').start();
    return { url: container.getAmqpUrl(), stop: async () => void (await container.stop()) };
  }
  runScript('rabbitmq');
  return { url: 'amqp://guest:guest@127.0.0.1:5672' };
}

function pgReady(): boolean {
  return spawnSync('pg_isready', ['-q', '-h', '127.0.0.1', '-p', '5432'], { stdio: 'ignore' }).status === 0;
}

/** Runs `scripts/services.sh start <name>`, which starts a local service if it is down. */
function runScript(service: string): void {
  execFileSync('bash', [new URL('../../scripts/services.sh', import.meta.url).pathname, 'start', service], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
}
