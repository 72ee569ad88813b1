"""Exact money: Decimal in, Decimal out, JSON without floats.

A float never touches an amount. Binary floats cannot hold most cent values
(``0.1 + 0.2 == 0.30000000000000004``) and Kingdee compares amounts to the cent, so every
number that may be money is parsed from its decimal text straight into :class:`Decimal`.

Public API

| name | what it does |
|---|---|
| ``CENT`` | ``Decimal("0.01")`` |
| ``to_decimal(value)`` | Decimal, int or numeric str → finite Decimal; float → ``TypeError`` |
| ``quantize_cents(d)`` | round to cents, ROUND_HALF_UP (四舍五入, as Chinese tax does) |
| ``loads_exact(text)`` | ``json.loads`` with JSON fractions as Decimal, ints as int, NaN refused |
| ``dumps_exact(obj)`` | compact UTF-8 JSON; Decimals written as plain exact JSON numbers |
| ``Money`` | pydantic type: an amount with at most 2 decimals, always returned quantised to cents |
| ``ExactNumber`` | pydantic type: any finite Decimal (price, quantity), same float rule as Money |
| ``ExactModel`` | ``BaseModel`` whose ``model_validate_json`` parses with ``loads_exact`` |
| ``decimal_places(d)`` | number of significant decimal places of a finite Decimal |

The float rule (``Money`` and ``ExactNumber``)

* Python input: ``Decimal``, ``int`` and numeric strings are accepted; ``float`` (and
  ``bool``) is refused with "money is never float". Parse JSON with :func:`loads_exact`.
* ``ExactModel.model_validate_json``: the text is parsed by :func:`loads_exact`, so numbers
  never pass through a float, whatever their length.
* Plain ``BaseModel.model_validate_json`` (pydantic's own parser hands fractions over as
  floats): a float is accepted only if its shortest repr has at most 15 significant digits.
  Every decimal with ≤15 significant digits survives a double exactly, which covers every
  amount in Kingdee's (14,2) range; anything longer is refused rather than silently rounded.
* ``Money`` refuses more than 2 significant decimals (``1.005``) instead of rounding: a
  rounding decision belongs to the tax rules, not to parsing. ``"1.230"`` is fine (= 1.23).
"""

from __future__ import annotations

import json
import re
from decimal import ROUND_HALF_UP, Decimal, getcontext, localcontext
from typing import Annotated, Any, Final, Self

from pydantic import BaseModel, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.config import ExtraValues
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

__all__ = [
    "CENT",
    "MAX_MAGNITUDE_DIGITS",
    "ExactModel",
    "ExactNumber",
    "Money",
    "decimal_places",
    "dumps_exact",
    "loads_exact",
    "quantize_cents",
    "to_decimal",
]

CENT = Decimal("0.01")

FLOAT_REFUSAL = (
    "money is never float: pass Decimal, int or a numeric string "
    "(parse JSON with schemas.money.loads_exact)"
)

# A plain decimal literal as people and JSON write it; no underscores, no "NaN", no spaces
# inside. (Decimal() itself would accept "1_000" and "  nan ".)
_NUMERIC_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")

# Any decimal with at most this many significant digits survives a trip through a double.
_FLOAT_SAFE_DIGITS = 15


# Numbers whose leading digit sits further than this from the decimal point are refused.
MAX_MAGNITUDE_DIGITS: Final = 40


