// The Fastify plugin's options take the application's own Kysely instance, typed with its
// schema, as createIdempotency and the Express middleware do: no cast to Kysely<unknown>.
// The type check (`pnpm run check`, tsconfig.test.json) is the test; the run checks that
// registration takes the store as given.

import { createPgKysely } from '@inboxkit/core/pg';
import { createIdempotency } from '@inboxkit/http';
import { fastifyIdempotency } from '@inboxkit/http/fastify';
import Fastify, { type FastifyRequest } from 'fastify';
import type { Generated } from 'kysely';
import { describe, expect, it } from 'vitest';

interface AppDB {
  charges: { id: Generated<string>; amount_cents: number };
}

describe('fastifyIdempotency with a Kysely instance typed by the application', () => {
  it('takes the store options with the typed db', async () => {
    const db = createPgKysely<AppDB>({ connectionString: 'postgres://postgres@127.0.0.1:1/none', max: 1 });
    const app = Fastify();
    await app.register(fastifyIdempotency, { db, consumer: 'payments-api', principal: false });
    await app.ready();
    expect(app.idempotency).toBeDefined();
    await app.close();
    await db.destroy();
  });

  it('takes a store made by createIdempotency with the typed db', async () => {
    const db = createPgKysely<AppDB>({ connectionString: 'postgres://postgres@127.0.0.1:1/none', max: 1 });
    const idempotency = createIdempotency<AppDB, FastifyRequest>({ db, consumer: 'payments-api', principal: false });
    const app = Fastify();
    await app.register(fastifyIdempotency, { idempotency });
    await app.ready();
    expect(app.idempotency).toBe(idempotency);
    await app.close();
    await db.destroy();
  });
});
