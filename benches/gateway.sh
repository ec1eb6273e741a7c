#!/usr/bin/env bash
# Gateways and sub-devices (issue 15), on the release build: "one gateway logging in 2,000
# sub-devices in batches of 50: time; sub-device messages through a gateway against the same
# number of direct devices in the same run: msgs/s (target: within 20 %)".
#
# Each round starts a fresh `aliot serve` (in memory) whose file lists 2×SUBS+1 generated
# devices, and runs `aliot-bench gateway` against it once:
#
#   1. gateway dev000000 (client id with `_ss=1`) adds sub-devices dev000001..SUBS to its
#      topology, 30 a `thing/topo/add` (not timed with the logins);
#   2. it logs them in with `combine/batch_login`, BATCH a request, one request at a time (each
#      sent after the reply to the one before, as the SDKs do): the time from the first request
#      to the last reply, and logins/s;
#   3. it posts properties for them in turn, at most INFLIGHT posts waiting for their reply
#      (default SUBS: one per sub-device); msgs/s counts replies in a DURATION-second window
#      after a WARMUP;
#   4. SUBS direct devices (dev{SUBS+1}..dev{2×SUBS}) post the same way (`property-post`), with
#      INFLIGHT / SUBS posts waiting each: the same number in all. GATEWAY_WINDOW (default
#      INFLIGHT) bounds the gateway's QoS 1 posts awaiting their PUBACK; the rest wait in its
#      client's queue.
#
# Odd rounds post through the gateway first, even rounds directly first. The broker runs on
# CPU 0 and the load generator on CPU 1 (taskset), as in the other broker benches. Prints a
# Markdown table (each round, and the medians); the raw JSON stays in $OUT.
# Usage: benches/gateway.sh   (SUBS=2000 BATCH=50 INFLIGHT=SUBS GATEWAY_WINDOW=INFLIGHT QOS=1
#                              ROUNDS=3 WARMUP=1 DURATION=5 OUT=a new /tmp/gateway.* dir)
set -Eeuo pipefail
trap 'printf "gateway: FAILED: line %s: a command failed (status %s)\n" "$LINENO" "$?" >&2' ERR

BENCH=gateway
# shellcheck source=benches/common.sh
source "$(dirname "$0")/common.sh"
SUBS=${SUBS:-2000}
BATCH=${BATCH:-50}
INFLIGHT=${INFLIGHT:-$SUBS}
GATEWAY_WINDOW=${GATEWAY_WINDOW:-$INFLIGHT}
QOS=${QOS:-1}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-1}
DURATION=${DURATION:-5}
PLATFORM=benchPK:s33d
OUT=${OUT:-$(mktemp -d /tmp/gateway.XXXXXX)}
mkdir -p "$OUT"

need python3 taskset
need_two_cpus

build_release



# start NAME: starts the broker on CPU 0 and waits for its `listening for MQTT` line; sets
# BROKER_PID.
start() {
    RUST_LOG=warn taskset -c 0 "$A" serve --config "$OUT/aliot.toml" --in-memory >"$OUT/$1.log" 2>&1 &
    BROKER_PID=$!
    until grep -q 'listening for MQTT' "$OUT/$1.log"; do
        kill -0 "$BROKER_PID" 2>/dev/null || die "the broker ($1) exited: $(tail -5 "$OUT/$1.log")"
        sleep 0.05
    done
}

