#!/usr/bin/env bash
# The "bare metal" step of .ci/run (issue 6): aliot's sans-IO client on no runtime at all.
#
#   1. builds aliot-bare-metal-example (no_std, embedded-io) for the bare-metal target;
#   2. starts `aliot serve` (the built-in demo) on free ports of 127.0.0.1;
#   3. runs core/examples/blocking_device.rs (a blocking std::net::TcpStream, no async runtime)
#      as the demo device dev-001 with --check, under `timeout 60`;
#   4. calls the device through the HTTP API's POST /rrpc until RrpcCode is SUCCESS (bounded),
#      and checks the device's answer ("pong: " + the request);
#   5. checks the device exited 0: connected, SUBACK, PUBACK and the RRPC answered.
#
# The broker is stopped on exit, whatever happens. On failure it prints the device's output and
# the broker's log, and exits 1. Usage: examples/bare-metal/ci.sh [TARGET]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
TARGET=${1:-thumbv7em-none-eabihf}
WORK=$ROOT/target/bare-metal
ALIOT=${CARGO_TARGET_DIR:-$ROOT/target}/debug/aliot
PRODUCT_KEY=a1DemoProd01
DEVICE_NAME=dev-001
DEVICE_SECRET=DemoSecret0001aliotNotForProduct # the demo's public secret (io-tokio/src/demo.rs)
RRPC_ATTEMPTS=40                                 # calls, 0.5 s apart, until the device answers
mkdir -p "$WORK"
: >"$WORK/device.out"

say() { printf 'bare-metal: %s\n' "$*"; }
fail() {
    printf 'bare-metal: FAILED: %s\n' "$*" >&2
    printf -- '--- the device (blocking_device) ---\n'
    cat "$WORK/device.out" 2>/dev/null || true
    printf -- '--- the broker (%s, %s) ---\n' "$WORK/aliot.out" "$WORK/aliot.log"
    grep '^aliot:' "$WORK/aliot.out" 2>/dev/null || true
    cat "$WORK/aliot.log" 2>/dev/null || true
    printf -- '--- end of the broker log ---\n'
    exit 1
}

say "cargo build -p aliot-bare-metal-example --target $TARGET"
cargo build -q -p aliot-bare-metal-example --target "$TARGET" ||
    fail "the no_std example does not build for $TARGET"
# Built before anything is timed, so `timeout 60` times the run, not the compilation.
say "cargo build -p aliot-tokio --bin aliot; cargo build -p aliot-core --example blocking_device"
cargo build -q -p aliot-tokio --bin aliot || fail "cargo build -p aliot-tokio --bin aliot failed"
cargo build -q -p aliot-core --example blocking_device || fail "the blocking_device example does not build"

BROKER_PID=
DEVICE_PID=
stop() {
    for pid in $DEVICE_PID $BROKER_PID; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap stop EXIT

RUST_LOG=${RUST_LOG:-info} "$ALIOT" serve --bind 127.0.0.1:0 --api-bind 127.0.0.1:0 --amqp-bind 127.0.0.1:0 --in-memory \
    >"$WORK/aliot.out" 2>"$WORK/aliot.log" &
BROKER_PID=$!
for _ in $(seq 200); do
    grep -q '^aliot: running' "$WORK/aliot.out" && break
    kill -0 "$BROKER_PID" 2>/dev/null || fail "aliot serve exited before it was running"
    sleep 0.1
done
grep -q '^aliot: running' "$WORK/aliot.out" || fail "aliot serve not running after 20 s"
port_of() { grep -m 1 -E "$1" "$WORK/aliot.out" | sed -n 's/.*127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p'; }
MQTT_PORT=$(port_of '^aliot: listening for MQTT on .* \(TCP\)$')
API_PORT=$(port_of '^aliot: HTTP API on ')
[ -n "$MQTT_PORT" ] && [ -n "$API_PORT" ] || fail "cannot read the MQTT and API ports aliot serve printed"
say "aliot serve: MQTT on 127.0.0.1:$MQTT_PORT, HTTP API on 127.0.0.1:$API_PORT"

timeout 60 cargo run -q -p aliot-core --example blocking_device -- \
    "127.0.0.1:$MQTT_PORT" "$PRODUCT_KEY" "$DEVICE_NAME" "$DEVICE_SECRET" --check \
    >"$WORK/device.out" 2>&1 &
DEVICE_PID=$!

# The call fails OFFLINE or HALFCONN until the device has subscribed; then it must succeed.
request=$(printf 'ping' | base64)
expected=$(printf 'pong: ping' | base64)
body="{\"ProductKey\":\"$PRODUCT_KEY\",\"DeviceName\":\"$DEVICE_NAME\",\"RequestBase64Byte\":\"$request\",\"Timeout\":3000}"
answer=
for attempt in $(seq "$RRPC_ATTEMPTS"); do
    answer=$(curl -sS --max-time 10 -X POST "http://127.0.0.1:$API_PORT/rrpc" \
        -H 'content-type: application/json' -d "$body" 2>&1) || true
    case $answer in *'"RrpcCode":"SUCCESS"'*) break ;; esac
    kill -0 "$DEVICE_PID" 2>/dev/null || break
    sleep 0.5
done
say "POST /rrpc, attempt $attempt: $answer"
case $answer in
*'"RrpcCode":"SUCCESS"'*) ;;
*)
    kill -0 "$DEVICE_PID" 2>/dev/null || fail "the device exited before an RRPC call succeeded (last answer: $answer)"
    fail "no RRPC call succeeded in $attempt attempt(s); the last answer: $answer"
    ;;
esac
case $answer in
*"\"PayloadBase64Byte\":\"$expected\""*) ;;
*) fail "the device answered the RRPC, but not with \"pong: ping\" ($expected): $answer" ;;
esac

status=0
wait "$DEVICE_PID" || status=$?
DEVICE_PID=
sed 's/^/bare-metal: device: /' "$WORK/device.out"
[ "$status" -ne 124 ] || fail "the device did not finish within 60 s"
[ "$status" -eq 0 ] || fail "the device exited with status $status"
grep -q 'check passed' "$WORK/device.out" || fail "the device exited 0 without saying its check passed"
say "PASS: the no_std example builds for $TARGET; the blocking device connected, subscribed, published at QoS 1 and answered RRPC"
