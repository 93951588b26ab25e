#!/usr/bin/env node
// Waits until a Kafka cluster is really usable, not merely listening:
//   1. a metadata request succeeds,
//   2. a (throwaway) topic can be created through the controller and has a partition leader,
//   3. the group coordinator answers for a (throwaway) group: FindCoordinator stops saying
//      COORDINATOR_NOT_AVAILABLE and DescribeGroups stops saying COORDINATOR_LOAD_IN_PROGRESS.
//      On a fresh broker the first FindCoordinator creates __consumer_offsets, which takes a
//      moment; consumers that start before that see "The coordinator is not available".
//
// CLI (Node >= 22, kafkajs from the repository's node_modules):
//   node scripts/kafka-wait.mjs [--brokers host:port[,host:port]] [--timeout SECONDS]
//                               [--pid PID] [--cluster-id ID] [--verbose]
// Brokers default to $KAFKA_BROKERS, else 127.0.0.1:9092; the timeout to 60 s. With --pid the
// wait gives up as soon as that process is gone; with --cluster-id only a broker of that cluster
// counts (not another one that happens to hold the port). Exit code 0 when usable, 1 otherwise.
//
// Library: test/support/kafka-broker.ts imports waitForKafka from here (types in
// kafka-wait.d.mts).
import { readFileSync, realpathSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Kafka, logLevel } from 'kafkajs';

export const PROBE_TOPIC = '__inboxkit_wait_probe';
export const PROBE_GROUP = '__inboxkit_wait_probe';

const DEFAULT_TIMEOUT_MS = 60_000;
const RETRY_DELAY_MS = 200;

/**
 * @param {string[]} brokers
 * @param {{ timeoutMs?: number; isAlive?: () => boolean; clientId?: string; clusterId?: string }} [options]
 *   clusterId: only a broker of that cluster counts (not whatever else listens on the port).
 * @returns {Promise<{ elapsedMs: number; metadataMs: number; topicMs: number; coordinatorMs: number; attempts: number; clusterId: string }>}
 */