def to_decimal(value: object) -> Decimal:
    """Return ``value`` as a finite Decimal.

    Accepts Decimal, int and numeric strings (surrounding spaces ignored). Refuses float and
    bool with ``TypeError`` (rule: money is never float), NaN/Infinity and non-numeric text
    with ``ValueError``.
    """
    if isinstance(value, bool):
        raise TypeError(f"expected a number, got a boolean ({value!r})")
    if isinstance(value, float):
        raise TypeError(f"{FLOAT_REFUSAL}; got float {value!r}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        if not _NUMERIC_TEXT.fullmatch(text):
            raise ValueError(f"not a decimal number: {value!r}")
        result = Decimal(text)
    else:
        raise TypeError(f"expected Decimal, int or numeric str, got {type(value).__name__}")
    if not result.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    if abs(result.adjusted()) > MAX_MAGNITUDE_DIGITS:
        # 1E+9999999 is valid JSON; arithmetic on it overflows the decimal context, and no
        # amount, price, quantity or rate of an invoice comes anywhere near this bound.
        raise ValueError(
            f"number out of range: more than {MAX_MAGNITUDE_DIGITS} digits from the decimal point"
        )
    return result


def quantize_cents(d: Decimal) -> Decimal:
    """Round to cents, half away from zero (ROUND_HALF_UP), as Chinese tax rounding does.

    | ``d``                                    | how                                     |
    |------------------------------------------|-----------------------------------------|
    | ``d.adjusted() + 4 <= prec`` of the      | quantize in the current context: it has |
    | current context (every amount, and NaN,  | room for every integer digit plus two   |
    | Infinity: adjusted() is 0)               | decimals already                        |
    | larger                                   | a local context with that much room     |

    Both give the same value (sign, digits and exponent) and raise the same errors under any
    context (quiet NaN stays NaN, Infinity and sNaN raise ``InvalidOperation``): the local
    context would only copy the current one with the same precision. The fast path skips that
    copy (``localcontext`` was ~1 µs of ~1.2 µs a call); unlike the copy it may set the
    ``Inexact``/``Rounded`` flags of the current context, which only record that rounding
    happened.
    """
    ctx = getcontext()
    if d.adjusted() + 4 <= ctx.prec:
        return d.quantize(CENT, ROUND_HALF_UP, ctx)
    with localcontext() as ctx:
        # quantize needs room for every integer digit plus two decimals.
        ctx.prec = max(ctx.prec, d.adjusted() + 4)
        return d.quantize(CENT, rounding=ROUND_HALF_UP)


def decimal_places(d: Decimal) -> int:
    """Significant decimal places: ``1.230`` → 2, ``100`` → 0, ``1E+2`` → 0."""
    if d.is_zero():
        return 0
    # Read the digits instead of normalize(): normalize() applies the context's exponent
    # limits and raises Overflow on inputs such as 1E+9999999 that JSON can carry.
    _, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)  # finite Decimals only
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -(exponent + trailing_zeros))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not a number (money must be finite)")


def loads_exact(text: str | bytes) -> Any:
    """``json.loads`` where every JSON fraction becomes a Decimal of exactly its digits.

    Integers stay ``int``; ``NaN``/``Infinity`` are refused with ``ValueError``.
    """
    return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)


def _plain_number(d: Decimal) -> str:
    if not d.is_finite():
        raise ValueError(f"cannot write a non-finite number to JSON: {d!r}")
    if d.is_zero():
        d = abs(d)  # no "-0.00" on the wire; JSON readers disagree about negative zero
    # format "f" never uses an exponent and keeps every digit (Decimal("1E+2") -> "100").
    return format(d, "f")


def _write(obj: Any, out: list[str], sort_keys: bool) -> None:
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, str):
        out.append(json.dumps(obj, ensure_ascii=False))
    elif isinstance(obj, Decimal):
        out.append(_plain_number(obj))
    elif isinstance(obj, int):
        out.append(str(int(obj)))
    elif isinstance(obj, float):
        raise TypeError(f"{FLOAT_REFUSAL}; dumps_exact got float {obj!r}")
    elif isinstance(obj, dict):
        items = sorted(obj.items()) if sort_keys else obj.items()
        out.append("{")
        for index, (key, value) in enumerate(items):
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be str, got {type(key).__name__}")
            if index:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _write(value, out, sort_keys)
        out.append("}")
    elif isinstance(obj, list | tuple):
        out.append("[")
        for index, value in enumerate(obj):
            if index:
                out.append(",")
            _write(value, out, sort_keys)
        out.append("]")
    else:
        raise TypeError(f"dumps_exact cannot write {type(obj).__name__}")


