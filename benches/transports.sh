#!/usr/bin/env bash
# The transports (issue 17), on the release build, in one run: devices on the platform connect
# over TLS, so TLS is the path to measure, beside WebSocket and TLS-PSK.
#
#   1. TLS connects/s and broker memory per idle TLS connection (TLS 1.3, an EC P-256
#      certificate): CONNECTIONS connections opened CONNECT_CONCURRENCY at a time, held HOLD
#      seconds, against aliot and against mosquitto (TLS listener, `set_tcp_nodelay true`,
#      anonymous: it verifies no signature, aliot verifies each device's). Targets: aliot
#      ≥ 2× mosquitto's connects/s, ≤ 4 KiB per idle TLS connection. aliot over plain TCP too,
#      for what TLS adds.
#   2. TLS-PSK handshakes/s (connects/s over a `psk = true` listener) beside TLS 1.3 with a
#      certificate, on aliot.
#   3. 1:1 QoS 1 msgs/s over TLS beside plain TCP (aliot; mosquitto over TLS for reference).
#   4. WebSocket 1:1 QoS 0 and QoS 1 msgs/s beside plain TCP (target ≥ 0.7 of TCP), and over
#      TLS (wss).
#
# Every connections run starts a fresh broker (so the memory reading starts clean); the
# throughput runs of a round share one. ROUNDS rounds; the tables give the medians, and the
# ratios are of medians measured in the same run. The broker runs on CPU 0 and aliot-bench on
# CPU 1 (taskset), as in the other broker benches; the generator does its side of every TLS
# handshake too, on one core.
#
# Usage: benches/transports.sh   (ROUNDS=3 WARMUP=1 DURATION=5 CONNECTIONS=3000 HOLD=2
#                                 CONNECT_CONCURRENCY=64 OUT=a new /tmp/transports.* dir)
set -Eeuo pipefail
trap 'printf "transports: FAILED: line %s: a command failed (status %s)\n" "$LINENO" "$?" >&2' ERR

BENCH=transports
# shellcheck source=benches/common.sh
source "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-1}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-3000}
HOLD=${HOLD:-2}
CONNECT_CONCURRENCY=${CONNECT_CONCURRENCY:-64}
PLATFORM=benchPK:s33d
OUT=${OUT:-$(mktemp -d /tmp/transports.XXXXXX)}
mkdir -p "$OUT"

export PATH="$PATH:/usr/sbin:/sbin"
if ! command -v mosquitto >/dev/null 2>&1; then
    say "installing mosquitto (apt-get)"
    sudo_=()
    [ "$(id -u)" -eq 0 ] || sudo_=(sudo -n)
    "${sudo_[@]}" apt-get update -q >/dev/null && "${sudo_[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q mosquitto >/dev/null || die "cannot install mosquitto"
fi
need python3 taskset openssl mosquitto
need_two_cpus
build_release

# --- A CA and a certificate for localhost / 127.0.0.1 signed by it. ---
tls=$OUT/tls
mkdir -p "$tls"
(
    cd "$tls"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key
    openssl req -x509 -new -key ca.key -days 2 -subj "/CN=aliot transports bench CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" -out ca.pem
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key
    openssl req -new -key server.key -subj "/CN=localhost" -out server.csr
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile server.ext -out server.pem
    # mosquitto drops to its own user when started as root: it must read these.
    chmod 644 server.key server.pem ca.pem
) >"$OUT/openssl.log" 2>&1 || die "cannot make the certificate: $(cat "$OUT/openssl.log")"
chmod 755 "$OUT" "$tls"

# --- The brokers' configurations. ---
TCP=$(free_port) TLS=$(free_port) PSK=$(free_port) WS=$(free_port) WSS=$(free_port)
MOSQ_TLS=$(free_port) MOSQ_TCP=$(free_port)
"$B" aliot-config --platform "$PLATFORM" --devices "$CONNECTIONS" --bind "127.0.0.1:$TCP" >"$OUT/aliot.toml"
cat >>"$OUT/aliot.toml" <<EOF

[[listener]]
bind = "127.0.0.1:$TLS"
tls = { cert = "$tls/server.pem", key = "$tls/server.key" }

[[listener]]
bind = "127.0.0.1:$PSK"
psk = true

[[listener]]
bind = "127.0.0.1:$WS"
websocket = { path = "/mqtt" }

