// The liveness property test's shared half (test/kafka/liveness.test.ts and
// test/rabbitmq/liveness.test.ts): a seeded plan of messages whose handlers succeed, fail in
// every way the inbox must settle, or hold locks; the handler behaviours themselves; a
// per-id trace of deliveries and events; a drain wait that reports a stall instead of
// timing out; and the end-state check with its per-kind table.
//
// The rule checked: while Postgres and the broker answer, every delivery ends as
// processed, duplicate or dead-lettered within the retry policy's span.
import { createInbox, type Inbox, NonRetryableError } from '@inboxkit/core';
import { type Kysely, sql, type Transaction } from 'kysely';
import type pg from 'pg';
import type { TestDB } from './postgres.ts';

// ---------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------

/** The kinds of message the plan draws from; `ok` is the majority, the rest fail in some way. */
export const LIVENESS_KINDS = [
  'ok',
  'duplicates',
  'conflict',
  'transient_once',
  'sqlstate_once',
  'permanent',
  'exhausted',
  'err_08P01',
  'err_53200',
  'err_53400',
  'err_58P01',
  'err_57014',
  'conn_terminated',
  'nul_error',
  'nul_result',
  'huge_bind',
  'swallowed',
  'lock_contention',
  'tombstone',
] as const;
export type LivenessKind = (typeof LIVENESS_KINDS)[number];
/** A kind a message is planned with (`duplicates` is not one: it adds copies to the others). */
export type MessageKind = Exclude<LivenessKind, 'duplicates'>;

/** What a message of each kind does, and the share of messages it gets (of 100). */
const KIND_SPECS: Record<MessageKind, { weight: number; does: string }> = {
  ok: { weight: 60, does: 'inserts its ledger row' },
  conflict: { weight: 1.5, does: 'sent twice with different payloads' },
  transient_once: { weight: 4, does: 'throws a plain Error on its first call, then succeeds' },
  sqlstate_once: { weight: 3, does: 'throws an 08/53/58/57014 coded error or "Connection terminated" once' },
  permanent: { weight: 3, does: 'throws NonRetryableError' },
  exhausted: { weight: 3, does: 'throws a plain Error on every call' },
  err_08P01: { weight: 1.5, does: "throws { code: '08P01' } on every call" },
  err_53200: { weight: 1.5, does: "throws { code: '53200' } on every call" },
  err_53400: { weight: 1.5, does: "throws { code: '53400' } on every call" },
  err_58P01: { weight: 1.5, does: "throws { code: '58P01' } on every call" },
  err_57014: { weight: 1.5, does: "throws { code: '57014' } on every call" },
  conn_terminated: { weight: 1.5, does: "throws Error('Connection terminated ...') on every call" },
  nul_error: { weight: 2, does: 'throws an Error whose message holds NUL on every call' },
  nul_result: { weight: 2, does: 'succeeds and returns a result holding NUL' },
  huge_bind: { weight: 1, does: 'runs a statement binding 70,000 parameters (08P01 from Postgres)' },
  swallowed: { weight: 1.5, does: 'inserts its row, then catches a failing statement and returns' },
  lock_contention: { weight: 1, does: 'needs a row another connection holds locked for 1.5 s' },
  tombstone: { weight: 1.5, does: 'has no id; the messageId function throws on it' },
};

/** Share of ids (of the kinds that may have copies) sent 2 or 3 times with the same payload. */
const COPY_SHARE = 0.12;
/** Messages of each selected kind at least, whatever the random draw. */
const MIN_PER_KIND = 3;
/** How long a lock_contention message's row stays locked by another connection. */
export const LOCK_HOLD_MS = 1500;
/** The inbox's lockTimeoutMs in this test: small, so contention shows as 55P03 quickly. */
export const LOCK_TIMEOUT_MS = 250;
/** The retry policy: short, so retries run out in well under a second. */
export const RETRY = { retries: 2, minTimeout: 10, maxTimeout: 50, randomize: false } as const;
/**
 * Deliveries of one copy of a message beyond which it counts as redelivered endlessly.
 * Legitimate hand-backs (a key held by an in-flight copy, a Kafka partition sought back
 * after another record's pause) stay far below it.
 */
export const MAX_DELIVERIES_PER_COPY = 25;

