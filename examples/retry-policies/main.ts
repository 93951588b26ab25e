// Retry policies side by side: what each option does to the attempts of a failing handler.
//
//   node examples/retry-policies/main.ts         (DATABASE_URL, default the local Postgres)
//
// Each policy handles one message whose handler fails a few times (or always), and the
// timeline of attempts is printed: when each started, how it ended, and the outcome.
import { createInbox, type HandlerContext, migrateInbox, NonRetryableError, type RetryOptions } from '@inboxkit/core';
import { createPgKysely } from '@inboxkit/core/pg';
import { sql } from 'kysely';

/** A payment provider that times out: worth retrying. */
class ProviderTimeout extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProviderTimeout';
  }
}
/** A card the provider refused: retrying cannot help. */
class CardDeclined extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CardDeclined';
  }
}

/** The handler's outside call never answers: only `context.signal` ends it. */
const HANG = 'hang';

export interface Scenario {
  readonly name: string;
  readonly retry: RetryOptions;
  /** `createInbox({ handlerTimeoutMs })`, when the scenario sets one. */
  readonly handlerTimeoutMs?: number;
  /** What the handler throws on attempt n (1-based), `'hang'`, or undefined to succeed. */
  readonly failure: (attempt: number) => Error | typeof HANG | undefined;
}

export const scenarios: readonly Scenario[] = [
  {
    name: 'immediate: 3 retries, no delay',
    retry: { retries: 3, minTimeout: 0, maxTimeout: 0, randomize: false },
    failure: (n) => (n < 3 ? new ProviderTimeout(`timeout #${n}`) : undefined),
  },
  {
    name: 'exponential with jitter: 100 ms x2, up to 1 s, randomized',
    retry: { retries: 4, minTimeout: 100, factor: 2, maxTimeout: 1000, randomize: true },
    failure: (n) => (n < 4 ? new ProviderTimeout(`timeout #${n}`) : undefined),
  },
  {
    name: 'retryable-error predicate: only ProviderTimeout is retried',
    retry: {
      retries: 5,
      minTimeout: 20,
      randomize: false,
      shouldRetry: ({ error }) => error instanceof ProviderTimeout,
    },
    failure: (n) => (n === 1 ? new ProviderTimeout('timeout') : new CardDeclined('card declined')),
  },
  {
    name: 'non-retryable errors: NonRetryableError and a marked class go straight to dead-letter',
    retry: { retries: 5, minTimeout: 20, nonRetryable: [CardDeclined] },
    failure: () => new CardDeclined('card declined'),
  },
  {
    name: 'max retry time: retries stop after 300 ms whatever `retries` says',
    retry: { retries: 100, minTimeout: 80, factor: 1, randomize: false, maxRetryTime: 300 },
    failure: (n) => new ProviderTimeout(`timeout #${n}`),
  },
  {
    name: 'NonRetryableError thrown by the handler',
    retry: { retries: 5, minTimeout: 20 },
    failure: () => new NonRetryableError('amount must be positive'),
  },
  {
    name: 'handler time limit: handlerTimeoutMs 200, a provider call that hangs on the first attempt',
    retry: { retries: 2, minTimeout: 20, randomize: false },
    handlerTimeoutMs: 200,
    failure: (n) => (n === 1 ? HANG : undefined),
  },
];

/** A provider call that answers only after `ms`, or fails when `signal` aborts. */
function callProvider(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(signal.reason);
    });
  });
}

export interface TimelineEntry {
  readonly attempt: number;
  readonly atMs: number;
  result: string;
}

export interface ScenarioResult {
  readonly name: string;
  readonly timeline: TimelineEntry[];
  readonly outcome: string;
}

/** Runs every scenario against the database at `url` and returns the timelines. */
export async function runScenarios(url: string): Promise<ScenarioResult[]> {
  const db = createPgKysely<unknown>({ connectionString: url, max: 2 });
  try {
    const { error } = await migrateInbox(db);
    if (error) throw error;
    const results: ScenarioResult[] = [];
    for (const [index, scenario] of scenarios.entries()) {
      const consumer = `examples.retry-policies.${index}`;
      await sql`DELETE FROM processed_messages WHERE consumer = ${consumer}`.execute(db);
      const inbox = createInbox({
        db,
        consumer,
        retry: scenario.retry,
        ...(scenario.handlerTimeoutMs === undefined ? {} : { handlerTimeoutMs: scenario.handlerTimeoutMs }),
      });
      const timeline: TimelineEntry[] = [];
      const started = performance.now();
      const outcome = await inbox.process({ id: 'charge-1' }, async (_trx, _message, context: HandlerContext) => {
        const atMs = Math.round(performance.now() - started);
        const failure = scenario.failure(context.attempt);
        if (failure === HANG) {
          const entry = { attempt: context.attempt, atMs, result: 'hangs...' };
          timeline.push(entry);
          try {
            await callProvider(60_000, context.signal);
          } catch (error) {
            entry.result = `hangs, aborted after ${Math.round(performance.now() - started) - atMs} ms: ${(error as Error).name}`;
            throw error;
          }
          return 'charged';
        }
        timeline.push({
          attempt: context.attempt,
          atMs,
          result: failure ? `${failure.name}: ${failure.message}` : 'ok',
        });
        if (failure) throw failure;
        return 'charged';
      });
      const summary =
        outcome.status === 'dead_letter'
          ? `dead_letter (${outcome.reason}) after ${outcome.attempts} attempt(s)`
          : outcome.status === 'processed'
            ? `processed after ${outcome.attempts} attempt(s)`
            : outcome.status;
      results.push({ name: scenario.name, timeline, outcome: summary });
    }
    return results;
  } finally {
    await db.destroy();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  for (const result of await runScenarios(url)) {
    console.log(`\n${result.name}`);
    for (const entry of result.timeline) {
      console.log(`  attempt ${entry.attempt}  +${String(entry.atMs).padStart(4)} ms  ${entry.result}`);
    }
    console.log(`  => ${result.outcome}`);
  }
}
