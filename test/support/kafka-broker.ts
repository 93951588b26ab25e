// A real Apache Kafka broker for tests, without Docker (see scripts/kafka.sh).
//
// - startKafkaBroker(): a private single-node KRaft broker on free ports in a temp data dir,
//   which a test can stop, kill and restart mid-run (same ports, same data).
// - ensureKafka(): a broker to talk to: $KAFKA_BROKERS, else a Testcontainers Kafka when a
//   Docker engine answers, else the shared local broker on 127.0.0.1:9092 (`scripts/kafka.sh
//   start`, left running for the next test run).
// - waitForKafka(): waits until metadata, topic creation and the group coordinator all work.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { type AddressInfo, createServer, type Server } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitForKafka as waitUntilUsable } from '../../scripts/kafka-wait.mjs';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const KAFKA_SH = join(REPO_ROOT, 'scripts', 'kafka.sh');
const DEFAULT_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 20_000;
const SHARED_BROKER = '127.0.0.1:9092';
/** Image for the Docker path of ensureKafka(); override with INBOXKIT_KAFKA_IMAGE. */
const DEFAULT_KAFKA_IMAGE = 'confluentinc/cp-kafka:7.9.0';
/** Port the Testcontainers Kafka module exposes for clients on the host. */
const TESTCONTAINERS_KAFKA_PORT = 9093;

export interface KafkaBroker {
  /** `127.0.0.1:<port>`, ready for `new Kafka({ brokers })`. */
  readonly brokers: string[];
  readonly port: number;
  readonly controllerPort: number;
  readonly dataDir: string;
  /** The broker's stderr (WARN and up), appended across restarts. */
  readonly logFile: string;
  /** Pid of the running JVM; undefined once stopped, or killed (even before it has exited). */
  readonly pid: number | undefined;
  /** Graceful stop: SIGTERM, wait for exit (SIGKILL after 20 s). Data stays. */
  stop(): Promise<void>;
  /** Crash it: SIGKILL, no waiting. restart() afterwards waits for the exit itself. */
  kill(): void;
  /** Start again on the same ports and data dir (stopping first if it still runs); waits until usable. */
  restart(): Promise<void>;
  /** Stop, and remove the data dir if startKafkaBroker created it. */
  dispose(): Promise<void>;
}

export interface StartKafkaBrokerOptions {
  /** Client port; a free one when omitted. */
  port?: number;
  /** KRaft controller port; a free one when omitted. */
  controllerPort?: number;
  /** Data dir to use (kept by dispose()); a fresh temp dir when omitted (removed by dispose()). */
  dataDir?: string;
  /** How long to wait until usable, per start (default 60 s). */
  timeoutMs?: number;
}

/** Waits until the brokers answer metadata, can create a topic, and the group coordinator is loaded. */
export async function waitForKafka(brokers: string[], timeoutMs: number = DEFAULT_TIMEOUT_MS): Promise<void> {
  await waitUntilUsable(brokers, { timeoutMs });
}