export interface LivenessSettings {
  /** Messages per broker (each mode of the broker gets its share). */
  readonly messages: number;
  readonly seed: number;
  /** The selected kinds (`ok` always among them). */
  readonly kinds: readonly LivenessKind[];
  /** True when INBOXKIT_LIVENESS_KINDS narrowed the set. */
  readonly narrowed: boolean;
  /** No progress for this long is a stall. */
  readonly stallMs: number;
}

/**
 * The run's settings from the environment: INBOXKIT_LIVENESS_MESSAGES (default 1,500),
 * INBOXKIT_LIVENESS_SEED (default: random, printed), INBOXKIT_LIVENESS_KINDS (a comma
 * list; default all), INBOXKIT_LIVENESS_STALL_MS (default 15,000).
 */
export function livenessSettings(env: NodeJS.ProcessEnv = process.env): LivenessSettings {
  const messages = integer(env.INBOXKIT_LIVENESS_MESSAGES, 'INBOXKIT_LIVENESS_MESSAGES') ?? 1500;
  const seed = integer(env.INBOXKIT_LIVENESS_SEED, 'INBOXKIT_LIVENESS_SEED') ?? Math.floor(Math.random() * 2 ** 31);
  const stallMs = integer(env.INBOXKIT_LIVENESS_STALL_MS, 'INBOXKIT_LIVENESS_STALL_MS') ?? 15_000;
  const listed = (env.INBOXKIT_LIVENESS_KINDS ?? '')
    .split(',')
    .map((k) => k.trim())
    .filter((k) => k.length > 0 && k !== 'all');
  for (const kind of listed) {
    if (!(LIVENESS_KINDS as readonly string[]).includes(kind)) {
      throw new Error(
        `INBOXKIT_LIVENESS_KINDS: unknown kind ${JSON.stringify(kind)}; known: ${LIVENESS_KINDS.join(',')}`,
      );
    }
  }
  const kinds = listed.length === 0 ? [...LIVENESS_KINDS] : ['ok' as const, ...(listed as LivenessKind[])];
  return { messages, seed, kinds: [...new Set(kinds)], narrowed: listed.length > 0, stallMs };
}

function integer(text: string | undefined, name: string): number | undefined {
  if (text === undefined || text.trim() === '') return undefined;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 0) throw new Error(`${name} must be a whole number, got ${text}`);
  return value;
}

// ---------------------------------------------------------------------------------------
// The plan
// ---------------------------------------------------------------------------------------

/** A small seeded PRNG (mulberry32): the same seed gives the same plan. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One distinct id of the plan. */
export interface PlannedId {
  /** `<prefix>-<n>-<kind>`: the inbox id (tombstones have none) and the `liveness-id` header. */
  readonly id: string;
  readonly kind: MessageKind;
  /** Amounts of its copies, in the order they are sent (conflict: two different ones). */
  readonly amounts: readonly number[];
  /** The error a sqlstate_once message throws once. */
  readonly once?: SimulatedError;
}

/** One message to send. */
export interface PlannedMessage {
  readonly id: string;
  readonly kind: MessageKind;
  readonly amount: number;
  /** The JSON body, or null for a tombstone. */
  readonly body: string | null;
}

export interface LivenessPlan {
  readonly seed: number;
  readonly prefix: string;
  readonly ids: ReadonlyMap<string, PlannedId>;
  /** In the order they are sent (copies included). */
  readonly messages: readonly PlannedMessage[];
}

/** The errors the SQLSTATE kinds throw: coded like pg's, or the driver's message text. */
export type SimulatedError = '08P01' | '53200' | '53400' | '58P01' | '57014' | 'Connection terminated';
const SIMULATED: readonly SimulatedError[] = ['08P01', '53200', '53400', '58P01', '57014', 'Connection terminated'];

/**
 * `count` messages (copies included) of the selected kinds, for one mode of one broker
 * (`stream` tells the modes apart, so each has its own plan from the one seed). Every
 * selected kind gets a few messages whatever the draw.
 */
