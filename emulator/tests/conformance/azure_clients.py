"""Microsoft's own clients against the emulator: the conformance suite's client side.

Reads one JSON request on stdin, prints one JSON answer on stdout. Run by
emulator/tests/conformance.rs with the conformance venv's Python (azure-iot-device and
azure-eventhub installed by `cargo xtask setup`).

Requests:
  {"op": "send", "connection_string": ... (or "hostname", "device_id", "key"), "ca_file": ..., "messages": [
      {"body": "...", "id": "...", "properties": {...}, "content_type": "..."}]}
      -> {"sent": N} or {"error": ExceptionType, "message": ..., "cause": innermost cause's type, ...}
  {"op": "connect", "connection_string": ..., "ca_file": ...}
      -> {"connected": true} or {"error": ExceptionType, "message": ...}
  Both device ops also take "x509": {"cert_file": ..., "key_file": ...} with "hostname" and
  "device_id" (X.509 authentication instead of a key), and "websockets": true (MQTT over
  WebSockets on port 443 instead of MQTT on 8883).
  {"op": "event-hubs", "url": ..., "audience": ..., "policy": ..., "key": ..., "batch": [...]}
      -> {"status": HTTP status, "token_prefix": "SharedAccessSignature sr=..."}
"""

import json
import sys
import urllib.error
import urllib.request


def device_client(req):
    from azure.iot.device import IoTHubDeviceClient

    with open(req["ca_file"], encoding="ascii") as f:
        ca = f.read()
    # No automatic reconnection: a refusal must surface here, not be retried for ever.
    options = {
        "server_verification_cert": ca,
        "connection_retry": False,
        "keep_alive": req.get("keep_alive", 60),
        "websockets": bool(req.get("websockets", False)),
    }
    if "x509" in req:
        from azure.iot.device import X509

        return IoTHubDeviceClient.create_from_x509_certificate(
            x509=X509(cert_file=req["x509"]["cert_file"], key_file=req["x509"]["key_file"]),
            hostname=req["hostname"],
            device_id=req["device_id"],
            **options,
        )
    if "device_id" in req:
        # Ids with `;` cannot be written in a connection string (the SDK splits on it).
        return IoTHubDeviceClient.create_from_symmetric_key(
            symmetric_key=req["key"],
            hostname=req["hostname"],
            device_id=req["device_id"],
            **options,
        )
    return IoTHubDeviceClient.create_from_connection_string(req["connection_string"], **options)


def send(req):
    from azure.iot.device import Message

    client = device_client(req)
    try:
        client.connect()
        for m in req["messages"]:
            msg = Message(m["body"])
            msg.message_id = m["id"]
            if m.get("content_type"):
                msg.content_type = m["content_type"]
            for k, v in m.get("properties", {}).items():
                msg.custom_properties[k] = v
            client.send_message(msg)
        return {"sent": len(req["messages"])}
    finally:
        client.shutdown()


def connect(req):
    client = device_client(req)
    try:
        client.connect()
        return {"connected": True}
    finally:
        client.shutdown()


def event_hubs(req):
    from azure.eventhub._client_base import _generate_sas_token

    token = _generate_sas_token(req["audience"], req["policy"], req["key"]).token
    if isinstance(token, bytes):
        token = token.decode()
    body = json.dumps(req["batch"]).encode()
    request = urllib.request.Request(
        req["url"],
        data=body,
        method="POST",
        headers={
            "Authorization": token,
            "Content-Type": "application/vnd.microsoft.servicebus.json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            status = resp.status
    except urllib.error.HTTPError as e:
        status = e.code
    return {"status": status, "token_prefix": token.split("&", 1)[0]}


def main():
    req = json.load(sys.stdin)
    ops = {"send": send, "connect": connect, "event-hubs": event_hubs}
    try:
        out = ops[req["op"]](req)
    except Exception as e:  # noqa: BLE001 - the test asserts on the type name
        out = {"error": type(e).__name__, "message": str(e)}
        # The SDK wraps the real cause (e.g. ClientError around paho's ValueError).
        cause = e.__cause__
        while cause is not None:
            out["cause"] = type(cause).__name__
            out["cause_message"] = str(cause)
            cause = cause.__cause__
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
