// The whole scenario in one command: a fresh topic, the consumer (consumer.ts) as a process of
// its own, charge requests with re-sends (producer.ts), a SIGTERM, then the checks.
//
//   node examples/kafka-payments/main.ts [charges]
//
// Reads DATABASE_URL and KAFKA_BROKERS. The topic and group get a random suffix and are
// deleted at the end; the rows stay in kafka_payments_charges and kafka_payments_ledger.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { createPgKysely } from '@inboxkit/core/pg';
import { Kafka, logLevel } from 'kafkajs';
import { sql } from 'kysely';
import { type ConsumerEvent, createTables, createTopics, describe, type PaymentsDB } from './consumer.ts';
import { chargeRequests, sendChargeRequests } from './producer.ts';

export interface RunOptions {
  readonly databaseUrl: string;
  readonly brokers: string[];
  /** Distinct charge requests to send (a quarter of them twice). Default 24. */
  readonly charges?: number;
  /** How long to wait for the consumer, in milliseconds. Default 30000. */
  readonly timeoutMs?: number;
  /** Called with each line of the account as it happens. */
  readonly onLine?: (line: string) => void;
}

export interface PartitionOffsets {
  readonly partition: number;
  /** The group's committed offset (the next record it would read). */
  readonly committed: string;
  /** The partition's end (high watermark). */
  readonly end: string;
  /** The metadata committed with the offset (`inboxkit:clean` after a graceful shutdown). */
  readonly metadata: string | null;
}

export interface PaymentsRun {
  readonly topic: string;
  readonly groupId: string;
  /** Distinct charge requests sent. */
  readonly requests: number;
  /** Records sent, re-sends included. */
  readonly records: number;
  readonly resent: string[];
  /** Outcomes the consumer reported, by status (`processed`, `duplicate`...). */
  readonly settled: Record<string, number>;
  /** Bulk handler calls that committed, and that failed and were rolled back. */
  readonly batches: { readonly committed: number; readonly rolledBack: number };
  /** Rows of this run in kafka_payments_charges. */
  readonly charges: number;
  readonly distinctCharges: number;
  /** Rows of this run in kafka_payments_ledger. */
  readonly ledgerEntries: number;
  /** Charges without exactly two ledger entries summing to zero (should be none). */
  readonly unbalancedCharges: number;
  readonly chargedCents: number;
  readonly expectedCents: number;
  /** How the consumer process ended after SIGTERM. */
  readonly shutdown: { readonly exitCode: number | null; readonly stopped: boolean; readonly ms: number };
  readonly offsets: PartitionOffsets[];
  /** The account, one line per event, with the time since the start. */
  readonly log: string[];
}

const consumerFile = fileURLToPath(new URL('./consumer.ts', import.meta.url));

/** One line for a run of `settled` events, or of successful bulk handler calls. */
function describeGroup(events: readonly ConsumerEvent[]): string {
  const settled = events.flatMap((e) => (e.kind === 'settled' ? [e] : []));
  if (settled.length === 0) {
    const charges = events.reduce((n, e) => n + (e.kind === 'batch' ? e.charges.length : 0), 0);
    return events.length === 1
      ? describe(events[0]!)
      : `bulk handler wrote ${charges} charge(s) and ${2 * charges} ledger entries in ${events.length} calls`;
  }
  const processed = settled.filter((e) => e.status === 'processed').length;
  const duplicates = settled.filter((e) => e.status === 'duplicate').map((e) => e.chargeId);
  const others = settled.length - processed - duplicates.length;
  const partitions = [...new Set(settled.map((e) => `p${e.partition}`))].sort().join(', ');
  return [
    `${settled.length} records of ${partitions} settled: ${processed} processed`,
    duplicates.length > 0 ? `, ${duplicates.length} duplicates skipped (${duplicates.join(' ')})` : '',
    others > 0 ? `, ${others} other` : '',
  ].join('');
}

