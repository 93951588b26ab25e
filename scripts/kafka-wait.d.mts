// Types for scripts/kafka-wait.mjs (imported by test/support/kafka-broker.ts).

export declare const PROBE_TOPIC: string;
export declare const PROBE_GROUP: string;

export interface WaitForKafkaOptions {
  /** Give up after this many milliseconds (default 60 000). */
  timeoutMs?: number;
  /** Checked before every attempt; returning false fails the wait at once (broker process died). */
  isAlive?: () => boolean;
  clientId?: string;
  /** Only a broker of this cluster counts, not another one that happens to hold the port. */
  clusterId?: string;
}

export interface WaitForKafkaResult {
  elapsedMs: number;
  /** Milliseconds from the start until the first metadata answer, probe topic leader, coordinator. */
  metadataMs: number;
  topicMs: number;
  coordinatorMs: number;
  attempts: number;
  clusterId: string;
}

export declare function waitForKafka(brokers: string[], options?: WaitForKafkaOptions): Promise<WaitForKafkaResult>;
