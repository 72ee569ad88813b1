"""Signing of the ERP webhook: the X-Fapiao scheme and Standard Webhooks, side by side."""

from __future__ import annotations

import base64
import hashlib
import hmac

from worker.services.notify import (
    sign,
    sign_standard,
    signed_headers,
    standard_webhooks_key,
    standard_webhooks_secret,
)

BODY = '{"billNo":"SO-1","buyerName":"杭州西溪","event":"document.invoiced"}'.encode()


def test_the_published_standard_webhooks_vector_is_reproduced() -> None:
    # The example of the Standard Webhooks specification and its reference libraries.
    signature = sign_standard(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "1614265330",
        b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_plain_secret_keys_the_standard_signature_with_its_utf8_bytes() -> None:
    secret = "erp-hook-密钥-5e3c7a9d"
    expected = base64.b64encode(
        hmac.new(secret.encode("utf-8"), b"42.1700000000." + BODY, hashlib.sha256).digest()
    ).decode()

    assert sign_standard(secret, "42", "1700000000", BODY) == "v1," + expected
    # What the receiver configures in a Standard Webhooks library gives the same signature.
    receiver_secret = standard_webhooks_secret(secret)
    assert receiver_secret.startswith("whsec_")
    assert base64.b64decode(receiver_secret.removeprefix("whsec_")) == secret.encode("utf-8")
    assert sign_standard(receiver_secret, "42", "1700000000", BODY) == "v1," + expected


def test_signed_text_binds_id_timestamp_and_body() -> None:
    secret = "erp-hook-5e3c7a9d1b2f"
    base = sign_standard(secret, "42", "1700000000", BODY)

    assert sign_standard(secret, "43", "1700000000", BODY) != base
    assert sign_standard(secret, "42", "1700000001", BODY) != base
    assert sign_standard(secret, "42", "1700000000", BODY + b" ") != base


def test_a_whsec_secret_that_is_not_base64_is_used_as_text() -> None:
    assert standard_webhooks_key("whsec_not*base64!") == b"whsec_not*base64!"
    assert standard_webhooks_key("whsec_AAECAw==") == bytes([0, 1, 2, 3])


def test_every_delivery_carries_both_header_sets() -> None:
    secret = "erp-hook-5e3c7a9d1b2f"
    headers = signed_headers(
        event="document.invoiced", delivery_id="42", timestamp="1700000000", body=BODY,
        secret=secret,
    )  # fmt: skip
    legacy = hmac.new(secret.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()

    assert headers["X-Fapiao-Signature"] == "sha256=" + legacy == sign(secret, "1700000000", BODY)
    assert headers["X-Fapiao-Delivery"] == headers["webhook-id"] == "42"
    assert headers["X-Fapiao-Timestamp"] == headers["webhook-timestamp"] == "1700000000"
    assert headers["X-Fapiao-Event"] == "document.invoiced"
    assert headers["webhook-signature"] == sign_standard(secret, "42", "1700000000", BODY)


def test_no_secret_no_signatures() -> None:
    headers = signed_headers(
        event="document.pushed", delivery_id="7", timestamp="1700000000", body=BODY, secret=None
    )
    assert "X-Fapiao-Signature" not in headers and "webhook-signature" not in headers
    assert headers["webhook-id"] == "7"
