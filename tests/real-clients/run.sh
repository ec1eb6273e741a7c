#!/usr/bin/env bash
# Real, unmodified third-party MQTT clients and the platform's own device SDKs against
# `aliot serve` (issue 5, interop):
#
#   mosquitto_sub / mosquitto_pub   Debian's mosquitto-clients, credentials from `aliot sign`
#   paho-mqtt 2.x                   PyPI, in its own venv, credentials signed by paho_client.py
#   aliyun-iot-linkkit 1.2.13       PyPI, on paho-mqtt 1.x in its own venv, over TCP and TLS
#   alibabacloud-iot-device-sdk     npm 1.2.8 (mqtt.js 3.0.0), over TCP, TLS and WebSocket over TLS
#   MQTT.js 5.16.0                  npm `mqtt`, over WebSocket (ws:// and wss://)
#   openssl s_client, mosquitto_pub TLS-PSK (PSK-AES128-CBC-SHA) and TLS 1.0/1.1 (opt-in listener)
#   (paho-mqtt also over ws:// and wss://, with its transport="websockets")
#   aliyun-python-sdk-iot 8.59.0    PyPI, the platform's server SDK (with aliyun-python-sdk-core),
#                                   over the OpenAPI, with a paho-mqtt device it calls
#   alibabacloud-iot20180120 5.1.0  PyPI, the newer server SDK (ACS3-HMAC-SHA256), over the OpenAPI
#   @alicloud/pop-core 1.8.0        npm, the Node server SDK (RPC signature 1.0), over the OpenAPI,
#                                   making its own product and device and calling that device
#   rhea 3.0.5                      npm, an AMQP 1.0 consumer of the server-side subscription,
#                                   written like the platform's Node demo
#   python-qpid-proton 0.40.0       PyPI, the same, written like the platform's Python demo
#   (and the two device SDKs' dynamic registration: Node over HTTP, Python over MQTT and TLS,
#   and their gateway APIs: a gateway carrying two sub-devices over its one connection)
#
# Each connects with platform credentials, subscribes, publishes, receives, and answers RRPC
# calls made through the broker's HTTP API (mosquitto_sub cannot answer: its call must end
# TIMEOUT). Two more steps drive the two SDKs' thing-model APIs against the broker's device
# services (node_things.js: Alink and the shadow; linkkit_things.py: Alink with the product's
# tsl.json, everything by the automatic subscription). What each step checks is written at the
# top of its script.
#
# Installs are idempotent: mosquitto-clients through apt-get when mosquitto_sub is missing; the
# venvs under target/real-clients/, rebuilt only when their requirements file changes; the npm
# packages in tests/real-clients/node_modules (gitignored), from package-lock.json, reinstalled
# only when it changes. The broker runs from tests/real-clients/aliot.toml on free ports of
# 127.0.0.1, with a TLS certificate made for the run; it is stopped on exit.
#
# Prints one PASS/FAIL line per step and `N passed, M failed`; on any failure it prints the
# broker's log and exits 1. Usage: tests/real-clients/run.sh   (STEP_TIMEOUT=60 seconds a step)
set -Eeuo pipefail
trap 'printf "real-clients: FAILED: %s: line %s: a command failed (status %s)\n" "$0" "$LINENO" "$?" >&2' ERR

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=$ROOT/target/real-clients # what this script makes; the TLS paths of aliot.toml point here
STEP_TIMEOUT=${STEP_TIMEOUT:-60}
CONFIG=$HERE/aliot.toml
export PYTHONDONTWRITEBYTECODE=1

die() {
    printf 'real-clients: FAILED: %s\n' "$*" >&2
    exit 1
}
say() { printf 'real-clients: %s\n' "$*"; }

# ---------------------------------------------------------------------------------------------
# Tools and installs
# ---------------------------------------------------------------------------------------------

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        die "installing mosquitto-clients needs root (or password-less sudo): run as root, or install it first"
    fi
}

