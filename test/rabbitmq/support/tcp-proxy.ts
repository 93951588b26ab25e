import { createServer, type Server, Socket } from 'node:net';

/**
 * A TCP proxy in front of the broker that can go silent: while frozen, nothing the broker
 * sends reaches the client (what the client sends still goes through), as when a broker
 * stops answering without closing the socket. Bytes held back are delivered on `thaw`.
 */
export interface TcpProxy {
  /** The broker URL through the proxy. */
  readonly url: string;
  freeze(): void;
  thaw(): void;
  close(): Promise<void>;
}

/** `port`: listen there (a test may point a client at it before the proxy exists); a free one when omitted. */
export async function startTcpProxy(brokerUrl: string, options: { port?: number } = {}): Promise<TcpProxy> {
  const target = new URL(brokerUrl);
  const targetPort = Number(target.port || 5672);
  let frozen = false;
  const held: Array<{ socket: Socket; chunk: Buffer }> = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = new Socket();
    sockets.add(client);
    sockets.add(upstream);
    upstream.connect(targetPort, target.hostname);
    client.on('data', (chunk: Buffer) => upstream.write(chunk));
    upstream.on('data', (chunk: Buffer) => {
      if (frozen) held.push({ socket: client, chunk });
      else client.write(chunk);
    });
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', end);
    upstream.on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', () => resolve()));
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('proxy has no port');
  const url = new URL(brokerUrl);
  url.hostname = '127.0.0.1';
  url.port = String(address.port);
  return {
    url: url.toString(),
    freeze() {
      frozen = true;
    },
    thaw() {
      frozen = false;
      for (const { socket, chunk } of held.splice(0)) if (!socket.destroyed) socket.write(chunk);
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
