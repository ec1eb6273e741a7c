#!/usr/bin/env bash
# The web console in a real browser (issue 19): Debian's Chromium driven by Playwright
# (npm playwright-core, pointed at /usr/bin/chromium; it downloads no browser) against the
# demo of `aliot serve` on free loopback ports. What it checks is written at the top of
# browser_test.js. Screenshots of each main page go to target/console-screenshots/ (the
# README's are copies of them, in docs/console/).
#
# Installs are idempotent: chromium and mosquitto-clients through apt-get when missing, the
# npm package from package-lock.json into tests/console/node_modules when it changes.
# Usage: tests/console/run.sh   (CARGO_TARGET_DIR is honoured)
set -Eeuo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SHOTS=$ROOT/target/console-screenshots
say() { printf 'console-browser: %s\n' "$*"; }
die() {
    printf 'console-browser: FAILED: %s\n' "$*" >&2
    exit 1
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v mosquitto_sub >/dev/null 2>&1 || missing+=(mosquitto-clients)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (apt-get)"
    as_root apt-get update -q >/dev/null || die "apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed"
fi

cd "$HERE"
stamp=node_modules/.lock-stamp
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
    say "installing playwright-core (npm ci)"
    npm ci --no-audit --no-fund >/dev/null || die "npm ci failed"
    cp package-lock.json "$stamp"
fi

say "building aliot"
(cd "$ROOT" && cargo build -q -p aliot-tokio --bin aliot) || die "cargo build failed"
ALIOT=$TARGET/debug/aliot

# The broker binds port 0 everywhere and says which ports it got: no port is chosen here and
# released for another process to take first.
LOG=$(mktemp)
"$ALIOT" serve --bind 127.0.0.1:0 --api-bind 127.0.0.1:0 --amqp-bind 127.0.0.1:0 --in-memory \
    >"$LOG" 2>&1 &
BROKER=$!
trap 'kill $BROKER 2>/dev/null || true; wait $BROKER 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 1 100); do
    grep -q "aliot: running" "$LOG" && break
    kill -0 $BROKER 2>/dev/null || { cat "$LOG"; die "aliot serve exited"; }
    sleep 0.1
done
grep -q "aliot: running" "$LOG" || { cat "$LOG"; die "aliot serve did not start"; }
port_of() { grep -m 1 -E "$1" "$LOG" | sed -n 's/.*127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p'; }
MQTT_PORT=$(port_of '^aliot: listening for MQTT on .* \(TCP\)$')
API_PORT=$(port_of '^aliot: HTTP API on ')
[ -n "$MQTT_PORT" ] && [ -n "$API_PORT" ] || { cat "$LOG"; die "aliot serve did not say its ports"; }

rm -rf "$SHOTS"
if ! API="http://127.0.0.1:$API_PORT" MQTT_PORT=$MQTT_PORT DEMO_LOG=$LOG ALIOT=$ALIOT SHOTS=$SHOTS \
    timeout 180 node browser_test.js; then
    say "the broker's log:"
    cat "$LOG"
    die "the browser test failed"
fi