/** Runs the scenario against the given Postgres and Kafka and returns what happened. */
export async function run(options: RunOptions): Promise<PaymentsRun> {
  const { databaseUrl, brokers, charges: count = 24, timeoutMs = 30_000 } = options;
  const suffix = randomBytes(4).toString('hex');
  const topic = `examples.kafka-payments.${suffix}`;
  const groupId = `examples-kafka-payments-${suffix}`;
  const started = performance.now();
  const log: string[] = [];
  const line = (text: string) => {
    const entry = `+${String(Math.round(performance.now() - started)).padStart(5)} ms  ${text}`;
    log.push(entry);
    options.onLine?.(entry);
  };

  const db = createPgKysely<PaymentsDB>({ connectionString: databaseUrl, max: 2 });
  const kafka = new Kafka({ clientId: 'kafka-payments-main', brokers, logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  const producer = kafka.producer();
  let child: ChildProcess | undefined;
  try {
    await createTables(db);
    await Promise.all([admin.connect(), producer.connect()]);
    await createTopics(admin, topic);
    line(`created topic ${topic} (2 partitions) and ${topic}.dlq`);

    // The consumer: a process of its own, so that it can be stopped with a real SIGTERM.
    const events: ConsumerEvent[] = [];
    const waiters = new Set<() => void>();
    child = spawn(process.execPath, ['--disable-warning=TimeoutNegativeWarning', consumerFile], {
      env: {
        ...process.env,
        DATABASE_URL: databaseUrl,
        KAFKA_BROKERS: brokers.join(','),
        KAFKA_TOPIC: topic,
        KAFKA_GROUP_ID: groupId,
        FAIL_FIRST_BATCH: '1',
        VERBOSE: '0',
      },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    let output = '';
    child.stdout?.on('data', (chunk) => void (output += chunk));
    child.stderr?.on('data', (chunk) => void (output += chunk));
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    // Records settle one by one and a failed batch runs again a record at a time: the
    // account shows such runs of events as one line.
    let group: ConsumerEvent[] = [];
    let flushTimer: NodeJS.Timeout | undefined;
    const groupOf = (event: ConsumerEvent) =>
      event.kind === 'settled' ? 'settled' : event.kind === 'batch' && event.ok ? 'written' : undefined;
    const flush = () => {
      clearTimeout(flushTimer);
      if (group.length > 0) line(`consumer: ${describeGroup(group)}`);
      group = [];
    };
    child.on('message', (event: ConsumerEvent) => {
      events.push(event);
      const kind = groupOf(event);
      if (kind === undefined || (group[0] !== undefined && groupOf(group[0]) !== kind)) flush();
      if (kind === undefined) {
        line(`consumer: ${describe(event)}`);
      } else {
        group.push(event);
        clearTimeout(flushTimer);
        flushTimer = setTimeout(flush, 50);
      }
      for (const wake of waiters) wake();
    });
    const waitFor = async (what: string, done: () => boolean) => {
      const deadline = started + timeoutMs;
      while (!done()) {
        const remaining = deadline - performance.now();
        if (remaining <= 0 || child?.exitCode !== null) {
          throw new Error(`kafka-payments: gave up waiting for ${what}; consumer output:\n${output}`);
        }
        await new Promise<void>((resolve) => {
          const wake = () => {
            waiters.delete(wake);
            clearTimeout(timer);
            resolve();
          };
          const timer = setTimeout(wake, Math.min(remaining, 200));
          waiters.add(wake);
        });
      }
    };
    await waitFor('the consumer to start', () => events.some((e) => e.kind === 'ready'));

    const requests = chargeRequests(count);
    const sent = await sendChargeRequests(producer, topic, requests);
    line(
      `producer: sent ${sent.records} records: ${requests.length} charge requests, ${sent.resent.length} sent twice`,
    );
    const settledCount = () => events.filter((e) => e.kind === 'settled').length;
    await waitFor('every record to be settled', () => settledCount() >= sent.records);

    flush();
    const stopAt = performance.now();
    line('sending SIGTERM to the consumer');
    child.kill('SIGTERM');
    let exitTimer: NodeJS.Timeout | undefined;
    const [exitCode] = await Promise.race([
      exited,
      new Promise<never>((_, reject) => {
        exitTimer = setTimeout(
          () => reject(new Error(`kafka-payments: the consumer did not exit; output:\n${output}`)),
          15_000,
        );
      }),
    ]).finally(() => clearTimeout(exitTimer));
    const shutdownMs = Math.round(performance.now() - stopAt);
    line(`consumer exited with code ${exitCode} after ${shutdownMs} ms`);

    // What the group committed against where each partition ends.
    const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
    const ends = await admin.fetchTopicOffsets(topic);
    const offsets = ends
      .map((end) => {
        const c = committed?.partitions.find((p) => p.partition === end.partition);
        return { partition: end.partition, committed: c?.offset ?? '-1', end: end.high, metadata: c?.metadata ?? null };
      })
      .sort((a, b) => a.partition - b.partition);

    // Checked by query, not assumed.
    const prefix = `${requests[0]?.chargeId.slice(0, -3)}%`;
    const { rows } = await sql<{
      charges: number;
      distinct_charges: number;
      charged: number;
      ledger: number;
      unbalanced: number;
    }>`
      SELECT
        (SELECT count(*)::int FROM kafka_payments_charges WHERE charge_id LIKE ${prefix}) AS charges,
        (SELECT count(DISTINCT charge_id)::int FROM kafka_payments_charges WHERE charge_id LIKE ${prefix}) AS distinct_charges,
        (SELECT coalesce(sum(amount_cents), 0)::int FROM kafka_payments_charges WHERE charge_id LIKE ${prefix}) AS charged,
        (SELECT count(*)::int FROM kafka_payments_ledger WHERE charge_id LIKE ${prefix}) AS ledger,
        (SELECT count(*)::int FROM kafka_payments_charges c WHERE c.charge_id LIKE ${prefix} AND (
          SELECT count(*) <> 2 OR sum(l.amount_cents) <> 0 FROM kafka_payments_ledger l WHERE l.charge_id = c.charge_id
        )) AS unbalanced`.execute(db);
    const counts = rows[0]!;

    const settled: Record<string, number> = {};
    for (const e of events) if (e.kind === 'settled') settled[e.status] = (settled[e.status] ?? 0) + 1;
    const batches = events.filter((e) => e.kind === 'batch');
    return {
      topic,
      groupId,
      requests: requests.length,
      records: sent.records,
      resent: sent.resent,
      settled,
      batches: { committed: batches.filter((b) => b.ok).length, rolledBack: batches.filter((b) => !b.ok).length },
      charges: counts.charges,
      distinctCharges: counts.distinct_charges,
      ledgerEntries: counts.ledger,
      unbalancedCharges: counts.unbalanced,
      chargedCents: counts.charged,
      expectedCents: requests.reduce((sum, r) => sum + r.amountCents, 0),
      shutdown: { exitCode, stopped: events.some((e) => e.kind === 'stopped'), ms: shutdownMs },
      offsets,
      log,
    };
  } finally {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await admin.deleteGroups([groupId]).catch(() => {});
    await admin.deleteTopics({ topics: [topic, `${topic}.dlq`] }).catch(() => {});
    await Promise.allSettled([admin.disconnect(), producer.disconnect()]);
    await db.destroy();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const result = await run({
    databaseUrl: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres',
    brokers: (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(','),
    charges: Number(process.argv[2] ?? 24),
    onLine: (text) => console.log(text),
  });
  const ok =
    result.charges === result.requests &&
    result.distinctCharges === result.requests &&
    result.ledgerEntries === 2 * result.requests &&
    result.unbalancedCharges === 0 &&
    result.chargedCents === result.expectedCents;
  console.log(`
records sent            ${result.records} (${result.requests} requests, ${result.resent.length} re-sent)
outcomes                ${Object.entries(result.settled)
    .map(([status, n]) => `${n} ${status}`)
    .join(', ')}
bulk handler calls      ${result.batches.committed} committed, ${result.batches.rolledBack} rolled back
charges written         ${result.charges} (${result.distinctCharges} distinct ids)
ledger entries          ${result.ledgerEntries} (${result.unbalancedCharges} charges without a balanced pair)
total charged           ${result.chargedCents} cents, expected ${result.expectedCents}
shutdown                exit code ${result.shutdown.exitCode} in ${result.shutdown.ms} ms
committed offsets       ${result.offsets.map((o) => `p${o.partition} ${o.committed}/${o.end} ${o.metadata}`).join(', ')}
${ok ? 'OK: every charge was written once, with its two ledger entries' : 'FAILED: see the counts above'}`);
  process.exitCode = ok ? 0 : 1;
}
