import { DEAD_LETTER_HEADERS } from '@inboxkit/rabbitmq';
import amqplib, { type GetMessage } from 'amqplib';
import { CliError, describeError, NotFoundError, UnreachableError } from '../errors.js';
import {
  type Destination,
  type DlqEntry,
  entryFromHeaders,
  headerText,
  isDeadLetterHeader,
  REPLAYS_HEADER,
} from './dlq-entry.js';
import type { DlqSource, Visit } from './dlq-source.js';

const CONFIRM_TIMEOUT_MS = 30_000;

/**
 * A RabbitMQ dead-letter queue, read with `basic.get` on a confirm channel (docs/design.md,
 * "Operations"). A replayed message is acked only after the broker confirmed its
 * re-publish (published `mandatory`, so an unroutable one fails instead of vanishing);
 * every other message stays unacked until the walk ends and is then requeued in place.
 * If the CLI dies, the broker requeues everything it had not acked: nothing is lost.
 */
export async function openRabbitDlq(url: string, queue: string): Promise<DlqSource> {
  let connection: amqplib.ChannelModel;
  try {
    connection = await amqplib.connect(url, { timeout: 5000, clientProperties: { connection_name: 'inboxkit-cli' } });
  } catch (error) {
    throw new UnreachableError(`Cannot reach RabbitMQ at ${amqpWhere(url)}: ${describeError(error)}`, error);
  }
  let channelError: unknown;
  connection.on('error', (error: unknown) => {
    channelError = error;
  });
  const close = async () => {
    await connection.close().catch(() => {});
  };
  const open = async () => {
    const channel = await connection.createConfirmChannel();
    channel.on('error', (error: unknown) => {
      channelError = error;
    });
    return channel;
  };
  let messageCount: number;
  try {
    const probe = await open();
    try {
      messageCount = (await probe.checkQueue(queue)).messageCount;
    } catch (error) {
      if ((error as { code?: unknown }).code === 404) {
        throw new NotFoundError(`RabbitMQ queue ${JSON.stringify(queue)} does not exist.`);
      }
      throw error;
    }
    await probe.close().catch(() => {});
  } catch (error) {
    await close();
    throw error;
  }

  return {
    name: `queue ${JSON.stringify(queue)}`,
    close,
    async walk(visit: Visit, options) {
      const channel = await open();
      let returned = false;
      channel.on('return', () => {
        returned = true;
      });
      const total = options.limit === undefined ? messageCount : Math.min(messageCount, options.limit);
      options.onTotal?.(total);
      try {
        for (let index = 0; index < total; index++) {
          const message = await channel.get(queue, { noAck: false });
          if (message === false) break;
          const entry = rabbitEntry(index + 1, message);
          const replay = async () => {
            const destination = entry.destination;
            if (destination?.kind !== 'rabbitmq') throw new Error('not a RabbitMQ destination');
            returned = false;
            channel.publish(destination.exchange, destination.routingKey, message.content, {
              ...replayProperties(message, entry.replays),
              mandatory: true,
            });
            await withTimeout(channel.waitForConfirms(), CONFIRM_TIMEOUT_MS, 'the broker did not confirm a replay');
            if (returned) {
              throw new CliError(
                'INBOXKIT_CLI_UNROUTABLE',
                `Replaying ${entry.messageId ?? entry.position}: exchange ${JSON.stringify(destination.exchange)} routes ${JSON.stringify(destination.routingKey)} to no queue.`,
              );
            }
          };
          const result = await visit(entry, replay);
          if (result === 'remove' && options.removing) channel.ack(message);
        }
        // The messages not removed go back to the queue, in their places.
        channel.nackAll(true);
        await channel.close();
      } catch (error) {
        throw channelError ?? error;
      }
    },
  };
}

function rabbitEntry(index: number, message: GetMessage): DlqEntry {
  const raw = message.properties.headers ?? {};
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(raw)) {
    const text = headerText(value);
    if (text !== undefined) headers[name] = text;
  }
  const messageId = typeof message.properties.messageId === 'string' ? message.properties.messageId : undefined;
  return entryFromHeaders(`#${index}`, headers, message.content, destinationOf(raw), messageId);
}

/** Our own headers, else the broker's `x-death` (a queue's own dead-lettering, `deadLetter: 'nack'`). */
function destinationOf(headers: Record<string, unknown>): Destination | undefined {
  const exchange = headers[DEAD_LETTER_HEADERS.originalExchange];
  const routingKey = headers[DEAD_LETTER_HEADERS.originalRoutingKey];
  if (typeof exchange === 'string' && typeof routingKey === 'string') return { kind: 'rabbitmq', exchange, routingKey };
  const death = headers['x-death'];
  if (Array.isArray(death)) {
    const last = death[death.length - 1] as { exchange?: unknown; 'routing-keys'?: unknown } | undefined;
    const keys = last?.['routing-keys'];
    if (typeof last?.exchange === 'string' && Array.isArray(keys) && typeof keys[0] === 'string') {
      return { kind: 'rabbitmq', exchange: last.exchange, routingKey: keys[0] };
    }
  }
  return undefined;
}

/** The message's properties (its id among them), without our dead-letter headers, counting this replay. */
function replayProperties(message: GetMessage, replays: number): amqplib.Options.Publish {
  const p = message.properties;
  const headers: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(p.headers ?? {})) {
    if (!isDeadLetterHeader(name)) headers[name] = value;
  }
  headers[REPLAYS_HEADER] = replays + 1;
  return {
    contentType: p.contentType,
    contentEncoding: p.contentEncoding,
    correlationId: p.correlationId,
    replyTo: p.replyTo,
    messageId: p.messageId,
    type: p.type,
    appId: p.appId,
    timestamp: p.timestamp,
    priority: p.priority,
    persistent: true,
    headers,
  };
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new CliError('INBOXKIT_CLI_TIMEOUT', `${what} within ${ms / 1000} s.`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function amqpWhere(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.hostname}:${parsed.port || '5672'}`;
  } catch {
    return 'the given URL';
  }
}