ensure_mosquitto() {
    if command -v mosquitto_sub >/dev/null 2>&1 && command -v mosquitto_pub >/dev/null 2>&1; then
        return
    fi
    command -v apt-get >/dev/null 2>&1 || die "mosquitto_sub is missing and there is no apt-get to install mosquitto-clients"
    say "installing mosquitto-clients (apt-get)"
    as_root apt-get update -q || die "apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto-clients ||
        die "apt-get install mosquitto-clients failed"
    command -v mosquitto_sub >/dev/null 2>&1 || die "mosquitto-clients installed, but mosquitto_sub is still not on PATH"
}

ensure_tools() {
    local tool
    for tool in python3 node npm curl openssl stdbuf timeout sha256sum cargo; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is required and not on PATH"
    done
    python3 -c 'import sys, venv, tomllib; sys.exit(0)' 2>/dev/null ||
        die "python3 $(python3 -c 'import platform; print(platform.python_version())') lacks venv or tomllib: 3.11 or later with venv is required"
    node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' ||
        die "node $(node --version) is too old: 18 or later is required (global fetch)"
}

# ensure_venv NAME REQUIREMENTS: a venv at $CACHE/venv-NAME with exactly REQUIREMENTS installed.
ensure_venv() {
    local venv=$CACHE/venv-$1 requirements=$2 stamp
    stamp="$(sha256sum "$requirements" | cut -d' ' -f1) $(python3 -c 'import sys; print(sys.version.split()[0])')"
    if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.aliot-stamp" 2>/dev/null)" = "$stamp" ]; then
        return
    fi
    say "creating the venv $venv from $(basename "$requirements")"
    rm -rf "$venv"
    python3 -m venv "$venv" || die "python3 -m venv $venv failed"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements" ||
        die "pip install -r $requirements failed"
    printf '%s\n' "$stamp" >"$venv/.aliot-stamp"
}

ensure_node_modules() {
    local stamp
    stamp=$(sha256sum "$HERE/package-lock.json" | cut -d' ' -f1)
    if [ "$(cat "$HERE/node_modules/.aliot-stamp" 2>/dev/null)" = "$stamp" ]; then
        return
    fi
    say "installing the npm packages of package-lock.json (npm ci)"
    (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in $HERE failed"
    printf '%s\n' "$stamp" >"$HERE/node_modules/.aliot-stamp"
}

# python_package_version VENV PACKAGE
python_package_version() {
    "$CACHE/venv-$1/bin/python" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$2"
}

node_package_version() {
    (cd "$HERE" && node -p "require('$1/package.json').version")
}

# device_secret NAME: the secret aliot.toml gives the device.
device_secret() {
    python3 - "$CONFIG" "$1" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as config:
    products = tomllib.load(config)["product"]
secrets = [d["secret"] for p in products for d in p.get("device", []) if d["name"] == sys.argv[2]]
if len(secrets) != 1:
    sys.exit(f"aliot.toml has {len(secrets)} devices named {sys.argv[2]!r}")
print(secrets[0])
EOF
}

product_key() {
    python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["product"][0]["key"])' "$CONFIG"
}

# A throw-away CA and a certificate for IP 127.0.0.1 signed by it, for the TLS listener.
make_tls_certificate() {
    local dir=$CACHE/tls
    rm -rf "$dir" && mkdir -p "$dir"
    (
        cd "$dir"
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key
        openssl req -x509 -new -key ca.key -days 2 -subj "/CN=aliot real-clients test CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -addext "subjectKeyIdentifier=hash" -out ca.pem
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key
        openssl req -new -key server.key -subj "/CN=127.0.0.1" -out server.csr
        printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
            "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1" \
            "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile server.ext -out server.pem
        openssl verify -CAfile ca.pem server.pem
    ) >"$CACHE/openssl.log" 2>&1 || die "cannot make the TLS certificate: $(cat "$CACHE/openssl.log")"
}

# ---------------------------------------------------------------------------------------------
# The broker
# ---------------------------------------------------------------------------------------------

BROKER_PID=
BROKER_OUT=$CACHE/aliot.out
BROKER_LOG=$CACHE/aliot.log

stop_broker() {
    [ -n "$BROKER_PID" ] || return 0
    if kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$BROKER_PID" 2>/dev/null || true
    fi
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=
}

