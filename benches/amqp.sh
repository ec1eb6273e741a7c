#!/usr/bin/env bash
# The server-side subscription (issue 16), on the release build: "device → consumer throughput
# with one consumer beside 1:1 MQTT QoS 1 msgs/s in the same run (target: at least half of it),
# end-to-end p99 at 10,000 msgs/s, and the drain rate of a backlog of 1,000,000 messages".
#
# One `aliot serve` configuration (written by `aliot-bench aliot-config --amqp-bind …`): the
# generated devices, whose product may publish on `/${productKey}/${deviceName}/user/update`,
# the AMQP listener, one AccessKey, consumer group BENCH_GROUP taking the product's upstream
# messages, the HTTP API (for /metrics), and `[backlog] max_messages = BACKLOG_MESSAGES`,
# `max_bytes = BACKLOG_BYTES`. Every measurement starts a fresh broker on it (in memory unless
# said), and in each of ROUNDS rounds:
#
#   1. `amqp --mode throughput`: one device publishes QoS 1 (window INFLIGHT, 64-byte stamped
#      payloads) as fast as its window allows; one AMQP 1.0 consumer (fe2o3-amqp, SASL PLAIN
#      aksign, one receiver link of CREDIT credit, every message accepted) receives them;
#      msgs/s accepted in a DURATION-second window after a WARMUP. And `one-to-one --qos 1`
#      (one publisher, one MQTT subscriber, the same window and payloads) on the same build:
#      odd rounds the consumer first, even rounds 1:1 first. The ratio amqp / 1:1 (target ≥ 0.5).
#   2. `amqp --mode latency`: LATENCY_PUBLISHERS devices paced at LATENCY_RATE msgs/s in all;
#      send → accept latency p50 / p99 / max over the window.
#   3. `amqp --mode drain`: with no consumer, DRAIN_PUBLISHERS devices publish MESSAGES
#      messages (QoS 1, as fast as they can) until /metrics shows the group's backlog holding
#      them all; then the consumer attaches and is timed until it has every one (each message
#      id once); the broker's VmRSS before and after the fill.
#
# DURABLE_DRAIN=1 adds one drain on the default durable store (`--data-dir`, a new directory
# under $OUT; `durability = "immediate"`) after the rounds.
#
# The broker runs on CPU 0 and the load generator on CPU 1 (taskset), as in the other broker
# benches. Prints Markdown tables (each round, and the medians); the raw JSON stays in $OUT.
# Usage: benches/amqp.sh   (ROUNDS=3 WARMUP=1 DURATION=5 INFLIGHT=32 CREDIT=200
#                           LATENCY_RATE=10000 LATENCY_PUBLISHERS=10 MESSAGES=1000000
#                           DRAIN_PUBLISHERS=10 BACKLOG_MESSAGES=2000000
#                           BACKLOG_BYTES=1073741824 DURABLE_DRAIN=0 OUT=a new /tmp/amqp.* dir)
set -Eeuo pipefail
trap 'printf "amqp: FAILED: line %s: a command failed (status %s)\n" "$LINENO" "$?" >&2' ERR

BENCH=amqp
# shellcheck source=benches/common.sh
source "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-1}
DURATION=${DURATION:-5}
INFLIGHT=${INFLIGHT:-32}
CREDIT=${CREDIT:-200}
LATENCY_RATE=${LATENCY_RATE:-10000}
LATENCY_PUBLISHERS=${LATENCY_PUBLISHERS:-10}
MESSAGES=${MESSAGES:-1000000}
DRAIN_PUBLISHERS=${DRAIN_PUBLISHERS:-10}
BACKLOG_MESSAGES=${BACKLOG_MESSAGES:-2000000}
BACKLOG_BYTES=${BACKLOG_BYTES:-1073741824}
DURABLE_DRAIN=${DURABLE_DRAIN:-0}
PLATFORM=benchPK:s33d
OUT=${OUT:-$(mktemp -d /tmp/amqp.XXXXXX)}
mkdir -p "$OUT"

