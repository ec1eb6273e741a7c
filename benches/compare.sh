#!/usr/bin/env bash
# aliot against mosquitto and rumqttd, on this machine, in one run, over loopback only.
#
# Installs mosquitto (apt-get) and rumqttd (cargo install) when they are missing, builds
# `aliot` and `aliot-bench` in release, then for each broker in turn: starts it in the
# background (pinned to CPU 0 where there are two CPUs or more), waits until its port answers,
# runs the scenarios as fast as they go with aliot-bench (pinned to CPU 1), and stops it.
# Then the latency runs: each broker started afresh, every scenario at half the rate of the
# slowest broker in it (at its full rate the slowest broker is saturated, and its p99 is the
# queue it builds). Idle connections run on a freshly started broker too, so that the memory
# reading starts clean, and no run follows another broker's backlog.
# Then the durable store: 1:1 QoS 1 and fan-in with persistent subscribers (cleanSession=0)
# against aliot with its store (--data-dir, fresh per run, durability immediate: a PUBACK
# waits for the fsync), aliot in memory (--in-memory) and mosquitto with `persistence true`,
# each on a freshly started broker, alternating, DURABLE_RUNS times; idle connections on aliot
# with its store; and aliot restarted on a store of RECOVERY_SESSIONS sessions ×
# RECOVERY_MESSAGES queued messages written by `aliot-bench fill-store`.
# Ends with the markdown table of ratios aliot/mosquitto and aliot/rumqttd, and the details of
# every run, then the durable-store table. Every run has a fixed duration or count; nothing but
# 127.0.0.0/8 is contacted.
#
# Environment (defaults in brackets):
#   DURATION [5]  WARMUP [1]  DRAIN [2]   seconds per throughput run
#   CONNECTIONS [20000]   idle connections; lowered to fit the open-file limit when it must be
#   HOLD [2]              seconds the idle connections are held before the memory reading
#   LATENCY_RUNS [3]      runs at half the slowest rate per scenario and broker; the table
#                         takes the median p99 (one run's p99 at a low rate is mostly jitter)
#   PORT [21883]          first loopback port; the brokers use PORT, PORT+1 and PORT+2
#   BROKERS ["mosquitto aliot rumqttd"]   the ratios are taken against mosquitto
#   MOSQUITTO_NODELAY [1] 0: leave mosquitto as it ships, with Nagle's algorithm on (every
#                         tuned deployment sets `set_tcp_nodelay true`; aliot and rumqttd
#                         set TCP_NODELAY themselves)
#   ALIOT [the release build here]   the aliot binary to measure, e.g. an earlier commit's
#                         build for a before-and-after comparison in one sitting
#   DURABLE_RUNS [2]      runs per configuration of each durable-store scenario (the table
#                         takes the median); 0 skips them
#   RECOVERY_SESSIONS [10000]  RECOVERY_MESSAGES [100]   the store aliot is restarted on
#                         (100-byte payloads); RECOVERY_SESSIONS=0 skips the restart
#   SKIP_INSTALL [0]      1: install nothing (mosquitto, mosquitto_passwd and rumqttd on PATH)
#   KEEP [0]              1: keep the working folder (configurations, logs, JSON reports)
#   TRANSPORTS [1]        0: skip the transports rows (benches/transports.sh: TLS, TLS-PSK and
#                         WebSocket, aliot against mosquitto over TLS; TRANSPORT_ROUNDS [3])
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
DRAIN=${DRAIN:-2}
CONNECTIONS=${CONNECTIONS:-20000}
HOLD=${HOLD:-2}
LATENCY_RUNS=${LATENCY_RUNS:-3}
DURABLE_RUNS=${DURABLE_RUNS:-2}
RECOVERY_SESSIONS=${RECOVERY_SESSIONS:-10000}
RECOVERY_MESSAGES=${RECOVERY_MESSAGES:-100}
PORT=${PORT:-21883}
BROKERS=${BROKERS:-"mosquitto aliot rumqttd"}
MOSQUITTO_NODELAY=${MOSQUITTO_NODELAY:-1}
SKIP_INSTALL=${SKIP_INSTALL:-0}
KEEP=${KEEP:-0}
# A throwaway password and device-secret seed: the brokers only listen on loopback.
BENCH_USER=bench
BENCH_PASSWORD=bench-$$-$RANDOM
PLATFORM="benchPK:seed-$$-$RANDOM"