export function livenessPlan(
  settings: LivenessSettings,
  options: { prefix: string; count: number; stream: number },
): LivenessPlan {
  const random = seededRandom(settings.seed + options.stream * 7919);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
  const kinds = settings.kinds.filter((k): k is MessageKind => k !== 'duplicates');
  const withCopies = settings.kinds.includes('duplicates');
  const weights = kinds.map((k) => KIND_SPECS[k].weight);
  const total = weights.reduce((a, b) => a + b, 0);
  const draw = (): MessageKind => {
    let r = random() * total;
    for (let i = 0; i < kinds.length; i++) {
      r -= weights[i] ?? 0;
      if (r < 0) return kinds[i] as MessageKind;
    }
    return 'ok';
  };
  const ids = new Map<string, PlannedId>();
  const slots: PlannedMessage[][] = [];
  let sent = 0;
  let n = 0;
  const add = (kind: MessageKind) => {
    const id = `${options.prefix}-${String(n++).padStart(5, '0')}-${kind}`;
    const amount = 100 + Math.floor(random() * 900);
    let amounts = [amount];
    if (kind === 'conflict') amounts = [amount, amount + 1];
    else if (withCopies && kind !== 'tombstone' && random() < COPY_SHARE) {
      amounts = random() < 0.5 ? [amount, amount] : [amount, amount, amount];
    }
    const planned: PlannedId = { id, kind, amounts, ...(kind === 'sqlstate_once' ? { once: pick(SIMULATED) } : {}) };
    ids.set(id, planned);
    const copies = amounts.map((a) => ({
      id,
      kind,
      amount: a,
      body: kind === 'tombstone' ? null : JSON.stringify({ lid: id, kind, amount: a }),
    }));
    sent += copies.length;
    slots.push(copies);
  };
  for (const kind of kinds) for (let i = 0; i < MIN_PER_KIND; i++) add(kind);
  while (sent < options.count) add(draw());
  // Shuffle the ids; then move about half of the copies away from their original, so some
  // copies are in flight together and some come long after.
  for (let i = slots.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [slots[i], slots[j]] = [slots[j] as PlannedMessage[], slots[i] as PlannedMessage[]];
  }
  const order: PlannedMessage[][] = [];
  for (const slot of slots) {
    const [first, ...rest] = slot as [PlannedMessage, ...PlannedMessage[]];
    const together = [first];
    for (const copy of rest) {
      if (random() < 0.5) together.push(copy);
      else order.splice(Math.floor(random() * (order.length + 1)), 0, [copy]);
    }
    order.push(together);
  }
  return { seed: settings.seed, prefix: options.prefix, ids, messages: order.flat() };
}

// ---------------------------------------------------------------------------------------
// Handler behaviours
// ---------------------------------------------------------------------------------------

/** The decoded body of a planned message. */
export interface LivenessBody {
  readonly lid: string;
  readonly kind: MessageKind;
  readonly amount: number;
}

/** What one handler call leaves to its caller: a ledger row to insert, and a result. */
export interface BehaviourStep {
  readonly row?: { charge_id: string; amount_cents: number };
  readonly result?: unknown;
}

/** An error shaped like pg's DatabaseError: a message and a SQLSTATE `code`. */
export class SimulatedDatabaseError extends Error {
  readonly code: string;
  constructor(code: string) {
    super(`simulated database error ${code} (the database answers)`);
    this.name = 'SimulatedDatabaseError';
    this.code = code;
  }
}

function simulated(error: SimulatedError): Error {
  return error === 'Connection terminated'
    ? new Error('Connection terminated unexpectedly (from another client the handler uses)')
    : new SimulatedDatabaseError(error);
}

/**
 * Holds rows of `liveness_locks` locked from connections of its own, as a competing
 * transaction (an ALTER TABLE, a hot row) would.
 */
export class LockHolder {
  readonly #pool: pg.Pool;
  readonly #releases = new Set<Promise<void>>();

  constructor(pool: pg.Pool) {
    this.#pool = pool;
  }

