"""Every contract literal lives in ``schemas/cloud_contract.py``.

The simulator and the bridge must read the guessed parts of the contract from one place, so a
real tenant's answer changes ONE module. This test parses simulator/, worker/ and producers/
(AST, not text) and fails on a contract literal anywhere else:

* an errorCode-looking string constant (``-100xx``, ``9999``, ``401``, ``403``, ``0000``);
* a string constant with CJK characters that contains a contract text of cloud_contract.py,
  or that is not one of our own bilingual messages ("English / 中文").

Not scanned: docstrings and other bare string statements, and ``help=`` texts of CLI options.
What is left and is clearly not the cloud's (sample bill content, our own Chinese-only HTTP API
messages) is in ``ALLOWED`` with the reason; contract literals found in worker/ and producers/
(which this branch may not edit) carry the marker ``MOVED_BY_BRIDGE_HELPER``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
SCANNED: Final = ("simulator", "worker", "producers")
CONTRACT: Final = ROOT / "schemas" / "cloud_contract.py"

_CJK: Final = re.compile(r"[\u3400-\u9fff]")
_CODE: Final = re.compile(r"-1\d{4}|9999|401|403|0000")
# Our own messages: "English / 中文" (or a piece of one), or an English sentence naming a term.
_BILINGUAL: Final = re.compile(r"\s/\s*\S*[\u3400-\u9fff]|^\s*/\s")
_ENGLISH: Final = re.compile(r"(?:\b[A-Za-z]{2,}\b\W+){3}")
_PLACEHOLDER: Final = re.compile(r"\{[^}]*\}")

# The worker/producers part of ALLOWED is empty: the bridge helper moved those literals into
# schemas/cloud_contract.py (config hints, ErrorCode, InterfaceCode).
MOVED_BY_BRIDGE_HELPER: Final = "worker/producers: moved by the bridge helper"
_SAMPLE: Final = "sample document content of the test helpers, not a cloud text"
_OUR_API: Final = (
    "our own HTTP API's Chinese message to ERP clients (English beside it), not the cloud's"
)
_OUR_ADMIN: Final = "our own bilingual message (simulator admin API) quoting a contract word"
_OUR_SCHEMA: Final = (
    "our own JSON Schema description of a field (the Chinese name of a Kingdee field)"
)
_OUR_LOG: Final = "our own audit note naming the 回退 action, not a cloud text"
_PROBE_BILL: Final = "content of fapiao probe's own test bill (says: probe test, do not issue)"

# (path relative to the repository, literal) → reason.
ALLOWED: Final[dict[tuple[str, str], str]] = {
    ("simulator/app.py", "businessSystemCode is required / businessSystemCode不能为空"): _OUR_ADMIN,
    ("simulator/app.py", " / 单据不存在"): _OUR_ADMIN,
    ("simulator/testing.py", "上海示例贸易有限公司"): _SAMPLE,
    ("simulator/testing.py", "上海模拟科技有限公司"): _SAMPLE,
    ("simulator/testing.py", "张三"): _SAMPLE,
    ("simulator/testing.py", "个"): _SAMPLE,
    ("simulator/testing.py", "测试商品"): _SAMPLE,
    ("worker/services/reconcile.py", "; 回退 not applied"): _OUR_LOG,
    ("producers/probe.py", "接口探测测试（勿开票）"): _PROBE_BILL,
    ("producers/probe.py", "接口探测"): _PROBE_BILL,
    ("producers/http.py", "单据校验未通过，共 "): _OUR_API,
    ("producers/http.py", " 处问题"): _OUR_API,
    ("producers/http.py", "单据编号已存在且内容不同"): _OUR_API,
    ("producers/http.py", "回调报文含有无效字符"): _OUR_API,
    ("producers/http.py", "请求参数错误"): _OUR_API,
    ("producers/http.py", "只有失败或被拒绝的单据可以重推"): _OUR_API,
    ("producers/http.py", "回调报文无法解析"): _OUR_API,
    ("producers/http.py", "当前状态不允许"): _OUR_API,
    ("producers/http.py", "撤回"): _OUR_API,
    ("producers/http.py", "重推"): _OUR_API,
    ("producers/http.py", "无法向发票云查询剩余可冲额度，未创建红字单据，请过几分钟再试"): _OUR_API,
    ("producers/json_schemas.py", "发票流水号"): _OUR_SCHEMA,
    ("producers/json_schemas.py", "发票代码 (empty for 数电)"): _OUR_SCHEMA,
    ("producers/json_schemas.py", "发票号码 (20 digits 数电, 8 税控)"): _OUR_SCHEMA,
    ("producers/json_schemas.py", "发票种类"): _OUR_SCHEMA,
    ("producers/json_schemas.py", "0 正常, 2 待开, 3 红冲, 6 作废"): _OUR_SCHEMA,
    ("producers/json_schemas.py", "合计金额 (excl. tax)"): _OUR_SCHEMA,
    ("producers/json_schemas.py", "合计税额"): _OUR_SCHEMA,
    ("producers/json_schemas.py", "0 蓝票 (blue), 1 红票 (red)"): _OUR_SCHEMA,
    ("producers/json_schemas.py", "可红冲税额 left to reverse"): _OUR_SCHEMA,
    ("producers/json_schemas.py", "价税合计"): _OUR_SCHEMA,
    ("producers/json_schemas.py", "版式文件 URL"): _OUR_SCHEMA,
    ("producers/json_schemas.py", "开票失败原因"): _OUR_SCHEMA,
    ("producers/json_schemas.py", "销方税号 (or orgCode)"): _OUR_SCHEMA,
    ("producers/testing.py", "杭州西溪文化传媒有限公司"): _SAMPLE,
    ("producers/testing.py", "杭州云帆智能科技有限公司"): _SAMPLE,
    ("producers/testing.py", "技术服务费"): _SAMPLE,
    ("producers/testing.py", "项"): _SAMPLE,
}


_DOC_KEYWORDS: Final = frozenset({"help", "description", "title", "examples", "example"})


def _text_of(node: ast.expr) -> str:
    """The literal text of a string or f-string expression (placeholders dropped)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_text_of(v) for v in node.values)
    return ""


