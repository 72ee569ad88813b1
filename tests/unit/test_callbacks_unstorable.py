"""``unstorable_text``: the joined fast check refuses exactly what the text-by-text walk did.

| case | expected |
|---|---|
| clean texts (keys, values, nested extras, lines) | None |
| a NUL / a lone surrogate anywhere (key or value) | the reason of the first bad text |
| both kinds in one callback | whichever comes first, as before |
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from producers.callbacks import unstorable_text
from schemas.kingdee import BizControl, InvoiceItem, ParsedCallback


def _texts_in_order(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        out: list[str] = []
        for key, item in value.items():
            out.append(str(key))
            out.extend(_texts_in_order(item))
        return out
    if isinstance(value, list | tuple):
        return [text for item in value for text in _texts_in_order(item)]
    return []


def reference(parsed: ParsedCallback) -> str | None:
    """The walk ``unstorable_text`` did before the joined check (kept as the oracle)."""
    for text in _texts_in_order(parsed.model_dump(mode="python")):
        if "\x00" in text:
            return "a text value contains a NUL character"
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "a text value is invalid Unicode (a lone surrogate)"
    return None


def callback(**extra: Any) -> ParsedCallback:
    item = InvoiceItem.model_validate({"billNo": "B-1", "invoiceNum": "1", **extra})
    return ParsedCallback(
        interfaceCode="INVOICE.OPEN",
        returnCode="0",
        returnMsg="success",
        style="per_bill",
        items=[item],
        bizControl=BizControl(bizType="0"),
    )


def test_clean_and_refused_examples() -> None:
    assert unstorable_text(callback(remark="备注", extra={"k": ["v", {"n": 1}]})) is None
    nul = "a text value contains a NUL character"
    surrogate = "a text value is invalid Unicode (a lone surrogate)"
    assert unstorable_text(callback(remark="a\x00b")) == nul
    assert unstorable_text(callback(**{"bad\x00key": "v"})) == nul
    assert unstorable_text(callback(extra=[{"deep": "\ud800"}])) == surrogate
    # Two lone halves of a pair in different texts are still two lone surrogates.
    assert unstorable_text(callback(a="x\ud83d", b="\ude00y")) == surrogate
    # The first bad text decides the reason, as in the walk.
    assert unstorable_text(callback(a="\ud800", b="\x00")) == surrogate
    assert unstorable_text(callback(a="\x00", b="\ud800")) == nul


_texts = st.text(alphabet=st.sampled_from(["a", "发", "\x00", "\ud800", "\udfff", " "]), max_size=4)
_values = st.recursive(
    st.none() | st.integers() | _texts,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_texts, children, max_size=3),
    max_leaves=8,
)


# pydantic refuses a lone surrogate in a top-level key itself; nested keys keep them.
_keys = st.text(alphabet=st.sampled_from(["a", "发", "\x00", " "]), max_size=4)


@given(st.dictionaries(_keys.filter(lambda key: key not in InvoiceItem.model_fields), _values))
def test_same_answer_as_the_walk(extra: dict[str, Any]) -> None:
    parsed = callback(**extra)
    assert unstorable_text(parsed) == reference(parsed)
