// An experiment for issue "shape and speed": can a duplicate cost the hand-written twin's
// three statements without node-postgres internals? The claim and the read of the stored
// row as one plpgsql function (its statements' plans are cached per session, so it pays no
// planning per call the way a CTE does), beside the twin and the inbox's own SQL, all by
// hand with pg on one connection, on the 30% redelivery mix.
//
//   node bench/claim-function.ts [--messages 3000] [--rounds 3] [--concurrency 1]
//
// With --concurrency c, c deliveries run at a time on a pool of c connections. The function
// is measured in two shapes: returning a set (`RETURN QUERY`, as first measured) and
// returning one row through OUT parameters (`SELECT ... INTO`, no set to materialize).
// Prints msg/s per case and the ratio to the twin (1.0 or more: as fast). Not a test.
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { createPgPool } from '@inboxkit/core/pg';
import { benchDatabase, median } from './support.ts';

const { values: args } = parseArgs({
  options: {
    messages: { type: 'string', default: '3000' },
    rounds: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '1' },
  },
});
const N = Number(args.messages);
const ROUNDS = Number(args.rounds);
const C = Number(args.concurrency);

const url = await benchDatabase('inboxkit_bench_claim_fn');
const pool = createPgPool({ connectionString: url, max: C });
await pool.query(`
DROP TABLE IF EXISTS fn_keys, fn_rows;
CREATE TABLE fn_keys (consumer text NOT NULL, message_id text NOT NULL, processed_at timestamptz NOT NULL DEFAULT now(),
  payload_hash bytea, result jsonb, status text NOT NULL DEFAULT 'processed', PRIMARY KEY (consumer, message_id));
CREATE TABLE fn_rows (id text PRIMARY KEY, amount integer NOT NULL);
CREATE OR REPLACE FUNCTION fn_claim(p_consumer text, p_id text, p_hash bytea)
RETURNS TABLE (claimed boolean, status text, payload_hash bytea, result jsonb, processed_at timestamptz)
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('lock_timeout', '5000ms', true);
  INSERT INTO fn_keys (consumer, message_id, payload_hash) VALUES (p_consumer, p_id, p_hash)
  ON CONFLICT (consumer, message_id) DO NOTHING;
  IF FOUND THEN
    RETURN QUERY SELECT true, NULL::text, NULL::bytea, NULL::jsonb, NULL::timestamptz;
  ELSE
    -- A new statement: under READ COMMITTED it sees a row committed by the transaction the
    -- insert waited for.
    RETURN QUERY SELECT false, k.status, k.payload_hash, k.result, k.processed_at
      FROM fn_keys k WHERE k.consumer = p_consumer AND k.message_id = p_id;
  END IF;
END $$;
CREATE OR REPLACE FUNCTION fn_claim_row(p_consumer text, p_id text, p_hash bytea,
  OUT claimed boolean, OUT status text, OUT payload_hash bytea, OUT result jsonb, OUT processed_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  PERFORM set_config('lock_timeout', '5000ms', true);
  INSERT INTO fn_keys (consumer, message_id, payload_hash) VALUES (p_consumer, p_id, p_hash)
  ON CONFLICT (consumer, message_id) DO NOTHING;
  claimed := FOUND;
  IF NOT claimed THEN
    SELECT k.status, k.payload_hash, k.result, k.processed_at INTO status, payload_hash, result, processed_at
      FROM fn_keys k WHERE k.consumer = p_consumer AND k.message_id = p_id;
  END IF;
END $$;`);

const CLAIM = `INSERT INTO fn_keys (consumer, message_id, payload_hash)
SELECT $1::text, $2::text, $3::bytea WHERE set_config('lock_timeout', '5000ms', true) IS NOT NULL
ON CONFLICT (consumer, message_id) DO NOTHING RETURNING 1`;
const READ =
  'SELECT status, payload_hash, result, processed_at FROM fn_keys WHERE consumer = $1 AND message_id = ANY($2::text[])';
