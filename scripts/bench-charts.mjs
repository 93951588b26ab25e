#!/usr/bin/env node
// The benchmarks as charts: reads bench/results/*.json (written by bench/*.ts) and writes one SVG
// bar chart per benchmark and mode into docs/benchmarks/, inboxkit beside its hand-written twin
// (and beside the plain client or the peer library where the result has one), with the ratio,
// the target where the project set one, and the machine, date and load of the run. Plain Node,
// no dependency. The output depends on the result files only: the same results give
// byte-identical SVGs, so a results change that was not redrawn shows in
// test/docs/bench-charts.test.ts.
//
// CLI:
//   node scripts/bench-charts.mjs                 redraw docs/benchmarks/*.svg from bench/results
//   node scripts/bench-charts.mjs --check         exit 1 if docs/benchmarks/*.svg are not current
//   node scripts/bench-charts.mjs --results DIR --out DIR
// A result file that is not valid JSON, or lacks a figure a chart needs, fails the whole run
// with a message naming the file and what is missing; nothing is written then. A chart whose
// result file is absent is left out (and its SVG removed from the output folder).
//
// Library: renderCharts(resultsDir) and writeCharts(outDir, charts) (types in bench-charts.d.mts).
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** A result file that cannot be drawn: not JSON, or without a figure a chart needs. */
export class ResultError extends Error {
  constructor(file, message) {
    super(file ? `bench/results/${file}: ${message}` : message);
    this.name = 'ResultError';
    this.file = file;
  }
}

// ---------------------------------------------------------------------------------------------
// Reading result files

/** A parsed result file with helpers that throw a ResultError naming the file and the field. */
class Result {
  constructor(file, data) {
    if (data === null || typeof data !== 'object' || Array.isArray(data)) {
      throw new ResultError(file, 'is not a JSON object');
    }
    this.file = file;
    this.data = data;
  }

  fail(message) {
    throw new ResultError(this.file, message);
  }

  /** The value at a dotted path (array indexes as numbers) or a list of keys, or undefined. */
  at(path) {
    let value = this.data;
    for (const key of Array.isArray(path) ? path : path.split('.')) {
      if (value === null || typeof value !== 'object') return undefined;
      value = value[key];
    }
    return value;
  }

  number(path) {
    const value = this.at(path);
    if (typeof value !== 'number' || !Number.isFinite(value)) this.fail(`${[path].flat().join('.')} is not a number`);
    return value;
  }

  array(path) {
    const value = this.at(path);
    if (!Array.isArray(value)) this.fail(`${[path].flat().join('.')} is not an array`);
    return value;
  }

  /** The entry of `figures` named `name` (at `concurrency` when given). */
  figure(name, concurrency, list = 'figures') {
    const found = this.array(list).find(
      (f) => f && f.name === name && (concurrency === undefined || f.concurrency === concurrency),
    );
    if (!found)
      this.fail(`${list} has no ${JSON.stringify(name)}${concurrency ? ` at concurrency ${concurrency}` : ''}`);
    if (typeof found.messagesPerSec !== 'number' || !Number.isFinite(found.messagesPerSec)) {
      this.fail(`${list}: ${JSON.stringify(name)} has no messagesPerSec`);
    }
    return found;
  }

  rate(name, concurrency, list) {
    return this.figure(name, concurrency, list).messagesPerSec;
  }

  /** The entry of `targets` whose text starts with `prefix` (null when `mayBeUnmeasured` and its value is null). */
  target(prefix, mayBeUnmeasured = false) {
    const found = this.array('targets').find((t) => t && typeof t.target === 'string' && t.target.startsWith(prefix));
    if (!found) this.fail(`targets has no target starting ${JSON.stringify(prefix)}`);
    if (mayBeUnmeasured && found.value === null) return null;
    if (typeof found.value !== 'number' || typeof found.limit !== 'number') {
      this.fail(`target ${JSON.stringify(found.target)} has no value or limit`);
    }
    return found;
  }

  /** The run's machine, date and load as one line. */
  describe() {
    const machine = this.at('machine');
    if (!machine || typeof machine.date !== 'string') this.fail('machine.date is missing');
    const date = `${machine.date.slice(0, 10)} ${machine.date.slice(11, 16)} UTC`;
    const cpu = machine.cpus && machine.cpuModel ? `${machine.cpus} cores (${machine.cpuModel})` : '';
    const load = this.load();
    return [date, cpu, machine.node ? `Node ${machine.node}` : '', load ? `load average ${load}` : '']
      .filter(Boolean)
      .join(' · ');
  }

