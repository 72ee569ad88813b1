"""schemas.money: amounts are Decimal end to end; JSON numbers never pass through a float."""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, Inexact, InvalidOperation, Rounded, localcontext
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from schemas.money import (
    CENT,
    ExactModel,
    ExactNumber,
    Money,
    decimal_places,
    dumps_exact,
    loads_exact,
    quantize_cents,
    to_decimal,
)

amounts = st.decimals(
    min_value=Decimal("-999999999999.99"),
    max_value=Decimal("999999999999.99"),
    places=2,
    allow_nan=False,
    allow_infinity=False,
)
any_decimals = st.decimals(allow_nan=False, allow_infinity=False)


class Priced(ExactModel):
    amount: Money
    price: ExactNumber | None = None


class PlainPriced(BaseModel):
    amount: Money


# --- to_decimal -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("1.10"), Decimal("1.10")),
        (7, Decimal(7)),
        ("  12.5 ", Decimal("12.5")),
        ("-0.01", Decimal("-0.01")),
        ("1e3", Decimal("1000")),
        (".5", Decimal("0.5")),
    ],
)
def test_to_decimal_accepts_decimal_int_and_numeric_text(value: object, expected: Decimal) -> None:
    result = to_decimal(value)
    assert isinstance(result, Decimal)
    assert result == expected


def test_to_decimal_refuses_float_naming_the_rule() -> None:
    with pytest.raises(TypeError, match="money is never float"):
        to_decimal(0.1)


@pytest.mark.parametrize("value", [True, None, [1], {"a": 1}])
def test_to_decimal_refuses_non_numbers(value: object) -> None:
    with pytest.raises(TypeError):
        to_decimal(value)


@pytest.mark.parametrize(
    "value",
    ["NaN", "nan", "Infinity", "-inf", Decimal("NaN"), Decimal("Infinity"), "1_000", "", "1,5"],
)
def test_to_decimal_refuses_nan_infinity_and_odd_text(value: object) -> None:
    with pytest.raises(ValueError):
        to_decimal(value)


# --- quantize_cents ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.005", "0.01"),
        ("0.015", "0.02"),
        ("2.675", "2.68"),  # a float would give 2.67 (2.675 is 2.67499999… as a double)
        ("-0.005", "-0.01"),  # half away from zero: a red line mirrors its blue line
        ("183.844", "183.84"),
        ("100", "100.00"),
    ],
)
def test_quantize_cents_rounds_half_up(value: str, expected: str) -> None:
    result = quantize_cents(Decimal(value))
    assert result == Decimal(expected)
    assert str(result) == expected


@given(any_decimals)
def test_quantize_cents_is_idempotent_and_within_half_a_cent(d: Decimal) -> None:
    once = quantize_cents(d)
    assert quantize_cents(once) == once
    assert once.as_tuple().exponent == -2
    assert abs(once - d) <= CENT / 2


@given(amounts)
def test_quantize_cents_is_symmetric_for_negative_amounts(d: Decimal) -> None:
    assert quantize_cents(-d) == -quantize_cents(d)


def _quantize_cents_before(d: Decimal) -> Decimal:
    """quantize_cents as it was before its fast path: always in a local context."""
    with localcontext() as ctx:
        ctx.prec = max(ctx.prec, d.adjusted() + 4)
        return d.quantize(CENT, rounding=ROUND_HALF_UP)


def _outcome(quantize: Callable[[Decimal], Decimal], d: Decimal) -> tuple[object, str]:
    """The exact result (sign, digits, exponent; NaN and -0 included) or the error raised."""
    try:
        result = quantize(d)
    except ArithmeticError as error:
        return type(error), ""
    return result.as_tuple(), str(result)


def _decimal(sign: int, digits: list[int], exponent: int) -> Decimal:
    return Decimal((sign, tuple(digits), exponent))


# Finite decimals of any size, tiny or huge exponents included (Decimal() does not check
# them against the context), ties at the third decimal, and the special values.
wide_decimals = st.one_of(
    st.builds(
        _decimal,
        st.integers(0, 1),
        st.lists(st.integers(0, 9), min_size=1, max_size=45),
        st.one_of(st.integers(-40, 40), st.integers(-1_000_000, 1_000_000)),
    ),
    st.builds(
        lambda sign, n: _decimal(sign, [int(c) for c in f"{n}5"], -3),
        st.integers(0, 1),
        st.integers(0, 10**30),
    ),
    st.sampled_from(
        [Decimal(v) for v in ("NaN", "-NaN", "sNaN", "Infinity", "-Infinity", "-0", "-0E-9")]
    ),
    any_decimals,
)


