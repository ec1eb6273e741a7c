#!/usr/bin/env bash
# TLS-PSK and legacy TLS versions against `aliot serve`, with independent peers: Debian's
# `openssl s_client` and `mosquitto_pub` (both on the system's OpenSSL, not the broker's build).
# Called by run.sh:
#
#   openssl_peers.sh ALIOT_BIN API_URL PRODUCT_KEY DEVICE SECRET SUB_DEVICE SUB_SECRET \
#       MQTT_PORT PSK_PORT MQTTS_PORT LEGACY_PORT CA_PEM BROKER_LOG WORK_DIR
#
# Step by step, each identity and key from `aliot sign --psk`:
#   1. `openssl s_client -psk_identity … -psk …` completes a TLS 1.2 handshake with
#      PSK-AES128-CBC-SHA on the PSK listener, no certificate;
#   2. the same with a wrong key fails the handshake, and an identity naming no device is
#      refused with `unknown psk identity`, counted in /metrics;
#   3. `mosquitto_pub --psk … --psk-identity … --ciphers PSK-AES128-CBC-SHA` connects (a signed
#      CONNECT, securemode=2) and publishes QoS 1 to a broadcast topic, which `mosquitto_sub`
#      (plain TCP, another device) receives;
#   4. `openssl s_client -tls1` and `-tls1_1` are refused by the default (rustls) TLS listener,
#      with a log line saying why, and accepted by the listener with `min_version = "1.0"`,
#      each counted by version in /metrics.
set -euo pipefail

[ "$#" -eq 14 ] || { echo "usage: $0 ALIOT API PK DN SECRET SUB_DN SUB_SECRET MQTT_PORT PSK_PORT MQTTS_PORT LEGACY_PORT CA LOG WORK" >&2; exit 2; }
aliot=$1 api=$2 pk=$3 dn=$4 secret=$5 sub_dn=$6 sub_secret=$7
mqtt_port=$8 psk_port=$9 mqtts_port=${10} legacy_port=${11} ca=${12} broker_log=${13} work=${14}
mkdir -p "$work"

ok() { printf '  ok: %s\n' "$*"; }
fail() { printf '  FAILED (openssl peers): %s\n' "$*"; exit 1; }

# sign DEVICE SECRET [ARGS...]: sets client_id, username, password (and with --psk
# psk_identity, psk_hex) from `aliot sign DEVICE SECRET ARGS...`.
sign() {
    local line
    client_id='' username='' password='' psk_identity='' psk_hex=''
    while IFS= read -r line; do
        case $line in
            client_id=*) client_id=${line#client_id=} ;;
            username=*) username=${line#username=} ;;
            password=*) password=${line#password=} ;;
            psk_identity=*) psk_identity=${line#psk_identity=} ;;
            psk_hex=*) psk_hex=${line#psk_hex=} ;;
        esac
    done < <("$aliot" sign --product-key "$pk" --device-name "$1" --device-secret "$2" "${@:3}")
    [ -n "$client_id" ] && [ -n "$password" ] || fail "aliot sign printed no credentials for $1"
}

# metric NAME_AND_LABELS: its value in GET /metrics (empty when absent).
metric() {
    curl -sS -f "$api/metrics" | awk -v name="$1" '$1 == name { print $2 }'
}

# s_client ARGS...: `openssl s_client -brief` with no input; its output, and its status in $status.
s_client() {
    status=0
    output=$(timeout 10 openssl s_client -brief "$@" </dev/null 2>&1) || status=$?
}

sign "$dn" "$secret" --psk
[ -n "$psk_identity" ] && [ -n "$psk_hex" ] || fail "aliot sign --psk printed no psk_identity/psk_hex"

# 1. The PSK handshake.
s_client -connect "127.0.0.1:$psk_port" -tls1_2 -cipher PSK-AES128-CBC-SHA \
    -psk_identity "$psk_identity" -psk "$psk_hex"
[ "$status" -eq 0 ] && grep -q 'Ciphersuite: PSK-AES128-CBC-SHA' <<<"$output" &&
    grep -q 'Protocol version: TLSv1.2' <<<"$output" ||
    fail "openssl s_client with the device's PSK did not complete the handshake: $output"
ok "openssl s_client: TLS 1.2 handshake with PSK-AES128-CBC-SHA as $psk_identity"

# 2. A wrong key, an unknown identity.
s_client -connect "127.0.0.1:$psk_port" -tls1_2 -cipher PSK-AES128-CBC-SHA \
    -psk_identity "$psk_identity" -psk 00112233445566778899aabbccddeeff
