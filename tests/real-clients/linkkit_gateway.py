"""aliyun-iot-linkkit (the platform's Python device SDK, unmodified, 1.2.13) as a gateway against
`aliot serve` (PLATFORM-PROTOCOLS §4): the SDK's gateway calls carry two sub-devices over its one
MQTT connection.

The SDK connects with `_ss=1` and `ext=1` and subscribes to nothing: its gateway replies and the
sub-devices' downlinks come by the broker's automatic subscription, which a sub-device inherits
from its gateway (and its login's `clientId`, `…|lan=Python,_v=2.2.1,_ss=1|`). The SDK has no
thing-model API for sub-devices: the application publishes their thing model itself
(`publish_topic`) and reads what is not the gateway's in `on_topic_message`.

Step by step (plain TCP): connect; `gateway_add_subdev_topo` of both (each signed with its own
secret, `signmethod` hmacSha256): `on_gateway_add_subdev_topo_reply` code 200;
`gateway_login_subdev` of both (one `batch_login`): code 200 and `GetDeviceStatus` ONLINE for
each; for each sub-device: a property post on its topic is answered code 200 through the gateway
and shows in `QueryDevicePropertyStatus`, `SetDeviceProperty` arrives in `on_topic_message` and
the application's `set_reply` shows in `ListDownlinkResults`, `POST /rrpc` arrives on
/sys/{pk}/{sub}/rrpc/request/{id} and the application's answer on .../rrpc/response/{id} comes
back as the call's payload; `gateway_logout_subdev` of the first (`batch_logout`): code 200,
OFFLINE; a `gateway_login_subdev` of it signed with a wrong secret: code 6287, still OFFLINE;
disconnect: the second goes OFFLINE with the gateway.
"""

import argparse
import base64
import json
import time

from linkkit import linkkit

from common import WAIT_SECONDS, Api, CheckFailed, Inbox, expect, ok, run_checks


