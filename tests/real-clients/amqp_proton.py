"""python-qpid-proton (PyPI, unmodified) as a business server of the server-side subscription,
written the way the platform's Python demo is: a `MessagingHandler` that connects with SASL PLAIN
(the `aksign` user name `${clientId}|authMode=aksign,signMethod=hmacsha256,timestamp=…,authId=…,
iotInstanceId=,consumerGroupId=…|` and the base64 HMAC-SHA256 password of `authId=…&timestamp=…`),
opens one receiver, and accepts each message after reading its body and its `topic`,
`messageId` and `generateTime` application properties.

Step by step: the consumer attaches to its group; a device (Debian's mosquitto_pub, credentials
from `aliot sign`) connects, publishes twice on its /user/update and disconnects; the consumer
gets its online status, the two payloads with their topic, and its offline status, each
accepted; a second run of the consumer gets nothing more (what was accepted left the backlog).

Usage: amqp_proton.py --amqp-port P --mqtt-port P --aliot BIN --product-key PK --device-name DN
  --device-secret DS --access-key-id ID --access-key-secret SECRET --group GROUP --ca CA.pem|none
(amqps, trusting CA.pem, as the platform's 5671; `none`: plain AMQP)
"""

import argparse
import base64
import hashlib
import hmac
import json
import subprocess
import threading
import time

from proton import Message  # noqa: F401 - the demo's import, kept for its shape
from proton.handlers import MessagingHandler
from proton import SSLDomain
from proton.reactor import Container

from common import CheckFailed, expect, ok, run_checks


class Consumer(MessagingHandler):
    """The demo's handler: connect, one receiver, accept every message; keeps what came."""

    def __init__(self, url, username, password, stop_after, idle_seconds, ca=None):
        super().__init__(auto_accept=False)
        self.url, self.username, self.password, self.ca = url, username, password, ca
        self.stop_after, self.idle_seconds = stop_after, idle_seconds
        self.received, self.errors, self.opened = [], [], threading.Event()
        self.last = time.monotonic()

    def on_start(self, event):
        ssl_domain = None
        if self.ca is not None:
            ssl_domain = SSLDomain(SSLDomain.MODE_CLIENT)
            ssl_domain.set_trusted_ca_db(self.ca)
            ssl_domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME)
        connection = event.container.connect(
            self.url, user=self.username, password=self.password, allowed_mechs="PLAIN",
            sasl_enabled=True, idle_timeout=60, reconnect=False, ssl_domain=ssl_domain,
        )
        self.receiver = event.container.create_receiver(connection)
        event.container.schedule(0.2, self)

    def on_link_opened(self, event):
        # The quiet window counts from here, not from the handler's creation.
        self.last = time.monotonic()
        self.opened.set()

    def on_message(self, event):
        message = event.message
        properties = message.properties or {}
        body = message.body
        if isinstance(body, memoryview):
            body = body.tobytes()
        self.received.append({
            "topic": properties.get("topic"),
            "messageId": properties.get("messageId"),
            "generateTime": properties.get("generateTime"),
            "id": message.id,
            "body": body.decode() if isinstance(body, (bytes, bytearray)) else str(body),
        })
        self.accept(event.delivery)
        self.last = time.monotonic()
        if len(self.received) >= self.stop_after:
            event.connection.close()

    def on_timer_task(self, event):
        # Nothing more for a while: done.
        if time.monotonic() - self.last > self.idle_seconds:
            self.receiver.connection.close()
            return
        event.container.schedule(0.2, self)

    def on_transport_error(self, event):
        self.errors.append(str(event.transport.condition))


def credentials(args, group, client_id):
    timestamp = str(int(time.time() * 1000))
    username = (f"{client_id}|authMode=aksign,signMethod=hmacsha256,timestamp={timestamp},"
                f"authId={args.access_key_id},iotInstanceId=,consumerGroupId={group}|")
    content = f"authId={args.access_key_id}&timestamp={timestamp}".encode()
    password = base64.b64encode(hmac.new(args.access_key_secret.encode(), content, hashlib.sha256).digest())
    return username, password.decode()


def mosquitto_pub(args, payloads):
    signed = subprocess.run([args.aliot, "sign", "--product-key", args.product_key, "--device-name",
                             args.device_name, "--device-secret", args.device_secret],
                            check=True, capture_output=True, text=True).stdout
    field = dict(line.split("=", 1) for line in signed.splitlines() if "=" in line)
    command = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(args.mqtt_port), "-V", "mqttv311",
               "-k", "60", "-i", field["client_id"], "-u", field["username"], "-P", field["password"],
               "-t", f"/{args.product_key}/{args.device_name}/user/update", "-q", "1", "-l"]
    subprocess.run(command, check=True, input="\n".join(payloads) + "\n", text=True)


def run_consumer(args, stop_after, idle_seconds, before_wait=None):
    username, password = credentials(args, args.group, "proton-1")
    tls = args.ca != "none"
    scheme = "amqps" if tls else "amqp"
    consumer = Consumer(f"{scheme}://127.0.0.1:{args.amqp_port}", username, password, stop_after,
                        idle_seconds, args.ca if tls else None)
    thread = threading.Thread(target=Container(consumer).run, daemon=True)
    thread.start()
    if not consumer.opened.wait(10):
        raise CheckFailed(f"the receiver did not open within 10 s (errors: {consumer.errors})")
    if before_wait is not None:
        before_wait()
    thread.join(timeout=30)
    if thread.is_alive():
        raise CheckFailed(f"the consumer did not finish within 30 s; it got {consumer.received}")
    return consumer.received


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("--amqp-port", "--mqtt-port", "--aliot", "--product-key", "--device-name",
                 "--device-secret", "--access-key-id", "--access-key-secret", "--group", "--ca"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()

    def checks():
        got = run_consumer(args, 4, 5.0, lambda: mosquitto_pub(args, ["proton one", "proton two"]))
        status_topic = f"/as/mqtt/status/{args.product_key}/{args.device_name}"
        topics = [m["topic"] for m in got]
        data_topic = f"/{args.product_key}/{args.device_name}/user/update"
        expect(topics == [status_topic, data_topic, data_topic, status_topic],
               f"the consumer got {json.dumps(got)}")
        expect([json.loads(got[0]["body"])["status"], got[1]["body"], got[2]["body"],
                json.loads(got[3]["body"])["status"]] == ["online", "proton one", "proton two", "offline"],
               f"the consumer got {json.dumps(got)}")
        expect(all(m["messageId"] == str(m["id"]) and isinstance(m["generateTime"], int) for m in got),
               f"messageId and generateTime: {json.dumps(got)}")
        ok(f"python-qpid-proton got the online status, both payloads on {data_topic} and the offline status, "
           f"with their messageId and generateTime, and accepted each")
        again = run_consumer(args, 1, 2.0)
        expect(again == [], f"a second consumer got {json.dumps(again)}: accepted messages came back")
        ok("accepted messages left the backlog: a second consumer got none")

    return run_checks("python-qpid-proton consumer", checks)


if __name__ == "__main__":
    raise SystemExit(main())
