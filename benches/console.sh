#!/usr/bin/env bash
# The web console at scale (issue 19), on the release build:
#
#   1. The devices page with 100,000 registered devices (DEVICES): a broker whose file lists
#      1,000 devices registers the rest through `POST /BatchRegisterDevice`; then each page
#      below is fetched REQUESTS times with curl (a bearer token, a fresh connection each
#      time) and its median and p95 are reported: the first page of the product, a page in
#      the middle, the last page, a name search, and the first page of every product.
#   2. The live view at RATE msgs/s (default 10,000): `aliot-bench one-to-one --qos 1 --rate`
#      between two platform devices of the product, with the broker's CPU read from /proc,
#      against a broker with `[api] console = false` and against one with the console on and
#      its event stream followed for every message of the product (curl -N on
#      /console/events), alternating, ROUNDS times each. The ratio of the median CPU is the
#      number the target reads (≤ 1.05).
#   3. The page's memory under that load: Chromium (Playwright, tests/console's install) keeps
#      the live page open for PAGE_SECS, and its rows and JS heap are sampled each 5 s.
#
# The broker runs on CPU 0 and the load generator on CPU 1 (taskset). Prints a Markdown
# table; the raw results stay in $OUT (default a temp dir).
# Usage: benches/console.sh   (DEVICES=100000 REQUESTS=30 RATE=10000 ROUNDS=5 WINDOW=20 PAGE_SECS=30)
set -Eeuo pipefail
trap 'printf "console: FAILED: line %s: a command failed (status %s)\n" "$LINENO" "$?" >&2' ERR

BENCH=console
# shellcheck source=benches/common.sh
source "$(dirname "$0")/common.sh"
DEVICES=${DEVICES:-100000}
REQUESTS=${REQUESTS:-30}
RATE=${RATE:-10000}
ROUNDS=${ROUNDS:-5}
PAGE_SECS=${PAGE_SECS:-30}
WINDOW=${WINDOW:-20}
PLATFORM=benchPK:s33d
TOKEN=console-bench
FILE_DEVICES=1000
OUT=${OUT:-$(mktemp -d /tmp/console-bench.XXXXXX)}
mkdir -p "$OUT"
need curl python3 taskset
need_two_cpus
build_release

MQTT_PORT=$(free_port)
API_PORT=$(free_port)
API="http://127.0.0.1:$API_PORT"
"$B" --platform "$PLATFORM" aliot-config --devices "$FILE_DEVICES" --bind "127.0.0.1:$MQTT_PORT" >"$OUT/base.toml"
for console in true false; do
    cp "$OUT/base.toml" "$OUT/console-$console.toml"
    printf '[api]\nbind = "127.0.0.1:%s"\ntoken = "%s"\nconsole = %s\n' "$API_PORT" "$TOKEN" "$console" \
        >>"$OUT/console-$console.toml"
done

# start CONSOLE(true|false) NAME: the broker on CPU 0, in memory, until its API answers.
start() {
    taskset -c 0 "$A" serve --config "$OUT/console-$1.toml" --in-memory >"$OUT/$2.log" 2>&1 &
    BROKER_PID=$!
    until curl -s -f -o /dev/null -H "authorization: Bearer $TOKEN" "$API/metrics"; do
        kill -0 "$BROKER_PID" 2>/dev/null || die "the broker ($2) exited: $(tail -5 "$OUT/$2.log")"
        sleep 0.05
    done
}

# 1. The devices page at DEVICES devices.
start true pages
to_register=$((DEVICES - FILE_DEVICES))
while [ "$to_register" -gt 0 ]; do
    count=$((to_register < 10000 ? to_register : 10000))
    curl -s -f -o "$OUT/batch.json" -X POST -H "authorization: Bearer $TOKEN" \
        -H 'content-type: application/json' -d "{\"ProductKey\":\"benchPK\",\"Count\":$count}" \
        "$API/BatchRegisterDevice" || die "BatchRegisterDevice failed: $(cat "$OUT/batch.json" 2>/dev/null)"
    to_register=$((to_register - count))
done
last_page=$(((DEVICES + 49) / 50))
declare -A PAGES=(
    [first]="/console/devices?product=benchPK"
    [middle]="/console/devices?product=benchPK&page=$((last_page / 2))"
    [last]="/console/devices?product=benchPK&page=$last_page"
    [search]="/console/devices?product=benchPK&q=dev0005"
    [all]="/console/devices"
)
for name in first middle last search all; do
    url="$API${PAGES[$name]}"
    curl -s -f -o "$OUT/page-$name.html" -H "authorization: Bearer $TOKEN" "$url" || die "GET $url failed"
    grep -q "$DEVICES device(s)\|device(s)" "$OUT/page-$name.html" || die "GET $url: not the devices page"
    : >"$OUT/times-$name"
    for _ in $(seq 1 "$REQUESTS"); do
        taskset -c 1 curl -s -f -o /dev/null -w '%{time_total}\n' -H "authorization: Bearer $TOKEN" "$url" \
            >>"$OUT/times-$name"
    done
done
total=$(grep -o '[0-9,]* device(s)' "$OUT/page-first.html" | head -1)
stop_broker
say "the devices page: $total"

