#!/usr/bin/env bash
# mosquitto_sub and mosquitto_pub (Debian's mosquitto-clients, unmodified) as platform devices
# against `aliot serve`, with credentials from `aliot sign`. Called by run.sh:
#
#   mosquitto.sh ALIOT_BIN MQTT_PORT API_URL PRODUCT_KEY SUB_DEVICE SUB_SECRET PUB_DEVICE PUB_SECRET WORK_DIR
#
# Step by step: a wrong password is refused (CONNACK 5); mosquitto_sub connects as SUB_DEVICE and
# subscribes at QoS 1 to a broadcast topic, its own /user/get topic and its RRPC request topic
# (all granted 1); mosquitto_pub, as PUB_DEVICE, publishes QoS 1 on the broadcast topic; the
# server publishes on SUB_DEVICE's /user/get (POST /pub); an RRPC call reaches mosquitto_sub,
# which cannot answer, and ends TIMEOUT; mosquitto_sub printed exactly those three messages;
# a filter reaching every device of the product is refused (SUBACK 0x80).
set -euo pipefail

[ "$#" -eq 9 ] || { echo "usage: $0 ALIOT_BIN MQTT_PORT API_URL PK SUB_DN SUB_SECRET PUB_DN PUB_SECRET WORK_DIR" >&2; exit 2; }
aliot=$1 port=$2 api=$3 pk=$4 sub_dn=$5 sub_secret=$6 pub_dn=$7 pub_secret=$8 work=$9
mkdir -p "$work"

ok() { printf '  ok: %s\n' "$*"; }
fail() { printf '  FAILED (mosquitto): %s\n' "$*"; exit 1; }

# sign DEVICE SECRET: sets client_id, username, password (from `aliot sign`, hmacsha256).
sign() {
    local line
    client_id='' username='' password=''
    while IFS= read -r line; do
        case $line in
            client_id=*) client_id=${line#client_id=} ;;
            username=*) username=${line#username=} ;;
            password=*) password=${line#password=} ;;
        esac
    done < <("$aliot" sign --product-key "$pk" --device-name "$1" --device-secret "$2")
    [ -n "$client_id" ] && [ -n "$username" ] && [ -n "$password" ] ||
        fail "aliot sign printed no client_id/username/password for $1"
}

# json_field FIELD: the field of the JSON object on stdin ("" when absent).
json_field() {
    python3 -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$1"
}

