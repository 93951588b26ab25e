// An outbox relay to RabbitMQ in a process of its own, for the crash test that SIGKILLs it.
// Run with `node relay-child.ts` (Node strips the types); it imports the built packages.
//
// Environment: AMQP_URL, DATABASE_URL, OUTBOX_TABLE, and for the crash test
// INBOXKIT_TEST_RELAY_HALT_AFTER_CONFIRM=1 (the relay stops between the broker's confirm
// and its commit and prints `inboxkit-relay-halted-after-confirm`).
import { createOutbox } from '@inboxkit/core';
import { createPgKysely } from '@inboxkit/core/pg';
import { createRabbitRelay } from '@inboxkit/rabbitmq';

function env(name: string): string {
  const value = process.env[name];
  if (value === undefined) throw new Error(`relay-child: ${name} is not set`);
  return value;
}

const db = createPgKysely({ connectionString: env('DATABASE_URL'), max: 2 });
const outbox = createOutbox({ db, table: env('OUTBOX_TABLE') });
const relay = createRabbitRelay({ outbox, url: env('AMQP_URL'), pollIntervalMs: 50 });
process.stdout.write('ready\n');
process.once('SIGTERM', () => {
  void relay.close().then(() => db.destroy());
});