def wait_for_status(api, pk, dn, wanted):
    """Until `GetDeviceStatus` of the device says `wanted`."""
    deadline = time.monotonic() + WAIT_SECONDS
    status = None
    while time.monotonic() < deadline:
        status = api.post("/GetDeviceStatus", {"ProductKey": pk, "DeviceName": dn})["Data"]["Status"]
        if status == wanted:
            return
        time.sleep(0.05)
    raise CheckFailed(f"GetDeviceStatus of {dn} is {status} after {WAIT_SECONDS:.0f} s, expected {wanted}")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api", required=True)
    parser.add_argument("--product-key", required=True)
    parser.add_argument("--device-name", required=True, help="the gateway")
    parser.add_argument("--device-secret", required=True, help="the gateway's secret")
    parser.add_argument("--sub-devices", required=True, help="DN1:DS1,DN2:DS2")
    args = parser.parse_args()

    api = Api(args.api)
    pk = args.product_key
    subs = [tuple(pair.split(":", 1)) for pair in args.sub_devices.split(",")]
    inbox = Inbox()

    kit = linkkit.LinkKit(host_name=args.host, product_key=pk, device_name=args.device_name,
                          device_secret=args.device_secret)
    kit.enable_logger(linkkit.logging.WARNING)
    kit.config_mqtt(port=args.port, secure="", keep_alive=60)
    kit.on_connect = lambda session_flag, rc, userdata: inbox.put("connect", rc)
    kit.on_disconnect = lambda rc, userdata: inbox.put("disconnect", rc)
    kit.on_gateway_add_subdev_topo_reply = lambda request_id, code, data, message, userdata: inbox.put(
        "topo-add", request_id, code, data, message)
    kit.on_gateway_login_subdev_reply = lambda request_id, code, data, message, userdata: inbox.put(
        "login", request_id, code, data, message)
    kit.on_gateway_logout_subdev_reply = lambda request_id, code, data, message, userdata: inbox.put(
        "logout", request_id, code, data, message)
    kit.on_topic_message = lambda topic, payload, qos, userdata: inbox.put("message", topic, payload)

    def reply_to(what, request_id):
        return lambda e: e[0] == what and e[1] == request_id

    def checks():
        kit.connect_async()
        _, rc = inbox.wait_for("on_connect", lambda e: e[0] == "connect")
        expect(rc == 0, f"on_connect reported rc {rc}, expected 0")
        ok(f"gateway {args.device_name} connected (TCP, _ss=1, ext=1)")

        rc, request_id = kit.gateway_add_subdev_topo([[pk, dn, ds] for dn, ds in subs])
        expect(rc == 0, f"gateway_add_subdev_topo returned {rc}")
        _, _, code, data, message = inbox.wait_for("on_gateway_add_subdev_topo_reply",
                                                   reply_to("topo-add", request_id))
        expect(code == 200 and sorted(d["deviceName"] for d in data) == sorted(dn for dn, _ in subs),
               f"on_gateway_add_subdev_topo_reply got code {code!r} data {data!r} message {message!r}")
        ok(f"gateway_add_subdev_topo({', '.join(dn for dn, _ in subs)}): code 200, data {data}")

        rc, request_id = kit.gateway_login_subdev([[pk, dn, ds] for dn, ds in subs])
        expect(rc == 0, f"gateway_login_subdev returned {rc}")
        _, _, code, data, message = inbox.wait_for("on_gateway_login_subdev_reply", reply_to("login", request_id))
        expect(code == 200, f"on_gateway_login_subdev_reply got code {code!r} data {data!r} message {message!r}")
        for dn, _ in subs:
            wait_for_status(api, pk, dn, "ONLINE")
        ok(f"gateway_login_subdev (batch_login of {len(subs)}): code 200; GetDeviceStatus says ONLINE for each")

        for number, (dn, _) in enumerate(subs, start=1):
            sys_prefix = f"/sys/{pk}/{dn}"
            post = f"{sys_prefix}/thing/event/property/post"
            value = 40.5 + number
            rc, _ = kit.publish_topic(post, json.dumps(
                {"id": f"{number}", "version": "1.0", "params": {"Temperature": value},
                 "method": "thing.event.property.post"}), 1)
            expect(rc == 0, f"publish_topic({post}) returned {rc}")
            _, _, payload = inbox.wait_for(f"the post reply of {dn}",
                                           lambda e, t=f"{post}_reply": e[0] == "message" and e[1] == t)
            reply = json.loads(payload)
            expect(reply["code"] == 200 and reply["id"] == f"{number}",
                   f"the post reply of {dn} was {payload!r}, expected id {number} and code 200")
            status = api.post("/QueryDevicePropertyStatus", {"ProductKey": pk, "DeviceName": dn})
            kept = {p["Identifier"]: p["Value"] for p in status["Data"]["List"]["PropertyStatusInfo"]}
            expect(kept.get("Temperature") == str(value), f"QueryDevicePropertyStatus of {dn}: {json.dumps(status)}")
            ok(f"{dn}: its property post through the gateway answered code 200 (unsubscribed); "
               f"QueryDevicePropertyStatus shows Temperature {value}")

            answer = api.post("/SetDeviceProperty",
                              {"ProductKey": pk, "DeviceName": dn, "Items": json.dumps({"Switch": number})})
            set_id = answer["Data"]["MessageId"]
            set_topic = f"{sys_prefix}/thing/service/property/set"
            _, _, payload = inbox.wait_for(f"the property set of {dn}",
                                           lambda e, t=set_topic: e[0] == "message" and e[1] == t)
            request = json.loads(payload)
            expect(request["id"] == set_id and request["params"] == {"Switch": number},
                   f"the property set of {dn} was {payload!r}, expected id {set_id}")
            kit.publish_topic(f"{set_topic}_reply",
                              json.dumps({"id": request["id"], "code": 200, "data": {}}), 1)
            result = api.downlink_result(pk, dn, set_topic, set_id)
            expect(result["code"] == 200, f"ListDownlinkResults has {json.dumps(result)}")
            ok(f"{dn}: SetDeviceProperty arrived through the gateway; its set_reply is in ListDownlinkResults")

            call = api.rrpc_in_background(pk, dn, f"ping {dn}".encode(), 5000)
            _, topic, payload = inbox.wait_for(
                f"the RRPC request of {dn}",
                lambda e, p=f"{sys_prefix}/rrpc/request/": e[0] == "message" and e[1].startswith(p))
            expect(payload == f"ping {dn}".encode(), f"the RRPC request of {dn} carried {payload!r}")
            message_id = topic.rsplit("/", 1)[1]
            kit.publish_topic(f"{sys_prefix}/rrpc/response/{message_id}", f"pong {dn}", 0)
            answer = call()
            expect(answer["RrpcCode"] == "SUCCESS" and base64.b64decode(answer["PayloadBase64Byte"]) == f"pong {dn}".encode(),
                   f"POST /rrpc to {dn} answered {json.dumps(answer)}")
            ok(f"{dn}: POST /rrpc came on {topic}; the gateway's answer for it ended the call SUCCESS")

        first, first_secret = subs[0]
        rc, request_id = kit.gateway_logout_subdev([[pk, first]])
        expect(rc == 0, f"gateway_logout_subdev returned {rc}")
        _, _, code, data, message = inbox.wait_for("on_gateway_logout_subdev_reply", reply_to("logout", request_id))
        expect(code == 200, f"on_gateway_logout_subdev_reply got code {code!r} data {data!r} message {message!r}")
        wait_for_status(api, pk, first, "OFFLINE")
        ok(f"gateway_logout_subdev({first}) (batch_logout): code 200; OFFLINE")

        rc, request_id = kit.gateway_login_subdev([[pk, first, "not-" + first_secret]])
        expect(rc == 0, f"gateway_login_subdev returned {rc}")
        _, _, code, data, message = inbox.wait_for("on_gateway_login_subdev_reply", reply_to("login", request_id))
        expect(code == 6287, f"a login signed with a wrong secret got code {code!r} message {message!r}, expected 6287")
        status = api.post("/GetDeviceStatus", {"ProductKey": pk, "DeviceName": first})["Data"]["Status"]
        expect(status == "OFFLINE", f"after the refused login, GetDeviceStatus of {first} is {status}")
        ok(f"gateway_login_subdev({first}) with a wrong secret: code 6287 ({message}); still OFFLINE")

        kit.disconnect()
        inbox.wait_for("on_disconnect", lambda e: e[0] == "disconnect")
        wait_for_status(api, pk, subs[1][0], "OFFLINE")
        ok(f"the gateway disconnected: {subs[1][0]} went OFFLINE with it")

    status = run_checks("aliyun-iot-linkkit gateway", checks)
    kit.destroy()
    return status


if __name__ == "__main__":
    raise SystemExit(main())