need python3 taskset
need_two_cpus
[ "$MESSAGES" -le "$BACKLOG_MESSAGES" ] || die "MESSAGES ($MESSAGES) must fit in BACKLOG_MESSAGES ($BACKLOG_MESSAGES)"

build_release


# start NAME [ARGS…]: starts the broker on CPU 0 (in memory unless ARGS say otherwise) and
# waits for its `AMQP consumers on` line; sets BROKER_PID, MQTT_PORT, AMQP_PORT and API_PORT.
start() {
    local name=$1
    shift
    local store=(--in-memory)
    if [ $# -gt 0 ]; then store=("$@"); fi
    RUST_LOG=warn taskset -c 0 "$A" serve --config "$OUT/aliot.toml" "${store[@]}" >"$OUT/$name.log" 2>&1 &
    BROKER_PID=$!
    until grep -q 'AMQP consumers on' "$OUT/$name.log"; do
        kill -0 "$BROKER_PID" 2>/dev/null || die "the broker ($name) exited: $(tail -5 "$OUT/$name.log")"
        sleep 0.05
    done
    MQTT_PORT=$(sed -n 's/^aliot: listening for MQTT on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$OUT/$name.log")
    AMQP_PORT=$(sed -n 's|^aliot: AMQP consumers on amqp://127\.0\.0\.1:\([0-9]*\)$|\1|p' "$OUT/$name.log")
    API_PORT=$(sed -n 's|^aliot: HTTP API on http://127\.0\.0\.1:\([0-9]*\)$|\1|p' "$OUT/$name.log")
    [ -n "$MQTT_PORT" ] && [ -n "$AMQP_PORT" ] && [ -n "$API_PORT" ] ||
        die "the broker ($name) did not print its MQTT, AMQP and API ports: $(cat "$OUT/$name.log")"
}

# bench NAME ARGS…: runs the generator on CPU 1 against the running broker, JSON to NAME.json.
bench() {
    local name=$1
    shift
    if ! taskset -c 1 "$B" --platform "$PLATFORM" --port "$MQTT_PORT" --broker-pid "$BROKER_PID" \
        --broker-label aliot --json "$@" >"$OUT/$name.json" 2>"$OUT/$name.err"; then
        die "$name: $(cat "$OUT/$name.err") (broker log: $OUT/$name-broker.log)"
    fi
}

# measure NAME ARGS…: a fresh broker, one generator run, the broker stopped.
measure() {
    local name=$1
    shift
    start "$name-broker"
    bench "$name" "$@"
    stop_broker
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
"$B" --platform "$PLATFORM" aliot-config --devices "$((LATENCY_PUBLISHERS > DRAIN_PUBLISHERS ? LATENCY_PUBLISHERS : DRAIN_PUBLISHERS))" \
    --bind 127.0.0.1:0 --amqp-bind 127.0.0.1:0 --api-bind 127.0.0.1:0 \
    --backlog-messages "$BACKLOG_MESSAGES" --backlog-bytes "$BACKLOG_BYTES" >"$OUT/aliot.toml"

throughput() {
    start "amqp-$1-broker"
    bench "amqp-$1" amqp --amqp-port "$AMQP_PORT" --credit "$CREDIT" --mode throughput \
        --inflight "$INFLIGHT" --warmup "$WARMUP" --duration "$DURATION"
    stop_broker
}
one_to_one() {
    measure "one-to-one-$1" one-to-one --qos 1 --inflight "$INFLIGHT" --warmup "$WARMUP" --duration "$DURATION"
}

for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then
        throughput "$round"
        one_to_one "$round"
    else
        one_to_one "$round"
        throughput "$round"
    fi
    start "latency-$round-broker"
    bench "latency-$round" amqp --amqp-port "$AMQP_PORT" --credit "$CREDIT" --mode latency \
        --publishers "$LATENCY_PUBLISHERS" --rate "$LATENCY_RATE" --inflight "$INFLIGHT" \
        --warmup "$WARMUP" --duration "$DURATION"
    stop_broker
    start "drain-$round-broker"
    bench "drain-$round" amqp --amqp-port "$AMQP_PORT" --api-port "$API_PORT" --credit "$CREDIT" \
        --mode drain --publishers "$DRAIN_PUBLISHERS" --inflight "$INFLIGHT" --messages "$MESSAGES"
    stop_broker
    say "round $round: $(python3 - "$OUT" "$round" <<'PY'
import json, sys
out, k = sys.argv[1], sys.argv[2]
a = json.load(open(f"{out}/amqp-{k}.json")); o = json.load(open(f"{out}/one-to-one-{k}.json"))
l = json.load(open(f"{out}/latency-{k}.json")); d = json.load(open(f"{out}/drain-{k}.json"))
print(f"amqp {a['msgs_per_sec']:,.0f} msgs/s, 1:1 {o['msgs_per_sec']:,.0f} msgs/s, "
      f"ratio {a['msgs_per_sec'] / o['msgs_per_sec']:.3f}; p99 at {l['target_publish_rate']:,.0f}/s "
      f"{l['latency']['p99_us'] / 1e3:.2f} ms; drain {d['drain_per_sec']:,.0f} msgs/s")
PY
)"
done

if [ "$DURABLE_DRAIN" = 1 ]; then
    say "a drain on the durable store"
    start "drain-durable-broker" --data-dir "$OUT/store"
    bench "drain-durable" amqp --amqp-port "$AMQP_PORT" --api-port "$API_PORT" --credit "$CREDIT" \
        --mode drain --publishers "$DRAIN_PUBLISHERS" --inflight "$INFLIGHT" --messages "$MESSAGES" \
        --fill-timeout 1800 --stall-timeout 60
    stop_broker
    rm -rf "$OUT/store"
fi

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$OUT" "$ROUNDS" "$LOAD_BEFORE" "$LOAD_AFTER" <<'PY'
import json, os, statistics, sys
out, rounds, load_before, load_after = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
load = lambda name: json.load(open(f"{out}/{name}.json"))
ks = range(1, rounds + 1)
amqp = [load(f"amqp-{k}") for k in ks]
o2o = [load(f"one-to-one-{k}") for k in ks]
lat = [load(f"latency-{k}") for k in ks]
drain = [load(f"drain-{k}") for k in ks]
w = lambda v: f"{v:,.0f}"
ms = lambda us: f"{us / 1e3:,.2f}"
mib = lambda kib: "–" if kib is None else f"{kib / 1024:,.0f}"
cpu = lambda r: f"{r['generator_cpu_percent']:.0f} / {r['broker_cpu_percent']:.0f}"
med = statistics.median
a0 = amqp[0]
print(f"""
Device → consumer, QoS 1, one publishing device (window {a0['inflight']}), {a0['payload_bytes']}-byte payloads, \
{a0['window_secs']:g} s windows after a warm-up; one AMQP consumer \
(credit {a0['credit']}); beside `one-to-one --qos 1` with the same publisher; a fresh `aliot serve` (in memory) per run.

| round | order | amqp, msgs/s accepted | published/s | one-to-one QoS 1, msgs/s | ratio | CPU % gen / broker, amqp | the same, 1:1 | left in the backlog after the drain wait |
|---|---|---:|---:|---:|---:|---:|---:|---:|""")
ratios = []
for k, a, o in zip(ks, amqp, o2o):
    ratio = a["msgs_per_sec"] / o["msgs_per_sec"]
    ratios.append(ratio)
    order = "amqp first" if k % 2 == 1 else "1:1 first"
    print(f"| {k} | {order} | {w(a['msgs_per_sec'])} | {w(a['published_per_sec'])} | {w(o['msgs_per_sec'])} "
          f"| {ratio:.3f} | {cpu(a)} | {cpu(o)} | {w(a['missing'])} |")
ratio = med(ratios)
print(f"| **median** | | **{w(med(a['msgs_per_sec'] for a in amqp))}** | {w(med(a['published_per_sec'] for a in amqp))} "
      f"| **{w(med(o['msgs_per_sec'] for o in o2o))}** | **{ratio:.3f}** | | | |")
verdict = "met" if ratio >= 0.5 else f"missed, by {(0.5 - ratio) / 0.5 * 100:.1f} % of the target"
print(f"\nTarget: the consumer at least half of 1:1 QoS 1 (ratio ≥ 0.50): {verdict} (median of the rounds' ratios).")

l0 = lat[0]
print(f"""
End-to-end latency (device's publish → the consumer's receipt, accepted), {l0['publishers']} devices paced at \
{w(l0['target_publish_rate'])} msgs/s in all, over the {l0['window_secs']:g} s window:

| round | received, msgs/s | p50, ms | p99, ms | p99.9, ms | max, ms | CPU % gen / broker |
|---|---:|---:|---:|---:|---:|---:|""")
for k, l in zip(ks, lat):
    p = l["latency"]
    print(f"| {k} | {w(l['msgs_per_sec'])} | {ms(p['p50_us'])} | {ms(p['p99_us'])} | {ms(p['p999_us'])} | {ms(p['max_us'])} | {cpu(l)} |")
print(f"| **median** | {w(med(l['msgs_per_sec'] for l in lat))} | {ms(med(l['latency']['p50_us'] for l in lat))} "
      f"| **{ms(med(l['latency']['p99_us'] for l in lat))}** | {ms(med(l['latency']['p999_us'] for l in lat))} "
      f"| {ms(med(l['latency']['max_us'] for l in lat))} | |")

drains = [(str(k), d, "in memory") for k, d in zip(ks, drain)]
if os.path.exists(f"{out}/drain-durable.json"):
    drains.append(("durable", load("drain-durable"), "redb, immediate"))
d0 = drain[0]
print(f"""
Drain: {w(d0['messages'])} messages published by {d0['publishers']} devices (QoS 1, window {d0['inflight']} each) \
with no consumer, until `/metrics` shows them in the group's backlog; then the consumer attaches (credit {d0['credit']}):

| run | store | fill, s | into the backlog, msgs/s | drain, s | **drain, msgs/s** | first message, ms | duplicates | backlog after | dropped | broker VmRSS before / full / drained, MiB | bytes per message | CPU % gen / broker, drain |
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|""")
for name, d, store in drains:
    per = "–" if d["bytes_per_message"] is None else f"{d['bytes_per_message']:.0f}"
    print(f"| {name} | {store} | {d['fill_secs']:.2f} | {w(d['fill_per_sec'])} | {d['drain_secs']:.2f} | **{w(d['drain_per_sec'])}** "
          f"| {d['first_message_secs'] * 1e3:.1f} | {d['duplicates']} | {d['backlog_after']} | {d['dropped']} "
          f"| {mib(d['rss_before_kib'])} / {mib(d['rss_full_kib'])} / {mib(d['rss_drained_kib'])} | {per} "
          f"| {d['generator_cpu_percent']:.0f} / {d['broker_cpu_percent']:.0f} |")
print(f"| **median** (in memory) | | {med(d['fill_secs'] for d in drain):.2f} | {w(med(d['fill_per_sec'] for d in drain))} "
      f"| {med(d['drain_secs'] for d in drain):.2f} | **{w(med(d['drain_per_sec'] for d in drain))}** | | | | | | | |")
print(f"""
Load average (1, 5, 15 min) before the first run: {load_before}; after the last: {load_after} \
(the two processes of a run add up to about 2). Raw results: {out}""")
PY
