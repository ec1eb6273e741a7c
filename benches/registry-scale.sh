#!/usr/bin/env bash
# The device registry at scale (issue 14), on the release build, with a durable store:
#
#   1. BatchRegisterDevice: a broker whose file lists SMALL devices (secrets the load generator
#      can sign with) registers BIG - SMALL more through `POST /BatchRegisterDevice`, 10,000 a
#      call (the API's maximum), each call answered after its commit: devices/s;
#   2. start and memory: that broker restarted on its store (BIG devices, all offline), and a
#      broker with only the file's SMALL devices on a store of its own: how long until the API
#      answers, the broker's VmRSS then, and the difference per device;
#   3. CONNECT rate: `aliot-bench connections --count CONNECT` (signed logins of the file's
#      devices dev000000, dev000001, …) against the BIG registry and against the SMALL one,
#      alternating, ROUNDS times each, in the same run; the ratio of the medians is the number
#      the target reads (within 10 %).
#
# The broker runs on CPU 0 and the load generator on CPU 1 (taskset), as in the other broker
# benches. Prints a Markdown table; the raw results stay in $OUT (default a temp dir).
# Usage: benches/registry-scale.sh   (BIG=1000000 SMALL=10000 CONNECT=10000 ROUNDS=3)
set -Eeuo pipefail
trap 'printf "registry-scale: FAILED: line %s: a command failed (status %s)\n" "$LINENO" "$?" >&2' ERR

BENCH=registry-scale
# shellcheck source=benches/common.sh
source "$(dirname "$0")/common.sh"
BIG=${BIG:-1000000}
SMALL=${SMALL:-10000}
CONNECT=${CONNECT:-10000}
ROUNDS=${ROUNDS:-3}
PLATFORM=benchPK:s33d
TOKEN=registry-scale
OUT=${OUT:-$(mktemp -d /tmp/registry-scale.XXXXXX)}
mkdir -p "$OUT"

[ "$SMALL" -ge "$CONNECT" ] || die "SMALL ($SMALL) must hold the CONNECT ($CONNECT) devices"
[ "$BIG" -gt "$SMALL" ] || die "BIG ($BIG) must be more than SMALL ($SMALL)"
need curl python3 taskset

build_release
now_ms() { date +%s%3N; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }


# start NAME DATA_DIR: starts the broker on CPU 0 with the file's devices and the store in
# DATA_DIR, and waits until its API answers; sets BROKER_PID, STARTED_MS (launch to the API's
# first answer) and STARTED_RSS_KIB.
start() {
    local begun
    begun=$(now_ms)
    taskset -c 0 "$A" serve --config "$OUT/aliot.toml" --data-dir "$2" >"$OUT/$1.log" 2>&1 &
    BROKER_PID=$!
    until curl -s -f -o /dev/null -H "authorization: Bearer $TOKEN" "http://127.0.0.1:$API_PORT/metrics"; do
        kill -0 "$BROKER_PID" 2>/dev/null || die "the broker ($1) exited: $(tail -5 "$OUT/$1.log")"
        sleep 0.05
    done
    STARTED_MS=$(($(now_ms) - begun))
    STARTED_RSS_KIB=$(rss_kib "$BROKER_PID")
}

MQTT_PORT=$(free_port)
API_PORT=$(free_port)
"$B" --platform "$PLATFORM" aliot-config --devices "$SMALL" --bind "127.0.0.1:$MQTT_PORT" >"$OUT/aliot.toml"
printf '[api]\nbind = "127.0.0.1:%s"\ntoken = "%s"\n' "$API_PORT" "$TOKEN" >>"$OUT/aliot.toml"
rm -rf "$OUT/data-big" "$OUT/data-small"

# 1. BatchRegisterDevice, on the store that becomes the big registry.
start big-batch "$OUT/data-big"
to_register=$((BIG - SMALL))
batch_begun=$(now_ms)
while [ "$to_register" -gt 0 ]; do
    count=$((to_register < 10000 ? to_register : 10000))
    curl -s -f -o "$OUT/batch.json" -X POST -H "authorization: Bearer $TOKEN" \
        -H 'content-type: application/json' -d "{\"ProductKey\":\"benchPK\",\"Count\":$count}" \
        "http://127.0.0.1:$API_PORT/BatchRegisterDevice" ||
        die "BatchRegisterDevice failed: $(cat "$OUT/batch.json" 2>/dev/null)"
    to_register=$((to_register - count))