  /** The load average the bench recorded, in whichever shape it records it ("9.5 → 6.1"). */
  load() {
    const one = (v) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(1) : null);
    const span = (a, b) => (a && b ? (a === b ? a : `${a} → ${b}`) : a || b || null);
    const first = (v) => (Array.isArray(v) ? one(v[0]) : one(v));
    const last = (v) => (Array.isArray(v) ? one(v[v.length - 1]) : one(v));
    const fromUptime = (s) => (typeof s === 'string' ? one(Number(/load average: ([\d.]+)/.exec(s)?.[1])) : null);
    const d = this.data;
    const s = d.settings ?? {};
    if (Array.isArray(s.loadAverage)) return span(first(s.loadAverage), last(s.loadAverage));
    if (s.loadAverageAtStart || s.loadAverageAtEnd) return span(first(s.loadAverageAtStart), first(s.loadAverageAtEnd));
    if (s.loadAverageBefore || s.loadAverageAfter) return span(first(s.loadAverageBefore), first(s.loadAverageAfter));
    if (Array.isArray(d.loadAverage)) return span(first(d.loadAverage), last(d.loadAverage));
    if (Array.isArray(d.load)) return span(first(d.load), last(d.load));
    if (d.loadBefore !== undefined || d.loadAfter !== undefined) return span(one(d.loadBefore), one(d.loadAfter));
    if (d.uptimeBefore || d.uptimeAfter) return span(fromUptime(d.uptimeBefore), fromUptime(d.uptimeAfter));
    if (d.loadAverage1m !== undefined) return one(d.loadAverage1m);
    if (d.uptime) return fromUptime(d.uptime);
    if (Array.isArray(d.runs) && d.runs.every((run) => Array.isArray(run?.loadAverage))) {
      return d.runs.map((run) => span(first(run.loadAverage), last(run.loadAverage))).join(', ');
    }
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// Notes printed under a group's name

const ratio = (value) => `${value.toFixed(2)}x`;
/** 20000 as "20,000" (not toLocaleString: the same output whatever ICU this Node has). */
const thousands = (value) => {
  const [whole, fraction] = String(value).split('.');
  return whole.replace(/\B(?=(\d{3})+(?!\d))/g, ',') + (fraction ? `.${fraction}` : '');
};

/** "0.84x of the twin". */
function ratioNote(value, of) {
  return { text: `${ratio(value)} ${of}` };
}

/** A target from a result file: "target ≥ 1.00x: missed", coloured by the outcome. */
function targetNote(target, what = ratio) {
  const met = target.higherIsBetter === false ? target.value <= target.limit : target.value >= target.limit;
  return {
    text: `(target ${target.higherIsBetter === false ? '≤' : '≥'} ${what(target.limit)}: ${met ? 'met' : 'missed'})`,
    met,
    attached: true,
  };
}

/** A target the result file does not hold (set in the docs named beside the chart). */
function fixedTarget(value, limit, higherIsBetter, what = ratio) {
  return targetNote({ value, limit, higherIsBetter }, what);
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

// ---------------------------------------------------------------------------------------------
// The charts: one entry per result file, each giving the charts drawn from it

const RATIO_PER_ROUND =
  'Ratios are medians of the per-round ratios, so they can disagree with the ratio of the median rates.';

const SOURCES = [
  {
    file: 'core.json',
    charts(r) {
      const mixes = ['30% redeliveries', 'no redeliveries'];
      const process = {
        file: 'core-process.svg',
        title: 'Core: inbox.process beside its hand-written twin',
        unit: 'msg/s',
        groups: [],
        footnote: RATIO_PER_ROUND,
      };
      for (const mix of mixes) {
        for (const c of [1, 8]) {
          const inbox = r.figure(`inbox.process, ${mix}`, c);
          const notes = [ratioNote(inbox.ratioToTwin ?? Number.NaN, 'of the twin')];
          if (mix === mixes[0]) notes.push(targetNote(r.target(`c=${c}: inbox.process at least as fast`)));
          process.groups.push({
            label: `${mix}, c=${c}`,
            notes,
            bars: [
              { label: 'hand-written twin', kind: 'twin', value: r.rate(`hand-written twin, ${mix}`, c) },
              { label: 'inbox.process', kind: 'inboxkit', value: inbox.messagesPerSec },
            ],
          });
        }
      }
      const batch = {
        file: 'core-batch.svg',
        title: 'Core: processBatch and processBulk beside their hand-written twins',
        unit: 'msg/s',
        groups: [],
        footnote: RATIO_PER_ROUND,
      };
      for (const c of [1, 8]) {
        for (const [method, twin, size] of [
          ['processBatch', 'a statement per message', 100],
          ['processBatch', 'a statement per message', 500],
          ['processBulk', 'one bulk insert', 100],
          ['processBulk', 'one bulk insert', 500],
        ]) {
          const handler = method === 'processBatch' ? 'per-message handler' : 'per-batch handler';
          const inbox = r.figure(`inbox.${method} ${size} (${handler})`, c);
          batch.groups.push({
            label: `${method}, batches of ${size}, c=${c}`,
            notes: [ratioNote(inbox.ratioToTwin ?? Number.NaN, 'of the twin')],
            bars: [
              { label: `twin: ${twin}`, kind: 'twin', value: r.rate(`hand-written batch ${size}, ${twin}`, c) },
              { label: `inbox.${method}`, kind: 'inboxkit', value: inbox.messagesPerSec },
            ],
          });
        }
      }
      const pool = {
        file: 'core-pool.svg',
        title: 'Core: pool size for 8 concurrent deliveries (30% redeliveries)',
        unit: 'msg/s',
        groups: [],
        footnote: RATIO_PER_ROUND,
      };
      for (const size of r.array('settings.pools')) {
        const prefix = size === 8 ? '' : `pool ${size}: `;
        const inbox = r.figure(`${prefix}inbox.process, 30% redeliveries`, 8);
        pool.groups.push({
          label: `pool of ${size}`,
          notes: [ratioNote(inbox.ratioToTwin ?? Number.NaN, 'of the twin')],
          bars: [
            {
              label: 'hand-written twin',
              kind: 'twin',
              value: r.rate(`${prefix}hand-written twin, 30% redeliveries`, 8),
            },
            { label: 'inbox.process', kind: 'inboxkit', value: inbox.messagesPerSec },
          ],
        });
      }
      return [process, batch, pool];
    },
  },
  {
    file: 'core-profile-claim-function.json',
    charts(r) {
      const cases = [
        ['node-postgres, awaiting each', 'twin: node-postgres, each awaited', 'twin'],
        ["inbox.process's SQL by hand on pg, the claim function", "the inbox's SQL by hand on pg", 'plain'],
        [
          "inbox.process's SQL in a Kysely transaction, the claim function",
          'the same in a Kysely transaction',
          'plain',
        ],
        ['inbox.process', 'inbox.process', 'inboxkit'],
      ];
      return [
        {
          file: 'core-claim-function.svg',
          legend: { plain: "the inbox's SQL by hand (with dedup)" },
          title: 'Core: where inbox.process stands against its own SQL (30% redeliveries)',
          unit: 'msg/s',
          footnote: RATIO_PER_ROUND,
          groups: [1, 8].map((c) => {
            const inbox = r.figure(`inbox.process @c=${c}`, undefined, 'drivers');
            return {
              label: `c=${c}`,
              notes: [ratioNote(inbox.ratioToNodePostgres, 'of the twin')],
              bars: cases.map(([name, label, kind]) => ({
                label,
                kind,
                value: r.rate(`${name} @c=${c}`, undefined, 'drivers'),
              })),
            };
          }),
        },
      ];
    },
  },
  {
    file: 'rabbitmq.json',
    charts(r) {
      const perMessage = {
        file: 'rabbitmq.svg',
        title: 'RabbitMQ: subscribe, a transaction per message, beside its twin',
        unit: 'msg/s',
        groups: [1, 100].map((prefetch) => {
          const target = r.target(
            `inboxkit subscribe at least 0.9x of its hand-written twin (hand-written dedup) at prefetch ${prefetch}`,
          );
          return {
            label: `prefetch ${prefetch}`,
            notes: [ratioNote(target.value, 'of the twin'), targetNote(target)],
            bars: [
              {
                label: 'plain amqplib, no dedup',
                kind: 'plain',
                value: r.rate(`plain amqplib (prefetch ${prefetch})`),
              },
              { label: 'hand-written twin', kind: 'twin', value: r.rate(`hand-written dedup (prefetch ${prefetch})`) },
              {
                label: 'inboxkit subscribe',
                kind: 'inboxkit',
                value: r.rate(`inboxkit subscribe (prefetch ${prefetch})`),
              },
            ],
          };
        }),
      };
      const target = r.target('inboxkit subscribe, batched at least 0.9x of its hand-written twin');
      const batched = {
        file: 'rabbitmq-batched.svg',
        title: 'RabbitMQ: subscribe with maxBatchSize 50 beside its batched twin',
        unit: 'msg/s',
        groups: [
          {
            label: 'batches of up to 50, prefetch 100',
            notes: [ratioNote(target.value, 'of the batched twin'), targetNote(target)],
            bars: [
              { label: 'plain amqplib, no dedup', kind: 'plain', value: r.rate('plain amqplib (prefetch 100)') },
              {
                label: 'hand-written batched twin',
                kind: 'twin',
                value: r.rate('hand-written dedup, batched (prefetch 100)'),
              },
              {
                label: 'subscribe, maxBatchSize 50',
                kind: 'inboxkit',
                value: r.rate('inboxkit subscribe, batched (prefetch 100)'),
              },
              {
                label: 'subscribe, bulkHandler',
                kind: 'variant',
                value: r.rate('inboxkit subscribe, bulk (prefetch 100)'),
              },
            ],
          },
        ],
      };
      return [perMessage, batched];
    },
  },
  {
    file: 'rabbitmq-pool-sweep.json',
    charts(r) {
      // bench/rabbitmq.ts writes one run (poolSweep); runs holds several, put together by hand.
      const runs = r.at('runs') ?? [{ poolSweep: r.array('poolSweep') }];
      if (!Array.isArray(runs) || runs.length === 0) r.fail('runs is empty');
      const sweep = (i) => (r.at('runs') ? r.array(`runs.${i}.poolSweep`) : r.array('poolSweep'));
      const sizes = sweep(0).map((p) => p.poolSize);
      return [
        {
          file: 'rabbitmq-pool.svg',
          title: `RabbitMQ: pg pool size at prefetch ${r.number('settings.sweepPrefetch')}, ${runs.length} runs`,
          unit: 'msg/s',
          footnote: `Ratios of the rates, per run (${runs.map((_, i) => `run ${i + 1}`).join(' / ')}).`,
          groups: sizes.map((size) => {
            const rows = runs.map((_, i) => {
              const row = sweep(i).find((p) => p.poolSize === size);
              if (!row || typeof row.twin !== 'number' || typeof row.inboxkit !== 'number') {
                r.fail(`run ${i + 1}'s poolSweep has no pool of ${size}`);
              }
              return row;
            });
            return {
              label: `pool of ${size}`,
              notes: [{ text: `${rows.map((row) => ratio(row.inboxkit / row.twin)).join(' / ')} of the twin` }],
              bars: rows.flatMap((row, i) => [
                { label: `hand-written twin, run ${i + 1}`, kind: 'twin', value: row.twin },
                { label: `inboxkit subscribe, run ${i + 1}`, kind: 'inboxkit', value: row.inboxkit },
              ]),
            };
          }),
        },
      ];
    },
  },
  ...['kafka.json', 'kafka-each-batch-100k.json'].map((file) => ({
    file,
    charts(r) {
      const records = thousands(r.number('settings.messages'));
      const charts = [];
      const eachMessage = r.target('inboxkit eachMessage at least 0.9x', true);
      if (eachMessage !== null) {
        charts.push({
          file: 'kafka-each-message.svg',
          title: `Kafka: inboxkit eachMessage beside its twin (${records} records)`,
          unit: 'msg/s',
          footnote: RATIO_PER_ROUND,
          groups: [
            {
              label: 'eachMessage, a transaction per record',
              notes: [ratioNote(eachMessage.value, 'of the twin'), targetNote(eachMessage)],
              bars: [
                {
                  label: 'plain kafkajs, no dedup',
                  kind: 'plain',
                  value: r.rate('plain kafkajs eachMessage (own transaction, no dedup)'),
                },
                {
                  label: 'hand-written twin',
                  kind: 'twin',
                  value: r.rate('hand-written eachMessage with dedup (claim + insert per record)'),
                },
                {
                  label: 'inbox.process, no adapter',
                  kind: 'variant',
                  value: r.rate('kafkajs eachMessage + inbox.process (no adapter)'),
                },
                { label: 'inboxkit eachMessage', kind: 'inboxkit', value: r.rate('inboxkit eachMessage') },
              ],
            },
          ],
        });
      }
      const eachBatch = r.target('inboxkit eachBatch at least 0.9x', true);
      if (eachBatch === null) return charts;
      charts.push({
        file: file === 'kafka.json' ? 'kafka-each-batch.svg' : 'kafka-each-batch-100k.svg',
        title: `Kafka: inboxkit eachBatch beside its twin (${records} records)`,
        unit: 'msg/s',
        footnote: RATIO_PER_ROUND,
        groups: [
          {
            label: 'eachBatch, one bulk insert per batch',
            notes: [ratioNote(eachBatch.value, 'of the twin'), targetNote(eachBatch)],
            bars: [
              {
                label: 'plain kafkajs, no dedup',
                kind: 'plain',
                value: r.rate('plain kafkajs eachBatch (one bulk insert per batch, no dedup)'),
              },
              {
                label: 'hand-written twin',
                kind: 'twin',
                value: r.rate('hand-written eachBatch with dedup (claim + bulk insert per batch)'),
              },
              {
                label: 'processBulk, no adapter',
                kind: 'variant',
                value: r.rate('kafkajs eachBatch + inbox.processBulk (no adapter)'),
              },
              {
                label: 'inboxkit eachBatch',
                kind: 'inboxkit',
                value: r.rate('inboxkit eachBatch (per-batch bulk handler)'),
              },
              {
                label: 'eachBatch, uncapped',
                kind: 'variant',
                value: r.rate('inboxkit eachBatch, uncapped (maxBatchSize above any fetched batch)'),
              },
            ],
          },
        ],
      });
      return charts;
    },
  })),
  {
    file: 'kafka-offsets-each-batch-100k.json',
    charts(r) {
      const target = r.target('inboxkit eachBatch, dedup offsets');
      return [
        {
          file: 'kafka-offsets-each-batch.svg',
          title: "Kafka: eachBatch with dedup: 'offsets' beside plain kafkajs",
          unit: 'msg/s',
          footnote: `${thousands(r.number('settings.messages'))} records. ${RATIO_PER_ROUND}`,
          groups: [
            {
              label: 'eachBatch, one bulk insert per fetched batch',
              notes: [ratioNote(target.value, 'of plain kafkajs'), targetNote(target)],
              bars: [
                {
                  label: 'plain kafkajs, no dedup',
                  kind: 'plain',
                  value: r.rate('plain kafkajs eachBatch (one bulk insert per batch, no dedup)'),
                },
                {
                  label: "'offsets', uncapped",
                  kind: 'inboxkit',
                  value: r.rate('inboxkit eachBatch, dedup offsets (one bulk insert per fetched batch)'),
                },
                {
                  label: "'offsets', maxBatchSize 1000",
                  kind: 'variant',
                  value: r.rate('inboxkit eachBatch, dedup offsets, maxBatchSize 1000 (default)'),
                },
                {
                  label: "'offsets+ids', uncapped",
                  kind: 'variant',
                  value: r.rate('inboxkit eachBatch, dedup offsets+ids (one bulk insert per fetched batch)'),
                },
              ],
            },
          ],
        },
      ];
    },
  },
  {
    file: 'kafka-offsets-each-message.json',
    charts(r) {
      const target = r.target('inboxkit eachMessage, dedup offsets');
      return [
        {
          file: 'kafka-offsets-each-message.svg',
          title: "Kafka: eachMessage with dedup: 'offsets' beside plain kafkajs",
          unit: 'msg/s',
          footnote: `${thousands(r.number('settings.messages'))} records. ${RATIO_PER_ROUND}`,
          groups: [
            {
              label: 'eachMessage, a transaction per record',
              notes: [ratioNote(target.value, 'of plain kafkajs'), targetNote(target)],
              bars: [
                {
                  label: 'plain kafkajs, no dedup',
                  kind: 'plain',
                  value: r.rate('plain kafkajs eachMessage (own transaction, no dedup)'),
                },
                {
                  label: "inboxkit, 'offsets'",
                  kind: 'inboxkit',
                  value: r.rate('inboxkit eachMessage, dedup offsets'),
                },
              ],
            },
          ],
        },
      ];
    },
  },
  {
    file: 'http.json',
    charts(r) {
      const routes = [
        ['plain insert', 'no header, autocommit insert', 'plain'],
        ['insert in a trx', 'no header, insert in a transaction', 'plain'],
        ['inbox.process, no http layer', 'inbox.process, no HTTP layer', 'twin'],
        ['new keys', 'Idempotency-Key, new keys', 'inboxkit'],
        ['replays', 'Idempotency-Key, replays', 'variant'],
      ];
      const frameworks = [
        ['fastify', 'Fastify'],
        ['express', 'Express'],
      ];
      const throughput = {
        file: 'http.svg',
        legend: { twin: "core's inbox.process, no HTTP layer", plain: 'route without the header' },
        title: 'HTTP: Idempotency-Key routes beside plain routes',
        unit: 'req/s',
        footnote: 'Medians of the rounds; ratios of the medians.',
        groups: frameworks.map(([key, name]) => {
          const plain = r.target(`${key}: plain insert / new keys`);
          const replays = r.target(`${key}: replays / new keys`);
          return {
            label: name,
            notes: [
              { text: `plain route ${ratio(plain.value)} as fast as new keys` },
              targetNote(plain),
              { text: `replays ${ratio(replays.value)} as fast as new keys` },
              targetNote(replays),
            ],
            bars: routes.map(([route, label, kind]) => ({ label, kind, value: r.rate(`${key}: ${route}`) })),
          };
        }),
      };
      /** The round whose rate is the median's: its latencies. */
      const medianRound = (name) => {
        const rounds = r.array(['rounds', name]);
        const rate = r.rate(name);
        const round = rounds.find((x) => x && x.reqPerSec === rate);
        if (!round || typeof round.p50Ms !== 'number' || typeof round.p99Ms !== 'number') {
          r.fail(`rounds.${name} has no round at the median rate ${rate} with p50Ms and p99Ms`);
        }
        return round;
      };
      const latency = {
        file: 'http-latency.svg',
        legend: { twin: "core's inbox.process, no HTTP layer", plain: 'route without the header' },
        title: 'HTTP: latency, Idempotency-Key routes beside plain routes',
        unit: 'ms',
        footnote: `Of the median round; ${r.number('settings.connections')} connections, as fast as they go.`,
        groups: frameworks.flatMap(([key, name]) =>
          ['p50Ms', 'p99Ms'].map((p) => ({
            label: `${name}, ${p.slice(0, 3)}`,
            notes: [],
            bars: routes.map(([route, label, kind]) => ({ label, kind, value: medianRound(`${key}: ${route}`)[p] })),
          })),
        ),
      };
      return [throughput, latency];
    },
  },
  {
    file: 'outbox.json',
    charts(r) {
      // The targets are docs/outbox.md's ("Benchmarks"); the result file does not hold them.
      const brokers = [
        ['kafka', 'Kafka', 'plain producer', 'kafka', 'kafkaRelayOverPlain', 'kafkaRelayOverPtx'],
        ['rabbitmq', 'RabbitMQ', 'plain confirm channel', 'rabbit', 'rabbitRelayOverPlain', 'rabbitRelayOverPtx'],
      ];
      const relay = {
        file: 'outbox-relay.svg',
        title: 'Outbox: relay throughput beside the plain client and pg-transactional-outbox',
        unit: 'msg/s',
        footnote: 'Medians of the rounds; ratios of the medians.',
        groups: brokers.map(([key, name, plainName, , overPlain, overPeer]) => {
          const a = r.number(`relay.ratios.${overPlain}`);
          const b = r.number(`relay.ratios.${overPeer}`);
          return {
            label: name,
            notes: [
              ratioNote(a, 'of the plain client'),
              fixedTarget(a, 0.5, true),
              ratioNote(b, 'pg-transactional-outbox'),
              fixedTarget(b, 10, true, (v) => `${v}x`),
            ],
            bars: [
              { label: `${plainName}, no outbox`, kind: 'plain', value: r.number(`relay.rows.${key} ${plainName}`) },
              { label: 'inboxkit relay', kind: 'inboxkit', value: r.number(`relay.rows.${key} inboxkit relay`) },
              { label: 'two inboxkit relays', kind: 'variant', value: r.number(`relay.rows.${key} inboxkit 2 relays`) },
              {
                label: 'pg-transactional-outbox',
                kind: 'peer',
                value: r.number(`relay.rows.${key} pg-transactional-outbox`),
              },
            ],
          };
        }),
      };
      const ms = (v) => `${v} ms`;
      const latency = {
        file: 'outbox-latency.svg',
        legend: { plain: 'plain client, send to acknowledgement' },
        title: `Outbox: commit to published at ${thousands(r.number('latency.rows.kafka.achievedMessagesPerSec'))} msg/s`,
        unit: 'ms',
        footnote: 'The plain client: send to acknowledgement on the same schedule.',
        groups: brokers.flatMap(([key, name]) =>
          [
            ['p50Ms', 'p50', 10],
            ['p99Ms', 'p99', 50],
          ].map(([p, label, limit]) => {
            const relayMs = r.number(`latency.rows.${key}.${p}`);
            return {
              label: `${name}, ${label}`,
              notes: [fixedTarget(relayMs, limit, false, ms)],
              bars: [
                {
                  label: 'plain client',
                  kind: 'plain',
                  value: r.number(`latency.rows.${key} plain client (send to confirmation).${p}`),
                },
                { label: 'inboxkit relay', kind: 'inboxkit', value: relayMs },
              ],
            };
          }),
        ),
      };
      const rows = r.array('enqueue.rows');
      const row = (mode) => {
        const found = rows.find((x) => x && x.mode === mode);
        if (!found || typeof found.c1 !== 'number' || typeof found.c8 !== 'number')
          r.fail(`enqueue.rows has no ${mode}`);
        return found;
      };
      const enqueue = {
        file: 'outbox-enqueue.svg',
        legend: { twin: 'the handler without enqueue' },
        title: 'Outbox: enqueue inside an inbox handler',
        unit: 'msg/s',
        footnote: 'inbox.process of new messages; medians of the rounds, ratios of the medians.',
        groups: [
          ['c1', 'c=1'],
          ['c8', 'c=8'],
        ].map(([c, label]) => ({
          label,
          notes: [
            ratioNote(row('+ enqueue 1')[c] / row('handler')[c], 'with one message'),
            ratioNote(row('+ enqueue 10')[c] / row('handler')[c], 'with ten in one call'),
          ],
          bars: [
            { label: 'handler: one insert', kind: 'twin', value: row('handler')[c] },
            { label: '+ enqueue of one message', kind: 'inboxkit', value: row('+ enqueue 1')[c] },
            { label: '+ one enqueue of ten', kind: 'variant', value: row('+ enqueue 10')[c] },
          ],
        })),
      };
      return [relay, latency, enqueue];
    },
  },
  {
    file: 'telemetry.json',
    charts(r) {
      const target = r.at('target');
      if (!target || typeof target.value !== 'number' || typeof target.limit !== 'number') r.fail('target is missing');
      const percent = (v) => `${(v * 100).toFixed(0)}%`;
      return [
        {
          file: 'telemetry.svg',
          legend: { twin: 'no @opentelemetry/api installed' },
          title: 'OpenTelemetry: what it costs inbox.process',
          unit: 'msg/s',
          footnote:
            'Medians of interleaved rounds; the rate moves by more than the cost between runs (docs/telemetry.md).',
          groups: [
            {
              label: `c=${r.number('concurrency')}, 30% redeliveries`,
              notes: [
                { text: `API, no SDK: ${ratio(r.figure('api, no SDK').ratioToOff ?? Number.NaN)} of no API` },
                fixedTarget(target.value, target.limit, false, (v) => `${percent(v)} slower`),
                { text: `SDK: ${ratio(r.figure('SDK').ratioToOff ?? Number.NaN)}` },
              ],
              bars: [
                { label: 'no @opentelemetry/api', kind: 'twin', value: r.rate('off') },
                { label: 'the API, no SDK (default)', kind: 'inboxkit', value: r.rate('api, no SDK') },
                { label: 'an SDK', kind: 'variant', value: r.rate('SDK') },
              ],
            },
          ],
        },
      ];
    },
  },
  {
    file: 'scaling.json',
    charts(r) {
      const concurrencies = r.array('settings.concurrency');
      const batch = r.number('settings.batch');
      const byMode = (mode, c) => {
        const found = r.array('figures').find((f) => f && f.mode === mode && f.concurrency === c);
        if (!found || typeof found.messagesPerSec !== 'number') r.fail(`figures has no ${mode} at concurrency ${c}`);
        return found.messagesPerSec;
      };
      return [
        {
          file: 'scaling.svg',
          legend: { plain: 'the same bulk insert, no inbox' },
          title: `Scaling: processBulk (batches of ${batch}) beside the same bulk insert with no inbox`,
          unit: 'msg/s',
          footnote: 'Medians of the rounds; ratios of the medians. One Postgres on the same 2 cores.',
          groups: concurrencies.map((c) => ({
            label: `${c} consumer${c === 1 ? '' : 's'}`,
            notes: [ratioNote(byMode('processBulk', c) / byMode('bare bulk insert', c), 'of the bare insert')],
            bars: [
              { label: 'bulk insert, no inbox', kind: 'plain', value: byMode('bare bulk insert', c) },
              { label: 'processBulk', kind: 'inboxkit', value: byMode('processBulk', c) },
              ...(c === 8 ? [{ label: 'inbox.process', kind: 'variant', value: byMode('process', 8) }] : []),
            ],
          })),
        },
      ];
    },
  },
  {
    file: 'retention.json',
    charts(r) {
      const keys = r.number('settings.keys');
      return [
        {
          file: 'retention.svg',
          legend: { twin: 'the same on an empty table' },
          title: `Retention: inbox.process on ${thousands(keys / 1e6)} million keys beside an empty table`,
          unit: 'msg/s',
          footnote: 'Medians of the rounds.',
          groups: [
            ['plain', 'plain table'],
            ['partitioned', 'partitioned by day'],
          ].map(([layout, label]) => {
            const rates = (which) =>
              r.array(`results.${layout}.hotPath.${which}`).map((x, i) => {
                if (!x || typeof x.messagesPerSec !== 'number')
                  r.fail(`results.${layout}.hotPath.${which}.${i} has no messagesPerSec`);
                return x.messagesPerSec;
              });
            const target = r.target(`${layout}: hot path on`);
            return {
              label,
              notes: [ratioNote(target.value, 'of the empty table'), targetNote(target)],
              bars: [
                { label: 'empty table', kind: 'twin', value: median(rates('empty')) },
                {
                  label: `${thousands(keys / 1e6)} million keys`,
                  kind: 'inboxkit',
                  value: median(rates('full')),
                },
              ],
            };
          }),
        },
      ];
    },
  },
];

// ---------------------------------------------------------------------------------------------
// Drawing

const KINDS = {
  inboxkit: { color: '#2f6fdf', legend: 'inboxkit' },
  variant: { color: '#93b7f3', legend: 'inboxkit, other mode or settings' },
  twin: { color: '#57606a', legend: 'hand-written twin (same SQL by hand)' },
  peer: { color: '#d4a017', legend: 'peer library' },
  plain: { color: '#c3cad3', legend: 'plain client or route, no dedup' },
};

const WIDTH = 800;
const PAD = 20;
const FONT = "-apple-system, 'Segoe UI', Helvetica, Arial, sans-serif";
const TEXT = '#1f2328';
const MUTED = '#59636e';
const MET = '#1a7f37';
const MISSED = '#cf222e';
const NBSP = '\u00a0';

const xml = (s) =>
  String(s).replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;');
/** Width of a text at `size` px, estimated (no font metrics here): enough to lay labels out. */
const textWidth = (s, size) => String(s).length * size * 0.6;
const px = (n) => (Math.round(n * 10) / 10).toString();

function formatValue(value, unit) {
  if (unit === 'ms') return `${Number.isInteger(value) || value >= 100 ? Math.round(value) : value.toFixed(1)} ms`;
  if (unit === 'ms-axis') return Number.isInteger(value) ? value.toString() : value.toFixed(1);
  return thousands(Math.round(value));
}

/** A round step for about five ticks up to `max`. */
function tickStep(max) {
  const raw = max / 5;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * magnitude >= raw) return m * magnitude;
  return 10 * magnitude;
}

/** Lines of notes, each line a list of notes that fit in `width`. */
function wrapNotes(notes, width, size) {
  const lines = [];
  let line = [];
  let used = 0;
  for (const note of notes) {
    const w = textWidth(`${note.text} · `, size);
    if (line.length > 0 && used + w > width && !note.attached) {
      lines.push(line);
      line = [];
      used = 0;
    }
    line.push(note);
    used += w;
  }
  if (line.length > 0) lines.push(line);
  return lines;
}

/** One chart as an SVG document. */
export function drawChart(chart, meta) {
  for (const group of chart.groups) {
    for (const bar of group.bars) {
      if (typeof bar.value !== 'number' || !Number.isFinite(bar.value) || bar.value < 0) {
        throw new ResultError(chart.source, `${chart.file}: ${group.label}, ${bar.label}: no usable value`);
      }
      if (!KINDS[bar.kind]) throw new Error(`${chart.file}: unknown bar kind ${bar.kind}`);
    }
    for (const note of group.notes) {
      if (note.text.includes('NaN'))
        throw new ResultError(chart.source, `${chart.file}: ${group.label}: a ratio is missing`);
    }
  }
  const labelWidth = Math.min(
    280,
    Math.max(...chart.groups.flatMap((g) => g.bars.map((b) => textWidth(b.label, 12)))) + 12,
  );
  const plotX = PAD + labelWidth;
  const valueRoom = 64;
  const plotWidth = WIDTH - plotX - PAD - valueRoom;
  const max = Math.max(...chart.groups.flatMap((g) => g.bars.map((b) => b.value)), 0) || 1;
  const step = tickStep(max);
  const axisMax = Math.ceil(max / step) * step;
  const x = (v) => plotX + (v / axisMax) * plotWidth;

  const out = [];
  let y = PAD + 16;
  out.push(`<text x="${PAD}" y="${y}" font-size="16" font-weight="600" fill="${TEXT}">${xml(chart.title)}</text>`);
  y += 20;
  out.push(`<text x="${PAD}" y="${y}" font-size="12" fill="${MUTED}">${xml(meta)}</text>`);
  y += 16;
  out.push(`<text x="${PAD}" y="${y}" font-size="12" fill="${MUTED}">${xml(`bench/results/${chart.source}`)}</text>`);
  y += 20;
  // Legend: the kinds this chart uses, in a fixed order.
  let lx = PAD;
  for (const [kind, { color, legend: fallback }] of Object.entries(KINDS)) {
    if (!chart.groups.some((g) => g.bars.some((b) => b.kind === kind))) continue;
    const legend = chart.legend?.[kind] ?? fallback;
    if (lx > PAD && lx + 16 + textWidth(legend, 12) > WIDTH - PAD) {
      lx = PAD;
      y += 18;
    }
    out.push(`<rect x="${px(lx)}" y="${y - 10}" width="12" height="12" fill="${color}"/>`);
    out.push(`<text x="${px(lx + 16)}" y="${y}" font-size="12" fill="${TEXT}">${xml(legend)}</text>`);
    lx += 16 + textWidth(legend, 12) + 18;
  }
  y += 14;
  const plotTop = y;
  const body = [];
  for (const group of chart.groups) {
    y += 18;
    body.push(`<text x="${PAD}" y="${y}" font-size="13" font-weight="600" fill="${TEXT}">${xml(group.label)}</text>`);
    for (const line of wrapNotes(group.notes, WIDTH - 2 * PAD, 12)) {
      y += 16;
      const spans = line.map((note, i) => {
        const fill = note.met === true ? MET : note.met === false ? MISSED : MUTED;
        const weight = note.met === undefined ? '' : ' font-weight="600"';
        const separator = i === 0 ? '' : note.attached ? NBSP : `<tspan fill="#8c959f">${NBSP}·${NBSP}</tspan>`;
        return `${separator}<tspan fill="${fill}"${weight}>${xml(note.text)}</tspan>`;
      });
      body.push(`<text x="${PAD}" y="${y}" font-size="12">${spans.join('')}</text>`);
    }
    y += 6;
    for (const bar of group.bars) {
      const top = y;
      const w = Math.max(1, x(bar.value) - plotX);
      body.push(
        `<text x="${px(plotX - 8)}" y="${px(top + 12)}" font-size="12" text-anchor="end" fill="${TEXT}">${xml(bar.label)}</text>`,
      );
      body.push(
        `<rect x="${px(plotX)}" y="${px(top + 2)}" width="${px(w)}" height="14" fill="${KINDS[bar.kind].color}"/>`,
      );
      body.push(
        `<text x="${px(plotX + w + 6)}" y="${px(top + 13)}" font-size="12" fill="${TEXT}">${xml(formatValue(bar.value, chart.unit))}</text>`,
      );
      y += 20;
    }
    y += 4;
  }
  const plotBottom = y + 4;
  // Grid and axis under the bars.
  const grid = [];
  for (let v = 0; v <= axisMax + step / 2; v += step) {
    const gx = px(x(v));
    grid.push(
      `<line x1="${gx}" y1="${plotTop}" x2="${gx}" y2="${px(plotBottom)}" stroke="${v === 0 ? '#8c959f' : '#d8dee4'}" stroke-width="1"/>`,
    );
    grid.push(
      `<text x="${gx}" y="${px(plotBottom + 16)}" font-size="11" text-anchor="middle" fill="${MUTED}">${xml(formatValue(v, chart.unit === 'ms' ? 'ms-axis' : chart.unit))}</text>`,
    );
  }
  y = plotBottom + 32;
  out.push(...grid, ...body);
  out.push(
    `<text x="${px(plotX + plotWidth / 2)}" y="${px(y)}" font-size="12" text-anchor="middle" fill="${MUTED}">${xml(chart.unit === 'ms' ? 'milliseconds (lower is better)' : `${chart.unit} (higher is better)`)}</text>`,
  );
  if (chart.footnote) {
    y += 20;
    out.push(`<text x="${PAD}" y="${px(y)}" font-size="11" fill="${MUTED}">${xml(chart.footnote)}</text>`);
  }
  const height = Math.ceil(y + PAD);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="${xml(FONT)}" role="img">`,
    `<title>${xml(chart.title)}</title>`,
    `<rect width="${WIDTH}" height="${height}" fill="#ffffff"/>`,
    ...out,
    '</svg>',
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// Reading the folder, writing the charts

/**
 * Every chart the result files in `resultsDir` give, sorted by file name: `{ file, source, svg }`.
 * Throws a ResultError naming the file when one is not valid JSON or lacks what a chart needs.
 */
export function renderCharts(resultsDir = join(ROOT, 'bench', 'results')) {
  const present = new Map();
  if (!existsSync(resultsDir)) throw new ResultError('', `no results folder ${resultsDir}`);
  for (const name of readdirSync(resultsDir).sort()) {
    if (!name.endsWith('.json')) continue;
    const text = readFileSync(join(resultsDir, name), 'utf8');
    let data;
    try {
      data = JSON.parse(text);
    } catch (error) {
      throw new ResultError(name, `is not valid JSON (${error.message})`);
    }
    present.set(name, new Result(name, data));
  }
  const charts = [];
  for (const source of SOURCES) {
    const result = present.get(source.file);
    if (!result) continue;
    const meta = result.describe();
    for (const chart of source.charts(result)) {
      const withSource = { ...chart, source: source.file };
      charts.push({ file: chart.file, source: source.file, svg: drawChart(withSource, meta) });
    }
  }
  const files = charts.map((c) => c.file);
  const twice = files.find((f, i) => files.indexOf(f) !== i);
  if (twice) throw new Error(`two charts are named ${twice}`);
  return charts.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
}

/** Writes the charts into `outDir`, removing the SVGs there that no chart produced. */
export function writeCharts(outDir, charts) {
  mkdirSync(outDir, { recursive: true });
  const keep = new Set(charts.map((c) => c.file));
  for (const name of readdirSync(outDir)) {
    if (name.endsWith('.svg') && !keep.has(name)) rmSync(join(outDir, name));
  }
  for (const chart of charts) writeFileSync(join(outDir, chart.file), chart.svg);
}

/** The files of `outDir` that differ from `charts` (missing, different or left over). */
export function staleCharts(outDir, charts) {
  const stale = [];
  const keep = new Set(charts.map((c) => c.file));
  for (const chart of charts) {
    const path = join(outDir, chart.file);
    if (!existsSync(path) || readFileSync(path, 'utf8') !== chart.svg) stale.push(chart.file);
  }
  if (existsSync(outDir)) {
    for (const name of readdirSync(outDir)) if (name.endsWith('.svg') && !keep.has(name)) stale.push(name);
  }
  return stale.sort();
}

function main(argv) {
  const option = (name, fallback) => {
    const i = argv.indexOf(name);
    return i >= 0 && argv[i + 1] ? resolve(argv[i + 1]) : fallback;
  };
  const resultsDir = option('--results', join(ROOT, 'bench', 'results'));
  const outDir = option('--out', join(ROOT, 'docs', 'benchmarks'));
  let charts;
  try {
    charts = renderCharts(resultsDir);
  } catch (error) {
    if (!(error instanceof ResultError)) throw error;
    console.error(`bench-charts: ${error.message}`);
    return 1;
  }
  if (argv.includes('--check')) {
    const stale = staleCharts(outDir, charts);
    if (stale.length === 0) return 0;
    console.error(`bench-charts: not current in ${outDir}: ${stale.join(', ')} (run: pnpm run bench:charts)`);
    return 1;
  }
  writeCharts(outDir, charts);
  console.log(`bench-charts: ${charts.length} charts in ${outDir}`);
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  process.exitCode = main(process.argv.slice(2));
}