const FN = 'SELECT * FROM fn_claim($1, $2, $3)';
const FN_ROW = 'SELECT * FROM fn_claim_row($1, $2, $3)';
const BUSINESS = 'INSERT INTO fn_rows (id, amount) VALUES ($1, $2)';

type Case = (id: string) => Promise<void>;
const cases: Record<string, Case> = {
  'twin: BEGIN, dedup insert, business insert when new, COMMIT': async (id) => {
    const c = await pool.connect();
    try {
      await c.query('BEGIN');
      const r = await c.query(CLAIM, ['twin', id, null]);
      if (r.rowCount === 1) await c.query(BUSINESS, [`twin-${id}`, 1]);
      await c.query('COMMIT');
    } finally {
      c.release();
    }
  },
  "the inbox's SQL: the claim, then the read of the stored row for a duplicate": async (id) => {
    const c = await pool.connect();
    try {
      await c.query('BEGIN');
      const r = await c.query(CLAIM, ['inbox', id, null]);
      if (r.rowCount === 1) await c.query(BUSINESS, [`inbox-${id}`, 1]);
      else await c.query(READ, ['inbox', [id]]);
      await c.query('COMMIT');
    } finally {
      c.release();
    }
  },
  'a plpgsql claim that returns the stored row': async (id) => {
    const c = await pool.connect();
    try {
      await c.query('BEGIN');
      const r = await c.query<{ claimed: boolean }>(FN, ['fn', id, null]);
      if (r.rows[0]?.claimed === true) await c.query(BUSINESS, [`fn-${id}`, 1]);
      await c.query('COMMIT');
    } finally {
      c.release();
    }
  },
  'a plpgsql claim that returns the stored row as one row (OUT parameters)': async (id) => {
    const c = await pool.connect();
    try {
      await c.query('BEGIN');
      const r = await c.query<{ claimed: boolean }>(FN_ROW, ['fnrow', id, null]);
      if (r.rows[0]?.claimed === true) await c.query(BUSINESS, [`fnrow-${id}`, 1]);
      await c.query('COMMIT');
    } finally {
      c.release();
    }
  },
};

/** 30% of the deliveries are redeliveries of an id delivered at least 64 deliveries earlier. */
function deliveries(round: number): string[] {
  const out: string[] = [];
  let seed = 7 + round;
  for (let i = 0; i < N; i++) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    if (out.length > 64 && seed % 10 < 3) out.push(out[seed % (out.length - 64)] as string);
    else out.push(`r${round}-m${i}`);
  }
  return out;
}

const rates = new Map<string, number[]>();
const ratios = new Map<string, number[]>();
for (let round = 0; round < ROUNDS; round++) {
  const ids = deliveries(round);
  const names = Object.keys(cases);
  const order = names.map((_, i) => names[(i + round) % names.length] as string);
  const thisRound = new Map<string, number>();
  for (const name of order) {
    const work = cases[name] as Case;
    const started = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: C }, async () => {
        for (let i = next++; i < ids.length; i = next++) await work(ids[i] as string);
      }),
    );
    thisRound.set(name, (ids.length / (performance.now() - started)) * 1000);
  }
  const twin = thisRound.get(names[0] as string) as number;
  for (const [name, rate] of thisRound) {
    rates.set(name, [...(rates.get(name) ?? []), rate]);
    ratios.set(name, [...(ratios.get(name) ?? []), rate / twin]);
  }
}
console.log(
  `${N} deliveries (30% redeliveries), ${ROUNDS} interleaved rounds, c=${C} on ${C} connection(s); load average ${loadavg()
    .map((l) => l.toFixed(1))
    .join(' ')}`,
);
for (const name of Object.keys(cases)) {
  const rate = Math.round(median(rates.get(name) ?? []));
  const ratio = median(ratios.get(name) ?? []).toFixed(2);
  console.log(`${String(rate).padStart(6)} msg/s  ${ratio}x  ${name}`);
}
await pool.end();