# 2. The broker's CPU at RATE msgs/s, console off and on (followed).
declare -A CPU RECEIVED
for round in $(seq 1 "$ROUNDS"); do
    for console in false true; do
        start "$console" "cpu-$console-$round"
        follower=
        if [ "$console" = true ]; then
            taskset -c 1 curl -s -N -H "authorization: Bearer $TOKEN" \
                "$API/console/events?product=benchPK" >"$OUT/events-$round.txt" &
            follower=$!
        fi
        taskset -c 1 "$B" --platform "$PLATFORM" --port "$MQTT_PORT" --broker-pid "$BROKER_PID" \
            --broker-label "aliot, console $console" --json one-to-one --qos 1 --rate "$RATE" \
            --warmup 2 --duration "$WINDOW" >"$OUT/cpu-$console-$round.json"
        if [ -n "$follower" ]; then
            kill "$follower" 2>/dev/null || true
            wait "$follower" 2>/dev/null || true
            RECEIVED[$round]=$(grep -o '"seq":' "$OUT/events-$round.txt" | wc -l)
        fi
        stop_broker
        cpu=$(json_field "$OUT/cpu-$console-$round.json" broker_cpu_percent)
        rate=$(json_field "$OUT/cpu-$console-$round.json" msgs_per_sec)
        CPU[$console]="${CPU[$console]:-} $cpu"
        say "round $round, console $console: broker CPU $cpu %, $(whole "$rate") msgs/s delivered"
    done
done

# 3. The live page's memory in Chromium under the same load.
PAGE_JSON=$OUT/page-memory.json
if [ -d "$ROOT/tests/console/node_modules/playwright-core" ] && command -v chromium >/dev/null 2>&1; then
    start true page-memory
    taskset -c 1 "$B" --platform "$PLATFORM" --port "$MQTT_PORT" --json one-to-one --qos 1 \
        --rate "$RATE" --warmup 1 --duration "$((PAGE_SECS + 5))" >"$OUT/page-load.json" &
    load=$!
    sleep 1
    (cd "$ROOT/tests/console" && API="$API" TOKEN="$TOKEN" SECS="$PAGE_SECS" \
        node -e '
const { chromium } = require("playwright-core");
(async () => {
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--enable-precise-memory-info"] });
  const context = await browser.newContext({ extraHTTPHeaders: { authorization: "Bearer " + process.env.TOKEN } });
  const page = await context.newPage();
  await page.goto(process.env.API + "/console/live?product=benchPK");
  const samples = [];
  for (let t = 5; t <= Number(process.env.SECS); t += 5) {
    await page.waitForTimeout(5000);
    samples.push(await page.evaluate(() => ({
      rows: document.querySelectorAll("#live tbody tr").length,
      heap: performance.memory.usedJSHeapSize,
      state: document.getElementById("live-state").textContent })));
  }
  console.log(JSON.stringify(samples));
  await browser.close();
})();') >"$PAGE_JSON"
    wait "$load" || true
    stop_broker
else
    say "no Chromium or playwright-core (run tests/console/run.sh once): the page memory is not measured"
    echo '[]' >"$PAGE_JSON"
fi

python3 - "$OUT" "$DEVICES" "$RATE" "$ROUNDS" "${CPU[false]}" "${CPU[true]}" "${RECEIVED[*]}" "$PAGE_JSON" <<'PY'
import json, statistics, sys
out, devices, rate, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
off = [float(c) for c in sys.argv[5].split()]
on = [float(c) for c in sys.argv[6].split()]
received = [int(r) for r in sys.argv[7].split()]
samples = json.load(open(sys.argv[8]))
w = lambda v: f"{v:,.0f}"
def times(name):
    values = sorted(float(t) * 1000 for t in open(f"{out}/times-{name}"))
    return statistics.median(values), values[min(len(values) - 1, int(len(values) * 0.95))]
print(f"\n| the devices page, {w(devices)} devices | median ms | p95 ms | target |\n|---|---:|---:|---|")
for name, label in [("first", "first page of the product"), ("middle", "a page in the middle"),
                    ("last", "the last page"), ("search", "a name search (`q=dev0005`)"),
                    ("all", "every product, first page")]:
    median, p95 = times(name)
    print(f"| {label} | {median:.1f} | {p95:.1f} | < 100 ms: {'met' if median < 100 else 'missed'} |")
ratio = statistics.median(on) / statistics.median(off)
print(f"""
| the live view at {w(rate)} msgs/s (1:1 QoS 1), median of {rounds} | broker CPU % | |
|---|---:|---|
| console off ({" / ".join(f"{c:.1f}" for c in off)}) | {statistics.median(off):.1f} | |
| console on, its event stream followed ({" / ".join(f"{c:.1f}" for c in on)}) | {statistics.median(on):.1f} | ratio {ratio:.3f}, target ≤ 1.05: {'met' if ratio <= 1.05 else 'missed'} |
| entries the stream carried per round | {" / ".join(w(r) for r in received)} | |""")
if samples:
    print(f"\n| the live page in Chromium, sampled every 5 s at {w(rate)} msgs/s | rows | JS heap, KiB | state |\n|---|---:|---:|---|")
    for n, s in enumerate(samples, 1):
        print(f"| {5 * n} s | {s['rows']} | {w(s['heap'] / 1024)} | {s['state']} |")
print(f"\nRaw results: {out}")
PY