def dumps_exact(obj: Any, *, sort_keys: bool = False) -> str:
    """Compact JSON (``ensure_ascii=False``) with Decimals as plain, exact JSON numbers.

    ``Decimal("1414.16")`` is written ``1414.16``, ``Decimal("100.00")`` ``100.00``,
    ``Decimal("1E+2")`` ``100``. Floats are refused (money is never float).
    """
    out: list[str] = []
    _write(obj, out, sort_keys)
    return "".join(out)


def _significant_digits(d: Decimal) -> int:
    return len(d.normalize().as_tuple().digits)


def _number_from_json_float(value: float) -> Decimal:
    # pydantic's own JSON parser hands fractions over as floats; recover the decimal text.
    result = Decimal(repr(value))
    if not result.is_finite() or _significant_digits(result) > _FLOAT_SAFE_DIGITS:
        raise PydanticCustomError(
            "exact_number",
            "number {value} has more than 15 significant digits and cannot be read exactly "
            "through pydantic's JSON parser; use schemas.money.loads_exact or ExactModel",
            {"value": repr(value)},
        )
    return result


def _number_from_python(value: Any) -> Decimal:
    try:
        return to_decimal(value)
    except TypeError as exc:
        raise PydanticCustomError("exact_number_type", str(exc)) from None
    except ValueError as exc:
        raise PydanticCustomError("exact_number", str(exc)) from None


def _number_from_json(value: Any) -> Decimal:
    if isinstance(value, float):
        return _number_from_json_float(value)
    return _number_from_python(value)


def _money_check(value: Decimal) -> Decimal:
    if decimal_places(value) > 2:
        raise PydanticCustomError(
            "money_precision",
            "an amount has at most 2 decimal places (金额最多两位小数), got {value}",
            {"value": str(value)},
        )
    return quantize_cents(value)


def _number_json_schema() -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "number"},
            {"type": "string", "pattern": r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"},
        ]
    }


class _ExactDecimal:
    """pydantic hook shared by ``Money`` and ``ExactNumber``."""

    money: bool = False

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        python: core_schema.CoreSchema = core_schema.no_info_plain_validator_function(
            _number_from_python
        )
        json_: core_schema.CoreSchema = core_schema.no_info_plain_validator_function(
            _number_from_json
        )
        if cls.money:
            check = core_schema.no_info_plain_validator_function(_money_check)
            python = core_schema.chain_schema([python, check])
            json_ = core_schema.chain_schema([json_, check])
        return core_schema.json_or_python_schema(
            json_schema=json_,
            python_schema=python,
            # JSON output through pydantic writes the exact digits as a string; the wire
            # goes through dumps_exact, which writes numbers.
            serialization=core_schema.plain_serializer_function_ser_schema(
                _serialize_decimal, when_used="json"
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        result = _number_json_schema()
        if cls.money:
            result["description"] = "amount, at most 2 decimal places; never a float"
        return result


def _serialize_decimal(value: Decimal) -> str:
    return _plain_number(value)


class _MoneyMarker(_ExactDecimal):
    money = True


Money = Annotated[Decimal, _MoneyMarker]
"""An amount: Decimal with at most 2 decimal places, returned quantised to cents."""

ExactNumber = Annotated[Decimal, _ExactDecimal]
"""Any finite Decimal (unit price, quantity), with the float rule of ``Money``."""


class ExactModel(BaseModel):
    """A model whose ``model_validate_json`` never lets a number pass through a float."""

    @classmethod
    def model_validate_json(
        cls,
        json_data: str | bytes | bytearray,
        *,
        strict: bool | None = None,
        extra: ExtraValues | None = None,
        context: Any | None = None,
        by_alias: bool | None = None,
        by_name: bool | None = None,
    ) -> Self:
        data = loads_exact(bytes(json_data) if isinstance(json_data, bytearray) else json_data)
        return cls.model_validate(
            data, strict=strict, extra=extra, context=context, by_alias=by_alias, by_name=by_name
        )
