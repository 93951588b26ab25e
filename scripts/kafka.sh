#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, broker+controller in one JVM) on 127.0.0.1,
# without Docker: for tests, benchmarks and the demo. Needs Java >= 17 and Maven (the broker's
# jars come from Maven Central, once, into a cache folder).
#
#   scripts/kafka.sh classpath                      fetch the jars once, print the classpath
#   scripts/kafka.sh start  [--port 9092] [--controller-port 9093] [--dir D] [--timeout 60]
#   scripts/kafka.sh stop   [--port 9092] [--dir D]
#   scripts/kafka.sh status [--port 9092] [--dir D]  exit 0 when running, 3 when not
#   scripts/kafka.sh prepare --port N --controller-port N --dir D
#       writes D/server.properties, formats D/data once, and prints the java command line
#       (java binary first, then one argument per line); test/support/kafka-broker.ts uses it.
#
# The broker is started detached (setsid + nohup) and left running; `start` waits until it is
# really usable (metadata answers, a topic can be created and the group coordinator is loaded),
# see scripts/kafka-wait.mjs. Its data dir (default ${INBOXKIT_CACHE:-~/.cache/inboxkit}/
# kafka-data-<port>) holds server.properties, kafka.pid, kafka.log (stderr, WARN and up) and the
# partitions under data/.
#
# Environment: INBOXKIT_CACHE (cache root), JAVA_HOME (else java from PATH),
# INBOXKIT_KAFKA_HEAP (default "-Xms128m -Xmx512m").
set -euo pipefail

KAFKA_VERSION="3.9.1" # keep in step with scripts/kafka/pom.xml
INBOXKIT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POM="$INBOXKIT_ROOT/scripts/kafka/pom.xml"
LOG4J_CONFIG="$INBOXKIT_ROOT/scripts/kafka/log4j.properties"
CACHE="${INBOXKIT_CACHE:-$HOME/.cache/inboxkit}"
KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
LIBS="$KAFKA_HOME/libs"
LIBS_MARKER="$KAFKA_HOME/libs.complete"

say() { echo "inboxkit: $*" >&2; }
die() {
  say "$*"
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2
}

java_bin() {
  if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then
    echo "$JAVA_HOME/bin/java"
  elif command -v java >/dev/null 2>&1; then
    command -v java
  else
    die "java not found: Kafka $KAFKA_VERSION needs Java >= 17 (set JAVA_HOME or put java on PATH)"
  fi
}

# Fingerprint of the pom, so that editing it refetches the jars.
pom_fingerprint() { cksum <"$POM" | cut -d' ' -f1; }

libs_complete() {
  [ -d "$LIBS" ] && [ -f "$LIBS_MARKER" ] && [ "$(cat "$LIBS_MARKER")" = "$(pom_fingerprint)" ]
}

# Serialises the fetch between concurrent callers (test workers). flock is util-linux; without
# it the fetch still cannot leave a half-filled libs/ behind (temp dir + rename + marker).
with_lock() {
  local lockfile="$1"
  shift
  if command -v flock >/dev/null 2>&1; then
    mkdir -p "$(dirname "$lockfile")"
    (
      flock 9
      "$@"
    ) 9>"$lockfile"
  else
    "$@"
  fi
}

fetch_libs() {
  libs_complete && return 0
  command -v mvn >/dev/null 2>&1 || die "mvn not found: needed once to fetch the Kafka $KAFKA_VERSION jars from Maven Central"
  local partial="$KAFKA_HOME/libs.partial.$$" started=$SECONDS
  say "fetching the Kafka $KAFKA_VERSION broker jars with Maven into $LIBS (once, 57 jars, 46 MB)"
  mkdir -p "$KAFKA_HOME"
  rm -rf "$KAFKA_HOME"/libs.partial.* "$LIBS_MARKER" # leftovers of an interrupted fetch
  # mvn's output goes to a log, shown only on failure: `classpath` prints only the classpath.
  if ! mvn -B -q -f "$POM" dependency:copy-dependencies \
    -DoutputDirectory="$partial" -DincludeScope=runtime >"$KAFKA_HOME/mvn.log" 2>&1; then
    sed 's/^/  | /' "$KAFKA_HOME/mvn.log" >&2
    rm -rf "$partial"
    die "mvn could not fetch the Kafka jars (is Maven Central reachable? log: $KAFKA_HOME/mvn.log)"
  fi
  [ -f "$partial/kafka_2.13-$KAFKA_VERSION.jar" ] || {
    rm -rf "$partial"
    die "mvn finished but kafka_2.13-$KAFKA_VERSION.jar is missing from $partial"
  }
  rm -rf "$LIBS"
  mv "$partial" "$LIBS"
  pom_fingerprint >"$LIBS_MARKER" # written last: only a complete fetch looks complete
  say "fetched $(find "$LIBS" -name '*.jar' | wc -l | tr -d ' ') jars in $((SECONDS - started)) s"
}