dump_broker_log() {
    printf '\n--- the broker log (%s) ---\n' "$BROKER_LOG"
    cat "$BROKER_LOG" 2>/dev/null || true
    printf -- '--- end of the broker log ---\n'
}

# port_of PATTERN: the port of the first line `aliot serve` printed matching PATTERN (grep -E).
port_of() {
    grep -m 1 -E "$1" "$BROKER_OUT" | sed -n 's/.*127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p'
}

start_broker() {
    local aliot=$1
    RUST_LOG=${RUST_LOG:-info} "$aliot" serve --config "$CONFIG" >"$BROKER_OUT" 2>"$BROKER_LOG" &
    BROKER_PID=$!
    for _ in $(seq 200); do
        grep -q '^aliot: running' "$BROKER_OUT" && break
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            cat "$BROKER_OUT"
            dump_broker_log
            die "aliot serve exited before it was running"
        fi
        sleep 0.1
    done
    grep -q '^aliot: running' "$BROKER_OUT" || { dump_broker_log; die "aliot serve not running after 20 s"; }
    MQTT_PORT=$(port_of '^aliot: listening for MQTT on .* \(TCP\)$')
    MQTTS_PORT=$(port_of '^aliot: listening for MQTT on .* \(TLS\)$')
    PSK_PORT=$(port_of '^aliot: listening for MQTT on .* \(TLS-PSK\)$')
    LEGACY_PORT=$(port_of '^aliot: listening for MQTT on .* \(TLS from 1.0\)$')
    WS_PORT=$(port_of '^aliot: listening for MQTT on .* \(WebSocket, ws://')
    WSS_PORT=$(port_of '^aliot: listening for MQTT on .* \(WebSocket over TLS, wss://')
    API_PORT=$(port_of '^aliot: HTTP API on ')
    AMQP_PORT=$(port_of '^aliot: AMQP consumers on ')
    [ -n "$MQTT_PORT" ] && [ -n "$MQTTS_PORT" ] && [ -n "$PSK_PORT" ] && [ -n "$LEGACY_PORT" ] &&
        [ -n "$WS_PORT" ] && [ -n "$WSS_PORT" ] && [ -n "$API_PORT" ] && [ -n "$AMQP_PORT" ] ||
        die "cannot read the TCP, TLS, TLS-PSK, legacy TLS, WebSocket, API and AMQP ports from what aliot serve printed: $(cat "$BROKER_OUT")"
    local port
    for port in "$MQTT_PORT" "$MQTTS_PORT" "$PSK_PORT" "$LEGACY_PORT" "$WS_PORT" "$WSS_PORT" "$API_PORT" "$AMQP_PORT"; do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || die "aliot serve does not answer on 127.0.0.1:$port"
    done
    API_URL=http://127.0.0.1:$API_PORT
}

# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------

PASSED=0
FAILED=0
FAILED_STEPS=()

# step NAME COMMAND...: runs COMMAND (a program under `timeout`, or a function of this script);
# prints its output and PASS or FAIL.
step() {
    local name=$1 status=0
    shift
    printf '\n--- %s\n' "$name"
    if declare -F "$1" >/dev/null; then
        "$@" || status=$? # a check of this script, quick by itself
    else
        timeout --kill-after=5 "$STEP_TIMEOUT" "$@" || status=$?
    fi
    if [ "$status" -eq 0 ]; then
        PASSED=$((PASSED + 1))
        printf 'PASS %s\n' "$name"
    else
        FAILED=$((FAILED + 1))
        FAILED_STEPS+=("$name")
        if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
            printf 'FAIL %s (timed out after %s s)\n' "$name" "$STEP_TIMEOUT"
        else
            printf 'FAIL %s (exit status %s)\n' "$name" "$status"
        fi
    fi
}

# The broker is still serving and logged no panic and no error.
broker_health() {
    kill -0 "$BROKER_PID" 2>/dev/null || { echo "  FAILED: aliot serve is no longer running"; return 1; }
    if grep -nE 'panicked|ERROR' "$BROKER_LOG"; then
        echo "  FAILED: the broker log has the panic/ERROR lines above"
        return 1
    fi
    curl -sS -f -o /dev/null "$API_URL/metrics" || { echo "  FAILED: GET /metrics did not answer 200"; return 1; }
    echo "  ok: still serving (GET /metrics 200), no panic and no ERROR in its log"
}