@given(
    wide_decimals,
    st.one_of(st.just(28), st.integers(1, 60)),
    st.booleans(),
    st.booleans(),
)
def test_quantize_cents_gives_what_the_local_context_version_gave(
    d: Decimal, prec: int, trap_inexact: bool, trap_rounded: bool
) -> None:
    with localcontext(prec=prec) as ctx:
        ctx.traps[Inexact] = trap_inexact
        ctx.traps[Rounded] = trap_rounded
        assert _outcome(quantize_cents, d) == _outcome(_quantize_cents_before, d)


@given(st.integers(10, 60), st.integers(-6, 1), st.integers(0, 1), st.data())
def test_quantize_cents_agrees_at_the_edge_of_the_contexts_precision(
    prec: int, offset: int, sign: int, data: st.DataObject
) -> None:
    # Integer digits around prec - 4, where the fast path hands over to the local context.
    digits = prec - 3 + offset  # integer digits: adjusted() = prec - 4 + offset
    fraction = data.draw(st.lists(st.integers(0, 9), min_size=3, max_size=3))
    lead = data.draw(st.lists(st.integers(0, 9), min_size=digits - 1, max_size=digits - 1))
    d = _decimal(sign, [data.draw(st.integers(1, 9)), *lead, *fraction], -3)
    assert d.adjusted() == prec - 4 + offset
    with localcontext(prec=prec):
        assert _outcome(quantize_cents, d) == _outcome(_quantize_cents_before, d)


@pytest.mark.parametrize("prec", range(4, 61))
def test_quantize_cents_agrees_when_rounding_carries_into_a_new_digit(prec: int) -> None:
    # 99…9.995 rounds to 100…0.00: one digit more than it had, the reason for "+ 4".
    with localcontext(prec=prec):
        for integer_digits in (prec - 4, prec - 3, prec - 2):
            for sign in (0, 1):
                d = _decimal(sign, [9] * integer_digits + [9, 9, 5], -3)
                assert _outcome(quantize_cents, d) == _outcome(_quantize_cents_before, d)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("NaN", "NaN"),  # a quiet NaN passes through, as it always did
        ("-0", "-0.00"),
        ("-0.004", "-0.00"),
        ("1E-999999", "0.00"),
        ("1E+30", "1000000000000000000000000000000.00"),  # beyond 28 digits: local context
        ("99999999999999999999999.995", "100000000000000000000000.00"),  # carries a digit
    ],
)
def test_quantize_cents_edge_values(value: str, expected: str) -> None:
    assert str(quantize_cents(Decimal(value))) == expected


@pytest.mark.parametrize("value", ["Infinity", "-Infinity", "sNaN"])
def test_quantize_cents_refuses_infinity_and_signalling_nan(value: str) -> None:
    with pytest.raises(InvalidOperation):
        quantize_cents(Decimal(value))


@given(wide_decimals)
def test_quantize_cents_sets_at_most_the_rounding_flags_of_the_callers_context(
    d: Decimal,
) -> None:
    with localcontext() as ctx:
        ctx.clear_flags()
        try:
            quantize_cents(d)
        except InvalidOperation:
            return
        raised = {signal for signal, on in ctx.flags.items() if on}
        assert raised <= {Inexact, Rounded}


def test_decimal_places_counts_significant_places() -> None:
    assert decimal_places(Decimal("1.230")) == 2
    assert decimal_places(Decimal("100")) == 0
    assert decimal_places(Decimal("1E+2")) == 0
    assert decimal_places(Decimal("0.015")) == 3
    assert decimal_places(Decimal("0.00")) == 0


# --- loads_exact / dumps_exact ----------------------------------------------------------------


def test_loads_exact_keeps_fractions_exact_and_ints_int() -> None:
    data = loads_exact('{"a": 0.1, "b": 12345678901234.57, "c": 3, "d": [1.10, -0.0]}')
    assert data["a"] == Decimal("0.1") and isinstance(data["a"], Decimal)
    assert data["b"] == Decimal("12345678901234.57")
    assert data["c"] == 3 and type(data["c"]) is int
    assert str(data["d"][0]) == "1.10"  # digits as written, trailing zero kept


def test_loads_exact_accepts_bytes() -> None:
    assert loads_exact('{"名称": 1.5}'.encode()) == {"名称": Decimal("1.5")}


@pytest.mark.parametrize("text", ['{"a": NaN}', "[Infinity]", "[-Infinity]"])
def test_loads_exact_refuses_non_finite_constants(text: str) -> None:
    with pytest.raises(ValueError, match="not a number"):
        loads_exact(text)


def test_dumps_exact_writes_plain_exact_numbers_compactly() -> None:
    text = dumps_exact(
        {
            "totalAmount": Decimal("1414.16"),
            "price": Decimal("100.00"),
            "big": Decimal("1E+2"),
            "tiny": Decimal("1E-7"),
            "n": 3,
            "name": "杭州云帆",
            "flags": [True, False, None],
        }
    )
    assert text == (
        '{"totalAmount":1414.16,"price":100.00,"big":100,"tiny":0.0000001,"n":3,'
        '"name":"杭州云帆","flags":[true,false,null]}'
    )