export async function startKafkaBroker(options: StartKafkaBrokerOptions = {}): Promise<KafkaBroker> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const ownsDataDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'inboxkit-kafka-')));
  const logFile = join(dataDir, 'kafka.log');
  const portsGiven = options.port !== undefined || options.controllerPort !== undefined;

  let port = 0;
  let controllerPort = 0;
  let command: string[] = [];
  let clusterId = '';
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();

  const isRunning = (proc: ChildProcess | undefined): proc is ChildProcess =>
    proc !== undefined && proc.exitCode === null && proc.signalCode === null && proc.pid !== undefined;

  const launch = (): void => {
    const [java, ...args] = command;
    if (java === undefined) throw new Error('kafka.sh prepare printed no command line');
    const fd = openSync(logFile, 'a');
    let proc: ChildProcess;
    try {
      const [file, argv] = withParentDeathSignal(java, args);
      proc = spawn(file, argv, { stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    child = proc;
    exited = new Promise<void>((resolve) => {
      proc.once('exit', () => resolve());
      proc.once('error', () => resolve()); // e.g. java missing: no 'exit' follows
    });
    liveBrokers.add(proc);
    void exited.then(() => liveBrokers.delete(proc));
  };

  const stop = async (): Promise<void> => {
    const proc = child;
    if (isRunning(proc)) {
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), STOP_GRACE_MS);
      try {
        await exited;
      } finally {
        clearTimeout(timer);
      }
    }
    await exited;
    child = undefined;
  };

  const launchAndWait = async (): Promise<void> => {
    const busy = await busyPorts([port, controllerPort]);
    if (busy.length > 0) {
      throw new KafkaStartError(`cannot start Kafka: 127.0.0.1:${busy.join(', 127.0.0.1:')} already in use`, true);
    }
    launch();
    const proc = child;
    try {
      // clusterId: a different broker that happens to hold the port must not pass for ours.
      await waitUntilUsable([`127.0.0.1:${port}`], { timeoutMs, clusterId, isAlive: () => isRunning(proc) });
    } catch (error) {
      const diedEarly = !isRunning(proc);
      proc?.kill('SIGKILL');
      await exited;
      child = undefined;
      const message = error instanceof Error ? error.message : String(error);
      const log = await tail(logFile, 40);
      const portClash = diedEarly && /Address already in use|failed to bind/i.test(log);
      throw new KafkaStartError(`${message}\n--- last lines of ${logFile} ---\n${log}`, portClash);
    }
  };

  // Free ports can be taken by someone else before the JVM binds them: retry with new ones.
  for (let attempt = 1; ; attempt++) {
    if (portsGiven) {
      const avoid = options.controllerPort === undefined ? [] : [options.controllerPort];
      port = options.port ?? (await freePorts(1, avoid))[0] ?? 0;
      controllerPort = options.controllerPort ?? (await freePorts(1, [port]))[0] ?? 0;
    } else {
      [port = 0, controllerPort = 0] = await freePorts(2);
    }
    try {
      command = await prepare(port, controllerPort, dataDir);
      clusterId = await readClusterId(dataDir);
      await launchAndWait();
      break;
    } catch (error) {
      if (!portsGiven && error instanceof KafkaStartError && error.portClash && attempt < 3) continue;
      if (ownsDataDir) await rm(dataDir, { recursive: true, force: true });
      throw error;
    }
  }

  return {
    brokers: [`127.0.0.1:${port}`],
    port,
    controllerPort,
    dataDir,
    logFile,
    get pid(): number | undefined {
      return isRunning(child) && !child.killed ? child.pid : undefined;
    },
    stop,
    kill(): void {
      if (isRunning(child)) child.kill('SIGKILL');
    },
    async restart(): Promise<void> {
      await stop();
      await launchAndWait();
    },
    async dispose(): Promise<void> {
      await stop();
      if (ownsDataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * A Kafka to test against, in this order:
 * 1. `KAFKA_BROKERS` (comma-separated), waited for until usable;
 * 2. a Testcontainers Kafka (KRaft) when a Docker engine answers; `stop` removes the container;
 * 3. the shared local broker `scripts/kafka.sh start` on 127.0.0.1:9092, left running.
 * `INBOXKIT_KAFKA_MODE=local` skips the Docker probe, `=docker` insists on Docker.
 */
export async function ensureKafka(): Promise<{ brokers: string[]; stop?: () => Promise<void> }> {
  const fromEnv = (process.env.KAFKA_BROKERS ?? '')
    .split(',')
    .map((b) => b.trim())
    .filter((b) => b.length > 0);
  if (fromEnv.length > 0) {
    await waitForKafka(fromEnv);
    return { brokers: fromEnv };
  }

  const mode = process.env.INBOXKIT_KAFKA_MODE ?? 'auto';
  if (mode === 'docker' || (mode !== 'local' && (await dockerAvailable()))) {
    const { KafkaContainer } = await import('@testcontainers/kafka');
    const container = await new KafkaContainer(process.env.INBOXKIT_KAFKA_IMAGE ?? DEFAULT_KAFKA_IMAGE)
      .withKraft()
      .start();
    const brokers = [`${container.getHost()}:${container.getMappedPort(TESTCONTAINERS_KAFKA_PORT)}`];
    try {
      await waitForKafka(brokers);
    } catch (error) {
      await container.stop();
      throw error;
    }
    return {
      brokers,
      stop: async () => {
        await container.stop();
      },
    };
  }

  await runKafkaSh(['start'], 'inherit');
  return { brokers: [SHARED_BROKER] };
}

// ---- internals ------------------------------------------------------------------------------

class KafkaStartError extends Error {
  /** The ports were taken by someone else: worth another try on other free ports. */
  readonly portClash: boolean;
  constructor(message: string, portClash: boolean) {
    super(message);
    this.name = 'KafkaStartError';
    this.portClash = portClash;
  }
}

/**
 * Brokers of this process still running; SIGKILLed when the process exits. Kept on globalThis so
 * that a test runner re-evaluating this module per test file registers one 'exit' listener only.
 */
const liveBrokers: Set<ChildProcess> = (() => {
  const holder = globalThis as { __inboxkitLiveKafkaBrokers?: Set<ChildProcess> };
  if (holder.__inboxkitLiveKafkaBrokers === undefined) {
    const live = new Set<ChildProcess>();
    holder.__inboxkitLiveKafkaBrokers = live;
    process.once('exit', () => {
      for (const proc of live) proc.kill('SIGKILL');
    });
  }
  return holder.__inboxkitLiveKafkaBrokers;
})();

/**
 * On Linux with util-linux's setpriv, the JVM gets SIGKILL when the process that spawned it
 * dies, even by a signal that skips 'exit' handlers (a killed test worker): no orphan brokers.
 */
export function withParentDeathSignal(file: string, args: string[]): [string, string[]] {
  if (hasSetprivPdeathsig === undefined) {
    hasSetprivPdeathsig =
      process.platform === 'linux' &&
      spawnSync('setpriv', ['--pdeathsig', 'KILL', '--', 'true'], { stdio: 'ignore' }).status === 0;
  }
  return hasSetprivPdeathsig ? ['setpriv', ['--pdeathsig', 'KILL', '--', file, ...args]] : [file, args];
}
let hasSetprivPdeathsig: boolean | undefined;

/** Writes server.properties, formats the storage once, returns the java command line. */
async function prepare(port: number, controllerPort: number, dataDir: string): Promise<string[]> {
  const out = await runKafkaSh([
    'prepare',
    '--port',
    String(port),
    '--controller-port',
    String(controllerPort),
    '--dir',
    dataDir,
  ]);
  return out.split('\n').filter((line) => line.length > 0);
}

/** Runs scripts/kafka.sh; resolves with its stdout. stderr is collected for errors, or inherited. */
function runKafkaSh(args: string[], stderr: 'collect' | 'inherit' = 'collect'): Promise<string> {
  return new Promise((resolve, reject) => {
    const proc = spawn('bash', [KAFKA_SH, ...args], {
      stdio: ['ignore', 'pipe', stderr === 'inherit' ? 'inherit' : 'pipe'],
      // The Node running the tests is the one kafka.sh should use for kafka-wait.mjs.
      env: { ...process.env, PATH: `${dirname(process.execPath)}${delimiter}${process.env.PATH ?? ''}` },
    });
    let out = '';
    let err = '';
    proc.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
    });
    proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      err += chunk;
    });
    proc.once('error', reject);
    proc.once('close', (code, signal) => {
      if (code === 0) resolve(out);
      else reject(new Error(`scripts/kafka.sh ${args.join(' ')} failed (${signal ?? `exit ${code}`})\n${err}`));
    });
  });
}

