// What the fragments of examples/rabbitmq-rpc/README.md take from examples/rabbitmq-rpc/main.ts.
interface RpcDB {
  rabbitmq_rpc_reservations: { reservation_id: string; request_id: string; sku: string; quantity: number };
}
interface ReserveStock {
  readonly sku: string;
  readonly quantity: number;
}
// biome-ignore lint/correctness/noUnusedVariables: the blocks this context is prepended to use it
interface Reservation {
  readonly reservationId: string;
  readonly sku: string;
  readonly quantity: number;
  readonly reservedAt: string;
}
declare const db: import('kysely').Kysely<RpcDB>;
declare const amqpUrl: string;
declare const queue: string;
declare const channel: import('amqplib').ConfirmChannel;
declare const request: ReserveStock;
declare const requestId: string;
declare const correlationId: string;
declare const replyQueue: string;

export {};