say() { printf '%s\n' "compare.sh: $*" >&2; }

case $LATENCY_RUNS in
'' | *[!0-9]* | 0) say "LATENCY_RUNS must be a whole number of at least 1, not '$LATENCY_RUNS'"; exit 2 ;;
esac
for count in DURABLE_RUNS RECOVERY_SESSIONS RECOVERY_MESSAGES; do
    case ${!count} in
    '' | *[!0-9]*) say "$count must be a whole number, not '${!count}'"; exit 2 ;;
    esac
done

# --- Open files: each idle connection is a socket in the broker and one in the generator. ---
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ]; then hard=1048576; fi
ulimit -n "$hard" 2>/dev/null || true
fd_limit=$(ulimit -n)
requested_connections=$CONNECTIONS
max_connections=$((fd_limit - 100))
if [ "$CONNECTIONS" -gt "$max_connections" ]; then
    CONNECTIONS=$max_connections
    say "open-file limit is $fd_limit (hard); idle connections lowered from $requested_connections to $CONNECTIONS"
fi

# --- Install the other brokers. ---
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
export PATH="$PATH:/usr/sbin:/sbin:${CARGO_HOME:-$HOME/.cargo}/bin"
if [ "$SKIP_INSTALL" != 1 ]; then
    if ! command -v mosquitto >/dev/null || ! command -v mosquitto_passwd >/dev/null; then
        say "installing mosquitto"
        $SUDO apt-get update
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto
    fi
    if ! command -v rumqttd >/dev/null; then
        say "installing rumqttd"
        cargo install rumqttd
    fi
fi
for tool in mosquitto mosquitto_passwd rumqttd; do
    command -v "$tool" >/dev/null || { say "$tool is not installed"; exit 1; }
done

# --- Build. ---
say "building aliot and aliot-bench (release)"
(cd "$ROOT" && cargo build --release -p aliot-benches -p aliot-tokio)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BENCH=$TARGET_DIR/release/aliot-bench
ALIOT=${ALIOT:-$TARGET_DIR/release/aliot}
[ -x "$ALIOT" ] || { say "ALIOT=$ALIOT is not an executable"; exit 1; }
# What was built, read now: a commit made while the script runs is not in the binaries.
aliot_commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git -C "$ROOT" diff --quiet HEAD 2>/dev/null; then aliot_commit="$aliot_commit + uncommitted changes"; fi
if [ "$ALIOT" != "$TARGET_DIR/release/aliot" ]; then aliot_commit="$ALIOT (aliot-bench from $aliot_commit)"; fi

# --- Where everything goes; what to pin where. ---
WORK=$(mktemp -d "${TMPDIR:-/tmp}/aliot-compare.XXXXXX")
# mosquitto drops to its own user when started as root: it must reach its password file.
chmod 755 "$WORK"
RESULTS=$WORK/results
mkdir -p "$RESULTS"
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    BROKER_PIN=(taskset -c 0)
    GENERATOR_PIN=(taskset -c 1)
    PINNING="broker pinned to CPU 0 (\`taskset -c 0\`), aliot-bench to CPU 1 (\`taskset -c 1\`), one runtime thread; RRPC runs broker and devices in one process, unpinned (broker on its own thread and runtime)"
else
    BROKER_PIN=()
    GENERATOR_PIN=()
    PINNING="not pinned ($(nproc) CPU, or no taskset): broker and aliot-bench share the machine"
fi

