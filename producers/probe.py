"""``fapiao probe``: learn a sandbox tenant's contract dialect from harmless calls (docs/PROBE.md).

docs/CLOUD-CONTRACT.md ("Contract dialects") lists the guessed parts of the cloud's answers as
switches (``schemas.cloud_contract.DIALECT_SWITCHES``). The probe asks a tenant the questions
whose answers settle a switch WITHOUT ever issuing an invoice, and returns the
``[tenants.cloud]`` table to paste plus, per switch, the calls and answers it rests on.

| switch | call (U = a random unknown billNo, T = a test bill) | reading |
|---|---|---|
| ``unknown_bill`` | query U | 单据不存在 failure / ``[{U, []}]`` / no bill (a) |
| ``status_field`` | every HTTP 200 gateway answer | ``status`` beside ``success``? (b) |
| ``request_id`` | query U without ``requestId`` | refused naming it / answered (c) |
| ``expired_token`` | query U with a made-up access_token | HTTP 401 / -10002 / 401 (d) |
| ``withdraw_refusal`` | withdraw U; withdraw T once gone | refused item / envelope (b) |
| ``success_data`` | push T (autoInvoice 0); withdraw T | ``data`` text / array (b) |
| ``duplicate_bill`` | push T again | accepted / -10009 已存在 |
| ``unknown_fields`` | push T2 with one undocumented field | accepted / refused naming it |
| ``query_lines``, ``merge``, ``callback_data``, ``failed_in_query`` | none | unknown (e) |
| ``biz_control``, ``cancel_item``, ``partial_red`` (after issuance) | none | unknown (e) |

(a) ``error`` / ``empty_list`` / ``empty_data``. (b) every answer must agree, else unknown.
(c) ``required`` / ``optional``. (d) ``http_401`` / ``unauthorized_text`` / ``invented_401``,
assuming an invalid token is answered like an expired one. (e) only an issued (or failed)
invoice shows them, and the probe never issues.

Safety: test bills are minimal valid bills (``schemas.erp.validate_bill``) numbered
``PROBE-<yyyymmdd>-<random>-…`` for the tenant's first seller tax id, pushed with
``autoInvoice`` "0" (the cloud must not issue them) and withdrawn right after, again and again
until the cloud says the bill is not live. A bill the probe could not confirm gone is listed
in ``ProbeReport.left_live``; the CLI prints it loudly and exits 1. Every call goes through
the worker's Kingdee client, so each is a ``cloud_calls`` ledger row.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from schemas.cloud_contract import (
    DIALECT_SWITCHES,
    WITHDRAW_ALREADY_WITHDRAWN,
    WITHDRAW_BILL_UNKNOWN,
    ErrorCode,
    OutcomeClass,
    gateway_error,
    is_unknown_bill,
)
from schemas.data_codec import codec_for_tenant
from schemas.erp import validate_bill
from schemas.kingdee import (
    DataDecodeError,
    GatewayRequest,
    InterfaceCode,
    InvoiceQueryRequestData,
    decode_data,
)
from schemas.tenants import TenantConfig
from worker.kingdee import CallContext, CloudResult, KingdeeClient

__all__ = [
    "PROBE_PREFIX",
    "UNDOCUMENTED_FIELD",
    "Evidence",
    "Finding",
    "ProbeReport",
    "cloud_table",
    "probe_bill",
    "run_probe",
]

PROBE_PREFIX: Final = "PROBE"
# A header field no version of §6.1 documents; the unknown_fields probe adds it to a bill.
UNDOCUMENTED_FIELD: Final = "probeUndocumentedField"
# Withdraw calls per test bill before giving up (a duplicate accepted twice needs two).
MAX_WITHDRAW_CALLS: Final = 6
_DATA_SHOWN: Final = 80

_CANNOT: Final[Mapping[str, str]] = {
    "query_lines": (
        "needs a BILL.INVOICE.QUERY answer listing an ISSUED invoice; the probe never issues"
        " / 需要已开具的发票，探测从不开票"
    ),
    "merge": (
        "needs bills issued with autoMerge; the probe never issues / 需要实际开票，探测从不开票"
    ),
    "callback_data": (
        "needs an issuance callback; the probe never issues / 需要开票回调，探测从不开票"
    ),
    "failed_in_query": (
        "needs an issuance that failed; the probe never issues / 需要开票失败的单据，探测从不开票"
    ),
    "biz_control": (
        "needs an issuance callback; the probe never issues / 需要开票回调，探测从不开票"
    ),
    "cancel_item": (
        "needs a voided invoice; the probe never issues / 需要已作废的发票，探测从不开票"
    ),
    "partial_red": (
        "needs a partly reversed invoice; the probe never issues / 需要部分红冲的发票，探测从不开票"
    ),
}


@dataclass(frozen=True, slots=True)
class Evidence:
    """One call and what came back, as an operator would want to read it."""

    call: str
    answer: str

    def as_dict(self) -> dict[str, str]:
        return {"call": self.call, "answer": self.answer}


@dataclass(slots=True)
class Finding:
    """A switch's reading (None = unknown), why, and the calls it rests on."""

    switch: str
    value: str | None = None
    reason: str = ""
    evidence: list[Evidence] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "reason": self.reason,
            "calls": [e.as_dict() for e in self.evidence],
        }


