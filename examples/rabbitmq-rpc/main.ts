// Request/reply over RabbitMQ where a retried request gets the original reply.
//
//   node examples/rabbitmq-rpc/main.ts
//
// Reads DATABASE_URL and AMQP_URL. A server reserves stock for each request (a row in
// `rabbitmq_rpc_reservations`, a reply with the reservation's id). A client asks, gives up
// waiting after 200 ms while the server is still working, and asks again with the same
// message id: the server answers the retry with the reply stored with the first request, and
// the handler runs once. The queue (`examples.rpc.reserve.<random>`) is deleted at the end.
import { randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { createInbox, migrateInbox } from '@inboxkit/core';
import { createPgKysely } from '@inboxkit/core/pg';
import { REPLY_HEADERS, subscribe } from '@inboxkit/rabbitmq';
import amqplib from 'amqplib';
import { type Kysely, sql } from 'kysely';

interface RpcDB {
  rabbitmq_rpc_reservations: { reservation_id: string; request_id: string; sku: string; quantity: number };
}

export interface ReserveStock {
  readonly sku: string;
  readonly quantity: number;
}

export interface Reservation {
  readonly reservationId: string;
  readonly sku: string;
  readonly quantity: number;
  readonly reservedAt: string;
}

/** A reply as the client received it. */
export interface Reply {
  readonly correlationId: string;
  readonly atMs: number;
  readonly body: Reservation;
  /** The raw content, as the server sent it. */
  readonly content: string;
  /** `x-inboxkit-duplicate`: true when the server answered from the stored result. */
  readonly duplicate: boolean;
  /** `x-inboxkit-message-id`: the request's message id. */
  readonly messageId: string;
}

/** One try of the client: sent with a correlation id of its own, answered or timed out. */
export interface ClientAttempt {
  readonly correlationId: string;
  readonly sentAtMs: number;
  readonly timeoutMs: number;
  readonly reply: Reply | undefined;
}

export interface RpcRun {
  readonly queue: string;
  /** The request's message id, the same on every attempt. */
  readonly requestId: string;
  readonly attempts: ClientAttempt[];
  /** Replies that came for an attempt the client had given up on. */
  readonly lateReplies: Reply[];
  /** Times the server's handler ran. */
  readonly handlerRuns: number;
  /** What the server did, when. */
  readonly serverLog: { readonly atMs: number; readonly text: string }[];
  /** The rows of this request in `rabbitmq_rpc_reservations`. */
  readonly reservations: { reservation_id: string; request_id: string }[];
  /** The result stored with the request's key in the inbox. */
  readonly storedResult: unknown;
}

export interface RunOptions {
  readonly databaseUrl: string;
  readonly amqpUrl: string;
  /** How long the server's handler works. Default 500 ms. */
  readonly handlerMs?: number;
  /** How long the client waits for the first reply. Default 200 ms. */
  readonly firstTimeoutMs?: number;
  /** How long it waits on the retry. Default 5000 ms. */
  readonly retryTimeoutMs?: number;
}

/**
 * A request/reply client: one exclusive reply queue, a correlation id per attempt, the
 * request's message id the same on every attempt (that is what the server deduplicates).
 */
async function openClient(connection: amqplib.ChannelModel, started: number) {
  const channel = await connection.createConfirmChannel();
  const { queue: replyQueue } = await channel.assertQueue('', { exclusive: true, autoDelete: true });
  const waiting = new Map<string, (reply: Reply) => void>();
  const lateReplies: Reply[] = [];
  await channel.consume(
    replyQueue,
    (message) => {
      if (!message) return;
      const headers = message.properties.headers ?? {};
      const reply: Reply = {
        correlationId: String(message.properties.correlationId),
        atMs: Math.round(performance.now() - started),
        body: JSON.parse(message.content.toString()) as Reservation,
        content: message.content.toString(),
        duplicate: headers[REPLY_HEADERS.duplicate] === true,
        messageId: String(headers[REPLY_HEADERS.messageId]),
      };
      const resolve = waiting.get(reply.correlationId);
      if (resolve) resolve(reply);
      else lateReplies.push(reply); // an attempt we gave up on: its answer is the same anyway
    },
    { noAck: true },
  );
  return {
    lateReplies,
    /** Sends the request and waits up to `timeoutMs` for its reply. */
    async call(queue: string, requestId: string, request: ReserveStock, timeoutMs: number): Promise<ClientAttempt> {
      const correlationId = randomUUID();
      const sentAtMs = Math.round(performance.now() - started);
      const replied = new Promise<Reply>((resolve) => waiting.set(correlationId, resolve));
      channel.sendToQueue(queue, Buffer.from(JSON.stringify(request)), {
        messageId: requestId, // the inbox key: the same on a retry
        correlationId, // new on each attempt: tells this attempt's reply from a late one
        replyTo: replyQueue,
        contentType: 'application/json',
        persistent: true,
      });
      await channel.waitForConfirms();
      const timer = new AbortController();
      const timedOut = sleep(timeoutMs, undefined, { signal: timer.signal }).catch(() => undefined);
      const reply = await Promise.race([replied, timedOut]);
      timer.abort();
      waiting.delete(correlationId);
      return { correlationId, sentAtMs, timeoutMs, reply };
    },
  };
}

export async function run(options: RunOptions): Promise<RpcRun> {
  const { databaseUrl, amqpUrl, handlerMs = 500, firstTimeoutMs = 200, retryTimeoutMs = 5000 } = options;
  const suffix = randomBytes(4).toString('hex');
  const queue = `examples.rpc.reserve.${suffix}`;
  const requestId = `reserve-${suffix}-1`;
  const started = performance.now();

  const db = createPgKysely<RpcDB>({ connectionString: databaseUrl, max: 4 });
  const connection = await amqplib.connect(amqpUrl);
  try {
    const { error } = await migrateInbox(db as Kysely<unknown>);
    if (error) throw error;
    await sql`CREATE TABLE IF NOT EXISTS rabbitmq_rpc_reservations (
      reservation_id uuid PRIMARY KEY,
      request_id text NOT NULL,
      sku text NOT NULL,
      quantity integer NOT NULL
    )`.execute(db);

    // The server.
    let handlerRuns = 0;
    const serverLog: RpcRun['serverLog'] = [];
    const log = (text: string) => serverLog.push({ atMs: Math.round(performance.now() - started), text });
    const inbox = createInbox({ db, consumer: 'examples.rabbitmq-rpc' }); // storeResults: true (the default) keeps the reply
    inbox.on('processed', ({ messageId }) => log(`${messageId} committed; the reply goes out`));
    inbox.on('duplicate', ({ messageId }) => log(`${messageId} again: a duplicate, answered with the stored reply`));
    const server = subscribe<RpcDB, ReserveStock, Reservation>({
      inbox,
      url: amqpUrl,
      queue,
      prefetch: 4,
      assertTopology: true,
      handler: async (trx, message) => {
        handlerRuns++;
        log(`handler runs for ${message.id} (correlation id ${String(message.properties.correlationId).slice(0, 8)})`);
        const reservation: Reservation = {
          reservationId: randomUUID(), // new on every run: a reply equal to it proves it was stored
          sku: message.body.sku,
          quantity: message.body.quantity,
          reservedAt: new Date().toISOString(),
        };
        await trx
          .insertInto('rabbitmq_rpc_reservations')
          .values({
            reservation_id: reservation.reservationId,
            request_id: message.id,
            sku: reservation.sku,
            quantity: reservation.quantity,
          })
          .execute();
        await sleep(handlerMs); // the warehouse is slow today
        return reservation; // stored with the key, then sent to replyTo
      },
    });

    try {
      await server.ready();
      const client = await openClient(connection, started);
      const request: ReserveStock = { sku: 'sku-lamp', quantity: 2 };
      const attempts: ClientAttempt[] = [];
      attempts.push(await client.call(queue, requestId, request, firstTimeoutMs));
      if (attempts[0]?.reply === undefined) {
        // Timed out: ask again, same message id. The server is still on the first one.
        attempts.push(await client.call(queue, requestId, request, retryTimeoutMs));
      }
      // The first attempt's reply comes too, late; wait for it so that it can be compared.
      const deadline = performance.now() + retryTimeoutMs;
      while (client.lateReplies.length === 0 && performance.now() < deadline) await sleep(20);

      const reservations = await db
        .selectFrom('rabbitmq_rpc_reservations')
        .select(['reservation_id', 'request_id'])
        .where('request_id', '=', requestId)
        .execute();
      const stored = await inbox.find(requestId);
      return {
        queue,
        requestId,
        attempts,
        lateReplies: client.lateReplies,
        handlerRuns,
        serverLog,
        reservations,
        storedResult: stored?.result,
      };
    } finally {
      await server.close();
    }
  } finally {
    const channel = await connection.createChannel();
    await channel.deleteQueue(queue).catch(() => {});
    await channel.deleteQueue(`${queue}.dlq`).catch(() => {});
    await connection.close().catch(() => {});
    await db.destroy();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const result = await run({
    databaseUrl: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres',
    amqpUrl: process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672',
  });
  const lines: [number, string][] = [];
  const attemptOf = (correlationId: string) => result.attempts.findIndex((a) => a.correlationId === correlationId) + 1;
  for (const [i, attempt] of result.attempts.entries()) {
    lines.push([
      attempt.sentAtMs,
      `client: attempt ${i + 1} sent, message id ${result.requestId}, correlation id ${attempt.correlationId.slice(0, 8)}`,
    ]);
    if (attempt.reply === undefined) {
      lines.push([
        attempt.sentAtMs + attempt.timeoutMs,
        `client: attempt ${i + 1} timed out after ${attempt.timeoutMs} ms`,
      ]);
    }
  }
  for (const r of [...result.attempts.flatMap((a) => (a.reply ? [a.reply] : [])), ...result.lateReplies]) {
    const late = result.lateReplies.includes(r) ? ', given up on' : '';
    lines.push([
      r.atMs,
      `client: reply to attempt ${attemptOf(r.correlationId)}${late} (x-inboxkit-duplicate: ${r.duplicate})\n           ${r.content}`,
    ]);
  }
  for (const entry of result.serverLog) lines.push([entry.atMs, `server: ${entry.text}`]);
  console.log(`request to ${result.queue}\n`);
  for (const [atMs, text] of lines.sort((a, b) => a[0] - b[0])) console.log(`+${String(atMs).padStart(5)} ms  ${text}`);
  const retry = result.attempts.at(-1)?.reply?.body;
  const original = result.lateReplies[0]?.body;
  const same = JSON.stringify(retry && sortKeys(retry)) === JSON.stringify(original && sortKeys(original));
  console.log(`
handler runs          ${result.handlerRuns}
reservations (rows)   ${result.reservations.length}: ${result.reservations.map((r) => r.reservation_id).join(', ')}
retry's reply         ${same ? 'the same reservation as the original reply' : 'DIFFERENT from the original reply'}`);
}

function sortKeys(value: object): object {
  return Object.fromEntries(Object.entries(value).sort(([a], [b]) => a.localeCompare(b)));
}