BROKER_PID=""
# The broker running, what it is running for, and where its log of this start begins.
BROKER_NAME=""
BROKER_PHASE=""
BROKER_LOG_FROM=0
# Faults seen in the brokers' logs (a thread that panicked), for the report's notes.
FAULT_NOTES=()
stop_broker() {
    if [ -n "$BROKER_PID" ]; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=""
        note_broker_faults
    fi
}
# A broker whose worker thread panicked may keep its port open and answer nothing more (rumqttd
# 0.20's router, after fan-out at full speed): every later run on it then fails its handshake.
# Say so in the report rather than leave only the failures.
note_broker_faults() {
    local log=$WORK/$BROKER_NAME.log panic
    [ -f "$log" ] || return 0
    panic=$(tail -c "+$((BROKER_LOG_FROM + 1))" "$log" | sed 's/\x1b\[[0-9;]*m//g' | grep -m 1 'panicked at' || true)
    if [ -n "$panic" ]; then
        FAULT_NOTES+=(--note "Fault: $BROKER_NAME, $BROKER_PHASE: a thread panicked ($panic); runs on that broker after it are not the broker's figures.")
        say "  $BROKER_NAME: a thread panicked: $panic"
    fi
}
cleanup() {
    stop_broker
    if [ "$KEEP" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() {
    if command -v ss >/dev/null; then
        ss -Hltn "sport = :$1" | grep -q .
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

# start_broker NAME PORT COMMAND...: in the background, pinned; waits (at most 120 s) for PORT.
start_broker() {
    local name=$1 port=$2
    shift 2
    if port_open "$port"; then
        say "port $port is already taken; set PORT to a free range"
        exit 1
    fi
    BROKER_NAME=$name
    BROKER_LOG_FROM=$(stat -c %s "$WORK/$name.log" 2>/dev/null || echo 0)
    "${BROKER_PIN[@]}" "$@" >>"$WORK/$name.log" 2>&1 &
    BROKER_PID=$!
    for _ in $(seq 1 600); do
        if port_open "$port"; then return 0; fi
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then break; fi
        sleep 0.2
    done
    say "$name did not open port $port; the end of its log:"
    tail -n 20 "$WORK/$name.log" >&2
    stop_broker
    return 1
}

# bench OUT.json ARGS...: one aliot-bench run, pinned, its JSON report kept in OUT.json.
bench() {
    local out=$1
    shift
    if "${GENERATOR_PIN[@]}" "$BENCH" --json "$@" >"$out.partial" 2>>"$WORK/aliot-bench.log"; then
        mv "$out.partial" "$out"
        say "  $(basename "$out" .json): done"
    else
        rm -f "$out.partial"
        say "  $(basename "$out" .json): FAILED: $(tail -n 1 "$WORK/aliot-bench.log")"
    fi
}

THROUGHPUT_RUNS=("one-to-one-qos0:one-to-one --qos 0" "one-to-one-qos1:one-to-one --qos 1" "fan-in:fan-in" "fan-out:fan-out")
RUN_ARGS=(--warmup "$WARMUP" --duration "$DURATION" --drain "$DRAIN")

# The logins and start commands of each broker, by name (strings split on spaces), set by
# configure_broker.
declare -A PORT_OF FIRST_SOURCE_OF LOGIN_CONNECTIONS_OF LOGIN_THROUGHPUT_OF START_CONNECTIONS_OF START_THROUGHPUT_OF

# run_broker_at_max NAME: idle connections on a fresh broker, then every throughput run as
# fast as it goes on another.
run_broker_at_max() {
    local name=$1 port=${PORT_OF[$1]}
    local -a login_connections login_throughput start_connections start_throughput
    read -r -a login_connections <<<"${LOGIN_CONNECTIONS_OF[$name]}"
    read -r -a login_throughput <<<"${LOGIN_THROUGHPUT_OF[$name]}"
    read -r -a start_connections <<<"${START_CONNECTIONS_OF[$name]}"
    read -r -a start_throughput <<<"${START_THROUGHPUT_OF[$name]}"
    local common=(--port "$port" --broker-label "$name")

    say "$name: $CONNECTIONS idle connections (fresh broker)"
    BROKER_PHASE="idle connections"
    if start_broker "$name" "$port" "${start_connections[@]}"; then
        bench "$RESULTS/$name-connections.json" "${common[@]}" --broker-pid "$BROKER_PID" \
            "${login_connections[@]}" connections --count "$CONNECTIONS" \
            --first-source "${FIRST_SOURCE_OF[$name]}" --hold "$HOLD"
        stop_broker
    fi

    say "$name: throughput, as fast as it goes (fresh broker)"
    BROKER_PHASE="throughput as fast as it goes"
    if start_broker "$name" "$port" "${start_throughput[@]}"; then
        local run stem args
        for run in "${THROUGHPUT_RUNS[@]}"; do
            stem=${run%%:*}
            read -r -a args <<<"${run#*:}"
            bench "$RESULTS/$name-$stem.json" "${common[@]}" --broker-pid "$BROKER_PID" \
                "${login_throughput[@]}" "${args[@]}" "${RUN_ARGS[@]}"
        done
        stop_broker
    fi
}

# run_broker_latency NAME: on a fresh broker, each scenario LATENCY_RUNS times at half the
# publish rate of the slowest broker's run as fast as it goes.
run_broker_latency() {
    local name=$1 port=${PORT_OF[$1]}
    local -a login_throughput start_throughput
    read -r -a login_throughput <<<"${LOGIN_THROUGHPUT_OF[$name]}"
    read -r -a start_throughput <<<"${START_THROUGHPUT_OF[$name]}"
    local common=(--port "$port" --broker-label "$name")

    say "$name: latency at half the slowest rate (fresh broker)"
    BROKER_PHASE="latency at half the slowest rate"
    start_broker "$name" "$port" "${start_throughput[@]}" || return 0
    local run stem args broker k
    for run in "${THROUGHPUT_RUNS[@]}"; do
        stem=${run%%:*}
        read -r -a args <<<"${run#*:}"
        local -a rate_of=()
        for broker in $BROKERS; do
            if [ -f "$RESULTS/$broker-$stem.json" ]; then
                rate_of+=(--rate-of "$RESULTS/$broker-$stem.json")
            fi
        done
        if [ "${#rate_of[@]}" -eq 0 ]; then
            say "  $stem: no run as fast as it goes to take the rate from; skipped"
            continue
        fi
        for k in $(seq 1 "$LATENCY_RUNS"); do
            bench "$RESULTS/$name-$stem-at-half-rate-$k.json" "${common[@]}" \
                --broker-pid "$BROKER_PID" "${login_throughput[@]}" "${args[@]}" \
                "${RUN_ARGS[@]}" "${rate_of[@]}" --rate-fraction 0.5
        done
    done
    stop_broker
}

# configure_broker NAME PORT FIRST_SOURCE LOGIN_CONNECTIONS LOGIN_THROUGHPUT START_CONNECTIONS START_THROUGHPUT
configure_broker() {
    PORT_OF[$1]=$2
    FIRST_SOURCE_OF[$1]=$3
    LOGIN_CONNECTIONS_OF[$1]=$4
    LOGIN_THROUGHPUT_OF[$1]=$5
    START_CONNECTIONS_OF[$1]=$6
    START_THROUGHPUT_OF[$1]=$7
}

# --- The durable store. ---
# run_durable_phase: persistent-subscriber runs on aliot with its store, aliot in memory and
# mosquitto with persistence, each on a fresh broker (and a fresh data folder), alternating;
# idle connections on aliot with its store; aliot restarted on a filled store.
STORE_NOTES=()
run_durable_phase() {
    local has_mosquitto=0 has_aliot=0 broker
    for broker in $BROKERS; do
        case $broker in
        mosquitto) has_mosquitto=1 ;;
        aliot) has_aliot=1 ;;
        esac
    done
    if [ "$has_aliot" = 1 ] && ! "$ALIOT" serve --help 2>/dev/null | grep -q -- '--data-dir'; then
        say "durable store: $ALIOT has no --data-dir (a build from before the store); aliot's durable runs skipped"
        STORE_NOTES+=("Skipped: $ALIOT has no store (no \`--data-dir\`); aliot's durable-store runs were not made.")
        has_aliot=0
    fi
    local -a configs=()
    if [ "$has_mosquitto" = 1 ]; then configs+=(mosquitto-persistence); fi
    if [ "$has_aliot" = 1 ]; then configs+=(aliot-memory aliot-durable); fi
    local -a durable_runs=("one-to-one-qos1:one-to-one --qos 1" "fan-in:fan-in")
    local k run stem config port data name args login start
    for k in $(seq 1 "$DURABLE_RUNS"); do
        for run in "${durable_runs[@]}"; do
            stem=${run%%:*}
            read -r -a args <<<"${run#*:}"
            for config in "${configs[@]}"; do
                data=$WORK/store-$config-$stem-$k
                case $config in
                mosquitto-persistence)
                    name=mosquitto
                    mkdir -p "$data"
                    if [ "$(id -u)" -eq 0 ] && id mosquitto >/dev/null 2>&1; then chown mosquitto "$data"; fi
                    {
                        cat "$WORK/mosquitto-persistence.conf.in"
                        echo "persistence_location $data/"
                    } >"$data.conf"
                    start="$(command -v mosquitto) -c $data.conf"
                    ;;
                aliot-memory)
                    name=aliot
                    start="$ALIOT serve --config $WORK/aliot-open.toml --in-memory"
                    ;;
                aliot-durable)
                    name=aliot
                    start="$ALIOT serve --config $WORK/aliot-open.toml --data-dir $data"
                    ;;
                esac
                port=${PORT_OF[$name]}
                read -r -a login <<<"${LOGIN_THROUGHPUT_OF[$name]}"
                local -a start_command
                read -r -a start_command <<<"$start"
                say "$config: $stem with a persistent subscriber, run $k of $DURABLE_RUNS (fresh broker)"
                BROKER_PHASE="durable store, $config, $stem run $k"
                if start_broker "$name" "$port" "${start_command[@]}"; then
                    bench "$RESULTS/store-$config-$stem-$k.json" --port "$port" \
                        --broker-label "$config" --broker-pid "$BROKER_PID" --persistent-subscribers \
                        "${login[@]}" "${args[@]}" "${RUN_ARGS[@]}"
                    stop_broker
                fi
                rm -rf "$data" "$data.conf"
            done
        done
    done
    [ "$has_aliot" = 1 ] || return 0

    local connections_start
    read -r -a connections_start <<<"${START_CONNECTIONS_OF[aliot]} --data-dir $WORK/store-connections"
    local -a connections_login
    read -r -a connections_login <<<"${LOGIN_CONNECTIONS_OF[aliot]}"
    say "aliot-durable: $CONNECTIONS idle connections, clean sessions (fresh broker, fresh store)"
    BROKER_PHASE="durable store, idle connections"
    if start_broker aliot "${PORT_OF[aliot]}" "${connections_start[@]}"; then
        bench "$RESULTS/store-aliot-durable-connections.json" --port "${PORT_OF[aliot]}" \
            --broker-label aliot-durable --broker-pid "$BROKER_PID" \
            "${connections_login[@]}" connections --count "$CONNECTIONS" \
            --first-source "${FIRST_SOURCE_OF[aliot]}" --hold "$HOLD"
        stop_broker
    fi
    rm -rf "$WORK/store-connections"

    [ "$RECOVERY_SESSIONS" -gt 0 ] || return 0
    say "aliot: a store of $RECOVERY_SESSIONS sessions × $RECOVERY_MESSAGES messages, and a restart on it"
    local check=fill-$(printf '%05d' $((RECOVERY_SESSIONS / 2)))
    if "$BENCH" --json fill-store --dir "$WORK/store-recovery" --sessions "$RECOVERY_SESSIONS" \
        --messages "$RECOVERY_MESSAGES" --payload 100 \
        >"$RESULTS/store-fill.json.partial" 2>>"$WORK/aliot-bench.log"; then
        mv "$RESULTS/store-fill.json.partial" "$RESULTS/store-fill.json"
        # Pinned as the broker is everywhere else; its log goes to its own file (RUST_LOG=info
        # for the `store restored` line, set by aliot-bench for the child).
        if "${BROKER_PIN[@]}" "$BENCH" --json recovery --aliot "$ALIOT" --config "$WORK/aliot-open.toml" \
            --data-dir "$WORK/store-recovery" --check-client "$check" --expect "$RECOVERY_MESSAGES" \
            >"$RESULTS/store-recovery.json.partial" 2>>"$WORK/aliot-bench.log"; then
            mv "$RESULTS/store-recovery.json.partial" "$RESULTS/store-recovery.json"
            say "  recovery: done"
        else
            say "  recovery: FAILED: $(tail -n 1 "$WORK/aliot-bench.log")"
        fi
    else
        say "  fill-store: FAILED: $(tail -n 1 "$WORK/aliot-bench.log")"
    fi
    rm -rf "$WORK/store-recovery"
}