main() {
    mkdir -p "$CACHE"
    ensure_tools
    ensure_mosquitto
    ensure_venv paho "$HERE/requirements-paho.txt"
    ensure_venv linkkit "$HERE/requirements-linkkit.txt"
    ensure_venv openapi "$HERE/requirements-openapi.txt"
    ensure_venv amqp "$HERE/requirements-amqp.txt"
    ensure_node_modules

    say "building aliot (cargo build -p aliot-tokio --bin aliot)"
    (cd "$ROOT" && cargo build -q -p aliot-tokio --bin aliot) || die "cargo build -p aliot-tokio --bin aliot failed"
    local aliot=${CARGO_TARGET_DIR:-$ROOT/target}/debug/aliot
    [ -x "$aliot" ] || die "no aliot binary at $aliot after the build"

    make_tls_certificate
    trap 'stop_broker' EXIT
    start_broker "$aliot"
    say "aliot serve: MQTT 127.0.0.1:$MQTT_PORT (TCP), 127.0.0.1:$MQTTS_PORT (TLS), ws://127.0.0.1:$WS_PORT/mqtt, wss://127.0.0.1:$WSS_PORT/mqtt, API $API_URL"

    local pk mosquitto_version paho_version linkkit_version linkkit_paho node_sdk_version node_mqtt_version mqttjs_version
    pk=$(product_key)
    mosquitto_version=$( (mosquitto_sub --help || true) | sed -n 's/^mosquitto_sub version \([^ ]*\).*/\1/p')
    paho_version=$(python_package_version paho paho-mqtt)
    linkkit_version=$(python_package_version linkkit aliyun-iot-linkkit)
    linkkit_paho=$(python_package_version linkkit paho-mqtt)
    node_sdk_version=$(node_package_version alibabacloud-iot-device-sdk)
    # The SDK's own mqtt.js (3.0.0), beside the newer one the WebSocket step drives.
    node_mqtt_version=$(node_package_version alibabacloud-iot-device-sdk/node_modules/mqtt)
    mqttjs_version=$(node_package_version mqtt)
    say "clients: mosquitto-clients $mosquitto_version, paho-mqtt $paho_version, aliyun-iot-linkkit $linkkit_version (paho-mqtt $linkkit_paho), alibabacloud-iot-device-sdk $node_sdk_version (mqtt.js $node_mqtt_version), MQTT.js $mqttjs_version, node $(node --version), python $(python3 -c 'import platform; print(platform.python_version())')"

    local python_args=(--port "$MQTT_PORT" --api "$API_URL" --product-key "$pk")
    local tls_python_args=(--port "$MQTTS_PORT" --api "$API_URL" --product-key "$pk" --ca "$CACHE/tls/ca.pem")

    step "mosquitto_sub/mosquitto_pub $mosquitto_version" \
        "$HERE/mosquitto.sh" "$aliot" "$MQTT_PORT" "$API_URL" "$pk" \
        mosq-sub "$(device_secret mosq-sub)" mosq-pub "$(device_secret mosq-pub)" "$CACHE/mosquitto"
    step "paho-mqtt $paho_version" \
        "$CACHE/venv-paho/bin/python" "$HERE/paho_client.py" "${python_args[@]}" \
        --device-name paho-001 --device-secret "$(device_secret paho-001)"
    step "openssl s_client $(openssl version | cut -d' ' -f2) and mosquitto_pub over TLS-PSK, and TLS 1.0/1.1" \
        "$HERE/openssl_peers.sh" "$aliot" "$API_URL" "$pk" psk-dev "$(device_secret psk-dev)" \
        psk-sub "$(device_secret psk-sub)" "$MQTT_PORT" "$PSK_PORT" "$MQTTS_PORT" "$LEGACY_PORT" \
        "$CACHE/tls/ca.pem" "$BROKER_LOG" "$CACHE/openssl"
    step "paho-mqtt $paho_version over WebSocket (ws://)" \
        "$CACHE/venv-paho/bin/python" "$HERE/paho_client.py" --port "$WS_PORT" --api "$API_URL" \
        --product-key "$pk" --websocket /mqtt --device-name paho-ws --device-secret "$(device_secret paho-ws)"
    step "paho-mqtt $paho_version over WebSocket and TLS (wss://)" \
        "$CACHE/venv-paho/bin/python" "$HERE/paho_client.py" --port "$WSS_PORT" --api "$API_URL" \
        --product-key "$pk" --websocket /mqtt --ca "$CACHE/tls/ca.pem" \
        --device-name paho-wss --device-secret "$(device_secret paho-wss)"
    step "MQTT.js $mqttjs_version over WebSocket (ws://)" \
        node "$HERE/mqttjs_client.js" --port "$WS_PORT" --api "$API_URL" --product-key "$pk" \
        --websocket /mqtt --device-name mqttjs-ws --device-secret "$(device_secret mqttjs-ws)"
    step "MQTT.js $mqttjs_version over WebSocket and TLS (wss://)" \
        env NODE_EXTRA_CA_CERTS="$CACHE/tls/ca.pem" \
        node "$HERE/mqttjs_client.js" --port "$WSS_PORT" --api "$API_URL" --product-key "$pk" \
        --websocket /mqtt --tls --device-name mqttjs-wss --device-secret "$(device_secret mqttjs-wss)"
    step "aliyun-iot-linkkit $linkkit_version over TCP" \
        "$CACHE/venv-linkkit/bin/python" "$HERE/linkkit_client.py" "${python_args[@]}" \
        --device-name linkkit-tcp --device-secret "$(device_secret linkkit-tcp)"
    step "aliyun-iot-linkkit $linkkit_version over TLS" \
        "$CACHE/venv-linkkit/bin/python" "$HERE/linkkit_client.py" "${tls_python_args[@]}" \
        --device-name linkkit-tls --device-secret "$(device_secret linkkit-tls)"
    step "alibabacloud-iot-device-sdk $node_sdk_version over TCP" \
        node "$HERE/node_client.js" --port "$MQTT_PORT" --api "$API_URL" --product-key "$pk" \
        --device-name node-tcp --device-secret "$(device_secret node-tcp)"
    step "alibabacloud-iot-device-sdk $node_sdk_version over TLS" \
        env NODE_EXTRA_CA_CERTS="$CACHE/tls/ca.pem" \
        node "$HERE/node_client.js" --port "$MQTTS_PORT" --api "$API_URL" --product-key "$pk" \
        --device-name node-tls --device-secret "$(device_secret node-tls)" --tls
    step "alibabacloud-iot-device-sdk $node_sdk_version over WebSocket and TLS (wss://)" \
        env NODE_EXTRA_CA_CERTS="$CACHE/tls/ca.pem" \
        node "$HERE/node_client.js" --port "$WSS_PORT" --api "$API_URL" --product-key "$pk" \
        --device-name node-wss --device-secret "$(device_secret node-wss)" --tls --websocket /mqtt
    step "alibabacloud-iot-device-sdk $node_sdk_version thing model and shadow" \
        node "$HERE/node_things.js" --port "$MQTT_PORT" --api "$API_URL" --product-key "$pk" \
        --device-name node-things --device-secret "$(device_secret node-things)"
    step "alibabacloud-iot-device-sdk $node_sdk_version as a gateway of two sub-devices" \
        node "$HERE/node_gateway.js" --port "$MQTT_PORT" --api "$API_URL" --product-key "$pk" \
        --device-name node-gw --device-secret "$(device_secret node-gw)" \
        --sub-devices "node-sub-1:$(device_secret node-sub-1),node-sub-2:$(device_secret node-sub-2)"
    step "aliyun-iot-linkkit $linkkit_version as a gateway of two sub-devices" \
        "$CACHE/venv-linkkit/bin/python" "$HERE/linkkit_gateway.py" --port "$MQTT_PORT" --api "$API_URL" \
        --product-key "$pk" --device-name linkkit-gw --device-secret "$(device_secret linkkit-gw)" \
        --sub-devices "linkkit-sub-1:$(device_secret linkkit-sub-1),linkkit-sub-2:$(device_secret linkkit-sub-2)"
    step "aliyun-iot-linkkit $linkkit_version thing model by automatic subscription" \
        "$CACHE/venv-linkkit/bin/python" "$HERE/linkkit_things.py" "${python_args[@]}" \
        --device-name linkkit-things --device-secret "$(device_secret linkkit-things)"
    local openapi_version access_key_id access_key_secret
    openapi_version=$(python_package_version openapi aliyun-python-sdk-iot)
    read -r access_key_id access_key_secret < <(python3 -c 'import sys, tomllib; k = tomllib.load(open(sys.argv[1], "rb"))["access_key"][0]; print(k["id"], k["secret"])' "$CONFIG")
    step "aliyun-python-sdk-iot $openapi_version (server SDK) over the OpenAPI" \
        "$CACHE/venv-openapi/bin/python" "$HERE/openapi_python.py" "${python_args[@]}" \
        --device-name openapi-001 --device-secret "$(device_secret openapi-001)" \
        --access-key-id "$access_key_id" --access-key-secret "$access_key_secret"
    step "alibabacloud-iot20180120 $(python_package_version openapi alibabacloud-iot20180120) (server SDK, ACS3-HMAC-SHA256) over the OpenAPI" \
        "$CACHE/venv-openapi/bin/python" "$HERE/openapi_tea.py" --api "$API_URL" \
        --access-key-id "$access_key_id" --access-key-secret "$access_key_secret"
    step "@alicloud/pop-core $(node_package_version @alicloud/pop-core) (Node server SDK) over the OpenAPI" \
        node "$HERE/openapi_node.js" --port "$MQTT_PORT" --api "$API_URL" \
        --access-key-id "$access_key_id" --access-key-secret "$access_key_secret"
    step "alibabacloud-iot-device-sdk $node_sdk_version dynamic registration over HTTP" \
        node "$HERE/node_dynreg.js" --port "$MQTT_PORT" --api "$API_URL" --product-key a1DynReg0001 \
        --device-name dynreg-001 --product-secret RealClientsDynRegProductSecret00
    step "aliyun-iot-linkkit $linkkit_version dynamic registration over MQTT (register, regnwl, connwl)" \
        "$CACHE/venv-linkkit/bin/python" "$HERE/linkkit_dynreg.py" --port "$MQTTS_PORT" --ca "$CACHE/tls/ca.pem" \
        --api "$API_URL" --product-key a1DynReg0001 --device-name linkkit-dynreg \
        --product-secret RealClientsDynRegProductSecret00
    step "rhea $(node_package_version rhea) consuming the server-side subscription (AMQP 1.0 over TLS)" \
        node "$HERE/amqp_rhea.js" --amqp-port "$AMQP_PORT" --mqtt-port "$MQTT_PORT" --aliot "$aliot" \
        --product-key a1AmqpProd01 --device-name amqp-dev --device-secret "$(device_secret amqp-dev)" \
        --access-key-id "$access_key_id" --access-key-secret "$access_key_secret" --ca "$CACHE/tls/ca.pem"
    step "python-qpid-proton $(python_package_version amqp python-qpid-proton) consuming the server-side subscription (AMQP 1.0 over TLS)" \
        "$CACHE/venv-amqp/bin/python" "$HERE/amqp_proton.py" --amqp-port "$AMQP_PORT" --mqtt-port "$MQTT_PORT" \
        --aliot "$aliot" --product-key a1AmqpProd02 --device-name proton-dev \
        --device-secret "$(device_secret proton-dev)" --access-key-id "$access_key_id" \
        --access-key-secret "$access_key_secret" --group PROTON_GROUP --ca "$CACHE/tls/ca.pem"
    step "aliot serve after all clients" broker_health

    printf '\n%s passed, %s failed\n' "$PASSED" "$FAILED"
    if [ "$FAILED" -gt 0 ]; then
        dump_broker_log
        printf 'real-clients: FAILED: %s\n' "${FAILED_STEPS[*]}" >&2
        exit 1
    fi
}

main "$@"
