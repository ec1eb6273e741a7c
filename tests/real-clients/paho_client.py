"""paho-mqtt 2.x (unmodified, from PyPI) as a platform device against `aliot serve`: over TCP,
or with --websocket PATH over WebSocket (paho's `transport="websockets"`; over TLS, wss://,
with --ca, signed securemode=2).

The platform credentials are computed here, straight from the platform's documented rule
(SPEC.md section 2), with hmacmd5 (the platform's default method) and an upper-case digest, so
this run checks aliot against a signature it did not produce itself. Then, step by step:
a wrong signature is refused; connect; subscribe (granted QoS) and a filter reaching another
device (refused with 0x80); publish QoS 1 (PUBACK) on a broadcast topic and receive it back;
receive a server-side publish; publish on the device's own update topic; answer RRPC calls on
`/sys/{pk}/{dn}/rrpc/request/+`, text and binary, and see `POST /rrpc` return them; disconnect.
"""

import hashlib
import hmac
import sys
import time

import paho.mqtt.client as mqtt

from common import Api, Inbox, check_rrpc_success, expect, ok, parse_args, run_checks


def platform_credentials(product_key, device_name, device_secret, client_id, timestamp, securemode=3):
    """(client id, username, password) as the platform documents them, signed with hmacmd5."""
    content = f"clientId{client_id}deviceName{device_name}productKey{product_key}timestamp{timestamp}"
    digest = hmac.new(device_secret.encode(), content.encode(), hashlib.md5).hexdigest().upper()
    mqtt_client_id = f"{client_id}|securemode={securemode},signmethod=hmacmd5,timestamp={timestamp}|"
    return mqtt_client_id, f"{device_name}&{product_key}", digest


def new_client(args, inbox, password_override=None):
    """A paho client with the device's credentials, reporting every callback into `inbox`.

    Over TCP unless `args` (which other drivers build with fewer options) asks for WebSocket or
    TLS."""
    websocket, ca = getattr(args, "websocket", None), getattr(args, "ca", None)
    client_id, username, password = platform_credentials(
        args.product_key, args.device_name, args.device_secret,
        client_id=f"paho.{args.device_name}", timestamp=str(int(time.time() * 1000)),
        securemode=2 if ca else 3,
    )
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        clean_session=True,
        transport="websockets" if websocket else "tcp",
    )
    if websocket:
        client.ws_set_options(path=websocket)
    if ca:
        client.tls_set(ca_certs=ca)
    client.username_pw_set(username, password_override or password)
    client.on_connect = lambda c, u, flags, reason, props: inbox.put("connack", str(reason), reason.is_failure)
    client.on_disconnect = lambda c, u, flags, reason, props: inbox.put("disconnect", str(reason))
    client.on_subscribe = lambda c, u, mid, reasons, props: inbox.put(
        "suback", mid, [reason.value for reason in reasons]
    )
    client.on_publish = lambda c, u, mid, reason, props: inbox.put("puback", mid)
    client.on_message = lambda c, u, message: inbox.put("message", message.topic, message.payload, message.qos)
    return client


