"""aliyun-iot-linkkit (the platform's Python device SDK, unmodified) registering itself over MQTT
with its product's secret ("one product, one secret", both of the SDK's MQTT ways), over TLS
as the platform requires, then connecting with what it was given.

Step by step: with `auth_type="register"` the pre-registered, inactive device connects with
`authType=register` and its `random`, and the SDK's `on_device_dynamic_register` reports the
DeviceSecret pushed on `/ext/register` (the SDK disconnects by itself); a new LinkKit connects
with that secret (CONNACK 0, which activates the device), publishes on its update topic
(PUBACK), and the API shows it ONLINE; a second `register` of the now activated device is
refused (the SDK reports DYNREG_AUTH_FAILED). With `auth_type="regnwl"` a device that was never
registered (a new name each run) is created and `on_device_dynamic_register_nwl_reply` reports
the client id, username and token pushed on `/ext/regnwl`; a LinkKit given those three logs in
with `authType=connwl` and the token as password, and publishes.
"""

import argparse
import time

from linkkit import linkkit

from common import Api, Inbox, expect, ok, run_checks


def parse():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="the broker's TLS port")
    parser.add_argument("--ca", required=True, help="PEM file of the CA to trust")
    parser.add_argument("--api", required=True)
    parser.add_argument("--product-key", required=True)
    parser.add_argument("--product-secret", required=True)
    parser.add_argument("--device-name", required=True, help="a pre-registered, inactive device")
    return parser.parse_args()


def kit_for(args, device_name, **auth):
    """A LinkKit pointed at the broker's TLS listener, its callbacks reporting to an inbox."""
    kit = linkkit.LinkKit(host_name=args.host, product_key=args.product_key, device_name=device_name, **auth)
    kit.enable_logger(linkkit.logging.WARNING)
    with open(args.ca, encoding="ascii") as ca_file:
        kit.config_mqtt(port=args.port, secure="TLS", cadata=ca_file.read(), keep_alive=60)
    inbox = Inbox()
    kit.on_connect = lambda session_flag, rc, userdata: inbox.put("connect", rc)
    kit.on_publish_topic = lambda mid, userdata: inbox.put("puback", mid)
    kit.on_device_dynamic_register = lambda rc, value, userdata: inbox.put("register", rc, value)
    kit.on_device_dynamic_register_nwl_reply = lambda rc, client_id, username, password: inbox.put(
        "regnwl", rc, client_id, username, password
    )
    return kit, inbox


def connect_and_publish(args, api, device_name, how, **auth):
    kit, inbox = kit_for(args, device_name, **auth)
    try:
        kit.connect_async()
        _, rc = inbox.wait_for("on_connect", lambda e: e[0] == "connect")
        expect(rc == 0, f"on_connect reported rc {rc}, expected 0 (CONNACK accepted)")
        detail = api.post("/QueryDeviceDetail", {"ProductKey": args.product_key, "DeviceName": device_name})
        expect(detail["Data"]["Status"] == "ONLINE", f"QueryDeviceDetail while connected: {detail}")
        rc, mid = kit.publish_topic(f"/{args.product_key}/{device_name}/user/update", b"registered", 1)
        expect(rc == 0, f"publish_topic returned {rc}")
        inbox.wait_for("the PUBACK", lambda e: e[0] == "puback" and e[1] == mid)
        ok(f"{device_name} connected {how}, is ONLINE and published (PUBACK)")
    finally:
        kit.disconnect()
        kit.destroy()


def register(args, device_name, auth_type):
    """Runs the SDK's registration; the callback's event."""
    kit, inbox = kit_for(args, device_name, device_secret="", product_secret=args.product_secret, auth_type=auth_type)
    try:
        kit.connect_async()
        kind = "register" if auth_type == "register" else "regnwl"
        return inbox.wait_for(f"the SDK's {kind} callback", lambda e: e[0] == kind)
    finally:
        kit.destroy()


def main():
    args = parse()
    api = Api(args.api)

    def checks():
        _, rc, secret = register(args, args.device_name, "register")
        expect(rc == 0 and secret, f"on_device_dynamic_register reported rc {rc} with {secret!r}")
        ok(f"authType=register: the SDK got a DeviceSecret of {len(secret)} characters on /ext/register")
        connect_and_publish(args, api, args.device_name, "with that secret", device_secret=secret)
        _, rc, _ = register(args, args.device_name, "register")
        expect(rc != 0, "registering an activated device must be refused")
        ok(f"registering the activated device again is refused (the SDK reports {rc})")

        fresh = f"linkkit-nwl-{int(time.time() * 1000) % 10**10}"
        _, rc, client_id, username, token = register(args, fresh, "regnwl")
        expect(rc == 0 and token, f"on_device_dynamic_register_nwl_reply reported rc {rc}")
        expect("authType=connwl" in client_id, f"the SDK's token client id: {client_id!r}")
        expect(username == f"{fresh}&{args.product_key}", f"the SDK's username: {username!r}")
        ok(f"authType=regnwl: {fresh} was created and the SDK got its token on /ext/regnwl")
        connect_and_publish(
            args,
            api,
            fresh,
            "by the token login (authType=connwl)",
            device_secret="",
            client_id=client_id,
            username=username,
            password=token,
        )

    return run_checks("linkkit dynamic registration", checks)


if __name__ == "__main__":
    raise SystemExit(main())
