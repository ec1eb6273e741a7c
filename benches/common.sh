# What the broker bench scripts share (sourced, with BENCH set to the script's name): their
# messages, the tools they need, the release build, and the one broker each runs at a time,
# stopped on exit. ROOT, A (aliot) and B (aliot-bench) are set for them.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
A=$ROOT/target/release/aliot
B=$ROOT/target/release/aliot-bench

die() {
    printf '%s: FAILED: %s\n' "$BENCH" "$*" >&2
    exit 1
}
say() { printf '%s: %s\n' "$BENCH" "$*" >&2; }

# need TOOL…: each must be on PATH.
need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
    done
}

# need_two_cpus: the broker runs on CPU 0 and the load generator on CPU 1.
need_two_cpus() {
    [ "$(nproc)" -ge 2 ] || die "two CPUs are needed: the broker on CPU 0, the generator on CPU 1"
}

# build_release: the release aliot and aliot-bench.
build_release() {
    say "building the release binaries"
    (cd "$ROOT" && cargo build --release -q -p aliot-benches -p aliot-tokio) || die "cargo build failed"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

BROKER_PID=
stop_broker() {
    if [ -n "$BROKER_PID" ]; then
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=
    fi
}
trap stop_broker EXIT

# json_field FILE KEY: one top-level field of a JSON report.
json_field() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
# whole NUMBER: rounded, with thousands separators.
whole() { python3 -c 'import sys; print(f"{float(sys.argv[1]):,.0f}")' "$1"; }
