// docs/http.md: the database and the authentication the snippets use.
import type { Kysely } from 'kysely';

interface DB {
  charges: { id: string; amount_cents: number };
  refunds: { id: string; charge_id: string };
  transfers: { id: string; amount_cents: number };
}
declare const db: Kysely<DB>;
/** Your authentication: the API key's owner, a verified token's subject. */
declare function clientIdOf(request: object): string | undefined;
