// docs/http.md, a key when the client sends none: a Fastify app, an Express app, a Fetch
// handler, each with its plugin or store.
import type { ExpressRequestLike } from '@inboxkit/http/express';
import type { Express, RequestHandler } from 'express';
import type { FastifyInstance, RouteHandlerMethod } from 'fastify';
import type { Kysely } from 'kysely';

interface DB {
  transfers: { id: string; amount_cents: number };
}
declare const db: Kysely<DB>;
declare const fastify: FastifyInstance;
declare const app: Express;
declare const idempotency: import('@inboxkit/http').Idempotency<DB, ExpressRequestLike>;
declare const createTransfer: RouteHandlerMethod;
declare const createTransferExpress: RequestHandler;
declare const createTransferFetch: import('@inboxkit/http').FetchIdempotentHandler<DB>;
declare function clientIdOf(request: object): string | undefined;
