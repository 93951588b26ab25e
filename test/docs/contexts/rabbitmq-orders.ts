// What the fragments of examples/rabbitmq-orders/README.md take from examples/rabbitmq-orders/main.ts.
interface OrdersDB {
  rabbitmq_orders: {
    order_id: string;
    customer: string;
    sku: string;
    quantity: number;
    created_at: import('kysely').Generated<Date>;
  };
}
interface PlaceOrder {
  readonly customer: string;
  readonly sku: string;
  readonly quantity: number;
}
declare const db: import('kysely').Kysely<OrdersDB>;
declare const amqpUrl: string;
declare const queue: string;
declare const warehouse: { reserve(orderId: string, order: PlaceOrder): void };
declare const channel: import('amqplib').ConfirmChannel;
declare const orderId: string;
declare const order: PlaceOrder;

export {};
