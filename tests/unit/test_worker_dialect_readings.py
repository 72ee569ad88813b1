"""Readings of the contract the worker decides on without the network."""

from __future__ import annotations

import pytest

from schemas.cloud_contract import (
    WITHDRAW_ALREADY_ISSUED,
    WITHDRAW_ALREADY_WITHDRAWN,
    WITHDRAW_BILL_UNKNOWN,
    WITHDRAW_ISSUING,
    ErrorCode,
    OutcomeClass,
    expired_token_answer,
    is_auth_failure,
)
from schemas.kingdee import GatewayResponse, push_accepted
from worker.services.withdraw import withdraw_text_verdict


@pytest.mark.parametrize(
    ("code", "text", "verdict"),
    [
        (ErrorCode.WITHDRAW_REFUSED.value, WITHDRAW_ALREADY_ISSUED, "refused"),
        (ErrorCode.WITHDRAW_REFUSED.value, WITHDRAW_ISSUING, "refused"),
        (ErrorCode.WITHDRAW_REFUSED.value, WITHDRAW_ALREADY_WITHDRAWN, "done"),
        (ErrorCode.BILL_UNKNOWN.value, WITHDRAW_BILL_UNKNOWN, "gone"),
        ("-99999", "单据审核中，不允许撤回", "refused"),  # an unknown code, a refusal text
        (ErrorCode.WITHDRAW_REFUSED.value, "", "refused"),
        (ErrorCode.SYSTEM_ERROR.value, "系统异常", None),
        (None, "", None),
    ],
)
def test_withdraw_texts_mean_the_same_at_envelope_and_item_level(
    code: str | None, text: str, verdict: str | None
) -> None:
    assert withdraw_text_verdict(code, text) == verdict


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        ({"success": True, "status": True, "errorCode": "0", "message": "x"}, True),
        ({"status": True, "errorCode": "0", "message": "x"}, True),  # success missing
        ({"status": False, "errorCode": "9999", "message": "系统异常"}, False),
        ({"success": False, "status": True, "errorCode": "1", "message": "x"}, False),
    ],
)
def test_status_is_tolerated_and_decides_when_success_is_missing(
    body: dict[str, object], ok: bool
) -> None:
    response = GatewayResponse.model_validate(body)
    assert response.ok is ok
    assert push_accepted(response) is ok


@pytest.mark.parametrize("reading", ["invented_401", "unauthorized_text", "http_401"])
def test_every_expired_token_reading_is_an_auth_failure(reading: str) -> None:
    status, body = expired_token_answer(reading)
    response = GatewayResponse.model_validate(body)
    assert is_auth_failure(status, response.error_code, response.message)
    assert response.outcome is OutcomeClass.AUTH_EXPIRED