grep -q 'CONNECTION ESTABLISHED' <<<"$output" && fail "a wrong PSK completed the handshake: $output"
ok "a wrong key fails the handshake ($(grep -o 'alert [a-z ]*' <<<"$output" | head -1))"
refused_before=$(metric aliot_psk_identities_refused_total)
s_client -connect "127.0.0.1:$psk_port" -tls1_2 -cipher PSK-AES128-CBC-SHA \
    -psk_identity "devicename|hmacsha256|$pk&nobody|1" -psk "$psk_hex"
grep -q 'unknown psk identity' <<<"$output" ||
    fail "an identity naming no device was not refused with unknown psk identity: $output"
refused_after=$(metric aliot_psk_identities_refused_total)
[ "$refused_after" = $((refused_before + 1)) ] ||
    fail "aliot_psk_identities_refused_total went from $refused_before to $refused_after, expected one more"
ok "an identity naming no device is refused (unknown psk identity) and counted: aliot_psk_identities_refused_total $refused_after"

# 3. mosquitto_pub over TLS-PSK to mosquitto_sub over TCP.
topic="/broadcast/$pk/psk"
payload="over tls-psk $$"
sub_out=$work/psk-sub.out
sign "$sub_dn" "$sub_secret" --secure-mode 3
mosquitto_sub -h 127.0.0.1 -p "$mqtt_port" -V mqttv311 -i "$client_id" -u "$username" -P "$password" \
    -t "$topic" -q 1 -C 1 -W 15 >"$sub_out" 2>&1 &
sub_pid=$!
sign "$dn" "$secret" --psk
# Published until mosquitto_sub has it (its SUBSCRIBE may not be in place for the first).
published=0
for _ in $(seq 20); do
    kill -0 "$sub_pid" 2>/dev/null || break
    mosquitto_pub -h 127.0.0.1 -p "$psk_port" -V mqttv311 --psk "$psk_hex" --psk-identity "$psk_identity" \
        --ciphers PSK-AES128-CBC-SHA --tls-version tlsv1.2 -i "$client_id" -u "$username" -P "$password" \
        -t "$topic" -m "$payload" -q 1 ||
        { kill "$sub_pid" 2>/dev/null; fail "mosquitto_pub over TLS-PSK failed"; }
    published=$((published + 1))
    sleep 0.5
done
wait "$sub_pid" || fail "mosquitto_sub did not receive the message: $(cat "$sub_out")"
[ "$(cat "$sub_out")" = "$payload" ] || fail "mosquitto_sub received $(cat "$sub_out"), expected $payload"
ok "mosquitto_pub --psk published QoS 1 on $topic (CONNECT securemode=2, PUBACK; $published publish(es)); mosquitto_sub over TCP received it"

# 4. TLS 1.0 and 1.1: refused by default, accepted where min_version = "1.0".
for version in 1.0 1.1; do
    case $version in
    1.0) flag=-tls1 protocol=TLSv1 ;;
    1.1) flag=-tls1_1 protocol=TLSv1.1 ;;
    esac
    label="TLS $version"
    # OpenSSL 3 itself allows these versions only at security level 0.
    s_client -connect "127.0.0.1:$mqtts_port" "$flag" -cipher 'DEFAULT@SECLEVEL=0' -CAfile "$ca"
    grep -q 'CONNECTION ESTABLISHED' <<<"$output" && fail "$label was accepted by the default TLS listener"
    why='TLS 1.0 and 1.1 are refused unless the listener sets tls.min_version'
    for _ in $(seq 50); do grep -q "$why" "$broker_log" && break; sleep 0.1; done
    grep -q "$why" "$broker_log" || fail "the broker logged no line saying why $label was refused"
    ok "$label is refused by the default TLS listener, and the log says why: $(grep -o 'refused: the client speaks[^;]*' "$broker_log" | tail -1)"
    counter="aliot_legacy_tls_handshakes_total{version=\"$version\"}"
    before=$(metric "$counter")
    s_client -connect "127.0.0.1:$legacy_port" "$flag" -cipher 'DEFAULT@SECLEVEL=0' -CAfile "$ca"
    grep -q 'CONNECTION ESTABLISHED' <<<"$output" ||
        fail "$label was not accepted by the listener with min_version = \"1.0\": $output"
    grep -qx "Protocol version: $protocol" <<<"$output" || fail "the handshake was not $label: $output"
    after=$(metric "$counter")
    [ "$after" = $((before + 1)) ] || fail "$counter went from $before to $after, expected one more"
    ok "$label is accepted where min_version = \"1.0\", and counted: $counter $after"
done
