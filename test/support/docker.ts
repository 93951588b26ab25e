import { existsSync } from 'node:fs';

let cached: Promise<boolean> | undefined;

/**
 * True when a Docker engine answers, so testcontainers can start services. Checked once.
 * Without DOCKER_HOST or a socket, the answer is no at once (no slow probing).
 */
export function dockerAvailable(): Promise<boolean> {
  cached ??= (async () => {
    if (process.env.INBOXKIT_NO_DOCKER === '1') return false;
    const socket = ['/var/run/docker.sock', `${process.env.HOME ?? ''}/.docker/run/docker.sock`].some((p) =>
      existsSync(p),
    );
    if (process.env.DOCKER_HOST === undefined && !socket) return false;
    try {
      const { getContainerRuntimeClient } = await import('testcontainers');
      await Promise.race([
        getContainerRuntimeClient(),
        new Promise((_, reject) => setTimeout(() => reject(new Error('docker probe timed out')), 10_000)),
      ]);
      return true;
    } catch {
      return false;
    }
  })();
  return cached;
}