@dataclass(slots=True)
class ProbeReport:
    """What ``run_probe`` found out (``findings`` in ``DIALECT_SWITCHES`` order)."""

    tenant: str
    seller_tax_id: str
    started_at: datetime
    findings: dict[str, Finding]
    test_bills: list[str] = field(default_factory=list)
    left_live: list[str] = field(default_factory=list)

    @property
    def known(self) -> dict[str, str]:
        return {k: f.value for k, f in self.findings.items() if f.value is not None}

    def as_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "sellerTaxId": self.seller_tax_id,
            "startedAt": self.started_at.isoformat(),
            "cloud": {name: self.findings[name].value for name in DIALECT_SWITCHES},
            "evidence": {name: self.findings[name].as_dict() for name in DIALECT_SWITCHES},
            "testBills": list(self.test_bills),
            "leftLive": list(self.left_live),
            "toml": cloud_table(self),
        }


def cloud_table(report: ProbeReport) -> str:
    """The ``[tenants.cloud]`` table to paste; unknown switches as comments saying why."""
    lines = [
        f"# fapiao probe of tenant {report.tenant!r}, {report.started_at:%Y-%m-%d %H:%M} UTC.",
        "# Paste at the END of this tenant's [[tenants]] block / 粘贴到该租户配置的末尾",
        "[tenants.cloud]",
    ]
    for name in DIALECT_SWITCHES:
        finding = report.findings[name]
        if finding.value is not None:
            lines.append(f'{name} = "{finding.value}"')
        else:
            lines.append(f"# {name}: unknown — {finding.reason}")
    return "\n".join(lines) + "\n"


def probe_bill(bill_no: str, seller_tax_id: str, today: datetime) -> dict[str, Any]:
    """A minimal valid bill (one line of 1.00 at 13 %), ``autoInvoice`` "0", as on the wire."""
    bill = validate_bill(
        {
            "billNo": bill_no,
            "billDate": today.date().isoformat(),
            "invoiceType": "10xdp",
            "includeTaxFlag": "0",
            "autoInvoice": "0",
            "totalAmount": Decimal("1.00"),
            "buyerName": "接口探测测试（勿开票）",
            "sellerTaxpayerId": seller_tax_id,
            "sellerName": "接口探测测试（勿开票）",
            "remark": "fapiao probe test bill, never issued / 接口探测测试单据，不开票",
            "billDetail": [
                {
                    "detailId": "1",
                    "lineProperty": 2,
                    "goodsName": "接口探测",
                    "revenueCode": "3040201990000000000",
                    "taxRate": "0.13",
                    "amount": Decimal("1.00"),
                    "taxAmount": Decimal("0.13"),
                }
            ],
        }
    )
    return bill.to_wire()


