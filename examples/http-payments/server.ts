// A payments API whose POST /payments is safe to retry: the Idempotency-Key header on the
// inboxkit Postgres inbox, with Fastify.
//
//   node examples/http-payments/server.ts            (PORT, DATABASE_URL from the environment)
//
//   curl -i -X POST localhost:3000/payments -H 'content-type: application/json' \
//     -H 'idempotency-key: 5b0c8f3e-6f7e-4d7a-9a53-0d2f4c1e9b10' \
//     -d '{"accountId":"acc_1","amountCents":1250,"currency":"EUR"}'
//
// Send the same request again: the same 201 comes back with `Idempotent-Replayed: true`,
// and there is still one payment. Change the body under the same key: 422.
//
// POST /transfers needs no header: its body carries the client's own transfer id, and the
// key is derived from the request (keyWhenMissing: 'derive'), so a retry is replayed too.
//
//   curl -i -X POST localhost:3000/transfers -H 'content-type: application/json' \
//     -d '{"transferId":"tr_7f3a","fromAccountId":"acc_1","toAccountId":"acc_2","amountCents":500}'
import { migrateInbox } from '@inboxkit/core';
import { createPgKysely } from '@inboxkit/core/pg';
import { fastifyIdempotency, transactionOf } from '@inboxkit/http/fastify';
import Fastify from 'fastify';
import { type Generated, type Kysely, sql } from 'kysely';

interface DB {
  payments: {
    id: Generated<string>;
    account_id: string;
    amount_cents: number;
    currency: string;
    created_at: Generated<Date>;
  };
  transfers: {
    id: Generated<string>;
    transfer_id: string;
    from_account_id: string;
    to_account_id: string;
    amount_cents: number;
  };
}

interface TransferRequest {
  transferId: string;
  fromAccountId: string;
  toAccountId: string;
  amountCents: number;
}

interface PaymentRequest {
  accountId: string;
  amountCents: number;
  currency: string;
}

const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const port = Number(process.env.PORT ?? 3000);

const db = createPgKysely<DB>({ connectionString: url, max: 10 });
const { error } = await migrateInbox(db as Kysely<unknown>);
if (error) throw error;
await sql`CREATE TABLE IF NOT EXISTS payments (
  id           bigserial   PRIMARY KEY,
  account_id   text        NOT NULL,
  amount_cents integer     NOT NULL CHECK (amount_cents > 0),
  currency     text        NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now()
)`.execute(db);
await sql`CREATE TABLE IF NOT EXISTS transfers (
  id              bigserial PRIMARY KEY,
  transfer_id     text      NOT NULL,
  from_account_id text      NOT NULL,
  to_account_id   text      NOT NULL,
  amount_cents    integer   NOT NULL CHECK (amount_cents > 0)
)`.execute(db);

const app = Fastify({ logger: { level: process.env.LOG_LEVEL ?? 'warn' } });

// Keys live in processed_messages under consumer 'payments-api' for 24 hours; a request
// with the key of one still running waits up to 5 s for it (without holding a pool
// connection), then gets 409 + Retry-After.
await app.register(fastifyIdempotency, {
  db: db as Kysely<unknown>,
  consumer: 'payments-api',
  // Required: scope keys per API client, so two clients can never read each other's
  // responses. Here a header stands in for your authentication.
  principal: (request) => {
    const client = request.headers['x-client-id'];
    return typeof client === 'string' ? client : undefined;
  },
  // A request may hold its transaction for 10 s at most: then it is rolled back and
  // answered 503 with Retry-After (idempotencyOf(request).signal aborts for outside calls).
  handlerTimeoutMs: 10_000,
});

const paymentSchema = {
  type: 'object',
  required: ['accountId', 'amountCents', 'currency'],
  properties: {
    accountId: { type: 'string', minLength: 1 },
    amountCents: { type: 'integer', minimum: 1 },
    currency: { type: 'string', pattern: '^[A-Z]{3}$' },
  },
} as const;

app.post<{ Body: PaymentRequest }>(
  '/payments',
  { config: { idempotency: true }, schema: { body: paymentSchema } },
  async (request, reply) => {
    // The transaction the key is written in: the payment and the key commit together.
    const trx = transactionOf<DB>(request);
    const { accountId, amountCents, currency } = request.body;
    const payment = await trx
      .insertInto('payments')
      .values({ account_id: accountId, amount_cents: amountCents, currency })
      .returning(['id', 'account_id', 'amount_cents', 'currency', 'created_at'])
      .executeTakeFirstOrThrow();
    return reply.code(201).header('location', `/payments/${payment.id}`).send(payment);
  },
);

// A client that sends no Idempotency-Key here gets a key derived from the request: its
// method, path and exact body bytes, scoped by principal and route like a sent key. The
// trade-off: two identical requests within the 24 h window are one transfer. That is what
// this route wants, as the body carries the client's own `transferId`, so two transfers
// meant to be separate always differ. A key that is sent is used as on /payments.
app.post<{ Body: TransferRequest }>(
  '/transfers',
  {
    config: { idempotency: { keyWhenMissing: 'derive' } },
    schema: {
      body: {
        type: 'object',
        required: ['transferId', 'fromAccountId', 'toAccountId', 'amountCents'],
        properties: {
          transferId: { type: 'string', minLength: 1 },
          fromAccountId: { type: 'string', minLength: 1 },
          toAccountId: { type: 'string', minLength: 1 },
          amountCents: { type: 'integer', minimum: 1 },
        },
      },
    },
  },
  async (request, reply) => {
    const { transferId, fromAccountId, toAccountId, amountCents } = request.body;
    const transfer = await transactionOf<DB>(request)
      .insertInto('transfers')
      .values({
        transfer_id: transferId,
        from_account_id: fromAccountId,
        to_account_id: toAccountId,
        amount_cents: amountCents,
      })
      .returning(['id', 'transfer_id', 'amount_cents'])
      .executeTakeFirstOrThrow();
    return reply.code(201).send(transfer);
  },
);

app.get<{ Params: { id: string } }>('/payments/:id', async (request, reply) => {
  const payment = await db.selectFrom('payments').selectAll().where('id', '=', request.params.id).executeTakeFirst();
  return payment ?? reply.code(404).send({ error: 'not found' });
});

// Forget keys older than the window, every 10 minutes (one process at a time does it).
const purge = setInterval(() => {
  app.idempotency.purge().catch((err: unknown) => app.log.warn({ err }, 'purge failed'));
}, 10 * 60_000);
purge.unref();

const address = await app.listen({ port, host: '127.0.0.1' });
console.log(`http-payments listening on ${address}`);

// The library installs no signal handlers; the program does.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    clearInterval(purge);
    app
      .close()
      .then(() => db.destroy())
      .then(
        () => process.exit(0),
        () => process.exit(1),
      );
  });
}
