"""Verify fapiao-bridge's webhook (the notification POSTed to the tenant's erp_webhook_url).

Python 3.9+, standard library only. Every delivery carries two header sets signed with
``erp_webhook_secret``:

Standard Webhooks (https://www.standardwebhooks.com), checked first:
    webhook-id         the delivery id (same on every retry: deduplicate on it)
    webhook-timestamp  unix seconds
    webhook-signature  "v1," + base64(HMAC-SHA256(key, id + "." + timestamp + "." + body))
    key = the UTF-8 bytes of erp_webhook_secret, or, for a secret "whsec_<base64>", the
    decoded bytes (the ``standardwebhooks`` package works too: give it
    "whsec_" + base64(secret bytes)).
Legacy (kept until a later major version):
    X-Fapiao-Delivery, X-Fapiao-Timestamp,
    X-Fapiao-Signature "sha256=" + hex(HMAC-SHA256(UTF-8 secret, timestamp + "." + body))

Always verify the raw body bytes, before parsing them.

    FAPIAO_WEBHOOK_SECRET=... python webhook_receiver.py 8088

runs a receiver on 127.0.0.1:8088 that answers 204 to a valid notification (the bridge marks
it delivered) and 401 to anything else (the bridge retries, then parks it).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_SECONDS = 5 * 60  # refuse older or future timestamps: no replay of a captured request


def standard_key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_") :], validate=True)
        except binascii.Error:
            pass  # not the standard form after all: the text itself is the key
    return secret.encode("utf-8")


def _fresh(timestamp: str | None, now: float) -> bool:
    try:
        return timestamp is not None and abs(now - int(timestamp)) <= TOLERANCE_SECONDS
    except ValueError:
        return False


def verify(
    secret: str,
    webhook_id: str | None,
    timestamp: str | None,
    signatures: str | None,
    body: bytes,
    now: float | None = None,
) -> bool:
    """Standard Webhooks: True when one of the header's ``v1,<sig>`` entries matches."""
    if webhook_id is None or signatures is None or not _fresh(timestamp, now or time.time()):
        return False
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    expected = hmac.new(standard_key(secret), signed, hashlib.sha256).digest()
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        if version != "v1":
            continue
        try:
            presented = base64.b64decode(value, validate=True)
        except binascii.Error:
            continue
        if hmac.compare_digest(expected, presented):
            return True
    return False


def verify_legacy(
    secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float | None = None
) -> bool:
    """The legacy ``X-Fapiao-Signature``."""
    if signature is None or not _fresh(timestamp, now or time.time()):
        return False
    signed = f"{timestamp}.".encode() + body
    expected = "sha256=" + hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.encode())


def make_handler(secret: str) -> type[BaseHTTPRequestHandler]:
    seen: set[str] = set()  # use a database table in production

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = self.headers  # case-insensitive
            if headers.get("webhook-signature") is not None:
                delivery = headers.get("webhook-id")
                valid = verify(
                    secret,
                    delivery,
                    headers.get("webhook-timestamp"),
                    headers.get("webhook-signature"),
                    body,
                )
            else:  # a bridge older than the Standard Webhooks headers
                delivery = headers.get("X-Fapiao-Delivery")
                valid = verify_legacy(
                    secret,
                    headers.get("X-Fapiao-Timestamp"),
                    headers.get("X-Fapiao-Signature"),
                    body,
                )
            if not valid or delivery is None:
                print("refused: bad or missing signature", flush=True)
                self.send_response(401)
            elif delivery in seen:
                print(f"duplicate {delivery} (already processed)", flush=True)
                self.send_response(204)
            else:
                seen.add(delivery)
                # json.loads(body) here; amounts are strings (parse them with decimal.Decimal).
                print(f"accepted {delivery} {body.decode('utf-8')}", flush=True)
                self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    return Receiver


def main(argv: list[str]) -> int:
    secret = os.environ.get("FAPIAO_WEBHOOK_SECRET", "")
    if len(argv) != 2 or not secret:
        print("usage: FAPIAO_WEBHOOK_SECRET=... python webhook_receiver.py <port>")
        return 64
    server = ThreadingHTTPServer(("127.0.0.1", int(argv[1])), make_handler(secret))
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