done
batch_ms=$(($(now_ms) - batch_begun))
batch_rss=$(rss_kib "$BROKER_PID")
devices=$(curl -s -f -H "authorization: Bearer $TOKEN" "http://127.0.0.1:$API_PORT/metrics" |
    awk '/^aliot_registry_devices / { print $2 }')
stop_broker
[ "$devices" = "$BIG" ] || die "the registry holds $devices devices after the batches, expected $BIG"
say "registered $((BIG - SMALL)) devices in $batch_ms ms (VmRSS then $batch_rss KiB)"

# 2. Start and memory: each registry from its store.
declare -A START_MS START_RSS
start small-first "$OUT/data-small"
stop_broker
for size in big small; do
    start "$size-start" "$OUT/data-$size"
    START_MS[$size]=$STARTED_MS
    START_RSS[$size]=$STARTED_RSS_KIB
    stop_broker
    say "$size registry: started from its store in ${START_MS[$size]} ms, VmRSS ${START_RSS[$size]} KiB"
done

# 3. CONNECT rate, alternating.
declare -A RATES
for round in $(seq 1 "$ROUNDS"); do
    for size in big small; do
        start "$size-connect-$round" "$OUT/data-$size"
        taskset -c 1 "$B" --platform "$PLATFORM" --port "$MQTT_PORT" --broker-pid "$BROKER_PID" \
            --broker-label "aliot, $size registry" --json connections --count "$CONNECT" \
            >"$OUT/$size-connect-$round.json"
        stop_broker
        connected=$(json_field "$OUT/$size-connect-$round.json" connected)
        [ "$connected" = "$CONNECT" ] || die "$size round $round: $connected of $CONNECT connected"
        rate=$(json_field "$OUT/$size-connect-$round.json" connects_per_sec)
        RATES[$size]="${RATES[$size]:-} $rate"
        say "round $round, $size registry: $(whole "$rate") connects/s"
    done
done

python3 - "$BIG" "$SMALL" "$CONNECT" "$ROUNDS" "$batch_ms" "$batch_rss" \
    "${START_MS[big]}" "${START_MS[small]}" "${START_RSS[big]}" "${START_RSS[small]}" \
    "${RATES[big]}" "${RATES[small]}" "$OUT" <<'PY'
import statistics, sys
(big, small, connect, rounds, batch_ms, batch_rss, ms_big, ms_small, rss_big, rss_small) = map(int, sys.argv[1:11])
rates_big = [float(r) for r in sys.argv[11].split()]
rates_small = [float(r) for r in sys.argv[12].split()]
out = sys.argv[13]
w = lambda v: f"{v:,.0f}"
median_big, median_small = statistics.median(rates_big), statistics.median(rates_small)
ratio = median_big / median_small
print(f"""
| measure | {w(big)} devices | {w(small)} devices | ratio | target | met |
|---|---:|---:|---:|---|---|
| BatchRegisterDevice, {w(big - small)} devices by 10,000, devices/s (each call durable) | {w((big - small) * 1000 / batch_ms)} | | | | |
| start from the store until the API answers, ms | {w(ms_big)} | {w(ms_small)} | | | |
| broker VmRSS after that start, KiB | {w(rss_big)} | {w(rss_small)} | | | |
| broker memory per registered device, bytes | {w((rss_big - rss_small) * 1024 / (big - small))} | | | | |
| connects/s, {w(connect)} signed logins, median of {rounds} ({" / ".join(map(w, rates_big))} vs {" / ".join(map(w, rates_small))}) | {w(median_big)} | {w(median_small)} | {ratio:.3f} | ≥ 0.90 | {"yes" if ratio >= 0.9 else "no"} |
| broker VmRSS after the batches (before a restart), KiB | {w(batch_rss)} | | | | |

Raw results: {out}""")
PY