  /** Locks the row of `id` for `ms`; resolves once it is locked. */
  async hold(id: string, ms: number): Promise<void> {
    const client = await this.#pool.connect();
    await client.query('BEGIN');
    await client.query('SELECT 1 FROM liveness_locks WHERE id = $1 FOR UPDATE', [id]);
    const release = new Promise<void>((resolve) => setTimeout(resolve, ms))
      .then(() => client.query('COMMIT'))
      .then(
        () => client.release(),
        (error: Error) => client.release(error),
      );
    this.#releases.add(release);
    void release.finally(() => this.#releases.delete(release));
  }

  /** Waits for every lock to be released. */
  async settle(): Promise<void> {
    await Promise.all([...this.#releases]);
  }
}

/** Creates the table lock_contention messages update, with a row per such id. */
export async function createLockRows(db: Kysely<TestDB>, plan: LivenessPlan): Promise<void> {
  await sql`CREATE TABLE IF NOT EXISTS liveness_locks (id text PRIMARY KEY, touched integer NOT NULL DEFAULT 0)`.execute(
    db,
  );
  const ids = [...plan.ids.values()].filter((p) => p.kind === 'lock_contention').map((p) => p.id);
  if (ids.length > 0) {
    await sql`INSERT INTO liveness_locks (id) SELECT unnest(${ids}::text[]) ON CONFLICT DO NOTHING`.execute(db);
  }
}

/** 70,000 bound parameters: pg writes the count as 16 bits, Postgres answers 08P01. */
const HUGE_BIND = sql`SELECT 1 WHERE 0 IN (${sql.join(Array.from({ length: 70_000 }, (_, i) => i + 1))})`;

/**
 * Runs the planned behaviour of message `id` (call number `call` of its handler) in `trx`.
 * Rows are left to the caller (a bulk handler inserts them in one statement), except the
 * swallowed kind's, which must be written before the statement that fails.
 */
export async function runBehaviour(
  trx: Transaction<TestDB>,
  planned: PlannedId,
  body: LivenessBody,
  call: number,
  locks: LockHolder,
): Promise<BehaviourStep> {
  const row = { charge_id: planned.id, amount_cents: body.amount };
  switch (planned.kind) {
    case 'ok':
    case 'conflict':
      return { row };
    case 'transient_once':
      if (call === 1) throw new Error(`transient failure of ${planned.id} (first call only)`);
      return { row };
    case 'sqlstate_once':
      if (call === 1) throw simulated(planned.once ?? '08P01');
      return { row };
    case 'permanent':
      throw new NonRetryableError(`permanent failure of ${planned.id}`);
    case 'exhausted':
      throw new Error(`failure of ${planned.id} on every call`);
    case 'err_08P01':
      throw simulated('08P01');
    case 'err_53200':
      throw simulated('53200');
    case 'err_53400':
      throw simulated('53400');
    case 'err_58P01':
      throw simulated('58P01');
    case 'err_57014':
      throw simulated('57014');
    case 'conn_terminated':
      throw simulated('Connection terminated');
    case 'nul_error':
      throw new Error(`bad\u0000byte in ${planned.id}`);
    case 'nul_result':
      return { row, result: { note: `nul \u0000 inside ${planned.id}` } };
    case 'huge_bind':
      await HUGE_BIND.execute(trx);
      return { row };
    case 'swallowed':
      await trx.insertInto('ledger').values(row).execute();
      try {
        await sql`SELECT 1 / 0`.execute(trx);
      } catch {
        // Swallowed on purpose: the transaction is now aborted and COMMIT rolls it back.
      }
      return {};
    case 'lock_contention':
      if (call === 1) await locks.hold(planned.id, LOCK_HOLD_MS);
      await sql`UPDATE liveness_locks SET touched = touched + 1 WHERE id = ${planned.id}`.execute(trx);
      return { row };
    case 'tombstone':
      throw new Error(`a tombstone reached the handler: ${planned.id}`);
  }
}

// ---------------------------------------------------------------------------------------
// Expected end states
// ---------------------------------------------------------------------------------------

type Reason = 'non_retryable' | 'retries_exhausted' | 'invalid_message' | 'payload_conflict' | 'crash_loop';

/** How a planned id must end. */
type Expected =
  | { readonly end: 'processed'; readonly conflicts: number }
  | { readonly end: 'dead_lettered'; readonly reasons: readonly Reason[]; readonly keyed: boolean };

/**
 * The end state the rule gives each kind. Coded errors of classes 08, 53 and 58 and the
 * driver's "Connection terminated" come from a database that answers (the probe would
 * say so): each is an ordinary failed attempt. Contention waits; a swallowed database
 * error is never processed; what inboxkit stores itself (a result, an error message) must
 * be made storable, so a NUL in it changes nothing about the outcome.
 */
export function expectedOf(planned: PlannedId): Expected {
  switch (planned.kind) {
    case 'ok':
    case 'transient_once':
    case 'sqlstate_once':
    case 'nul_result':
    case 'lock_contention':
      return { end: 'processed', conflicts: 0 };
    case 'conflict':
      return { end: 'processed', conflicts: planned.amounts.length - 1 };
    case 'permanent':
      return { end: 'dead_lettered', reasons: ['non_retryable'], keyed: true };
    case 'swallowed':
      return { end: 'dead_lettered', reasons: ['retries_exhausted', 'non_retryable'], keyed: true };
    case 'tombstone':
      return { end: 'dead_lettered', reasons: ['invalid_message'], keyed: false };
    default:
      return { end: 'dead_lettered', reasons: ['retries_exhausted'], keyed: true };
  }
}

function expectedLabel(expected: Expected): string {
  if (expected.end === 'processed') {
    return expected.conflicts === 0 ? 'processed' : `processed + ${expected.conflicts} payload_conflict`;
  }
  return `dead_lettered:${expected.reasons.join('|')}${expected.keyed ? '' : ' (no key)'}`;
}

// ---------------------------------------------------------------------------------------
// The trace: what the test saw happen to each id
// ---------------------------------------------------------------------------------------

interface IdTrace {
  deliveries: number;
  calls: number;
  reportedProcessed: boolean;
  lastAt: number;
  events: string[];
}

/** Deliveries, handler calls and the last events of each id, from the consumer's hooks and events. */
export class LivenessTrace {
  readonly #ids = new Map<string, IdTrace>();
  readonly #started = Date.now();
  #consuming = false;
  /** Problems of the consumer itself (a crash, a reconnect), not of one id. */
  readonly consumerProblems: string[] = [];

  #of(id: string): IdTrace {
    let trace = this.#ids.get(id);
    if (trace === undefined) {
      trace = { deliveries: 0, calls: 0, reportedProcessed: false, lastAt: 0, events: [] };
      this.#ids.set(id, trace);
    }
    return trace;
  }

  /** One delivery of `id` by the broker (counted where the adapter decodes it or asks for its id). */
  delivered(id: string | undefined): void {
    if (id === undefined) return;
    this.#consuming = true;
    const trace = this.#of(id);
    trace.deliveries++;
    trace.lastAt = Date.now();
  }

  /** One handler call for `id`; returns its number (1 for the first). */
  called(id: string): number {
    const trace = this.#of(id);
    trace.lastAt = Date.now();
    return ++trace.calls;
  }

  processed(id: string | undefined): void {
    if (id !== undefined) this.#of(id).reportedProcessed = true;
  }

  /** Notes an event of `id` (the last few are kept for the report). */
  event(id: string | undefined, text: string): void {
    if (id === undefined) return;
    const trace = this.#of(id);
    trace.lastAt = Date.now();
    trace.events.push(`${((Date.now() - this.#started) / 1000).toFixed(1)}s ${printable(text, 160)}`);
    if (trace.events.length > 4) trace.events.shift();
  }

  /** True once any delivery was seen. */
  consuming(): boolean {
    return this.#consuming;
  }

  get(id: string): Readonly<IdTrace> | undefined {
    return this.#ids.get(id);
  }
}

/** Text for the report: NUL and control characters made visible, bounded. */
export function printable(text: string, max = 200): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: making control characters visible is the point
  const visible = text.replace(/[\u0000-\u001f]/g, (c) => (c === '\u0000' ? '\\0' : ' '));
  return visible.length > max ? `${visible.slice(0, max)}...` : visible;
}

// ---------------------------------------------------------------------------------------
// Waiting for the drain
// ---------------------------------------------------------------------------------------

export interface DrainResult {
  /** `drained`: nothing left; `stalled`: no progress for `stallMs`; `deadline`: out of time while progressing. */
  readonly how: 'drained' | 'stalled' | 'deadline';
  readonly remaining: number;
  readonly seconds: number;
  readonly stallMs: number;
}

/**
 * Polls `remaining` (messages not settled) until it is 0. Progress is any decrease; no
 * progress for `stallMs` is a stall, reported rather than thrown so the end state of each
 * id can still be shown. Until the consumer hands over its first message (or the count
 * drops) it may still be joining its group: that window is `startupMs` (default 60 s).
 */
export async function awaitDrain(options: {
  remaining: () => Promise<number>;
  stallMs: number;
  deadlineMs: number;
  startupMs?: number;
  /** True once the consumer has handed over a message: the start-up window ends there. */
  consuming?: () => boolean;
  intervalMs?: number;
}): Promise<DrainResult> {
  const started = Date.now();
  let best = Number.POSITIVE_INFINITY;
  let progressAt = started;
  let first: number | undefined;
  let moved = false;
  for (;;) {
    const remaining = await options.remaining();
    const seconds = (Date.now() - started) / 1000;
    const { stallMs } = options;
    if (remaining === 0) return { how: 'drained', remaining, seconds, stallMs };
    if (remaining < best) {
      best = remaining;
      progressAt = Date.now();
    }
    first ??= remaining;
    if (!moved && (remaining < first || options.consuming?.())) {
      moved = true;
      progressAt = Math.max(progressAt, Date.now());
    }
    const window = moved ? stallMs : Math.max(stallMs, options.startupMs ?? 60_000);
    if (Date.now() - progressAt > window) return { how: 'stalled', remaining, seconds, stallMs: window };
    if (Date.now() - started > options.deadlineMs) return { how: 'deadline', remaining, seconds, stallMs };
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 500));
  }
}

