import { type Backoff, backoffDelayMs } from '../backoff.js';
import type { InboxLogger } from '../logger.js';

/** The part of a node-postgres client a relay listens with. */
export interface ListenClient {
  /** Runs `LISTEN` on the outbox's channel. */
  query(text: string): Promise<unknown>;
  /** A notification on a channel the client listens on: the relay looks for messages. */
  on(event: 'notification', listener: (message: { channel: string }) => void): unknown;
  /** The connection failed: the relay reconnects. */
  on(event: 'error', listener: (error: Error) => void): unknown;
  /** The connection ended: the relay reconnects. */
  on(event: 'end', listener: () => void): unknown;
}

/** A node-postgres `Pool` (one client is checked out and kept for `LISTEN`). */
export interface ListenPool {
  /** Checks out a client; the relay keeps it for its lifetime (or until the connection fails). */
  connect(): Promise<
    ListenClient & {
      /** Called with `true` when the relay lets go of it: a client that ran `LISTEN` is destroyed, not reused. */
      release(error?: Error | boolean): void;
    }
  >;
}

/**
 * Where a relay's `LISTEN` connection comes from: a connection string (a connection of its
 * own, e.g. straight to Postgres when the application goes through PgBouncer in
 * transaction mode, where `LISTEN` does not work), or a node-postgres pool to take one
 * client from for the relay's lifetime.
 */
export type ListenOptions = { readonly connectionString: string } | { readonly pool: ListenPool };

interface Held {
  readonly client: ListenClient;
  close(): Promise<void>;
}

/**
 * Keeps one connection listening on the outbox's channel and calls `wake` on every
 * notification, and once after each (re)connect: notifications sent while it was away are
 * lost, so the relay looks for itself (docs/design.md, "The outbox").
 */
export class OutboxListener {
  readonly #options: ListenOptions;
  readonly #channel: string;
  readonly #wake: () => void;
  readonly #logger: InboxLogger;
  readonly #backoff: Backoff;
  readonly #stop = new AbortController();
  #held: Held | undefined;
  #loop: Promise<void> | undefined;

  constructor(options: ListenOptions, channel: string, wake: () => void, logger: InboxLogger, backoff: Backoff) {
    this.#options = options;
    this.#channel = channel;
    this.#wake = wake;
    this.#logger = logger;
    this.#backoff = backoff;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  async close(): Promise<void> {
    this.#stop.abort();
    await this.#held?.close();
    await this.#loop;
  }

  async #run(): Promise<void> {
    const signal = this.#stop.signal;
    for (let failures = 0; !signal.aborted; ) {
      let held: Held | undefined;
      try {
        held = await this.#open();
        this.#held = held;
        const gone = new Promise<void>((resolve) => {
          held?.client.on('error', (error) => {
            this.#logger.warn(
              { err: error },
              'inboxkit: the outbox relay lost its LISTEN connection; polling until it is back',
            );
            resolve();
          });
          held?.client.on('end', () => resolve());
          signal.addEventListener('abort', () => resolve(), { once: true });
        });
        held.client.on('notification', (message) => {
          if (message.channel === this.#channel) this.#wake();
        });
        await held.client.query(`LISTEN "${this.#channel}"`);
        failures = 0;
        this.#wake();
        await gone;
      } catch (error) {
        if (!signal.aborted) {
          this.#logger.warn({ err: error }, 'inboxkit: the outbox relay could not LISTEN; polling until it can');
        }
      } finally {
        this.#held = undefined;
        await held?.close();
      }
      if (signal.aborted) break;
      failures++;
      await sleep(backoffDelayMs(this.#backoff, failures), signal);
    }
  }

  async #open(): Promise<Held> {
    if ('pool' in this.#options) {
      const client = await this.#options.pool.connect();
      let closed = false;
      return {
        client,
        close: async () => {
          if (closed) return;
          closed = true;
          // Released as broken: a client that ran LISTEN must not go back to the pool.
          client.release(true);
        },
      };
    }
    // pg is an optional peer dependency of core: loaded only when a relay listens by connection string.
    const pg = (await import('pg')).default;
    const client = new pg.Client({
      connectionString: this.#options.connectionString,
      keepAlive: true,
      connectionTimeoutMillis: 5000,
    });
    client.on('error', () => {}); // reported through the listener above; never an unhandled 'error'
    let closed = false;
    const close = async (): Promise<void> => {
      if (closed) return;
      closed = true;
      await client.end().catch(() => {});
    };
    try {
      await client.connect();
    } catch (error) {
      await close();
      throw error;
    }
    return { client, close };
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