/** `count` distinct free TCP ports on 127.0.0.1 (all held open together, then released). */
async function freePorts(count: number, avoid: number[] = []): Promise<number[]> {
  const servers: Server[] = [];
  try {
    const ports: number[] = [];
    while (ports.length < count) {
      const server = createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => resolve());
      });
      const { port } = server.address() as AddressInfo;
      if (!avoid.includes(port)) ports.push(port);
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

/** The ports among `ports` that something on 127.0.0.1 already listens on. */
async function busyPorts(ports: number[]): Promise<number[]> {
  const busy: number[] = [];
  for (const port of ports) {
    const server = createServer();
    const free = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (free) await new Promise<void>((resolve) => server.close(() => resolve()));
    else busy.push(port);
  }
  return busy;
}

/** cluster.id from the meta.properties that `kafka-storage format` wrote. */
async function readClusterId(dataDir: string): Promise<string> {
  const meta = await readFile(join(dataDir, 'data', 'meta.properties'), 'utf8');
  const id = /^cluster\.id=(.+)$/m.exec(meta)?.[1]?.trim();
  if (id === undefined || id === '') throw new Error(`no cluster.id in ${join(dataDir, 'data', 'meta.properties')}`);
  return id;
}

async function tail(file: string, lines: number): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** True when a Docker (or compatible) engine answers within a few seconds. */
async function dockerAvailable(): Promise<boolean> {
  // Skip the (slow, ~1.5 s) Testcontainers import when nothing could point at an engine.
  const home = homedir();
  const hints = [
    process.env.DOCKER_HOST,
    process.env.TESTCONTAINERS_HOST_OVERRIDE,
    ...[
      '/var/run/docker.sock',
      join(home, '.testcontainers.properties'),
      join(home, '.docker', 'run', 'docker.sock'),
      join(home, '.docker', 'desktop', 'docker.sock'),
      process.env.XDG_RUNTIME_DIR ? join(process.env.XDG_RUNTIME_DIR, '.docker', 'run', 'docker.sock') : undefined,
      process.env.XDG_RUNTIME_DIR ? join(process.env.XDG_RUNTIME_DIR, 'docker.sock') : undefined,
    ].filter((p): p is string => p !== undefined && existsSync(p)),
  ].filter((h) => h !== undefined && h !== '');
  if (hints.length === 0 && process.platform !== 'win32') return false;
  try {
    const { getContainerRuntimeClient } = await import('testcontainers');
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('Docker probe timed out')), 5_000);
    });
    try {
      await Promise.race([getContainerRuntimeClient(), timeout]);
    } finally {
      clearTimeout(timer);
    }
    return true;
  } catch {
    return false;
  }
}