/** Runs `step`, giving up (and saying so) after `ms`: a consumer that will not shut down must not hide the report. */
export async function within<T>(ms: number, what: string, step: () => Promise<T>): Promise<T | string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve(`${what} did not finish within ${ms} ms`), ms);
  });
  try {
    return await Promise.race([step(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------
// The end state, checked
// ---------------------------------------------------------------------------------------

/** What Postgres and the dead-letter destination hold at the end. */
export interface Observed {
  /** Ledger rows per id. */
  readonly rows: ReadonlyMap<string, number>;
  /** Inbox key status per id. */
  readonly keys: ReadonlyMap<string, string>;
  /** Dead letters per `liveness-id`: their `x-inboxkit-reason`. */
  readonly deadLetters: ReadonlyMap<string, readonly string[]>;
}

/** Reads ledger rows and inbox keys of the plan's ids. */
export async function observeDatabase(
  db: Kysely<TestDB>,
  plan: LivenessPlan,
  consumer: string,
): Promise<Pick<Observed, 'rows' | 'keys'>> {
  const like = `${plan.prefix}-%`;
  const rows = await sql<{ charge_id: string; n: string }>`
    SELECT charge_id, count(*) AS n FROM ledger WHERE charge_id LIKE ${like} GROUP BY charge_id`.execute(db);
  const keys = await sql<{ message_id: string; status: string }>`
    SELECT message_id, status FROM processed_messages WHERE consumer = ${consumer}`.execute(db);
  return {
    rows: new Map(rows.rows.map((r) => [r.charge_id, Number(r.n)])),
    keys: new Map(keys.rows.map((r) => [r.message_id, r.status])),
  };
}

export interface LivenessVerdict {
  readonly ok: boolean;
  readonly report: string;
}

interface IdVerdict {
  readonly planned: PlannedId;
  readonly actual: string;
  readonly ok: boolean;
}

/** The state an id ended in, in words, and whether that is what its kind must end as. */
function judge(planned: PlannedId, observed: Observed, trace: LivenessTrace, drained: boolean): IdVerdict {
  const expected = expectedOf(planned);
  const rows = observed.rows.get(planned.id) ?? 0;
  const key = observed.keys.get(planned.id);
  const letters = observed.deadLetters.get(planned.id) ?? [];
  const copies = planned.amounts.length;
  const t = trace.get(planned.id);
  const deliveries = t?.deliveries ?? 0;
  const notes: string[] = [];
  if (deliveries > copies * MAX_DELIVERIES_PER_COPY) notes.push(`redelivered ${deliveries}x`);
  const conflicts = letters.filter((r) => r === 'payload_conflict').length;
  const others = letters.filter((r) => r !== 'payload_conflict');
  let actual: string;
  let ok = false;
  if (rows > 1) actual = `applied ${rows}x`;
  else if (rows === 1) {
    actual = key === 'processed' ? 'processed' : `row committed, key ${key ?? 'missing'}`;
    if (conflicts > 0) actual += ` + ${conflicts} payload_conflict`;
    if (!drained && expected.end === 'processed' && conflicts < expected.conflicts) actual += ' (a copy unsettled)';
    if (others.length > 0) actual += ` + dead-lettered ${[...new Set(others)].join('|')}`;
    ok = expected.end === 'processed' && key === 'processed' && others.length === 0 && conflicts === expected.conflicts;
  } else if (letters.length > 0) {
    const reasons = [...new Set(letters)];
    actual = `dead_lettered:${reasons.join('|')}`;
    if (letters.length > 1) actual += ` (${letters.length} dead letters)`;
    const recorded = expected.end === 'dead_lettered' && !expected.keyed ? true : key === 'dead_lettered';
    if (!recorded) actual += key === undefined ? ' (not recorded)' : ` (key ${key})`;
    ok =
      expected.end === 'dead_lettered' &&
      recorded &&
      reasons.every((r) => (expected.reasons as readonly string[]).includes(r)) &&
      letters.length <= copies;
  } else if (key !== undefined) actual = `key ${key}, no row, no dead letter`;
  else if (t?.reportedProcessed) actual = 'lost (reported processed, nothing committed)';
  else if (drained) actual = 'lost (settled with no row, no key, no dead letter)';
  // Not settled: `stuck` when a handler ran or something happened to it, `waiting` when it
  // never got that far (behind a stuck record of its partition, or in a stuck batch).
  else actual = (t?.calls ?? 0) > 0 || (t?.events.length ?? 0) > 0 ? 'stuck' : 'waiting';
  if (notes.length > 0) {
    actual += `, ${notes.join(', ')}`;
    ok = false;
  }
  return { planned, actual, ok };
}

/**
 * Checks every planned id against its kind's end state and builds the report: a table of
 * expected against actual end states per kind, then the wrong or stuck ids with their
 * trace, then how to replay the run.
 */
export function verdict(options: {
  readonly title: string;
  readonly plan: LivenessPlan;
  readonly observed: Observed;
  readonly trace: LivenessTrace;
  readonly drain: DrainResult;
  readonly replay: string;
  readonly extra?: readonly string[];
  /** Lines printed under the table, e.g. what the broker client logged as errors. */
  readonly notes?: readonly string[];
}): LivenessVerdict {
  const { plan, observed, trace, drain } = options;
  const drained = drain.how === 'drained';
  const byKind = new Map<MessageKind, IdVerdict[]>();
  for (const planned of plan.ids.values()) {
    const list = byKind.get(planned.kind) ?? [];
    list.push(judge(planned, observed, trace, drained));
    byKind.set(planned.kind, list);
  }
  const copies = [...plan.ids.values()].filter((p) => p.kind !== 'conflict' && p.amounts.length > 1).length;
  const lines: string[] = [];
  const how =
    drain.how === 'drained'
      ? `drained in ${drain.seconds.toFixed(1)} s`
      : drain.how === 'stalled'
        ? `STALLED after ${drain.seconds.toFixed(0)} s (no progress for ${drain.stallMs / 1000} s), ${drain.remaining} messages unsettled`
        : `DEADLINE: ${drain.remaining} messages left after ${drain.seconds.toFixed(0)} s`;
  lines.push(
    `${options.title}: seed ${plan.seed}, ${plan.messages.length} messages, ${plan.ids.size} distinct ids (${copies} sent 2-3 times): ${how}`,
  );
  const rows: string[][] = [['kind', 'ids', 'expected', 'actual', '']];
  let allOk = drained;
  for (const kind of LIVENESS_KINDS) {
    if (kind === 'duplicates') continue;
    const list = byKind.get(kind);
    if (list === undefined) continue;
    const counts = new Map<string, number>();
    for (const v of list) {
      const state = v.actual
        .replace(/redelivered \d+x/, 'redelivered past the bound')
        .replace(/\(\d+ dead letters\)/, '(several dead letters)');
      counts.set(state, (counts.get(state) ?? 0) + 1);
    }
    const actual = [...counts].map(([state, n]) => `${state} ${n}`).join('; ');
    const kindOk = list.every((v) => v.ok);
    allOk &&= kindOk;
    rows.push([kind, String(list.length), expectedLabel(expectedOf(list[0]!.planned)), actual, kindOk ? 'ok' : 'FAIL']);
  }
  if (options.extra !== undefined && options.extra.length > 0) {
    allOk = false;
    rows.push(['(consumer)', '-', 'never crashes or reconnects', options.extra.join('; '), 'FAIL']);
  }
  lines.push(...table(rows));
  if (options.notes !== undefined && options.notes.length > 0) lines.push('', ...options.notes);
  const wrong = [...byKind.values()].flat().filter((v) => !v.ok);
  const waiting = wrong.filter((v) => v.actual === 'waiting');
  const shownIds = wrong.filter((v) => v.actual !== 'waiting');
  if (shownIds.length > 0) {
    lines.push('', 'Wrong or stuck ids (those with events first, then the most delivered; at most 4 per kind):');
    const shown = new Map<MessageKind, number>();
    const rank = (v: IdVerdict) => {
      const t = trace.get(v.planned.id);
      return (t?.events.length ? 1_000_000 : 0) + (t?.deliveries ?? 0);
    };
    const sorted = shownIds.sort((a, b) => rank(b) - rank(a));
    for (const v of sorted) {
      const n = shown.get(v.planned.kind) ?? 0;
      if (n >= 4) continue;
      shown.set(v.planned.kind, n + 1);
      const t = trace.get(v.planned.id);
      lines.push(
        `  ${v.planned.id} (${v.planned.amounts.length} sent${v.planned.once ? `, throws ${v.planned.once} once` : ''}): ${v.actual}; ${t?.deliveries ?? 0} deliveries, ${t?.calls ?? 0} handler calls`,
      );
      for (const e of t?.events ?? []) lines.push(`      ${e}`);
    }
  }
  if (waiting.length > 0) {
    lines.push(
      '',
      `${waiting.length} ids are waiting: not settled, and no handler call or event of theirs was seen (behind stuck messages: a Kafka partition or batch that does not move, RabbitMQ prefetch slots taken by messages that keep coming back).`,
    );
  }
  lines.push('', `Replay: ${options.replay}`);
  return { ok: allOk, report: lines.join('\n') };
}

function table(rows: readonly string[][]): string[] {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) =>
    r
      .map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c] ?? 0)))
      .join('  ')
      .trimEnd(),
  );
}

