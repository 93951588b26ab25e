import { createPgPool } from '@inboxkit/core/pg';
import { Kysely, PostgresDialect } from 'kysely';
import { describeError, UnreachableError, UsageError } from './errors.js';

/** The options every command reads: flags first, then the environment. */
export interface GlobalOptions {
  readonly databaseUrl?: string;
  readonly schema?: string;
  readonly table?: string;
  readonly outboxSchema?: string;
  readonly outboxTable?: string;
  readonly brokers?: string;
  readonly amqpUrl?: string;
  readonly json?: boolean;
}

/** The resolved settings of a run. */
export interface Settings {
  readonly databaseUrl: string | undefined;
  readonly schema: string;
  readonly table: string;
  /** Where the outbox table is (default: the inbox's schema, `outbox`). */
  readonly outboxSchema: string;
  readonly outboxTable: string;
  readonly brokers: string[] | undefined;
  readonly amqpUrl: string | undefined;
  readonly json: boolean;
}

export function resolveSettings(options: GlobalOptions, env: NodeJS.ProcessEnv = process.env): Settings {
  const brokers = options.brokers ?? env.KAFKA_BROKERS;
  return {
    databaseUrl: options.databaseUrl ?? env.DATABASE_URL,
    schema: options.schema ?? 'public',
    table: options.table ?? 'processed_messages',
    outboxSchema: options.outboxSchema ?? options.schema ?? 'public',
    outboxTable: options.outboxTable ?? 'outbox',
    brokers:
      brokers === undefined
        ? undefined
        : brokers
            .split(',')
            .map((b) => b.trim())
            .filter((b) => b.length > 0),
    amqpUrl: options.amqpUrl ?? env.AMQP_URL,
    json: options.json === true,
  };
}

/** A Kysely instance on the inbox's database, checked to answer before any command runs. */
export async function openDatabase(settings: Settings): Promise<Kysely<unknown>> {
  if (settings.databaseUrl === undefined || settings.databaseUrl === '') {
    throw new UsageError('No database: set DATABASE_URL or pass --database-url.');
  }
  const pool = createPgPool({ connectionString: settings.databaseUrl, max: 3, connectionTimeoutMillis: 5000 });
  const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool }) });
  try {
    const client = await pool.connect();
    client.release();
  } catch (error) {
    await db.destroy().catch(() => {});
    throw new UnreachableError(
      `Cannot reach the database at ${databaseWhere(settings.databaseUrl)}: ${describeError(error)}`,
      error,
    );
  }
  return db;
}

/** Host, port and database of a URL, without its password. */
function databaseWhere(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.hostname}:${parsed.port || '5432'}${parsed.pathname}`;
  } catch {
    return 'the given URL';
  }
}