def test_dumps_exact_sort_keys() -> None:
    assert dumps_exact({"b": 1, "a": (Decimal("2.50"),)}, sort_keys=True) == '{"a":[2.50],"b":1}'


@pytest.mark.parametrize("value", [0.1, Decimal("NaN"), Decimal("Infinity"), {1: "x"}, object()])
def test_dumps_exact_refuses_floats_non_finite_and_unknown(value: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        dumps_exact({"v": value})


def test_dumps_exact_escapes_strings_like_json() -> None:
    assert dumps_exact('a"b\\c\n') == '"a\\"b\\\\c\\n"'


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    any_decimals,
    st.text(max_size=20),
)
json_trees = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same JSON kind (Decimal stays Decimal with the same digits)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, Decimal):
        # A Decimal that is integral and written without a point reads back as int.
        return a == b and (isinstance(b, Decimal) or "." not in format(a, "f"))
    return type(a) is type(b) and a == b


@given(json_trees)
def test_dumps_then_loads_round_trips_exactly(tree: Any) -> None:
    text = dumps_exact(tree)
    again = loads_exact(text)
    assert _same(tree, again)
    assert dumps_exact(again) == text


@given(amounts)
def test_amounts_keep_their_written_digits(d: Decimal) -> None:
    text = dumps_exact({"amount": d})
    assert text == '{"amount":' + format(d, "f") + "}"
    assert str(loads_exact(text)["amount"]) == format(d, "f")


# --- the pydantic Money type ------------------------------------------------------------------


@pytest.mark.parametrize("text", ["12345678901234.57", "0.1", "1234567890123456.78", "-0.07"])
def test_exact_model_validate_json_never_passes_through_float(text: str) -> None:
    model = Priced.model_validate_json('{"amount": ' + text + "}")
    assert model.amount == Decimal(text)
    assert model.amount.as_tuple().exponent == -2


def test_exact_model_validate_json_keeps_price_digits() -> None:
    model = Priced.model_validate_json(b'{"amount": 1, "price": 0.12345678}')
    assert model.price == Decimal("0.12345678")


def test_plain_model_json_reads_short_numbers_exactly() -> None:
    assert PlainPriced.model_validate_json('{"amount": 0.1}').amount == Decimal("0.10")
    assert PlainPriced.model_validate_json('{"amount": 999999999999.99}').amount == Decimal(
        "999999999999.99"
    )


def test_plain_model_json_refuses_numbers_a_float_cannot_hold() -> None:
    # pydantic's own parser reads fractions as doubles; 16+ digits could change silently.
    with pytest.raises(ValidationError, match="loads_exact"):
        PlainPriced.model_validate_json('{"amount": 1234567890123456.78}')


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1.230", "1.23"), (100, "100.00"), (Decimal("5"), "5.00"), ("-0.5", "-0.50")],
)
def test_money_accepts_decimal_int_and_text_and_quantises(value: object, expected: str) -> None:
    amount = Priced.model_validate({"amount": value}).amount
    assert str(amount) == expected


def test_money_refuses_python_float() -> None:
    with pytest.raises(ValidationError, match="money is never float"):
        Priced.model_validate({"amount": 0.1})


@pytest.mark.parametrize("value", ["1.005", Decimal("0.001"), "abc", "NaN", True])
def test_money_refuses_more_than_two_decimals_and_non_numbers(value: object) -> None:
    with pytest.raises(ValidationError):
        Priced.model_validate({"amount": value})


@given(amounts)
def test_money_accepts_every_cent_amount_unchanged(d: Decimal) -> None:
    assert Priced.model_validate({"amount": d}).amount == d
    assert Priced.model_validate({"amount": str(d)}).amount == d


def test_money_has_a_json_schema_for_openapi() -> None:
    schema = Priced.model_json_schema()
    kinds = {part["type"] for part in schema["properties"]["amount"]["anyOf"]}
    assert kinds == {"number", "string"}


def test_money_serialises_to_json_as_exact_text() -> None:
    assert Priced(amount=Decimal("1414.16")).model_dump_json() == (
        '{"amount":"1414.16","price":null}'
    )


@pytest.mark.parametrize("text", ["1E+9999999", "-1e999999", "1e-9999999", "1E+41", "1E-41"])
def test_to_decimal_refuses_magnitudes_beyond_any_amount(text: str) -> None:
    # JSON carries these; the decimal context would overflow on arithmetic with them.
    with pytest.raises(ValueError, match="out of range"):
        to_decimal(Decimal(text))


@pytest.mark.parametrize(
    ("text", "places"),
    [("1.230", 2), ("100", 0), ("1E+2", 0), ("0.001", 3), ("12.5000", 1), ("1E+9999999", 0)],
)
def test_decimal_places_never_touches_the_context(text: str, places: int) -> None:
    assert decimal_places(Decimal(text)) == places
