import type { ServerResponse } from 'node:http';
import { ClientDisconnectedError } from './errors.js';

/** A signal that aborts when the client goes away, and the way to stop watching. */
export interface ClientGone {
  readonly signal: AbortSignal;
  dispose(): void;
}

/**
 * Watches a Node.js response: its `close` before it finished writing means the connection
 * is gone (the client hung up, or a proxy timed out), and no answer can reach the client.
 */
export function watchResponse(res: ServerResponse): ClientGone {
  const controller = new AbortController();
  const onClose = () => {
    if (!res.writableFinished) controller.abort(new ClientDisconnectedError());
  };
  if (res.destroyed || res.socket?.destroyed === true) onClose();
  else res.once('close', onClose);
  return { signal: controller.signal, dispose: () => res.off('close', onClose) };
}

/** Watches a Fetch request's signal, which servers (Deno, Bun, Hono's Node.js server) abort when the client goes away. */
export function watchRequestSignal(signal: AbortSignal): ClientGone {
  const controller = new AbortController();
  const onAbort = () => controller.abort(new ClientDisconnectedError());
  if (signal.aborted) onAbort();
  else signal.addEventListener('abort', onAbort, { once: true });
  return { signal: controller.signal, dispose: () => signal.removeEventListener('abort', onAbort) };
}
