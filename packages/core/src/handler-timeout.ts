import { HandlerTimeoutError } from './errors.js';
import type { InboxLogger } from './logger.js';
import { type QueryRunner, raw } from './sql/executor.js';

/** What a timed handler call needs to know. */
export interface TimedCall {
  /** `handlerTimeoutMs`, or `undefined` for no limit. */
  readonly timeoutMs: number | undefined;
  /** The message whose handler runs (for the error). */
  readonly messageId: string;
  /** The backend pid of the attempt's connection, whose running statement is cancelled. */
  readonly pid: number | undefined;
  /** Runs the cancel on another connection. */
  readonly db: QueryRunner;
  readonly logger: InboxLogger;
}

const CANCEL = 'SELECT pg_cancel_backend($1::int) AS cancelled';

/**
 * Runs one handler call under `handlerTimeoutMs`. When the time runs out: the signal is
 * aborted with a {@link HandlerTimeoutError}, the statement the connection is running is
 * cancelled (`pg_cancel_backend`, from another connection; a cancel that finds the
 * connection idle is ignored by Postgres), and once the handler has settled, the call
 * rejects with that error, whatever the handler returned: an attempt past its time never
 * commits.
 *
 * It waits for the handler to settle on purpose: rejecting earlier would let Kysely roll
 * back and release the connection while the handler may still send statements on it,
 * and one sent after the rollback would run outside any transaction.
 */
export async function runTimed<R>(call: TimedCall, run: (signal: AbortSignal) => Promise<R> | R): Promise<R> {
  // Without a limit the signal never aborts. It is still one per call: listeners a handler
  // adds to it (and never removes) must go away with it, not pile up on a shared one.
  if (call.timeoutMs === undefined) return run(new AbortController().signal);
  const controller = new AbortController();
  let timedOut: HandlerTimeoutError | undefined;
  let cancelling: Promise<void> | undefined;
  const timer = setTimeout(() => {
    timedOut = new HandlerTimeoutError(call.messageId, call.timeoutMs as number);
    controller.abort(timedOut);
    cancelling = cancelStatement(call);
  }, call.timeoutMs);
  let result: R | undefined;
  try {
    result = await run(controller.signal);
  } catch (error) {
    if (timedOut === undefined) throw error;
  } finally {
    clearTimeout(timer);
    // Our own statements come next on that connection: the cancel must have landed first.
    if (cancelling !== undefined) await cancelling;
  }
  if (timedOut !== undefined) throw timedOut;
  return result as R;
}

async function cancelStatement(call: TimedCall): Promise<void> {
  if (call.pid === undefined) return;
  try {
    await call.db.executeQuery(raw(CANCEL, [call.pid]));
  } catch (error) {
    call.logger.warn(
      { err: error, messageId: call.messageId, pid: call.pid },
      'inboxkit: could not cancel the statement of a handler past handlerTimeoutMs; waiting for it to end',
    );
  }
}