# api_post PATH BODY: the JSON answer of the HTTP API; a non-200 answer fails the step.
api_post() {
    local answer status
    answer=$(curl -sS -o - -w '\n%{http_code}' -H 'Content-Type: application/json' -d "$2" "$api$1") ||
        fail "POST $1: curl failed"
    status=${answer##*$'\n'}
    answer=${answer%$'\n'*}
    [ "$status" = 200 ] || fail "POST $1 $2 answered $status: $answer"
    printf '%s' "$answer"
}

common=(-h 127.0.0.1 -p "$port" -V mqttv311 -k 60)

# 1. A wrong signature (a well-formed digest, all zeros): CONNACK 5.
sign "$pub_dn" "$pub_secret"
if output=$(mosquitto_pub "${common[@]}" -i "$client_id" -u "$username" -P "${password//?/0}" \
    -t "/broadcast/$pk/mosq" -m refused -q 1 2>&1); then
    fail "mosquitto_pub with a wrong signature was accepted: $output"
fi
grep -qi 'not authori' <<<"$output" || fail "mosquitto_pub with a wrong signature: expected 'not authorised' (CONNACK 5), got: $output"
ok "a wrong signature is refused: ${output%%$'\n'*}"

# 2. mosquitto_sub as the subscribing device, three filters at QoS 1, three messages expected.
broadcast="/broadcast/$pk/mosq"
own_get="/$pk/$sub_dn/user/get"
rrpc_requests="/sys/$pk/$sub_dn/rrpc/request/+"
sign "$sub_dn" "$sub_secret"
sub_log="$work/mosquitto_sub.log"
# stdbuf: its lines reach the log as printed (a file would get them only when it exits).
stdbuf -oL -eL mosquitto_sub "${common[@]}" -i "$client_id" -u "$username" -P "$password" -q 1 -v -d \
    -t "$broadcast" -t "$own_get" -t "$rrpc_requests" -C 3 -W 30 >"$sub_log" 2>&1 &
sub_pid=$!
trap 'kill "$sub_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    grep -q '^Subscribed' "$sub_log" && break
    kill -0 "$sub_pid" 2>/dev/null || break
    sleep 0.1
done
grep -q '^Subscribed (mid: [0-9]*): 1, 1, 1$' "$sub_log" ||
    fail "mosquitto_sub was not granted QoS 1 on its three filters; its output: $(cat "$sub_log")"
ok "mosquitto_sub connected as $sub_dn (aliot sign, hmacsha256) and was granted 1, 1, 1 on $broadcast, $own_get, $rrpc_requests"

# 3. mosquitto_pub as another device, QoS 1 on the broadcast topic.
sign "$pub_dn" "$pub_secret"
output=$(mosquitto_pub "${common[@]}" -i "$client_id" -u "$username" -P "$password" \
    -t "$broadcast" -m "hello from mosquitto_pub" -q 1 -d 2>&1) ||
    fail "mosquitto_pub as $pub_dn failed: $output"
grep -q 'received PUBACK' <<<"$output" || fail "mosquitto_pub got no PUBACK: $output"
ok "mosquitto_pub published QoS 1 on $broadcast as $pub_dn: PUBACK"

# 4. The server publishes on the subscriber's own topic.
answer=$(api_post /pub "{\"ProductKey\":\"$pk\",\"TopicFullName\":\"$own_get\",\"MessageContent\":\"$(printf 'from the API' | base64)\",\"Qos\":1}")
[ "$(json_field Subscribers <<<"$answer")" = 1 ] || fail "POST /pub answered $answer, expected Subscribers 1"
ok "POST /pub on $own_get reached 1 subscriber"

# 5. RRPC to mosquitto_sub: the request arrives, nobody answers, the call ends TIMEOUT.
answer=$(api_post /rrpc "{\"ProductKey\":\"$pk\",\"DeviceName\":\"$sub_dn\",\"RequestBase64Byte\":\"$(printf 'ping' | base64)\",\"Timeout\":1000}")
code=$(json_field RrpcCode <<<"$answer")
message_id=$(json_field MessageId <<<"$answer")
[ "$code" = TIMEOUT ] || fail "RRPC to mosquitto_sub answered $answer, expected RrpcCode TIMEOUT"
ok "RRPC $message_id to mosquitto_sub (subscribed, cannot answer) ended TIMEOUT"

# 6. mosquitto_sub received exactly those three messages, then left (-C 3).
wait "$sub_pid" || fail "mosquitto_sub exited with status $?; its output: $(cat "$sub_log")"
trap - EXIT
received=$(grep '^/' "$sub_log" || true)
expected="$broadcast hello from mosquitto_pub
$own_get from the API
/sys/$pk/$sub_dn/rrpc/request/$message_id ping"
[ "$received" = "$expected" ] ||
    fail "mosquitto_sub printed:
$received
expected:
$expected"
ok "mosquitto_sub received the broadcast, the server's message and RRPC request $message_id, in order"

# 7. A filter reaching every device of the product: SUBACK 0x80.
deny_log="$work/mosquitto_sub-denied.log"
mosquitto_sub "${common[@]}" -i "$client_id" -u "$username" -P "$password" -q 1 -d \
    -t "/$pk/+/user/get" -C 1 -W 3 >"$deny_log" 2>&1 || true
grep -q '^Subscribed (mid: [0-9]*): 128$' "$deny_log" ||
    fail "subscribing /$pk/+/user/get was not refused with 128; mosquitto_sub printed: $(cat "$deny_log")"
ok "/$pk/+/user/get (every device's topic) is refused: SUBACK 128"