# dsync_micros: microseconds per 4 KiB write with O_DSYNC in the work folder (what a synced
# commit costs at least on its disk), or "n/a".
dsync_micros() {
    local out secs
    out=$(dd if=/dev/zero of="$WORK/dsync-probe" bs=4k count=500 oflag=dsync 2>&1 | tail -n 1) || true
    rm -f "$WORK/dsync-probe"
    secs=$(printf '%s\n' "$out" | sed -n 's/.* copied, \([0-9.]*\) s.*/\1/p')
    if [ -n "$secs" ]; then awk -v s="$secs" 'BEGIN { printf "%.0f", s * 1e6 / 500 }'; else echo n/a; fi
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
port=$PORT
for broker in $BROKERS; do
    case $broker in
    mosquitto)
        passwd=$WORK/mosquitto.passwd
        : >"$passwd"
        chmod 600 "$passwd"
        mosquitto_passwd -b "$passwd" "$BENCH_USER" "$BENCH_PASSWORD"
        if [ "$(id -u)" -eq 0 ] && id mosquitto >/dev/null 2>&1; then chown mosquitto "$passwd"; fi
        {
            echo "listener $port 127.0.0.1"
            echo "allow_anonymous false"
            echo "password_file $passwd"
            echo "persistence false"
            echo "max_connections -1"
            echo "log_dest stderr"
            echo "log_type error"
            echo "log_type warning"
            if [ "$MOSQUITTO_NODELAY" = 1 ]; then echo "set_tcp_nodelay true"; fi
        } >"$WORK/mosquitto.conf"
        # The durable-store runs: the same, but persistence true, in a folder of each run's own
        # (persistence_location is completed per run).
        sed 's/^persistence false$/persistence true/' "$WORK/mosquitto.conf" >"$WORK/mosquitto-persistence.conf.in"
        login="--username $BENCH_USER --password $BENCH_PASSWORD"
        start="$(command -v mosquitto) -c $WORK/mosquitto.conf"
        configure_broker mosquitto "$port" 127.0.1.1 "$login" "$login" "$start" "$start"
        ;;
    aliot)
        "$BENCH" --platform "$PLATFORM" aliot-config --devices "$CONNECTIONS" \
            --bind "127.0.0.1:$port" >"$WORK/aliot-connections.toml"
        "$BENCH" --platform "$PLATFORM" aliot-config --devices 0 --open-mode \
            --bind "127.0.0.1:$port" >"$WORK/aliot-open.toml"
        export RUST_LOG=warn
        # Neither file has a [store]: without --data-dir, aliot keeps nothing on disk (the runs
        # above are in memory, as before the store; --in-memory is not passed, so that ALIOT may
        # be a build from before it).
        configure_broker aliot "$port" 127.0.2.1 "--platform $PLATFORM" "--open" \
            "$ALIOT serve --config $WORK/aliot-connections.toml" \
            "$ALIOT serve --config $WORK/aliot-open.toml"
        ;;
    rumqttd)
        cat >"$WORK/rumqttd.toml" <<EOF