/** The command that replays a run with the same plan. */
export function replayCommand(settings: LivenessSettings, project: string): string {
  const kinds = settings.narrowed ? ` INBOXKIT_LIVENESS_KINDS=${settings.kinds.join(',')}` : '';
  return `INBOXKIT_LIVENESS_SEED=${settings.seed} INBOXKIT_LIVENESS_MESSAGES=${settings.messages}${kinds} pnpm exec vitest run --project ${project} liveness`;
}

// ---------------------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------------------

/** The handler body both brokers share: looks the message up in the plan, counts the call, runs its behaviour. */
export function planBehaviour(
  plan: LivenessPlan,
  trace: LivenessTrace,
  locks: LockHolder,
): (trx: Transaction<TestDB>, id: string, body: LivenessBody) => Promise<BehaviourStep> {
  return async (trx, id, body) => {
    const planned = plan.ids.get(id);
    if (planned === undefined) throw new NonRetryableError(`${id} is not in the plan`);
    return runBehaviour(trx, planned, body, trace.called(id), locks);
  };
}

/** Inserts the rows of some handler steps in one statement. */
export async function insertRows(trx: Transaction<TestDB>, steps: readonly BehaviourStep[]): Promise<void> {
  const rows = steps.flatMap((s) => (s.row === undefined ? [] : [s.row]));
  if (rows.length > 0) await trx.insertInto('ledger').values(rows).execute();
}

