"""aliyun-iot-linkkit (the platform's Python device SDK, unmodified, 1.2.13) against the device
services of `aliot serve`: the thing model (Alink) through the SDK's own thing-model API, enabled
with the product's thing model tsl.json (`thing_setup`), answered by its own callbacks.

The SDK puts `_ss=1` and `ext=1` in its client id and sends no SUBSCRIBE for any system topic: the
post replies, the property set, the service calls (async on /sys/{pk}/{dn}/thing/service/{id},
sync on /ext/rrpc/{id}/sys/{pk}/{dn}/thing/service/{id}) and the shadow reply must all come by
the broker's automatic subscription. This script subscribes to nothing either, and watches the
SDK's paho client through the SDK's own "Paho" logger (what it sends and receives).

Step by step (plain TCP, securemode=3): connect; the CONNECT carried `_ss=1` and `ext=1`;
`thing_post_property` gets `on_thing_prop_post` code 200; `thing_trigger_event` gets
`on_thing_event_post` code 200; `POST /QueryDevicePropertyStatus` shows the property;
`POST /SetDeviceProperty` reaches `on_thing_prop_changed` and the SDK's automatic set_reply shows
up in `GET /ListDownlinkResults`; `POST /InvokeThingService` (async) reaches
`on_thing_call_service`, answered with `thing_answer_service`, whose answer shows up in
`GET /ListDownlinkResults`; the same with `Sync` true comes over /ext/rrpc/..., and the
`thing_answer_service` answer (on the same topic) comes back as `Data.Result`; `thing_get_shadow`
gets `on_thing_shadow_get`; no SUBSCRIBE was ever sent; disconnect.
"""

import json
import logging
import os
import re
import sys

from linkkit import linkkit

from common import Api, Inbox, expect, ok, parse_args, run_checks

HERE = os.path.dirname(os.path.abspath(__file__))


class PahoRecord(logging.Handler):
    """The SDK's paho client's log lines ("Sending CONNECT ...", "Received PUBLISH ..."), kept."""

    def __init__(self, inbox):
        super().__init__(logging.DEBUG)
        self.inbox = inbox
        self.lines = []

    def emit(self, record):
        line = record.getMessage()
        self.lines.append(line)
        if line.startswith(("Sending PUBLISH", "Received PUBLISH")):
            self.inbox.put("paho", line)