id = 0

[router]
id = 0
max_connections = $((CONNECTIONS + 200))
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:$port"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 100
    dynamic_filters = true
    [v4.1.connections.auth]
    $BENCH_USER = "$BENCH_PASSWORD"
EOF
        login="--username $BENCH_USER --password $BENCH_PASSWORD"
        start="$(command -v rumqttd) --quiet --config $WORK/rumqttd.toml"
        configure_broker rumqttd "$port" 127.0.3.1 "$login" "$login" "$start" "$start"
        ;;
    *)
        say "unknown broker $broker (mosquitto, aliot or rumqttd)"
        exit 2
        ;;
    esac
    port=$((port + 1))
done
for broker in $BROKERS; do run_broker_at_max "$broker"; done
for broker in $BROKERS; do run_broker_latency "$broker"; done
dsync_us=n/a
if [ "$DURABLE_RUNS" -gt 0 ] || [ "$RECOVERY_SESSIONS" -gt 0 ]; then
    dsync_us=$(dsync_micros)
    run_durable_phase
fi

say "aliot: RRPC through the Rust API (in-process broker, 100 devices)"
if "$BENCH" --json rrpc --warmup "$WARMUP" --duration "$DURATION" \
    >"$RESULTS/rrpc.json.partial" 2>>"$WORK/aliot-bench.log"; then
    mv "$RESULTS/rrpc.json.partial" "$RESULTS/rrpc.json"
