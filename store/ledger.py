"""The cloud-call ledger: one `cloud_calls` row per call to Kingdee, secrets masked.

`mask_secrets(text)` hides, case-insensitively:

| shape                            | example in               | example out              |
|----------------------------------|--------------------------|--------------------------|
| JSON member, secret-ish key      | `"appSecret": "s3cr3t"`  | `"appSecret": "***"`     |
| `key=value` (query, form, logs)  | `?access_token=abc&x=1`  | `?access_token=***&x=1`  |
| `key: value` (headers, logs)     | `access_token: abc`      | `access_token: ***`      |
| bearer credentials               | `Bearer abc.def`         | `Bearer ***`             |
| the callback path secret         | `/callbacks/kingdee/abc` | `/callbacks/kingdee/***` |

Secret-ish keys: access_token, accessToken, app_token, apptoken, appSecret, appSecuret,
app_secret, secret, client_secret, password, passwd, aesKey, api_key / apiKey, token,
authorization, callback_secret. `CloudCall.message` and `CloudCall.error_code` are masked
on assignment as well, so a row can never be written unmasked through the ORM.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING

from store.columns import utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from store.models import CloudCall

__all__ = ["MASK", "MESSAGE_LIMIT", "mask_secrets", "record_cloud_call"]

MASK = "***"
MESSAGE_LIMIT = 2000

_KEYS = (
    r"access[_-]?token|app[_-]?token|app[_-]?secu?ret|client[_-]?secret|callback[_-]?secret"
    r"|secret|password|passwd|aes[_-]?key|api[_-]?key|authorization|token"
)
# "key": "value"  (JSON; the value is a string)
_JSON_MEMBER = re.compile(rf'(?i)("(?:[\w-]*?)(?:{_KEYS})"\s*:\s*")((?:[^"\\]|\\.)*)(")')
# key=value  /  key: value  (query strings, forms, headers, log lines)
_ASSIGNMENT = re.compile(
    rf"(?i)(\b[\w-]*?(?:{_KEYS})\b\s*[=:]\s*)(?!\*\*\*)"
    rf"((?:(?:bearer|basic|token)\s+)?[^\s&,;\"'}}]+)"
)
_BEARER = re.compile(r"(?i)(\bbearer\s+)([^\s\"',;]+)")
_CALLBACK_PATH = re.compile(r"(/callbacks/kingdee/)([^/\s?\"'#]+)")


def mask_secrets(text: str) -> str:
    """`text` with tokens, secrets and passwords replaced by `***` (module docstring)."""
    text = _JSON_MEMBER.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)
    text = _ASSIGNMENT.sub(lambda m: f"{m.group(1)}{MASK}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{MASK}", text)
    return _CALLBACK_PATH.sub(lambda m: f"{m.group(1)}{MASK}", text)


def record_cloud_call(
    session: Session,
    *,
    tenant: str,
    interface: str,
    outcome: str,
    document_id: int | None = None,
    request_id: str | None = None,
    attempt: int | None = None,
    http_status: int | None = None,
    error_code: str | None = None,
    message: str | None = None,
    latency_ms: int | None = None,
    now: datetime | None = None,
) -> CloudCall:
    """Add one ledger row to `session` (not committed: the caller's unit of work decides).

    `message` is masked and cut to `MESSAGE_LIMIT` characters.
    """
    from store.models import CloudCall

    if message is not None:
        message = mask_secrets(message)[:MESSAGE_LIMIT]
    row = CloudCall(
        tenant=tenant,
        interface=interface,
        outcome=outcome,
        document_id=document_id,
        request_id=request_id,
        attempt=attempt,
        http_status=http_status,
        error_code=error_code,
        message=message,
        latency_ms=latency_ms,
        created_at=now or utcnow(),
    )
    session.add(row)
    return row