kafka_classpath() {
  if ! libs_complete; then
    with_lock "$KAFKA_HOME.lock" fetch_libs
  fi
  local cp="" jar
  for jar in "$LIBS"/*.jar; do
    cp="${cp:+$cp:}$jar"
  done
  [ -n "$cp" ] || die "no jars in $LIBS"
  printf '%s\n' "$cp"
}

# ---- options ------------------------------------------------------------------------------

PORT=9092
CONTROLLER_PORT=""
DIR=""
TIMEOUT=60

parse_opts() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --port) PORT="${2:?--port needs a value}"; shift 2 ;;
      --port=*) PORT="${1#*=}"; shift ;;
      --controller-port) CONTROLLER_PORT="${2:?--controller-port needs a value}"; shift 2 ;;
      --controller-port=*) CONTROLLER_PORT="${1#*=}"; shift ;;
      --dir) DIR="${2:?--dir needs a value}"; shift 2 ;;
      --dir=*) DIR="${1#*=}"; shift ;;
      --timeout) TIMEOUT="${2:?--timeout needs a value}"; shift 2 ;;
      --timeout=*) TIMEOUT="${1#*=}"; shift ;;
      -h | --help) usage; exit 0 ;;
      *) usage; die "unknown option: $1" ;;
    esac
  done
  case "$PORT" in '' | *[!0-9]*) die "--port must be a number, got '$PORT'" ;; esac
  [ -n "$CONTROLLER_PORT" ] || CONTROLLER_PORT=$((PORT + 1))
  case "$CONTROLLER_PORT" in '' | *[!0-9]*) die "--controller-port must be a number, got '$CONTROLLER_PORT'" ;; esac
  [ "$PORT" != "$CONTROLLER_PORT" ] || die "--port and --controller-port must differ"
  case "$TIMEOUT" in '' | *[!0-9]*) die "--timeout must be whole seconds, got '$TIMEOUT'" ;; esac
  [ -n "$DIR" ] || DIR="$CACHE/kafka-data-$PORT"
  case "$DIR" in /*) ;; *) DIR="$PWD/$DIR" ;; esac
  PID_FILE="$DIR/kafka.pid"
  LOG_FILE="$DIR/kafka.log"
  CONFIG="$DIR/server.properties"
}

# ---- config, storage, command line ----------------------------------------------------------

write_config() {
  cat >"$CONFIG.tmp" <<EOF
# Generated by scripts/kafka.sh; rewritten on every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$DIR/data

# One node: every internal topic has one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
default.replication.factor=1
min.insync.replicas=1
# One partition for the internal topics (as Testcontainers does): the group and transaction
# coordinators load in a blink instead of 50 partitions each.
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1

num.partitions=1
auto.create.topics.enable=true
delete.topic.enable=true
group.initial.rebalance.delay.ms=0

# After a crash (SIGKILL) the restarted broker cannot register until the controller expires its
# previous session: DUPLICATE_BROKER_REGISTRATION for broker.session.timeout.ms. With the default
# 9 s a restart after SIGKILL took ~15 s to usable, with 3 s it takes ~5 s (clean restart: ~2.5 s).
# Broker and controller share this JVM, so a short session is safe.
broker.session.timeout.ms=3000
broker.heartbeat.interval.ms=500

# Small footprint: the log cleaner's dedupe buffer is 128 MiB by default.
log.cleaner.dedupe.buffer.size=16777216
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=2
log.retention.hours=24
EOF
  mv "$CONFIG.tmp" "$CONFIG"
}

# Kafka's Uuid: 16 random bytes, URL-safe base64 without padding; never starting with '-'.
random_cluster_id() {
  local id
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    case "$id" in -*) ;; *) break ;; esac
  done
  printf '%s\n' "$id"
}

format_storage() {
  local cp="$1"
  [ -f "$DIR/data/meta.properties" ] && return 0
  local id java
  id="$(random_cluster_id)"
  java="$(java_bin)"
  say "formatting $DIR/data (cluster id $id)"
  "$java" -cp "$cp" "-Dlog4j.configuration=file:$LOG4J_CONFIG" \
    kafka.tools.StorageTool format -t "$id" -c "$CONFIG" --ignore-formatted >"$DIR/format.log" 2>&1 ||
    {
      cat "$DIR/format.log" >&2
      die "kafka-storage format failed for $DIR/data"
    }
}

# The broker's command line, one argument per line (java binary first).
java_command() {
  local cp="$1" heap="${INBOXKIT_KAFKA_HEAP:--Xms128m -Xmx512m}" opt
  java_bin
  # shellcheck disable=SC2086 # INBOXKIT_KAFKA_HEAP is a list of JVM options
  for opt in $heap; do printf '%s\n' "$opt"; done
  printf '%s\n' \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true \
    "-Dlog4j.configuration=file:$LOG4J_CONFIG" \
    "-Dkafka.logs.dir=$DIR" \
    -cp "$cp" \
    kafka.Kafka "$CONFIG"
}

prepare() {
  local cp
  cp="$(kafka_classpath)"
  write_config
  format_storage "$cp"
  java_command "$cp"
}

# ---- process helpers ------------------------------------------------------------------------

# The pid in the pid file, if that process is alive and is our broker (pids get reused).
running_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid cmd
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  pid_alive "$pid" || return 1
  if [ -r "/proc/$pid/cmdline" ]; then
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
  else
    cmd="$(ps -ww -p "$pid" -o args= 2>/dev/null || true)"
  fi
  case "$cmd" in *kafka.Kafka*"$CONFIG"*) printf '%s\n' "$pid" ;; *) return 1 ;; esac
}

# Alive and not a zombie: the broker is re-parented to init when `start` returns, and a slow
# reaper (some container inits) leaves it a zombie for a while after it has exited.
pid_alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local state=""
  if [ -r "/proc/$1/stat" ]; then
    state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)"
  else
    state="$(ps -o stat= -p "$1" 2>/dev/null | cut -c1)"
  fi
  [ "$state" != "Z" ]
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

node_bin() {
  # shellcheck source=scripts/toolchain.sh disable=SC1091
  source "$INBOXKIT_ROOT/scripts/toolchain.sh"
  [ -d "$INBOXKIT_ROOT/node_modules/kafkajs" ] ||
    die "kafkajs is not installed in $INBOXKIT_ROOT/node_modules: run 'pnpm install' first"
  command -v node
}

# Waits until the broker on $PORT is usable; $1: pid to watch (optional: with it, only a broker of
# the cluster formatted in $DIR counts), $2: timeout (s).
wait_usable() {
  local pid="${1:-}" timeout="$2" node cluster=""
  node="$(node_bin)"
  if [ -n "$pid" ] && [ -f "$DIR/data/meta.properties" ]; then
    cluster="$(sed -n 's/^cluster\.id=//p' "$DIR/data/meta.properties")"
  fi
  "$node" "$INBOXKIT_ROOT/scripts/kafka-wait.mjs" --brokers "127.0.0.1:$PORT" \
    --timeout "$timeout" --verbose ${pid:+--pid "$pid"} ${cluster:+--cluster-id "$cluster"}
}

log_tail() {
  if [ -f "$LOG_FILE" ]; then
    say "last lines of $LOG_FILE:"
    tail -n 40 "$LOG_FILE" | sed 's/^/  | /' >&2
  fi
}

# ---- subcommands ----------------------------------------------------------------------------

do_start() {
  local pid started=$SECONDS
  if pid="$(running_pid)"; then
    say "Kafka is already running on 127.0.0.1:$PORT (pid $pid, data $DIR)"
    wait_usable "$pid" "$TIMEOUT" || { log_tail; die "the running broker (pid $pid) is not usable"; }
    return 0
  fi
  if port_open "$PORT"; then
    # Not ours (other data dir, docker compose, ...): fine if it is a usable Kafka broker.
    if wait_usable "" 10 2>/dev/null; then
      say "a Kafka broker not started from $DIR already answers on 127.0.0.1:$PORT; using it"
      return 0
    fi
    die "127.0.0.1:$PORT is taken by something that is not a usable Kafka broker"
  fi
  port_open "$CONTROLLER_PORT" && die "controller port 127.0.0.1:$CONTROLLER_PORT is already taken (use --controller-port)"

  local cmd=() cmd_text
  cmd_text="$(prepare)"
  mapfile -t cmd <<<"$cmd_text"
  [ "${#cmd[@]}" -gt 2 ] || die "could not build the broker command line"
  [ -f "$LOG_FILE" ] && mv -f "$LOG_FILE" "$LOG_FILE.1"
  say "starting Kafka $KAFKA_VERSION on 127.0.0.1:$PORT (controller $CONTROLLER_PORT, data $DIR)"
  # setsid: own session, so the broker outlives the caller's process group (CI steps, test runs).
  local launcher=(nohup)
  command -v setsid >/dev/null 2>&1 && launcher=(setsid nohup)
  # 9>&-: the broker must not inherit the start lock (see with_lock).
  "${launcher[@]}" "${cmd[@]}" </dev/null >>"$LOG_FILE" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$PID_FILE"
  if ! wait_usable "$pid" "$TIMEOUT"; then
    log_tail
    if pid_alive "$pid"; then
      say "the broker (pid $pid) is still running but not usable after ${TIMEOUT} s; stop it with: $0 stop --port $PORT${DIR:+ --dir $DIR}"
    else
      rm -f "$PID_FILE"
      say "the broker exited during startup"
    fi
    exit 1
  fi
  say "Kafka is ready on 127.0.0.1:$PORT (pid $pid, $((SECONDS - started)) s); KAFKA_BROKERS=127.0.0.1:$PORT"
}

do_stop() {
  local pid waited=0 started=$SECONDS
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"
    say "Kafka is not running on 127.0.0.1:$PORT (data $DIR)"
    return 0
  fi
  say "stopping Kafka on 127.0.0.1:$PORT (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  while pid_alive "$pid"; do
    if [ "$waited" -ge 200 ]; then # 20 s in steps of 0.1 s
      say "still running after 20 s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  while pid_alive "$pid"; do sleep 0.1; done
  rm -f "$PID_FILE"
  say "stopped ($((SECONDS - started)) s)"
}

do_status() {
  local pid
  if pid="$(running_pid)"; then
    if port_open "$PORT"; then
      say "running: pid $pid, 127.0.0.1:$PORT, data $DIR"
    else
      say "starting (not listening yet): pid $pid, 127.0.0.1:$PORT, data $DIR"
    fi
    return 0
  fi
  if port_open "$PORT"; then
    say "not started from $DIR, but something listens on 127.0.0.1:$PORT"
  else
    say "not running on 127.0.0.1:$PORT (data $DIR)"
  fi
  return 3
}

main() {
  local sub="${1:-}"
  [ $# -gt 0 ] && shift
  case "$sub" in
    classpath)
      [ $# -eq 0 ] || die "classpath takes no options"
      kafka_classpath
      ;;
    start)
      parse_opts "$@"
      mkdir -p "$DIR"
      with_lock "$DIR/.kafka.lock" do_start
      ;;
    stop)
      parse_opts "$@"
      do_stop
      ;;
    status)
      parse_opts "$@"
      do_status
      ;;
    prepare)
      parse_opts "$@"
      mkdir -p "$DIR"
      prepare
      ;;
    -h | --help | help)
      usage
      ;;
    *)
      usage
      die "unknown subcommand: '${sub}' (classpath, start, stop, status, prepare)"
      ;;
  esac
}

main "$@"