else
    say "  rrpc: FAILED: $(tail -n 1 "$WORK/aliot-bench.log")"
fi
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
mosquitto_version=$(mosquitto -h 2>&1 | head -n 1 || true)
rumqttd_version=$(rumqttd --version 2>&1 | head -n 1 || true)
connections_note="$CONNECTIONS idle connections"
if [ "$CONNECTIONS" != "$requested_connections" ]; then
    connections_note="$connections_note (asked for $requested_connections: the hard open-file limit here is $hard, and broker and generator each need one descriptor per connection)"
fi

echo
echo "## aliot vs mosquitto vs rumqttd, loopback ($started)"
echo
"$BENCH" compare-table --results "$RESULTS" \
    --note "Machine: $(nproc) CPU ($cpu_model), Linux $(uname -r); load average before $load_before, after $load_after (other work on the machine skews every figure)." \
    --note "Pinning: $PINNING." \
    --note "Versions: aliot $aliot_commit; $mosquitto_version; $rumqttd_version." \
    --note "Throughput runs: 64-byte payloads, QoS 1 window 32 per publisher, ${WARMUP} s warm-up, ${DURATION} s window, at most ${DRAIN} s drain. 'As fast as it goes': publishers unthrottled (QoS 1 held by the window, QoS 0 by TCP back-pressure). 'At half the slowest rate': publishers throttled to half the rate of the slowest broker's run as fast as it goes, on a freshly started broker, every broker, ${LATENCY_RUNS} runs each (the table takes the run with the median p99)." \
    --note "Idle connections: $connections_note, from several loopback source addresses, $HOLD s idle before the broker's VmRSS is read (each broker freshly started)." \
    --note "Logins: aliot open mode for 1:1, fan-in and fan-out, signed platform credentials (hmacsha256, one device each) for idle connections; mosquitto a password file (one user, mosquitto_passwd's default hashing) for every run; rumqttd its static auth table." \
    "${FAULT_NOTES[@]}" \
    --note "Broker settings: defaults except mosquitto persistence off, logs error/warning only$([ "$MOSQUITTO_NODELAY" = 1 ] && echo ", set_tcp_nodelay true (MOSQUITTO_NODELAY=0 leaves Nagle on, as shipped)" || echo ", TCP_NODELAY off as shipped (MOSQUITTO_NODELAY=0)"); rumqttd next_connection_delay_ms 0 (its sample config's 1 ms would cap connects at 1,000/s), router max_connections $((CONNECTIONS + 200)); aliot RUST_LOG=warn."