export async function waitForKafka(brokers, options = {}) {
  if (!Array.isArray(brokers) || brokers.length === 0) {
    throw new Error('waitForKafka: no brokers given');
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const isAlive = options.isAlive ?? (() => true);
  const started = Date.now();
  const deadline = started + timeoutMs;
  const marks = { metadataMs: -1, topicMs: -1, coordinatorMs: -1 };
  let stage = 'connect';
  let lastError = 'no attempt made';
  let attempts = 0;
  let clusterId = '';

  const kafka = new Kafka({
    clientId: options.clientId ?? 'inboxkit-kafka-wait',
    brokers,
    logLevel: logLevel.NOTHING,
    connectionTimeout: 1_000,
    requestTimeout: 5_000,
    retry: { retries: 0 },
  });

  while (true) {
    if (!isAlive()) {
      throw new Error(
        `Kafka at ${brokers.join(',')}: the broker process exited while waiting (at stage: ${stage}; last error: ${lastError})`,
      );
    }
    const remaining = deadline - Date.now();
    if (remaining <= 0) break;
    attempts += 1;
    const admin = kafka.admin({ retry: { retries: 0 } });
    try {
      await withTimeout(
        (async () => {
          stage = 'connect';
          await admin.connect();
          stage = 'metadata';
          const cluster = await admin.describeCluster();
          if (options.clusterId !== undefined && cluster.clusterId !== options.clusterId) {
            throw new Error(`the broker answering belongs to cluster ${cluster.clusterId}, not ${options.clusterId}`);
          }
          clusterId = cluster.clusterId;
          if (marks.metadataMs < 0) marks.metadataMs = Date.now() - started;
          stage = 'create probe topic';
          await admin.createTopics({ topics: [{ topic: PROBE_TOPIC, numPartitions: 1 }], waitForLeaders: false });
          const { topics } = await admin.fetchTopicMetadata({ topics: [PROBE_TOPIC] });
          const partition = topics[0]?.partitions[0];
          if (!partition || partition.leader < 0 || partition.partitionErrorCode !== 0) {
            throw new Error(`probe topic ${PROBE_TOPIC} has no partition leader yet`);
          }
          if (marks.topicMs < 0) marks.topicMs = Date.now() - started;
          stage = 'group coordinator';
          // FindCoordinator, then DescribeGroups on the coordinator; kafkajs throws on any group
          // error (COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR, ...).
          // The probe group never gets members: it stays "Dead" and costs nothing.
          await admin.describeGroups([PROBE_GROUP]);
          marks.coordinatorMs = Date.now() - started;
        })(),
        remaining,
      );
      return { elapsedMs: Date.now() - started, ...marks, attempts, clusterId };
    } catch (error) {
      // An attempt cut short by the deadline says less than the error before it.
      if (!(error instanceof AttemptTimeout) || attempts === 1) {
        lastError = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      }
    } finally {
      await admin.disconnect().catch(() => {});
    }
    await sleep(Math.min(RETRY_DELAY_MS, Math.max(0, deadline - Date.now())));
  }
  throw new Error(
    `Kafka at ${brokers.join(',')} not usable after ${timeoutMs / 1000} s (stuck at: ${stage}; last error: ${lastError})`,
  );
}

class AttemptTimeout extends Error {
  /** @override */
  name = 'AttemptTimeout';
}

/** @template T @param {Promise<T>} promise @param {number} ms @returns {Promise<T>} */
function withTimeout(promise, ms) {
  /** @type {NodeJS.Timeout | undefined} */
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new AttemptTimeout(`attempt timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function isMain() {
  if (!process.argv[1]) return false;
  try {
    return realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

async function main() {
  const { values, positionals } = parseArgs({
    options: {
      brokers: { type: 'string' },
      timeout: { type: 'string' },
      pid: { type: 'string' },
      'cluster-id': { type: 'string' },
      verbose: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    allowPositionals: true,
  });
  if (values.help) {
    process.stderr.write(
      'usage: node scripts/kafka-wait.mjs [--brokers h:p[,h:p]] [--timeout SECONDS] [--pid PID] [--cluster-id ID] [--verbose]\n',
    );
    return 0;
  }
  const brokerList = values.brokers ?? positionals[0] ?? process.env.KAFKA_BROKERS ?? '127.0.0.1:9092';
  const brokers = brokerList
    .split(',')
    .map((b) => b.trim())
    .filter(Boolean);
  const timeoutSec = values.timeout === undefined ? DEFAULT_TIMEOUT_MS / 1000 : Number(values.timeout);
  if (!Number.isFinite(timeoutSec) || timeoutSec <= 0) {
    process.stderr.write(`inboxkit: --timeout must be a positive number of seconds, got '${values.timeout}'\n`);
    return 1;
  }
  const pid = values.pid === undefined ? undefined : Number(values.pid);
  const isAlive = () => {
    if (pid === undefined) return true;
    try {
      process.kill(pid, 0);
    } catch (error) {
      return /** @type {NodeJS.ErrnoException} */ (error).code === 'EPERM';
    }
    try {
      // An exited broker may linger as a zombie until its (re-parented) parent reaps it.
      return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0] !== 'Z';
    } catch {
      return true; // no /proc (macOS): kill -0 is all we have
    }
  };
  try {
    const result = await waitForKafka(brokers, {
      timeoutMs: timeoutSec * 1000,
      isAlive,
      ...(values['cluster-id'] ? { clusterId: values['cluster-id'] } : {}),
    });
    if (values.verbose) {
      process.stderr.write(
        `inboxkit: Kafka at ${brokers.join(',')} usable after ${result.elapsedMs} ms ` +
          `(metadata ${result.metadataMs} ms, probe topic ${result.topicMs} ms, group coordinator ${result.coordinatorMs} ms, ${result.attempts} attempts)\n`,
      );
    }
    return 0;
  } catch (error) {
    process.stderr.write(`inboxkit: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
}

if (isMain()) {
  // kafkajs 2.2.4 calls setTimeout with a negative delay (RequestQueue.scheduleCheckPendingRequests),
  // which Node >= 23 reports as a TimeoutNegativeWarning on stderr. Harmless; hide only that one.
  process.removeAllListeners('warning');
  process.on('warning', (warning) => {
    if (warning.name !== 'TimeoutNegativeWarning') process.stderr.write(`${warning.name}: ${warning.message}\n`);
  });
  process.exitCode = await main();
  // kafkajs may leave sockets or timers behind; the answer is known, so leave now.
  process.exit();
}
