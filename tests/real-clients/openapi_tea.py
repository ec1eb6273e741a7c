"""The platform's newer Python server SDK (alibabacloud-iot20180120 on alibabacloud-tea-openapi,
unmodified, from PyPI), which signs with ACS3-HMAC-SHA256 in the Authorization header, against
aliot's OpenAPI with only the endpoint changed: CreateProduct, RegisterDevice,
QueryDeviceDetail (UNACTIVE), DisableThing (DISABLE), DeleteDevice; a wrong AccessKey secret
is refused with SignatureDoesNotMatch by the SDK's own exception.
"""

import argparse

from alibabacloud_iot20180120 import models
from alibabacloud_iot20180120.client import Client
from alibabacloud_tea_openapi import models as open_api_models

from common import expect, ok, run_checks


def client(api, key_id, secret):
    config = open_api_models.Config(
        access_key_id=key_id, access_key_secret=secret, endpoint=api.split("//", 1)[1],
        protocol="http", region_id="cn-shanghai")
    return Client(config)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", required=True)
    parser.add_argument("--access-key-id", required=True)
    parser.add_argument("--access-key-secret", required=True)
    args = parser.parse_args()
    sdk = client(args.api, args.access_key_id, args.access_key_secret)

    def checks():
        made = sdk.create_product(models.CreateProductRequest(product_name="tea-lamp", node_type=0)).body
        expect(made.success and made.data.product_key, f"CreateProduct answered {made.to_map()}")
        pk = made.data.product_key
        ok(f"CreateProduct (ACS3-HMAC-SHA256) made {pk}")
        device = sdk.register_device(models.RegisterDeviceRequest(product_key=pk, device_name="tea-0001")).body
        expect(device.success and device.data.device_secret, f"RegisterDevice answered {device.to_map()}")
        ok(f"RegisterDevice made {pk}/tea-0001 (IotId {device.data.iot_id})")

        def status():
            detail = sdk.query_device_detail(
                models.QueryDeviceDetailRequest(product_key=pk, device_name="tea-0001")).body
            expect(detail.success, f"QueryDeviceDetail answered {detail.to_map()}")
            return detail.data.status

        expect(status() == "UNACTIVE", "a new device is UNACTIVE")
        disabled = sdk.disable_thing(models.DisableThingRequest(product_key=pk, device_name="tea-0001")).body
        expect(disabled.success and status() == "DISABLE", f"DisableThing answered {disabled.to_map()}")
        ok("QueryDeviceDetail UNACTIVE, then DisableThing: DISABLE")
        deleted = sdk.delete_device(models.DeleteDeviceRequest(product_key=pk, device_name="tea-0001")).body
        expect(deleted.success, f"DeleteDevice answered {deleted.to_map()}")
        gone = sdk.query_device_detail(models.QueryDeviceDetailRequest(product_key=pk, device_name="tea-0001")).body
        expect(gone.success is False and gone.code == "iot.device.NotExistedDevice", f"after DeleteDevice: {gone.to_map()}")
        ok("DeleteDevice: QueryDeviceDetail iot.device.NotExistedDevice")

        wrong = client(args.api, args.access_key_id, args.access_key_secret + "x")
        try:
            wrong.query_product(models.QueryProductRequest(product_key=pk))
            expect(False, "a wrong AccessKey secret was accepted")
        except Exception as error:  # noqa: BLE001 - the SDK's own exception class varies by version
            code = getattr(error, "code", "")
            expect(code == "SignatureDoesNotMatch", f"a wrong secret raised {code!r}: {error}")
        ok("a wrong AccessKey secret is refused: SignatureDoesNotMatch")

    return run_checks("openapi_tea", checks)


if __name__ == "__main__":
    raise SystemExit(main())
