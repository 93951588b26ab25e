// The adapters' types, as a user writes a route: a typed `Kysely<DB>` goes in without a cast,
// and the route keeps its own types (an Express handler after the middleware still sees
// Express's `req.body`). Checked by `tsc -p tsconfig.test.json`; the runs below only make
// sure that each form also builds at run time.
import { createIdempotency, idempotent } from '@inboxkit/http';
import {
  type ExpressRequestLike,
  idempotent as expressIdempotent,
  keepRawBody,
  transactionOf,
} from '@inboxkit/http/express';
import { fastifyIdempotency } from '@inboxkit/http/fastify';
import express from 'express';
import Fastify from 'fastify';
import type { Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../../test/support/postgres.ts';

interface DB {
  charges: { id: string; amount_cents: number };
}

let t: TestDatabase;
let db: Kysely<DB>;
beforeAll(async () => {
  t = await createTestDatabase('http_typing');
  db = t.db as unknown as Kysely<DB>;
});
afterAll(async () => {
  await t?.dispose();
});

describe('a typed Kysely<DB>, without a cast', () => {
  it('is taken by the Fetch handler, with and without the DB type given', () => {
    const given = idempotent<DB>(
      async (trx) => {
        await trx.insertInto('charges').values({ id: 'c-1', amount_cents: 1 }).execute();
        return Response.json({});
      },
      { db, route: '/charges', principal: false },
    );
    const inferred = idempotent(
      async (trx) => {
        await trx.insertInto('charges').values({ id: 'c-1', amount_cents: 1 }).execute();
        return Response.json({});
      },
      { db, principal: false },
    );
    const idempotency = createIdempotency({ db, principal: false });
    const fromStore = idempotent(async () => new Response(null, { status: 204 }), { idempotency, route: '/x' });
    expect([given, inferred, fromStore].map((handler) => typeof handler)).toEqual(['function', 'function', 'function']);
  });

  it('is taken by the Fastify plugin', async () => {
    const app = Fastify();
    await app.register(fastifyIdempotency, { db, principal: false });
    await app.close();
  });

  it('is taken by the Express middleware, whose route handlers keep Express types', () => {
    const app = express();
    app.post('/charges', express.json(), expressIdempotent({ db, principal: false }), async (req, res) => {
      const trx = transactionOf<DB>(req);
      // Express types `req.body` as `any` by default; the middleware must not narrow it.
      await trx.insertInto('charges').values({ id: 'c-1', amount_cents: req.body.amountCents }).execute();
      res.status(201).json({ id: 'c-1' });
    });
    const idempotency = createIdempotency<DB, ExpressRequestLike>({
      db,
      principal: (req) => req.headers['x-client-id']?.toString(),
    });
    app.post(
      '/transfers',
      express.json({ verify: keepRawBody }),
      expressIdempotent(idempotency, { keyWhenMissing: 'derive' }),
      (req, res) => {
        res.status(201).json({ amountCents: req.body.amountCents });
      },
    );
    expect(typeof app).toBe('function');
  });
});
