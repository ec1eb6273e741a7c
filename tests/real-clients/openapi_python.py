"""The platform's official Python server SDK (aliyun-python-sdk-core with aliyun-python-sdk-iot,
unmodified, from PyPI) against aliot's OpenAPI, with only the endpoint changed.

A paho-mqtt device (credentials signed as paho_client.py signs them) connects and listens; then,
through the SDK's own request classes: `Pub` reaches the device, `RRpc` is answered by it,
`QueryDevicePropertyStatus` answers for it, and a device that does not exist gets the
platform's `iot.device.NotExistedDevice`. The registry: `CreateProduct`, `RegisterDevice`
(the secret it returns connects a second paho device), `QueryDeviceDetail` at each step
(UNACTIVE, ONLINE, DISABLE, OFFLINE), `Pub` reaches it, `DisableThing` disconnects it and its
CONNECT is refused, `EnableThing` lets it back, `DeleteDevice` removes it. A client with a wrong
AccessKey secret is refused (`SignatureDoesNotMatch`), and a request signed by hand (the
documented algorithm) passes once and is refused when replayed (`SignatureNonceUsed`).
"""

import argparse
import types
import base64
import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkiot.request.v20180120.PubRequest import PubRequest
from aliyunsdkiot.request.v20180120.QueryDevicePropertyStatusRequest import QueryDevicePropertyStatusRequest
from aliyunsdkiot.request.v20180120.RRpcRequest import RRpcRequest
from aliyunsdkiot.request.v20180120.CreateProductRequest import CreateProductRequest
from aliyunsdkiot.request.v20180120.DeleteDeviceRequest import DeleteDeviceRequest
from aliyunsdkiot.request.v20180120.DisableThingRequest import DisableThingRequest
from aliyunsdkiot.request.v20180120.EnableThingRequest import EnableThingRequest
from aliyunsdkiot.request.v20180120.QueryDeviceDetailRequest import QueryDeviceDetailRequest
from aliyunsdkiot.request.v20180120.RegisterDeviceRequest import RegisterDeviceRequest

from common import Inbox, expect, ok, run_checks
from paho_client import new_client


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api", required=True)
    parser.add_argument("--product-key", required=True)
    parser.add_argument("--device-name", required=True)
    parser.add_argument("--device-secret", required=True)
    parser.add_argument("--access-key-id", required=True)
    parser.add_argument("--access-key-secret", required=True)
    return parser.parse_args()


def call(client, endpoint, request):
    """Sends an SDK request to aliot's OpenAPI; the decoded JSON answer."""
    request.set_endpoint(endpoint)
    request.set_protocol_type("http")
    request.set_accept_format("JSON")
    return json.loads(client.do_action_with_exception(request))