def main():
    args = parse_args(__doc__)
    api = Api(args.api)
    pk, dn = args.product_key, args.device_name

    def checks():
        # A wrong signature: CONNACK 5, "not authorized".
        refused_inbox = Inbox()
        refused = new_client(args, refused_inbox, password_override="0" * 32)
        refused.connect(args.host, args.port, keepalive=60)
        refused.loop_start()
        _, reason, is_failure = refused_inbox.wait_for("CONNACK for a wrong signature", lambda e: e[0] == "connack")
        refused.loop_stop()
        refused.disconnect()
        expect(is_failure and reason == "Not authorized",
               f"a wrong password got CONNACK {reason!r}, expected 'Not authorized' (return code 5)")
        ok("a wrong signature is refused: CONNACK 5 (not authorized)")

        inbox = Inbox()
        client = new_client(args, inbox)
        client.connect(args.host, args.port, keepalive=60)
        client.loop_start()
        try:
            _, reason, is_failure = inbox.wait_for("CONNACK", lambda e: e[0] == "connack")
            expect(not is_failure, f"CONNECT with the device's hmacmd5 credentials got CONNACK {reason!r}")
            ok("connected with platform credentials (hmacmd5, upper-case hex digest)")

            own_get = f"/{pk}/{dn}/user/get"
            broadcast = f"/broadcast/{pk}/paho"
            rrpc_requests = f"/sys/{pk}/{dn}/rrpc/request/+"
            _, mid = client.subscribe([(own_get, 1), (broadcast, 1), (rrpc_requests, 0)])
            _, _, granted = inbox.wait_for("SUBACK", lambda e: e[0] == "suback" and e[1] == mid)
            expect(granted == [1, 1, 0], f"SUBACK granted {granted}, expected [1, 1, 0]")
            ok(f"subscribed {own_get}, {broadcast} (QoS 1) and {rrpc_requests} (QoS 0): granted {granted}")

            other_device = f"/{pk}/+/user/get"
            _, mid = client.subscribe(other_device, 1)
            _, _, granted = inbox.wait_for("SUBACK", lambda e: e[0] == "suback" and e[1] == mid)
            expect(granted == [0x80], f"SUBACK for {other_device} granted {granted}, expected [128]")
            ok(f"{other_device} (reaches other devices) is refused: SUBACK 0x80")

            payload = b"paho broadcast \x00\xff"
            info = client.publish(broadcast, payload, qos=1)
            inbox.wait_for("PUBACK", lambda e: e[0] == "puback" and e[1] == info.mid)
            _, topic, body, qos = inbox.wait_for(
                f"the message on {broadcast}", lambda e: e[0] == "message" and e[1] == broadcast)
            expect(body == payload and qos == 1, f"received {body!r} at QoS {qos}, expected {payload!r} at QoS 1")
            ok(f"published QoS 1 on {broadcast}: PUBACK, and received it back at QoS 1")

            answer = api.publish(pk, own_get, b"from the server", qos=1)
            expect(answer.get("Subscribers") == 1, f"POST /pub answered {answer}, expected Subscribers 1")
            _, topic, body, qos = inbox.wait_for(
                f"the server's message on {own_get}", lambda e: e[0] == "message" and e[1] == own_get)
            expect(body == b"from the server" and qos == 1, f"received {body!r} at QoS {qos}")
            ok(f"received a server-side publish (POST /pub) on {own_get}")

            info = client.publish(f"/{pk}/{dn}/user/update", b'{"temperature":21.5}', qos=1)
            inbox.wait_for("PUBACK", lambda e: e[0] == "puback" and e[1] == info.mid)
            ok(f"published QoS 1 on /{pk}/{dn}/user/update: PUBACK")

            for request in (b"ping from the API", bytes(range(256))):
                call = api.rrpc_in_background(pk, dn, request, timeout_ms=5000)
                _, topic, body, _ = inbox.wait_for(
                    "the RRPC request", lambda e: e[0] == "message" and e[1].startswith(f"/sys/{pk}/{dn}/rrpc/request/"))
                expect(body == request, f"the RRPC request carried {body!r}, expected {request!r}")
                message_id = topic.rsplit("/", 1)[1]
                client.publish(f"/sys/{pk}/{dn}/rrpc/response/{message_id}", b"pong:" + body, qos=0)
                answered_id = check_rrpc_success(call(), b"pong:" + request)
                expect(answered_id == message_id,
                       f"POST /rrpc answered MessageId {answered_id!r}, the request came on {topic}")
                ok(f"answered RRPC {message_id} ({len(request)} bytes): POST /rrpc returned SUCCESS with the answer")
        finally:
            client.disconnect()
            client.loop_stop()
        inbox.wait_for("the disconnect", lambda e: e[0] == "disconnect")
        ok("disconnected")

    transport = "TCP"
    if args.websocket:
        transport = f"{'wss' if args.ca else 'ws'}://{args.host}:{args.port}{args.websocket}"
    elif args.ca:
        transport = "TLS"
    return run_checks(f"paho-mqtt over {transport}", checks)


if __name__ == "__main__":
    sys.exit(main())