[[listener]]
bind = "127.0.0.1:$WSS"
websocket = { path = "/mqtt" }
tls = { cert = "$tls/server.pem", key = "$tls/server.key" }
EOF
cat >"$OUT/mosquitto.conf" <<EOF
per_listener_settings false
allow_anonymous true
set_tcp_nodelay true
max_connections -1
persistence false
log_dest stderr
log_type error
log_type warning
listener $MOSQ_TCP 127.0.0.1
listener $MOSQ_TLS 127.0.0.1
certfile $tls/server.pem
keyfile $tls/server.key
EOF

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start NAME PORT COMMAND…: a fresh broker on CPU 0, once PORT answers.
start() {
    local name=$1 port=$2
    shift 2
    stop_broker
    taskset -c 0 "$@" >>"$OUT/$name.log" 2>&1 &
    BROKER_PID=$!
    for _ in $(seq 1 200); do
        port_open "$port" && return 0
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    die "$name did not open port $port: $(tail -n 5 "$OUT/$name.log")"
}
start_aliot() { start aliot "$WSS" "$A" serve --config "$OUT/aliot.toml"; }
start_mosquitto() { start mosquitto "$MOSQ_TLS" mosquitto -c "$OUT/mosquitto.conf"; }

# bench NAME ARGS…: one aliot-bench run on CPU 1, its JSON report in $OUT/NAME.json.
bench() {
    local name=$1
    shift
    taskset -c 1 "$B" --json --broker-pid "$BROKER_PID" "$@" >"$OUT/$name.json" 2>>"$OUT/aliot-bench.log" ||
        die "aliot-bench $name failed: $(tail -n 1 "$OUT/aliot-bench.log")"
    say "  $name: $(python3 "$OUT/line.py" "$OUT/$name.json")"
}

# One line per run for the log: the rate, and memory per connection when measured.
cat >"$OUT/line.py" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
rate = report.get("connects_per_sec") or report.get("msgs_per_sec") or 0
line = f"{rate:,.0f}/s, broker CPU {report.get('broker_cpu_percent') or 0:.0f} %"
if report.get("bytes_per_connection"):
    line += f", {report['bytes_per_connection']:,.0f} B per connection"
print(line)
EOF

ALIOT_LOGIN=(--platform "$PLATFORM")
CA=(--tls "$tls/ca.pem")
CONNECTS=(connections --count "$CONNECTIONS" --hold "$HOLD")
RUN=(--warmup "$WARMUP" --duration "$DURATION")
for round in $(seq 1 "$ROUNDS"); do
    say "round $round of $ROUNDS"
    # Idle connections, each on a fresh broker. Alternate who goes first.
    if [ $((round % 2)) -eq 1 ]; then order="aliot mosquitto"; else order="mosquitto aliot"; fi
    for broker in $order; do
        if [ "$broker" = aliot ]; then
            start_aliot
            bench "aliot-tls-connections-$round" --port "$TLS" "${CA[@]}" "${ALIOT_LOGIN[@]}" \
                --connect-concurrency "$CONNECT_CONCURRENCY" --broker-label aliot "${CONNECTS[@]}"
            start_aliot
            bench "aliot-psk-connections-$round" --port "$PSK" --psk "${ALIOT_LOGIN[@]}" \
                --connect-concurrency "$CONNECT_CONCURRENCY" --broker-label aliot "${CONNECTS[@]}"
            start_aliot
            bench "aliot-tcp-connections-$round" --port "$TCP" "${ALIOT_LOGIN[@]}" \
                --connect-concurrency "$CONNECT_CONCURRENCY" --broker-label aliot "${CONNECTS[@]}"
        else
            start_mosquitto
            bench "mosquitto-tls-connections-$round" --port "$MOSQ_TLS" "${CA[@]}" --open \
                --connect-concurrency "$CONNECT_CONCURRENCY" --broker-label mosquitto "${CONNECTS[@]}"
        fi
    done
    # Throughput: one aliot for the round's runs, then mosquitto over TLS.
    start_aliot
    for qos in 0 1; do
        bench "aliot-tcp-qos$qos-$round" --port "$TCP" "${ALIOT_LOGIN[@]}" --broker-label aliot one-to-one --qos "$qos" "${RUN[@]}"
        bench "aliot-ws-qos$qos-$round" --port "$WS" --websocket /mqtt "${ALIOT_LOGIN[@]}" --broker-label aliot one-to-one --qos "$qos" "${RUN[@]}"
    done
    bench "aliot-tls-qos1-$round" --port "$TLS" "${CA[@]}" "${ALIOT_LOGIN[@]}" --broker-label aliot one-to-one --qos 1 "${RUN[@]}"
    bench "aliot-wss-qos1-$round" --port "$WSS" --websocket /mqtt "${CA[@]}" "${ALIOT_LOGIN[@]}" --broker-label aliot one-to-one --qos 1 "${RUN[@]}"
    start_mosquitto
    bench "mosquitto-tls-qos1-$round" --port "$MOSQ_TLS" "${CA[@]}" --open --broker-label mosquitto one-to-one --qos 1 "${RUN[@]}"
    stop_broker
done

# --- The tables: medians of the rounds, ratios of medians. ---
python3 - "$OUT" "$ROUNDS" "$CONNECTIONS" <<'EOF'
import json, statistics, sys
out, rounds, connections = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def values(name, field):
    found = []
    for k in range(1, rounds + 1):
        try:
            report = json.load(open(f"{out}/{name}-{k}.json"))
        except FileNotFoundError:
            continue
        if report.get(field) is not None:
            found.append(report[field])
    return found