if [ "$DURABLE_RUNS" -gt 0 ] || [ "$RECOVERY_SESSIONS" -gt 0 ]; then
    work_disk=$(df --output=source,fstype "$WORK" 2>/dev/null | tail -n 1 | tr -s ' ' || echo unknown)
    echo
    echo "### Durable store: persistent subscribers, idle connections, restart ($started)"
    echo
    "$BENCH" store-table --results "$RESULTS" \
        --note "Configurations, each freshly started (and with a fresh data folder) for every run: aliot durable = \`aliot serve --config (open mode) --data-dir DIR\`, durability immediate (a publisher's PUBACK waits for the commit of its message, fsync included); aliot in memory = the same with \`--in-memory\`; mosquitto = the main table's configuration with \`persistence true\` and \`persistence_location DIR\`, autosave_interval left at its default (1800 s): mosquitto writes its file only at autosave and on exit, so its PUBACK does not mean on disk." \
        --note "Runs: the main table's 1:1 QoS 1 and fan-in (64-byte payloads, window 32, ${WARMUP} s warm-up, ${DURATION} s window, at most ${DRAIN} s drain), the subscribers connected with cleanSession=0 (\`aliot-bench --persistent-subscribers\`; publishers clean); runs per configuration: ${DURABLE_RUNS}, the configurations alternating; the table gives the median msgs/s and the sum of messages missing. Same pinning as the main table (the store's writer thread shares the broker's CPU)." \
        --note "Data folders in $WORK ($work_disk); 4 KiB O_DSYNC writes there (dd) took ${dsync_us} µs each when the phase began." \
        --note "Idle connections with the store: the main table's connections scenario (clean sessions: nothing of theirs is written) on aliot with \`--data-dir\`." \
        --note "Restart: \`aliot-bench fill-store\` writes the store directly through \`RedbStore\` (synced commits of 10,000 changes), then \`aliot-bench recovery\` times \`aliot serve --data-dir\` from its spawn to its \`aliot: listening for MQTT\` line (pinned like the broker; page cache warm from the fill), reads its \`store restored\` log line, and resumes one session (cleanSession=0, its client id) to count what it receives." \
        "${STORE_NOTES[@]}"
fi

# --- The transports (issue 17): TLS, TLS-PSK and WebSocket rows, aliot against mosquitto
# over TLS, in this run (benches/transports.sh starts its own brokers on free ports).
if [ "${TRANSPORTS:-1}" = 1 ]; then
    stop_broker
    echo
    echo "### Transports: TLS, TLS-PSK, WebSocket ($started)"
    ROUNDS=${TRANSPORT_ROUNDS:-3} WARMUP=$WARMUP DURATION=$DURATION bash "$ROOT/benches/transports.sh" ||
        say "benches/transports.sh failed; its rows are missing"
fi