# --------------------------------------------------------------------------- reading answers


def _describe(result: CloudResult) -> str:
    """The answer as it came back (``data`` shortened), or what the transport saw."""
    response = result.received or result.response
    if response is None:
        status = f"HTTP {result.http_status}" if result.http_status is not None else "no answer"
        return f"{status} ({result.outcome.value}): {result.message}"
    shown: dict[str, Any] = {}
    for name in ("success", "status", "errorCode", "message", "returnCode"):
        if name in response.model_fields_set:
            shown[name] = getattr(response, name)
    data = response.data
    if isinstance(data, str) and len(data) > _DATA_SHOWN:
        shown["data"] = f"{data[:_DATA_SHOWN]}… ({len(data)} characters)"
    else:
        shown["data"] = data
    for name, value in (response.model_extra or {}).items():
        shown[name] = value
    return f"HTTP {result.http_status} " + json.dumps(shown, ensure_ascii=False, default=str)


def _decoded(result: CloudResult, tenant: TenantConfig) -> tuple[bool, Any]:
    """(readable, decoded ``data``) of a gateway answer; None data decodes to None."""
    response = result.response
    if response is None:
        return False, None
    data = response.data
    if data is None or (isinstance(data, str) and not data.strip()):
        return True, None
    try:
        return True, decode_data(data, codec_for_tenant(tenant))
    except DataDecodeError:
        return False, None


def _data_reading(result: CloudResult) -> str | None:
    """success_data: ``base64`` for a string ``data``, ``plain`` for an array/object."""
    received = result.received or result.response
    data = received.data if received is not None else None
    if isinstance(data, str) and data.strip():
        return "base64"
    if isinstance(data, list | dict):
        return "plain"
    return None


def _withdraw_items(result: CloudResult, tenant: TenantConfig) -> list[Mapping[str, Any]] | None:
    readable, payload = _decoded(result, tenant)
    if not readable:
        return None
    if isinstance(payload, dict):
        payload = [payload]
    if not isinstance(payload, list) or not all(isinstance(i, Mapping) for i in payload):
        return None
    return payload


def _gone_text(text: str) -> bool:
    return WITHDRAW_ALREADY_WITHDRAWN in text or WITHDRAW_BILL_UNKNOWN in text


def _refusal_reading(result: CloudResult, tenant: TenantConfig) -> str | None:
    """withdraw_refusal from the answer to a withdraw of a bill that is not live."""
    response = result.response
    if response is None:
        return None
    if response.ok:
        items = _withdraw_items(result, tenant)
        if items and all(item.get("success") is False for item in items):
            return "per_item"
        return None
    code = result.error_code
    if (
        is_unknown_bill(code, response.message)
        or code == ErrorCode.WITHDRAW_REFUSED
        or _gone_text(response.message)
    ):
        return "envelope"
    return None


# --------------------------------------------------------------------------- the probe


