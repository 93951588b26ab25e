// A consumer in a process of its own, for the fault tests that kill it. Run with
// `node consumer-child.ts` (Node strips the types); it imports the built packages.
//
// Environment:
//   AMQP_URL, DATABASE_URL, QUEUE, CONSUMER   where to consume and which inbox keys
//   PREFETCH (10), CRASH_LOOP_LIMIT (3)       subscription and inbox options
//   CONNECTION_NAME                           the broker connection's name
//   HANDLER_DELAY_MS (0)                      a pause in each handler, to have deliveries in flight
//   CRASH_ON                                  the handler SIGKILLs its own process for this id
//   KILL_AFTER_COMMIT_OF                      SIGKILL right after this id committed, before its ack
// Prints `ready` once consuming, `committed <id>` / `crashing on <id>` before a kill,
// `duplicate <id>` for each duplicate. SIGTERM closes the subscription gracefully.
import { writeSync } from 'node:fs';
import { createInbox } from '@inboxkit/core';
import { createPgKysely } from '@inboxkit/core/pg';
import { subscribe } from '@inboxkit/rabbitmq';

interface Ledger {
  ledger: { charge_id: string; amount_cents: number };
}

function env(name: string, fallback?: string): string {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`consumer-child: ${name} is not set`);
  return value;
}

function say(line: string): void {
  writeSync(1, `${line}\n`);
}

const crashOn = process.env.CRASH_ON;
const killAfterCommitOf = process.env.KILL_AFTER_COMMIT_OF;
const delayMs = Number(env('HANDLER_DELAY_MS', '0'));

const db = createPgKysely<Ledger>({ connectionString: env('DATABASE_URL'), max: 10 });
const inbox = createInbox({
  db,
  consumer: env('CONSUMER'),
  crashLoopLimit: Number(env('CRASH_LOOP_LIMIT', '3')),
  retry: { retries: 2, minTimeout: 5, maxTimeout: 20 },
});
inbox.on('duplicate', ({ messageId }) => say(`duplicate ${messageId}`));
if (killAfterCommitOf !== undefined) {
  // 'processed' is emitted after the commit and before the adapter acks.
  inbox.on('processed', ({ messageId }) => {
    if (messageId !== killAfterCommitOf) return;
    say(`committed ${messageId}`);
    process.kill(process.pid, 'SIGKILL');
  });
}

const subscription = subscribe<Ledger, { amountCents: number }, void>({
  inbox,
  url: env('AMQP_URL'),
  queue: env('QUEUE'),
  prefetch: Number(env('PREFETCH', '10')),
  decode: 'json',
  assertTopology: true,
  connectionName: env('CONNECTION_NAME', `consumer-child ${process.pid}`),
  requeueBackoff: { minDelayMs: 20, maxDelayMs: 500 },
  reconnect: { minDelayMs: 50, maxDelayMs: 1000 },
  handler: async (trx, message) => {
    if (message.id === crashOn) {
      say(`crashing on ${message.id}`);
      process.kill(process.pid, 'SIGKILL');
      await new Promise(() => {});
    }
    if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
    await trx.insertInto('ledger').values({ charge_id: message.id, amount_cents: message.body.amountCents }).execute();
  },
});

process.once('SIGTERM', () => {
  void (async () => {
    await subscription.close();
    await db.destroy();
    say('closed');
    process.exit(0);
  })();
});

await subscription.ready();
say('ready');
