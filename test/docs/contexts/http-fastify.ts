// docs/http.md, Fastify: the app of the root README's HTTP quick start, plugin registered.
import type { FastifyInstance } from 'fastify';
import type { Kysely } from 'kysely';

interface DB {
  charges: { id: string; amount_cents: number };
  refunds: { id: string; charge_id: string };
}
declare const db: Kysely<DB>;
declare const app: FastifyInstance;
declare function clientIdOf(request: object): string | undefined;