def median(name, field):
    found = values(name, field)
    return statistics.median(found) if found else float("nan")
def spread(name, field, unit=""):
    found = values(name, field)
    return f"{min(found):,.0f}–{max(found):,.0f}{unit}" if found else "n/a"

tls_c, mosq_c = median("aliot-tls-connections", "connects_per_sec"), median("mosquitto-tls-connections", "connects_per_sec")
tls_cpu, mosq_cpu = median("aliot-tls-connections", "broker_cpu_percent"), median("mosquitto-tls-connections", "broker_cpu_percent")
psk_cpu = median("aliot-psk-connections", "broker_cpu_percent")
# Connects per second of broker CPU: where the generator's side of the handshakes (on its one
# core) limits the rate, this is what the broker would do on a core of its own.
tls_per_cpu, mosq_per_cpu = tls_c / (tls_cpu / 100), mosq_c / (mosq_cpu / 100)
tls_b, mosq_b = median("aliot-tls-connections", "bytes_per_connection"), median("mosquitto-tls-connections", "bytes_per_connection")
tcp_c, tcp_b = median("aliot-tcp-connections", "connects_per_sec"), median("aliot-tcp-connections", "bytes_per_connection")
psk_c, psk_b = median("aliot-psk-connections", "connects_per_sec"), median("aliot-psk-connections", "bytes_per_connection")
print(f"\n### Connections: {connections} idle, medians of {rounds} rounds\n")
print("| measurement | aliot | mosquitto | ratio | target |")
print("|---|---:|---:|---:|---|")
print(f"| TLS 1.3 connects/s | {tls_c:,.0f} ({spread('aliot-tls-connections', 'connects_per_sec')}) | {mosq_c:,.0f} ({spread('mosquitto-tls-connections', 'connects_per_sec')}) | **{tls_c / mosq_c:.2f}** | ≥ 2 |")
print(f"| broker CPU during the connects | {tls_cpu:.0f} % | {mosq_cpu:.0f} % | | |")
print(f"| TLS 1.3 connects per broker CPU-second | {tls_per_cpu:,.0f} | {mosq_per_cpu:,.0f} | **{tls_per_cpu / mosq_per_cpu:.2f}** | ≥ 2 |")
print(f"| broker bytes per idle TLS connection | {tls_b:,.0f} ({spread('aliot-tls-connections', 'bytes_per_connection')}) | {mosq_b:,.0f} ({spread('mosquitto-tls-connections', 'bytes_per_connection')}) | {tls_b / mosq_b:.2f} | aliot ≤ 4,096 |")
print(f"| TLS-PSK connects/s (aliot) beside TLS 1.3 | {psk_c:,.0f} (broker CPU {psk_cpu:.0f} %) | | **{psk_c / tls_c:.2f}** of TLS 1.3; per broker CPU-second {(psk_c / (psk_cpu / 100)) / tls_per_cpu:.2f} | |")
print(f"| bytes per idle TLS-PSK connection (aliot) | {psk_b:,.0f} | | | |")
print(f"| plain TCP connects/s, bytes per idle connection (aliot) | {tcp_c:,.0f}, {tcp_b:,.0f} B | | TLS: {tls_c / tcp_c:.2f} of the rate | |")

tcp0, ws0 = median("aliot-tcp-qos0", "msgs_per_sec"), median("aliot-ws-qos0", "msgs_per_sec")
tcp1, ws1 = median("aliot-tcp-qos1", "msgs_per_sec"), median("aliot-ws-qos1", "msgs_per_sec")
tls1, wss1 = median("aliot-tls-qos1", "msgs_per_sec"), median("aliot-wss-qos1", "msgs_per_sec")
mosq1 = median("mosquitto-tls-qos1", "msgs_per_sec")
print(f"\n### 1:1 msgs/s, medians of {rounds} rounds (aliot; each beside plain TCP in the same round)\n")
print("| transport | QoS 0 | QoS 1 | ratio to TCP | target |")
print("|---|---:|---:|---:|---|")
print(f"| TCP | {tcp0:,.0f} | {tcp1:,.0f} | 1 | |")
print(f"| WebSocket | {ws0:,.0f} | {ws1:,.0f} | **{ws0 / tcp0:.2f}** (QoS 0), **{ws1 / tcp1:.2f}** (QoS 1) | ≥ 0.7 |")
print(f"| TLS 1.3 | | {tls1:,.0f} | {tls1 / tcp1:.2f} (QoS 1) | |")
print(f"| WebSocket over TLS | | {wss1:,.0f} | {wss1 / tcp1:.2f} (QoS 1) | |")
print(f"| mosquitto over TLS (reference) | | {mosq1:,.0f} | aliot TLS / mosquitto TLS: {tls1 / mosq1:.2f} | |")
EOF
say "raw reports in $OUT"