/** Notes the inbox's events in the trace of their ids. */
export function traceInbox(inbox: Inbox<TestDB>, trace: LivenessTrace): void {
  inbox.on('processed', (e) => {
    trace.processed(e.messageId);
    trace.event(e.messageId, `processed (attempt ${e.attempts})`);
  });
  inbox.on('duplicate', (e) => trace.event(e.messageId, `duplicate of a ${e.previousStatus} key`));
  inbox.on('conflict', (e) => trace.event(e.messageId, 'conflict'));
  inbox.on('retry', (e) => trace.event(e.messageId, `retry after attempt ${e.attempt}: ${e.error.message}`));
  inbox.on('retryLater', (e) => trace.event(e.messageId, `retry_later ${e.reason}: ${e.error.message}`));
  inbox.on('deadLetter', (e) =>
    trace.event(e.messageId, `dead_letter ${e.reason} after ${e.attempts} attempts: ${e.error.message}`),
  );
}

/** The inbox of a liveness run: the short retry policy and lock timeout. */
export function livenessInbox(db: Kysely<TestDB>, consumer: string, trace: LivenessTrace): Inbox<TestDB> {
  const inbox = createInbox<TestDB>({ db, consumer, retry: RETRY, lockTimeoutMs: LOCK_TIMEOUT_MS });
  traceInbox(inbox, trace);
  return inbox;
}