def _docstring_ids(tree: ast.AST, *, contract: bool = False) -> set[int]:
    """ids of string constants that are not candidate contract literals.

    Statements (docstrings, bare strings); ``help=``/``description=``/``examples=`` texts; the
    Chinese half of a bilingual message given as two arguments of one call (``ApiError(409,
    "not_allowed", "English text", "中文")``, ``Issue(..., "English", "中文", ...)``).
    """
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            skipped.add(id(node.value))
        if contract:
            continue  # in the contract every other text counts
        if isinstance(node, ast.keyword) and node.arg in _DOC_KEYWORDS:
            skipped.update(id(n) for n in ast.walk(node.value))
        if isinstance(node, ast.Call):
            values = [*node.args, *(k.value for k in node.keywords)]
            if any(_ENGLISH.search(_text_of(v)) for v in values):
                for value in values:
                    if _CJK.search(_text_of(value)):
                        skipped.update(id(n) for n in ast.walk(value))
    return skipped


def _constants(path: Path, *, contract: bool = False) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text("utf-8"), str(path))
    skipped = _docstring_ids(tree, contract=contract)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in skipped
        ):
            yield node.lineno, node.value


def contract_fragments() -> frozenset[str]:
    """CJK runs of every text in cloud_contract.py (placeholders cut out), 4+ characters.

    Shorter runs are words (单据, 登录) that our own messages use too; a contract text is a
    phrase (价税合计金额不对, 单据已开票，不允许撤回, 未在发票云维护)."""
    fragments: set[str] = set()
    vocabulary = {"单据编号", "销方税号", "发票种类", "税收分类编码"}  # names, not sentences
    for _line, text in _constants(CONTRACT, contract=True):
        for part in _PLACEHOLDER.split(text):
            for run in re.findall(r"[\u3400-\u9fff\uff00-\uffef，。：]+", part):
                if len(_CJK.findall(run)) >= 4 and run not in vocabulary:
                    fragments.add(run)
    return frozenset(fragments)


def _contract_literal(text: str, fragments: frozenset[str]) -> str | None:
    """Why ``text`` is a contract literal, or None."""
    if _CODE.fullmatch(text.strip()):
        return "errorCode"
    if not _CJK.search(text):
        return None
    hit = next((f for f in sorted(fragments) if f in text), None)
    if hit is not None:
        return f"contains the contract text {hit!r}"
    if _BILINGUAL.search(text) or _ENGLISH.search(text):
        return None
    return "Chinese text that is not one of our bilingual messages"


def findings() -> list[tuple[str, int, str, str]]:
    fragments = contract_fragments()
    found: list[tuple[str, int, str, str]] = []
    for root in SCANNED:
        for path in sorted((ROOT / root).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for line, text in _constants(path):
                why = _contract_literal(text, fragments)
                if why is not None:
                    found.append((rel, line, text, why))
    return found


def test_no_contract_literal_outside_cloud_contract() -> None:
    unexpected = [f for f in findings() if (f[0], f[2]) not in ALLOWED]
    report = "\n".join(f"{path}:{line}: {text!r} ({why})" for path, line, text, why in unexpected)
    assert not unexpected, "contract literals outside schemas/cloud_contract.py:\n" + report


def test_allow_list_has_no_stale_entries() -> None:
    present = {(path, text) for path, _line, text, _why in findings()}
    stale = sorted(set(ALLOWED) - present)
    assert not stale, f"allow-listed literals that no longer occur: {stale}"


def test_the_scan_catches_what_it_is_for() -> None:
    fragments = contract_fragments()
    assert "价税合计金额不对" in fragments and "单据已开票，不允许撤回" in fragments
    assert _contract_literal("-10009", fragments) == "errorCode"
    assert _contract_literal("价税合计金额不对", fragments) is not None
    assert _contract_literal("refused / 发票云拒绝: 价税合计金额不对", fragments) is not None
    assert _contract_literal("找不到单据编号", fragments) is not None  # Chinese-only
    assert _contract_literal("no such tenant / 租户不存在", fragments) is None
    assert _contract_literal("the cloud handed the bill back (回退): ", fragments) is None
    assert _contract_literal("plain English", fragments) is None