def main():
    args = parse_args(__doc__)
    api = Api(args.api)
    pk, dn = args.product_key, args.device_name
    sys_prefix = f"/sys/{pk}/{dn}"
    inbox = Inbox()

    kit = linkkit.LinkKit(host_name=args.host, product_key=pk, device_name=dn, device_secret=args.device_secret)
    kit.enable_logger(linkkit.logging.WARNING)
    # enable_logger hands the SDK's "Paho" logger to its paho client; record that client at DEBUG
    # (the SDK's own "linkkit" logger stays at WARNING).
    paho = PahoRecord(inbox)
    paho_logger = logging.getLogger("Paho")
    paho_logger.setLevel(logging.DEBUG)
    paho_logger.propagate = False
    paho_logger.addHandler(paho)
    kit.config_mqtt(port=args.port, secure="", keep_alive=60)

    kit.on_connect = lambda session_flag, rc, userdata: inbox.put("connect", rc)
    kit.on_disconnect = lambda rc, userdata: inbox.put("disconnect", rc)
    kit.on_thing_enable = lambda userdata: inbox.put("enable")
    kit.on_thing_prop_post = lambda request_id, code, data, message, userdata: inbox.put(
        "prop-post", request_id, code, data, message)
    kit.on_thing_event_post = lambda event, request_id, code, data, message, userdata: inbox.put(
        "event-post", event, request_id, code, data, message)
    kit.on_thing_prop_changed = lambda params, userdata: inbox.put("prop-changed", params)
    kit.on_thing_shadow_get = lambda payload, userdata: inbox.put("shadow", payload)

    def call_service(identifier, request_id, params, userdata):
        # The SDK's service callback, for async (/sys/...) and sync (/ext/rrpc/...) calls alike;
        # thing_answer_service replies on .../{identifier}_reply, or on the /ext/rrpc topic the
        # call came on.
        inbox.put("service", identifier, request_id, params)
        if identifier == "Reboot":
            rc = kit.thing_answer_service(identifier, request_id, 200, {"rebooted": True})
        else:
            rc = kit.thing_answer_service(identifier, request_id, 200, {"echo": params.get("text")})
        inbox.put("answered", identifier, rc)

    kit.on_thing_call_service = call_service

    def checks():
        tsl = os.path.join(HERE, "tsl.json")
        rc = kit.thing_setup(tsl)
        expect(rc == 0, f"thing_setup({tsl}) returned {rc}")
        ok("thing_setup(tsl.json): the thing model (Temperature, Switch, event Alarm, services Reboot and Echo)")

        kit.connect_async()
        _, rc = inbox.wait_for("on_connect", lambda e: e[0] == "connect")
        expect(rc == 0, f"on_connect reported rc {rc}, expected 0 (CONNACK accepted)")
        inbox.wait_for("on_thing_enable", lambda e: e[0] == "enable")
        connects = [line for line in paho.lines if line.startswith("Sending CONNECT")]
        client_id = re.search(r"client_id=b'([^']*)'", connects[0]).group(1) if connects else ""
        flags = client_id.split("|")[1].split(",") if client_id.count("|") == 2 else []
        expect("_ss=1" in flags and "ext=1" in flags,
               f"the SDK's CONNECT {connects}: expected _ss=1 and ext=1 in its client id")
        ok(f"connected (TCP, securemode=3) as {client_id}; the thing model is enabled")

        rc, request_id = kit.thing_post_property({"Temperature": 23.5, "Switch": 1})
        expect(rc == 0, f"thing_post_property returned {rc}")
        _, replied_id, code, data, message = inbox.wait_for(
            "on_thing_prop_post", lambda e: e[0] == "prop-post")
        expect(replied_id == request_id and code == 200 and data == {} and message == "success",
               f"on_thing_prop_post got id {replied_id!r} code {code!r} data {data!r} message {message!r}, "
               f"expected id {request_id!r} code 200 data {{}} message success")
        ok(f"thing_post_property(Temperature 23.5, Switch 1): on_thing_prop_post got id {replied_id}, code 200, without SUBSCRIBE")

        rc, request_id = kit.thing_trigger_event(("Alarm", {"level": 3}))
        expect(rc == 0, f"thing_trigger_event returned {rc}")
        _, event, replied_id, code, _, message = inbox.wait_for(
            "on_thing_event_post", lambda e: e[0] == "event-post")
        expect(event == "Alarm" and replied_id == request_id and code == 200,
               f"on_thing_event_post got event {event!r} id {replied_id!r} code {code!r} message {message!r}, "
               f"expected Alarm, id {request_id!r}, code 200")
        ok(f"thing_trigger_event(Alarm, level 3): on_thing_event_post got id {replied_id}, code 200")

        status = api.post("/QueryDevicePropertyStatus", {"ProductKey": pk, "DeviceName": dn})
        kept = {p["Identifier"]: p["Value"] for p in status["Data"]["List"]["PropertyStatusInfo"]}
        expect(kept.get("Temperature") == "23.5" and kept.get("Switch") == "1",
               f"QueryDevicePropertyStatus answered {json.dumps(status)}, expected Temperature 23.5, Switch 1")
        ok(f"QueryDevicePropertyStatus shows the posted properties: {kept}")

        # Property set: the SDK calls on_thing_prop_changed and replies by itself (QoS 1) on
        # .../thing/service/property/set_reply with the set's id.
        answer = api.post("/SetDeviceProperty",
                          {"ProductKey": pk, "DeviceName": dn, "Items": json.dumps({"Switch": 0})})
        set_id = answer["Data"]["MessageId"]
        _, params = inbox.wait_for("on_thing_prop_changed", lambda e: e[0] == "prop-changed")
        expect(params == {"Switch": 0}, f"on_thing_prop_changed got {params!r}, expected {{'Switch': 0}}")
        set_topic = f"{sys_prefix}/thing/service/property/set"
        result = api.downlink_result(pk, dn, set_topic, set_id)
        expect(result["code"] == 200, f"ListDownlinkResults has {json.dumps(result)}, expected code 200")
        ok(f"SetDeviceProperty Switch 0 (MessageId {set_id}) reached on_thing_prop_changed without SUBSCRIBE; "
           f"the SDK's own set_reply is in ListDownlinkResults: {json.dumps(result)}")

        # Async service.
        answer = api.post("/InvokeThingService", {"ProductKey": pk, "DeviceName": dn, "Identifier": "Reboot",
                                                  "Args": json.dumps({"delay": 2}), "Sync": False})
        call_id = answer["Data"]["MessageId"]
        _, _, request_id, params = inbox.wait_for(
            "on_thing_call_service for Reboot", lambda e: e[0] == "service" and e[1] == "Reboot")
        expect(request_id == call_id and params == {"delay": 2},
               f"on_thing_call_service got id {request_id!r} params {params!r}, expected {call_id!r} {{'delay': 2}}")
        _, _, rc = inbox.wait_for("thing_answer_service", lambda e: e[0] == "answered" and e[1] == "Reboot")
        expect(rc == 0, f"thing_answer_service(Reboot) returned {rc}")
        inbox.wait_for("Received PUBLISH of the Reboot call", lambda e: e[0] == "paho" and e[1].startswith(
            "Received PUBLISH") and f"{sys_prefix}/thing/service/Reboot'" in e[1])
        result = api.downlink_result(pk, dn, f"{sys_prefix}/thing/service/Reboot", call_id)
        expect(result["code"] == 200 and result["data"] == {"rebooted": True},
               f"ListDownlinkResults has {json.dumps(result)}, expected code 200 and data {{\"rebooted\":true}}")
        ok(f"InvokeThingService Reboot (async, MessageId {call_id}) came on {sys_prefix}/thing/service/Reboot "
           f"without SUBSCRIBE; the thing_answer_service answer is in ListDownlinkResults: {json.dumps(result)}")

        # Sync service, over /ext/rrpc/{id}/sys/{pk}/{dn}/thing/service/Echo (ext=1).
        call = api.in_background(api.post, "/InvokeThingService", {
            "ProductKey": pk, "DeviceName": dn, "Identifier": "Echo",
            "Args": json.dumps({"text": "hello linkkit"}), "Sync": True, "Timeout": 5000})
        _, _, request_id, params = inbox.wait_for(
            "on_thing_call_service for Echo", lambda e: e[0] == "service" and e[1] == "Echo")
        expect(params == {"text": "hello linkkit"}, f"on_thing_call_service(Echo) got params {params!r}")
        _, _, rc = inbox.wait_for("thing_answer_service", lambda e: e[0] == "answered" and e[1] == "Echo")
        expect(rc == 0, f"thing_answer_service(Echo) returned {rc}")
        answer = call()
        rrpc_id = answer["Data"]["MessageId"]
        ext_topic = f"/ext/rrpc/{rrpc_id}{sys_prefix}/thing/service/Echo"
        inbox.wait_for(f"Received PUBLISH on {ext_topic}", lambda e: e[0] == "paho" and e[1].startswith(
            "Received PUBLISH") and f"{ext_topic}'" in e[1])
        inbox.wait_for(f"Sending PUBLISH on {ext_topic}", lambda e: e[0] == "paho" and e[1].startswith(
            "Sending PUBLISH") and f"{ext_topic}'" in e[1])
        expect(answer["Data"].get("Code") == 200
               and json.loads(answer["Data"].get("Result", "null")) == {"echo": "hello linkkit"},
               f"InvokeThingService (sync) answered {json.dumps(answer)}, expected Code 200, Result {{\"echo\":\"hello linkkit\"}}")
        ok(f"InvokeThingService Echo (sync) came on {ext_topic} and was answered there by thing_answer_service: "
           f"Data {json.dumps(answer['Data'])}")

        rc, _ = kit.thing_get_shadow()
        expect(rc == 0, f"thing_get_shadow returned {rc}")
        _, shadow = inbox.wait_for("on_thing_shadow_get", lambda e: e[0] == "shadow")
        expect(shadow.get("method") == "reply" and shadow.get("payload", {}).get("status") == "success",
               f"on_thing_shadow_get got {shadow!r}, expected a successful reply")
        ok(f"thing_get_shadow: on_thing_shadow_get got {json.dumps(shadow)} without SUBSCRIBE")

        subscribes = [line for line in paho.lines if line.startswith("Sending SUBSCRIBE")]
        expect(not subscribes, f"the SDK sent SUBSCRIBE: {subscribes}")
        ok("the SDK sent no SUBSCRIBE at all: everything above came by the automatic subscription")

        kit.disconnect()
        inbox.wait_for("on_disconnect", lambda e: e[0] == "disconnect")
        ok("disconnected")

    status = run_checks("aliyun-iot-linkkit thing model", checks)
    sys.stdout.flush()
    # The SDK's worker threads are not daemons and keep reconnecting after a failure: leave now.
    os._exit(status)


if __name__ == "__main__":
    main()