def signed_url(api, access_key_id, secret, params):
    """A GET URL signed by hand, as the platform documents signature version 1.0."""
    common = {
        "Format": "JSON", "Version": "2018-01-20", "AccessKeyId": access_key_id,
        "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0",
        "SignatureNonce": str(uuid.uuid4()),
        "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    params = {**common, **params}
    encode = lambda text: urllib.parse.quote(text, safe="-_.~")  # noqa: E731
    canonical = "&".join(f"{encode(k)}={encode(v)}" for k, v in sorted(params.items()))
    to_sign = f"GET&{encode('/')}&{encode(canonical)}"
    signature = base64.b64encode(hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()).decode()
    return f"{api}/?{canonical}&Signature={encode(signature)}"


def get(url):
    """(status, decoded JSON) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def device_request(request_class, pk, dn):
    """An SDK request of `request_class` naming device `pk`/`dn`."""
    request = request_class()
    request.set_ProductKey(pk)
    request.set_DeviceName(dn)
    return request


def registry_checks(args, sdk, endpoint):
    """A product and a device made through the SDK, used by MQTT, disabled, enabled, deleted."""
    request = CreateProductRequest()
    request.set_ProductName("openapi-lamp")
    request.set_NodeType(0)
    answer = call(sdk, endpoint, request)
    pk = answer.get("ProductKey") or answer.get("Data", {}).get("ProductKey")
    expect(answer.get("Success") is True and pk, f"CreateProduct answered {answer}")
    ok(f"CreateProduct made product {pk}")

    request = RegisterDeviceRequest()
    request.set_ProductKey(pk)
    request.set_DeviceName("lamp-0001")
    answer = call(sdk, endpoint, request)
    data = answer.get("Data", {})
    expect(answer.get("Success") is True and data.get("DeviceSecret") and data.get("IotId"),
           f"RegisterDevice answered {answer}")
    dn, secret = data["DeviceName"], data["DeviceSecret"]
    ok(f"RegisterDevice made {pk}/{dn} (IotId {data['IotId']})")

    def status():
        answer = call(sdk, endpoint, device_request(QueryDeviceDetailRequest, pk, dn))
        expect(answer.get("Success") is True, f"QueryDeviceDetail answered {answer}")
        return answer["Data"]["Status"]

    expect(status() == "UNACTIVE", "a new device is UNACTIVE")
    device_args = types.SimpleNamespace(product_key=pk, device_name=dn, device_secret=secret)
    inbox = Inbox()
    device = new_client(device_args, inbox)
    device.connect(args.host, args.port, keepalive=60)
    device.loop_start()
    try:
        _, reason, is_failure = inbox.wait_for("CONNACK", lambda e: e[0] == "connack")
        expect(not is_failure, f"the registered device's CONNECT got {reason!r}")
        own_get = f"/{pk}/{dn}/get"
        _, mid = device.subscribe(own_get, 1)
        inbox.wait_for("SUBACK", lambda e: e[0] == "suback" and e[1] == mid)
        expect(status() == "ONLINE", "a connected device is ONLINE")
        ok(f"the device connected with the secret RegisterDevice gave: QueryDeviceDetail ONLINE")

        request = PubRequest()
        request.set_ProductKey(pk)
        request.set_TopicFullName(own_get)
        request.set_MessageContent(base64.b64encode(b"to the new device").decode())
        request.set_Qos(1)
        call(sdk, endpoint, request)
        _, _, body, _ = inbox.wait_for("Pub to the new device", lambda e: e[0] == "message" and e[1] == own_get)
        expect(body == b"to the new device", f"the new device got {body!r}")
        ok("Pub reached the registered device")

        answer = call(sdk, endpoint, device_request(DisableThingRequest, pk, dn))
        expect(answer.get("Success") is True, f"DisableThing answered {answer}")
        inbox.wait_for("the disconnect of a disabled device", lambda e: e[0] == "disconnect")
        expect(status() == "DISABLE", "a disabled device is DISABLE")
        ok("DisableThing disconnected the device: QueryDeviceDetail DISABLE")
    finally:
        device.loop_stop()
        device.disconnect()

    refused_inbox = Inbox()
    refused = new_client(device_args, refused_inbox)
    refused.connect(args.host, args.port, keepalive=60)
    refused.loop_start()
    _, reason, is_failure = refused_inbox.wait_for("CONNACK of a disabled device", lambda e: e[0] == "connack")
    refused.loop_stop()
    refused.disconnect()
    expect(is_failure, f"a disabled device's CONNECT got {reason!r}")
    ok(f"a disabled device's CONNECT is refused ({reason})")

    call(sdk, endpoint, device_request(EnableThingRequest, pk, dn))
    expect(status() == "OFFLINE", "an enabled, activated device that is away is OFFLINE")
    ok("EnableThing: QueryDeviceDetail OFFLINE")

    answer = call(sdk, endpoint, device_request(DeleteDeviceRequest, pk, dn))
    expect(answer.get("Success") is True, f"DeleteDevice answered {answer}")
    answer = call(sdk, endpoint, device_request(QueryDeviceDetailRequest, pk, dn))
    expect(answer.get("Success") is False and answer.get("Code") == "iot.device.NotExistedDevice",
           f"QueryDeviceDetail of a deleted device answered {answer}")
    ok("DeleteDevice removed it: QueryDeviceDetail iot.device.NotExistedDevice")


def main():
    args = parse_args()
    pk, dn = args.product_key, args.device_name
    endpoint = urllib.parse.urlparse(args.api).netloc
    sdk = AcsClient(args.access_key_id, args.access_key_secret, "cn-shanghai")

    def checks():
        inbox = Inbox()
        device = new_client(args, inbox)
        device.connect(args.host, args.port, keepalive=60)
        device.loop_start()
        try:
            _, reason, is_failure = inbox.wait_for("CONNACK", lambda e: e[0] == "connack")
            expect(not is_failure, f"the device's CONNECT got {reason!r}")
            own_get = f"/{pk}/{dn}/user/get"
            _, mid = device.subscribe([(own_get, 1), (f"/sys/{pk}/{dn}/rrpc/request/+", 0)])
            inbox.wait_for("SUBACK", lambda e: e[0] == "suback" and e[1] == mid)
            ok(f"device {dn} connected and subscribed")

            request = PubRequest()
            request.set_ProductKey(pk)
            request.set_TopicFullName(own_get)
            request.set_MessageContent(base64.b64encode(b"from the SDK").decode())
            request.set_Qos(1)
            answer = call(sdk, endpoint, request)
            expect(answer.get("Success") is True and answer.get("RequestId"), f"Pub answered {answer}")
            _, _, body, qos = inbox.wait_for("the SDK's Pub", lambda e: e[0] == "message" and e[1] == own_get)
            expect(body == b"from the SDK" and qos == 1, f"the device got {body!r} at QoS {qos}")
            ok(f"Pub through the SDK reached the device at QoS 1 (RequestId {answer['RequestId']})")

            request = RRpcRequest()
            request.set_ProductKey(pk)
            request.set_DeviceName(dn)
            request.set_RequestBase64Byte(base64.b64encode(b"ping").decode())
            request.set_Timeout(5000)
            result = {}
            thread = threading.Thread(target=lambda: result.update(answer=call(sdk, endpoint, request)))
            thread.start()
            _, topic, body, _ = inbox.wait_for(
                "the RRPC request", lambda e: e[0] == "message" and "/rrpc/request/" in e[1])
            expect(body == b"ping", f"the RRPC request carried {body!r}")
            device.publish(topic.replace("/request/", "/response/"), b"pong", qos=0)
            thread.join(10)
            answer = result.get("answer", {})
            expect(answer.get("RrpcCode") == "SUCCESS"
                   and base64.b64decode(answer.get("PayloadBase64Byte", "")) == b"pong",
                   f"RRpc answered {answer}")
            ok(f"RRpc through the SDK was answered by the device: SUCCESS, MessageId {answer.get('MessageId')}")

            request = QueryDevicePropertyStatusRequest()
            request.set_ProductKey(pk)
            request.set_DeviceName(dn)
            answer = call(sdk, endpoint, request)
            expect(answer.get("Success") is True and "Data" in answer, f"QueryDevicePropertyStatus answered {answer}")
            ok("QueryDevicePropertyStatus through the SDK: Success, with Data")

            request = QueryDevicePropertyStatusRequest()
            request.set_ProductKey(pk)
            request.set_DeviceName("no-such-device")
            answer = call(sdk, endpoint, request)
            expect(answer.get("Success") is False and answer.get("Code") == "iot.device.NotExistedDevice",
                   f"an unknown device answered {answer}")
            ok("an unknown device: Success false, Code iot.device.NotExistedDevice")
        finally:
            device.loop_stop()
            device.disconnect()

        registry_checks(args, sdk, endpoint)

        wrong = AcsClient(args.access_key_id, args.access_key_secret + "x", "cn-shanghai")
        request = QueryDevicePropertyStatusRequest()
        request.set_ProductKey(pk)
        request.set_DeviceName(dn)
        try:
            call(wrong, endpoint, request)
            expect(False, "a wrong AccessKey secret was accepted")
        except ServerException as error:
            expect(error.get_error_code() == "SignatureDoesNotMatch",
                   f"a wrong secret raised {error.get_error_code()!r}")
        ok("a wrong AccessKey secret is refused by the SDK's own exception: SignatureDoesNotMatch")

        url = signed_url(args.api, args.access_key_id, args.access_key_secret,
                         {"Action": "QueryDevicePropertyStatus", "ProductKey": pk, "DeviceName": dn})
        status, answer = get(url)
        expect(status == 200 and answer.get("Success") is True, f"a request signed by hand: {status} {answer}")
        status, answer = get(url)
        expect(status == 400 and answer.get("Code") == "SignatureNonceUsed", f"the replay: {status} {answer}")
        ok("a request signed by hand passes once; replayed, it is refused: SignatureNonceUsed")

    return run_checks("openapi_python", checks)


if __name__ == "__main__":
    raise SystemExit(main())