class _Probe:
    def __init__(
        self,
        client: KingdeeClient,
        send_envelope: Callable[[Mapping[str, Any], str], CloudResult],
        access_token: str,
        now: datetime,
    ) -> None:
        self.client = client
        self.send_envelope = send_envelope
        self.token = access_token
        self.tenant = client.tenant
        self.seller = self.tenant.seller_tax_ids[0]
        self.now = now
        self.run_id = f"{PROBE_PREFIX}-{now:%Y%m%d}-{secrets.token_hex(4).upper()}"
        self.context = CallContext()
        self.findings = {name: Finding(name) for name in DIALECT_SWITCHES}
        self.answers_200: list[Evidence] = []
        self.status_readings: set[str] = set()
        self.pushed: list[str] = []
        self.left_live: list[str] = []
        self.success_readings: dict[str, Evidence] = {}
        self.refusal_readings: dict[str, list[Evidence]] = {}

    # ------------------------------------------------------------- bookkeeping

    def note(self, call: str, result: CloudResult) -> Evidence:
        evidence = Evidence(call, _describe(result))
        received = result.received or result.response
        if received is not None and result.http_status == 200:
            reading = "present" if "status" in received.model_fields_set else "absent"
            self.status_readings.add(reading)
            self.answers_200.append(evidence)
        return evidence

    def settle(self, switch: str, value: str | None, reason: str, *evidence: Evidence) -> None:
        finding = self.findings[switch]
        finding.value = value
        finding.reason = reason
        finding.evidence.extend(evidence)

    # ------------------------------------------------------------- calls

    def query(self, bill_no: str, token: str) -> CloudResult:
        return self.client.query(bill_no, self.seller, access_token=token, context=self.context)

    def withdraw(self, bill_no: str) -> CloudResult:
        return self.client.withdraw(
            [bill_no], self.seller, access_token=self.token, context=self.context
        )

    def push(self, bill: Mapping[str, Any]) -> CloudResult:
        bill_no = str(bill["billNo"])
        if bill_no not in self.pushed:
            self.pushed.append(bill_no)
        return self.client.push(bill, access_token=self.token, context=self.context)

    # ------------------------------------------------------------- switches

    def unknown_bill(self) -> None:
        bill_no = f"{self.run_id}-UQ"
        result = self.query(bill_no, self.token)
        evidence = self.note(f"BILL.INVOICE.QUERY of unknown billNo {bill_no}", result)
        response = result.response
        if response is None:
            self.settle("unknown_bill", None, "the query got no gateway answer", evidence)
            return
        if not response.ok:
            if is_unknown_bill(result.error_code, response.message):
                self.settle(
                    "unknown_bill", "error", f"a failure saying {WITHDRAW_BILL_UNKNOWN}", evidence
                )
            else:
                self.settle(
                    "unknown_bill", None, "the query was refused for another reason", evidence
                )
            return
        readable, payload = _decoded(result, self.tenant)
        items = payload if isinstance(payload, list) else [payload] if payload else []
        if not readable:
            self.settle("unknown_bill", None, "the answer's data could not be read", evidence)
        elif not items:
            self.settle("unknown_bill", "empty_data", "success with no bill in data", evidence)
        elif (
            len(items) == 1
            and isinstance(items[0], Mapping)
            and not items[0].get("invoiceList")
            and str(items[0].get("billNo", bill_no)) == bill_no
        ):
            self.settle(
                "unknown_bill",
                "empty_list",
                "success: the bill with an empty invoiceList",
                evidence,
            )
        else:
            self.settle("unknown_bill", None, "success with unexpected data", evidence)

    def request_id(self) -> None:
        bill_no = f"{self.run_id}-UR"
        payload = InvoiceQueryRequestData(sellerTaxpayerId=self.seller, serialNo=bill_no)
        wire = GatewayRequest.build(
            self.tenant.business_system_code,
            InterfaceCode.BILL_INVOICE_QUERY,
            payload.to_wire(),
            codec=codec_for_tenant(self.tenant),
        ).to_wire()
        del wire["requestId"]
        result = self.send_envelope(wire, self.token)
        evidence = self.note(
            f"BILL.INVOICE.QUERY of unknown billNo {bill_no} WITHOUT requestId", result
        )
        response = result.response
        if response is None:
            self.settle("request_id", None, "the query got no gateway answer", evidence)
        elif not response.ok and "requestId" in response.message:
            self.settle("request_id", "required", "refused, naming requestId", evidence)
        elif response.ok or is_unknown_bill(result.error_code, response.message):
            self.settle("request_id", "optional", "answered like a query with requestId", evidence)
        else:
            self.settle("request_id", None, "refused for a reason not naming requestId", evidence)

    def expired_token(self) -> None:
        bill_no = f"{self.run_id}-UT"
        invalid = f"{PROBE_PREFIX}-invalid-{secrets.token_hex(16)}"
        result = self.query(bill_no, invalid)
        evidence = self.note(f"BILL.INVOICE.QUERY of {bill_no} with a made-up access_token", result)
        response = result.response
        why = "an invalid token is assumed to be answered like an expired one"
        if result.http_status == 401:
            self.settle("expired_token", "http_401", f"HTTP 401 ({why})", evidence)
        elif response is not None and not response.ok:
            code = result.error_code
            unauthorised = gateway_error(ErrorCode.NOT_AUTHORISED)
            if code == unauthorised.code or unauthorised.message_template in response.message:
                self.settle(
                    "expired_token",
                    "unauthorized_text",
                    f"{unauthorised.code} {unauthorised.message_template} ({why})",
                    evidence,
                )
            elif code == ErrorCode.TOKEN_EXPIRED:
                self.settle("expired_token", "invented_401", f"errorCode 401 ({why})", evidence)
            else:
                self.settle("expired_token", None, "an auth answer of another shape", evidence)
        else:
            self.settle("expired_token", None, "no refusal of the made-up token", evidence)

    def withdraw_unknown(self) -> None:
        bill_no = f"{self.run_id}-UW"
        result = self.withdraw(bill_no)
        evidence = self.note(f"BILL.WITHDRAW of unknown billNo {bill_no}", result)
        reading = _refusal_reading(result, self.tenant)
        self.refusal_readings.setdefault(reading or "?", []).append(evidence)

    def pushes(self) -> None:
        first = probe_bill(f"{self.run_id}-B1", self.seller, self.now)
        result = self.push(first)
        evidence = self.note(f"BILL.PUSH of test bill {first['billNo']} (autoInvoice 0)", result)
        if result.outcome is not OutcomeClass.ACCEPTED:
            why = f"the test bill was not accepted ({result.outcome.value})"
            self.settle("success_data", None, why, evidence)
            self.settle("duplicate_bill", None, why, evidence)
        else:
            reading = _data_reading(result)
            if reading is not None:
                self.success_readings["push"] = evidence
                self.findings["success_data"].value = reading
            else:
                self.findings["success_data"].reason = "the push success carried no data"
            self.findings["success_data"].evidence.append(evidence)
            again = self.push(first)
            evidence2 = self.note(f"BILL.PUSH of the same test bill {first['billNo']}", again)
            if again.outcome is OutcomeClass.ACCEPTED:
                self.settle("duplicate_bill", "accepted", "the second push was accepted", evidence2)
            elif again.outcome is OutcomeClass.DUPLICATE:
                self.settle("duplicate_bill", "refused", "refused as already there", evidence2)
            else:
                self.settle("duplicate_bill", None, "the second push got another answer", evidence2)

        extra = {**probe_bill(f"{self.run_id}-B2", self.seller, self.now), UNDOCUMENTED_FIELD: "1"}
        result = self.push(extra)
        evidence = self.note(
            f"BILL.PUSH of test bill {extra['billNo']} with undocumented field"
            f" {UNDOCUMENTED_FIELD}",
            result,
        )
        response = result.response
        if result.outcome is OutcomeClass.ACCEPTED:
            self.settle("unknown_fields", "ignored", "accepted despite the field", evidence)
        elif response is not None and UNDOCUMENTED_FIELD in response.message:
            self.settle("unknown_fields", "refused", "refused, naming the field", evidence)
        else:
            self.settle(
                "unknown_fields", None, "refused without naming the field, or no answer", evidence
            )

    def clean_up(self) -> None:
        """Withdraw every pushed test bill until the cloud says it is not live."""
        for bill_no in self.pushed:
            gone = False
            for attempt in range(1, MAX_WITHDRAW_CALLS + 1):
                result = self.withdraw(bill_no)
                evidence = self.note(
                    f"BILL.WITHDRAW of test bill {bill_no} (call {attempt})", result
                )
                response = result.response
                if response is None:
                    continue  # not answered: ask again
                items = _withdraw_items(result, self.tenant) if response.ok else None
                if response.ok and not items:
                    continue  # success without readable items: the next answer will tell
                if response.ok and items and all(i.get("success") is True for i in items):
                    reading = _data_reading(result)
                    if reading is not None and "withdraw" not in self.success_readings:
                        self.success_readings["withdraw"] = evidence
                        self._merge_success(reading, evidence)
                    continue  # withdrawn; a duplicate copy may still be live
                texts = [str(i.get("message", "")) for i in items or []] + [response.message]
                if any(_gone_text(t) for t in texts):
                    gone = True
                    reading = _refusal_reading(result, self.tenant)
                    self.refusal_readings.setdefault(reading or "?", []).append(evidence)
                    break
                if result.outcome in (OutcomeClass.TRANSIENT, OutcomeClass.UNKNOWN_OUTCOME):
                    continue
                break  # refused for another reason (开票中 / 已开票): cannot take it back
            if not gone:
                self.left_live.append(bill_no)

    def _merge_success(self, reading: str, evidence: Evidence) -> None:
        finding = self.findings["success_data"]
        finding.evidence.append(evidence)
        if "push" not in self.success_readings:
            finding.value, finding.reason = reading, "data of the withdraw success"
        elif finding.value != reading:
            finding.value = None
            finding.reason = "the push and the withdraw answers disagree"

    def conclude(self) -> None:
        finding = self.findings["success_data"]
        if finding.value is not None and not finding.reason:
            finding.reason = "data of the push success" + (
                " and of the withdraw success" if "withdraw" in self.success_readings else ""
            )
        elif finding.value is None and not finding.reason:
            finding.reason = "no success answer carrying data"

        readings = {k: v for k, v in self.refusal_readings.items()}
        all_evidence = [e for v in readings.values() for e in v]
        known = [k for k in readings if k != "?"]
        if len(known) == 1 and "?" not in readings:
            self.settle(
                "withdraw_refusal",
                known[0],
                "withdraws of bills that are not live"
                + (" (a failure envelope)" if known[0] == "envelope" else " (item refused)"),
                *all_evidence,
            )
        else:
            why = "the answers disagree" if len(known) > 1 else "no recognisable refusal"
            self.settle("withdraw_refusal", None, why, *all_evidence)

        if len(self.status_readings) == 1:
            (value,) = self.status_readings
            self.settle(
                "status_field",
                value,
                f"{len(self.answers_200)} HTTP 200 answers, `status` {value}",
                *self.answers_200[:2],
            )
        else:
            why = "answers disagree" if self.status_readings else "no HTTP 200 gateway answer"
            self.settle("status_field", None, why, *self.answers_200[:2])

        for name, why in _CANNOT.items():
            if name in self.findings:
                self.settle(name, None, why)


def run_probe(
    client: KingdeeClient,
    send_envelope: Callable[[Mapping[str, Any], str], CloudResult],
    access_token: str,
    *,
    now: datetime | None = None,
) -> ProbeReport:
    """Run every probe of the module table against ``client``'s tenant; never issues.

    ``send_envelope(envelope, access_token)`` posts a hand-made envelope (the client's
    ``send_envelope``). Test bills are withdrawn even when a probe step raises.
    """
    started = now or datetime.now(UTC)
    probe = _Probe(client, send_envelope, access_token, started)
    try:
        probe.unknown_bill()
        probe.request_id()
        probe.expired_token()
        probe.withdraw_unknown()
        probe.pushes()
    finally:
        probe.clean_up()
    probe.conclude()
    return ProbeReport(
        tenant=probe.tenant.name,
        seller_tax_id=probe.seller,
        started_at=started,
        findings=probe.findings,
        test_bills=list(probe.pushed),
        left_live=list(probe.left_live),
    )