# round_summary FILE: one line of a round's JSON report.
round_summary() {
    python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
g, d = r["through_gateway"]["msgs_per_sec"], r["direct"]["msgs_per_sec"]
print(f"{r['order']}: logins {r['login_secs'] * 1e3:.1f} ms, through the gateway {g:,.0f} msgs/s, "
      f"direct {d:,.0f} msgs/s, ratio {r['ratio']:.3f}")
PY
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
MQTT_PORT=$(free_port)
"$B" --platform "$PLATFORM" aliot-config --devices $((2 * SUBS + 1)) --bind "127.0.0.1:$MQTT_PORT" >"$OUT/aliot.toml"

for round in $(seq 1 "$ROUNDS"); do
    order=()
    if [ $((round % 2)) = 0 ]; then order=(--direct-first); fi
    start "broker-$round"
    if ! taskset -c 1 "$B" --platform "$PLATFORM" --port "$MQTT_PORT" --broker-pid "$BROKER_PID" \
        --broker-label aliot --json gateway --subs "$SUBS" --batch "$BATCH" --inflight "$INFLIGHT" \
        --gateway-window "$GATEWAY_WINDOW" --qos "$QOS" --warmup "$WARMUP" --duration "$DURATION" "${order[@]}" \
        >"$OUT/round-$round.json" 2>"$OUT/round-$round.err"; then
        die "round $round: $(cat "$OUT/round-$round.err") (broker log: $OUT/broker-$round.log)"
    fi
    stop_broker
    say "round $round: $(round_summary "$OUT/round-$round.json")"
done

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$OUT" "$ROUNDS" "$LOAD_BEFORE" "$LOAD_AFTER" <<'PY'
import json, statistics, sys
out, rounds, load_before, load_after = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
reports = [json.load(open(f"{out}/round-{k}.json")) for k in range(1, rounds + 1)]
first = reports[0]
w = lambda v: f"{v:,.0f}"
ms = lambda s: f"{s * 1e3:,.1f}"
cpu = lambda side: f"{side['generator_cpu_percent']:.0f} / {side['broker_cpu_percent']:.0f}"
subs, batch = first["sub_devices"], first["login_batch"]
gw, direct = first["through_gateway"], first["direct"]
print(f"""
{w(subs)} sub-devices through one gateway against {w(subs)} direct devices, QoS {gw['qos']}, \
{w(first['inflight_total'])} posts waiting on each side (the gateway's window, its MQTT window {w(first['gateway_window'])}; \
{direct['inflight']} per direct device), \
{gw['window_secs']:g} s windows; a fresh `aliot serve` (in memory) per round.

| round | order | topology ({first['topology_requests']} × topo/add), ms | {w(subs)} logins by {batch}, ms | logins/s | batch round trip p50 / p99, ms | through the gateway, msgs/s | direct, msgs/s | ratio | reply p50 gateway / direct, ms | CPU % generator / broker, gateway | the same, direct |
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|""")
for k, r in enumerate(reports, 1):
    g, d, lat = r["through_gateway"], r["direct"], r["login_batch_latency"]
    print(f"| {k} | {r['order']} | {ms(r['topology_secs'])} | {ms(r['login_secs'])} | {w(r['logins_per_sec'])} "
          f"| {lat['p50_us'] / 1e3:.2f} / {lat['p99_us'] / 1e3:.2f} | {w(g['msgs_per_sec'])} | {w(d['msgs_per_sec'])} "
          f"| {r['ratio']:.3f} | {g['latency']['p50_us'] / 1e3:.1f} / {d['latency']['p50_us'] / 1e3:.1f} | {cpu(g)} | {cpu(d)} |")
med = lambda f: statistics.median(f(r) for r in reports)
ratio = med(lambda r: r["ratio"])
print(f"| **median** | | {ms(med(lambda r: r['topology_secs']))} | **{ms(med(lambda r: r['login_secs']))}** "
      f"| **{w(med(lambda r: r['logins_per_sec']))}** | | **{w(med(lambda r: r['through_gateway']['msgs_per_sec']))}** "
      f"| **{w(med(lambda r: r['direct']['msgs_per_sec']))}** | **{ratio:.3f}** | | | |")
verdict = "met" if ratio >= 0.8 else f"missed, by {(0.8 - ratio) / 0.8 * 100:.1f} % of the target"
print(f"""
Target: through the gateway no more than 20 % below direct (ratio ≥ 0.80; faster is no miss): \
{verdict} (median of the rounds' ratios).

Load average (1, 5, 15 min) before the first round: {load_before}; after the last: {load_after} \
(the two processes of a run add up to about 2). Raw results: {out}""")
PY
