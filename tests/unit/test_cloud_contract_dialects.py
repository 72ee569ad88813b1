"""The dialect registry (schemas.cloud_contract): switch names, values, parsing, errors."""

from __future__ import annotations

import dataclasses

import pytest

from schemas.cloud_contract import (
    DIALECT_SWITCHES,
    Dialect,
    DialectError,
    ErrorCode,
    expired_token_answer,
    gateway_error,
)

REQUIRED = {
    "unknown_bill": ("error", "empty_list", "empty_data"),
    "withdraw_refusal": ("per_item", "envelope"),
    "expired_token": ("invented_401", "unauthorized_text", "http_401"),
    "success_data": ("plain", "base64"),
    "status_field": ("absent", "present"),
    "query_lines": ("goods", "invoiceDetail"),
    "duplicate_bill": ("refused", "accepted"),
    "unknown_fields": ("refused", "ignored"),
    "request_id": ("required", "optional"),
    "merge": ("never", "when_asked"),
    "biz_control": ("per_bill", "every_open", "when_warning"),
    "cancel_item": ("own_fields", "original_only"),
    "partial_red": ("keeps_0", "status_2"),
}


def test_switches_are_spelled_as_agreed_and_the_first_value_is_the_default() -> None:
    for name, values in REQUIRED.items():
        assert DIALECT_SWITCHES[name] == values
    assert Dialect.default().as_dict() == {n: v[0] for n, v in DIALECT_SWITCHES.items()}
    assert Dialect() == Dialect.default()
    assert [f.name for f in dataclasses.fields(Dialect)] == list(DIALECT_SWITCHES)


def test_parse_replace_and_differences() -> None:
    dialect = Dialect.parse(["merge=when_asked", " unknown_bill = empty_data "])
    assert (dialect.merge, dialect.unknown_bill) == ("when_asked", "empty_data")
    assert dialect.differences() == {"merge": "when_asked", "unknown_bill": "empty_data"}
    again = dialect.replace({"merge": "never"})
    assert again.merge == "never" and dialect.merge == "when_asked"  # frozen copies
    with pytest.raises(dataclasses.FrozenInstanceError):
        dialect.merge = "never"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (
            ["merge=maybe"],
            "unknown value 'maybe' for dialect switch 'merge'; choices: never, when_asked",
        ),
        (["merg=never"], "unknown dialect switch 'merg'; switches: unknown_bill, withdraw_refusal"),
        (["merge"], "'merge' is not NAME=VALUE"),
    ],
)
def test_errors_name_the_switch_or_value_and_list_the_choices(
    specs: list[str], message: str
) -> None:
    with pytest.raises(DialectError) as caught:
        Dialect.parse(specs)
    assert message in str(caught.value)
    with pytest.raises(DialectError):
        Dialect(merge="maybe")


def test_expired_token_answers() -> None:
    assert expired_token_answer("invented_401") == (
        200,
        {
            "success": False,
            "errorCode": "401",
            "message": "access_token已过期或无效，请重新获取",
            "data": None,
        },
    )
    status, body = expired_token_answer("unauthorized_text")
    assert (status, body["errorCode"], body["message"]) == (200, "-10002", "未进行接口授权")
    assert expired_token_answer("http_401")[0] == 401


def test_every_named_error_code_is_in_the_table() -> None:
    for code in ErrorCode:
        assert gateway_error(code).code == code.value
