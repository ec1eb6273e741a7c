"""What the Python drivers share: their command line, the broker's HTTP API, and waiting for
what a client's callbacks report.

Standard library only, so both venvs (paho-mqtt 2.x, and linkkit's paho-mqtt 1.x) import it.
Every check either prints one `ok:` line or raises `CheckFailed` saying what was expected and
what came instead; `run_checks` turns that into the process's exit status.
"""

import argparse
import base64
import json
import queue
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request

# How long a client gets to show the effect of one action (a CONNACK, a SUBACK, a message).
WAIT_SECONDS = 10.0


class CheckFailed(Exception):
    """A check did not hold; the message says what was expected and what happened."""


def parse_args(description):
    """The command line every Python driver takes (run.sh passes all of it)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="the MQTT port to use")
    parser.add_argument("--api", required=True, help="the HTTP API base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--product-key", required=True)
    parser.add_argument("--device-name", required=True)
    parser.add_argument("--device-secret", required=True)
    parser.add_argument("--ca", help="PEM file of the CA to trust: connect over TLS (securemode=2)")
    parser.add_argument("--websocket", metavar="PATH", help="MQTT over WebSocket at this path (ws://, or wss:// with --ca)")
    return parser.parse_args()


def ok(what):
    """Reports a check that held."""
    print(f"  ok: {what}", flush=True)


def expect(condition, message):
    """Raises `CheckFailed(message)` unless `condition` holds."""
    if not condition:
        raise CheckFailed(message)


def run_checks(name, body):
    """Runs `body()`; prints what failed and returns the exit status (0 when every check held)."""
    try:
        body()
    except CheckFailed as failure:
        print(f"  FAILED ({name}): {failure}", flush=True)
        return 1
    except Exception:  # noqa: BLE001 - an unexpected error is a failure too, with its trace
        print(f"  FAILED ({name}): unexpected error:", flush=True)
        traceback.print_exc(file=sys.stdout)
        return 1
    return 0


class Inbox:
    """Events reported by client callbacks (from any thread), waited for by the checks."""

    def __init__(self):
        self._events = queue.Queue()
        self._seen = []

    def put(self, *event):
        """Records one event: a tuple whose first item names its kind."""
        self._events.put(tuple(event))

    def wait_for(self, what, matches, seconds=WAIT_SECONDS):
        """The first event (not yet taken) for which `matches(event)` is true.

        Events that do not match are kept for later waits. Raises `CheckFailed` naming `what`
        and listing every event seen when none matches within `seconds`.
        """
        for index, event in enumerate(self._seen):
            if matches(event):
                del self._seen[index]
                return event
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                seen = "; ".join(repr(event) for event in self._seen) or "nothing"
                raise CheckFailed(f"no {what} within {seconds:.0f} s (events seen: {seen})")
            try:
                event = self._events.get(timeout=left)
            except queue.Empty:
                continue
            if matches(event):
                return event
            self._seen.append(event)


class Api:
    """The broker's HTTP API (`aliot serve` with an `[api]` table)."""

    def __init__(self, base_url):
        self.base_url = base_url.rstrip("/")

    def post(self, path, body):
        """POSTs `body` as JSON; the decoded JSON answer. Any non-200 answer fails the check."""
        return self._call("POST", path, body)

    def get(self, path):
        """GETs `path`; the decoded JSON answer. Any non-200 answer fails the check."""
        return self._call("GET", path, None)

    def _call(self, method, path, body):
        data = None if body is None else json.dumps(body).encode()
        headers = {} if body is None else {"Content-Type": "application/json"}
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        sent = "" if body is None else f" {json.dumps(body)}"
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise CheckFailed(
                f"{method} {path}{sent} answered {error.code}: {error.read().decode(errors='replace')}"
            ) from None
        except urllib.error.URLError as error:
            raise CheckFailed(f"{method} {path}: cannot reach the API: {error.reason}") from None

    def in_background(self, call, *args, **kwargs):
        """Starts `call(*args, **kwargs)` (one of these methods) on a thread, for a call that
        waits for the device while the device must answer it.

        Returns a function that waits for the call and gives its answer, or raises what it raised.
        """
        outcome = {}

        def run():
            try:
                outcome["answer"] = call(*args, **kwargs)
            except BaseException as error:  # noqa: BLE001 - handed to the waiting thread
                outcome["error"] = error

        thread = threading.Thread(target=run, daemon=True)
        thread.start()

        def result():
            thread.join(timeout=40)
            if thread.is_alive():
                raise CheckFailed(f"{getattr(call, '__name__', call)} did not answer within 40 s")
            if "error" in outcome:
                raise outcome["error"]
            return outcome["answer"]

        return result

    def downlink_result(self, product_key, device_name, topic, message_id, seconds=WAIT_SECONDS):
        """`GET /ListDownlinkResults` until it lists the device's answer to the downlink on
        `topic` with `message_id` (the `MessageId` the API gave); that entry."""
        deadline = time.monotonic() + seconds
        while True:
            results = self.get("/ListDownlinkResults")["Data"]["List"]
            for result in results:
                if (result.get("productKey"), result.get("deviceName"), result.get("topic")) == (
                    product_key, device_name, topic
                ) and str(result.get("requestId")) == str(message_id):
                    return result
            if time.monotonic() >= deadline:
                raise CheckFailed(
                    f"GET /ListDownlinkResults has no result for {topic} id {message_id} "
                    f"after {seconds:.0f} s: {json.dumps(results)}"
                )
            time.sleep(0.1)

    def publish(self, product_key, topic, payload, qos=0):
        """`POST /pub`: a server-side publish; the answer (`Success`, `MessageId`, `Subscribers`)."""
        return self.post(
            "/pub",
            {
                "ProductKey": product_key,
                "TopicFullName": topic,
                "MessageContent": base64.b64encode(payload).decode(),
                "Qos": qos,
            },
        )

    def rrpc(self, product_key, device_name, request, timeout_ms, topic=None):
        """`POST /rrpc`: calls the device and waits; the answer (`RrpcCode`, `MessageId`, ...)."""
        body = {
            "ProductKey": product_key,
            "DeviceName": device_name,
            "RequestBase64Byte": base64.b64encode(request).decode(),
            "Timeout": timeout_ms,
        }
        if topic is not None:
            body["Topic"] = topic
        return self.post("/rrpc", body)

    def rrpc_in_background(self, *args, **kwargs):
        """Starts `rrpc(...)` on a thread (the device must answer while the call waits).

        Returns a function that waits for the call and gives its answer, or raises what it raised.
        """
        return self.in_background(self.rrpc, *args, **kwargs)


def check_rrpc_success(answer, expected_payload):
    """Checks a `/rrpc` answer is SUCCESS with `expected_payload`; returns its MessageId."""
    expect(
        answer.get("RrpcCode") == "SUCCESS",
        f"RRPC answered {json.dumps(answer)}, expected RrpcCode SUCCESS",
    )
    payload = base64.b64decode(answer.get("PayloadBase64Byte", ""))
    expect(
        payload == expected_payload,
        f"RRPC SUCCESS carried {payload!r}, expected {expected_payload!r}",
    )
    return answer.get("MessageId")
