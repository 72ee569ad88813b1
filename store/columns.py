"""Portable column types: UTC timestamps, exact money, Decimal-safe JSON.

| type          | PostgreSQL             | SQLite                   | Python value            |
|---------------|------------------------|--------------------------|-------------------------|
| `UTCDateTime` | `timestamptz`          | ISO text, naive UTC      | aware `datetime` in UTC |
| `Money`       | `numeric(16,2)` exact  | NUMERIC (see below)      | `Decimal`, 2 places     |
| `JSONValue`   | `jsonb`                | JSON text                | dict / list             |

Money on SQLite: the column is declared `NUMERIC(16,2)`; SQLite stores such values as
INTEGER or REAL, which is exact to the cent for |amount| < 10**13 (fifteen significant
digits). We bind money as text so no Python float is ever created on the way in, and read it
back through `str()` and quantise to cents. PostgreSQL stores it exactly. The authoritative
copy of a bill is `documents.payload`, where amounts are JSON strings (below).

JSON and decimals: every `Decimal` inside a JSON value is written as a string
(`Decimal("12.30")` -> `"12.30"`), so no amount passes through a float; readers turn the
strings back into `Decimal` with the schema that owns the shape. A column created with
`allow_float=False` (the document payload) refuses Python floats outright.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, DateTime, Numeric
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = ["CENT", "JSONValue", "Money", "UTCDateTime", "jsonable", "utcnow"]

CENT = Decimal("0.01")


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, on every database.

    Naive datetimes are refused on the way in: a naive value is ambiguous, and guessing
    would silently shift due times by the server's offset.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware UTC datetime")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            # SQLite compares timestamps as text: store one canonical naive-UTC form.
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """`numeric(16,2)` that only takes and gives `Decimal` with exactly two places.

    Values with sub-cent digits are refused rather than rounded: rounding is a tax rule.
    """

    impl = Numeric(16, 2, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            # Without asdecimal the SQLite dialect neither warns nor converts through float;
            # conversion to Decimal happens in process_result_value via str().
            return dialect.type_descriptor(Numeric(16, 2, asdecimal=False))
        return dialect.type_descriptor(Numeric(16, 2, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, float) or not isinstance(value, Decimal | int):
            raise TypeError(f"money must be Decimal, not {type(value).__name__}: {value!r}")
        amount = Decimal(value)
        if amount != amount.quantize(CENT):
            # Rounding is a tax rule (schemas owns it), never a side effect of storage.
            raise ValueError(f"money {amount} has more than two decimals: quantise it first")
        amount = amount.quantize(CENT)
        if dialect.name == "sqlite":
            return str(amount)
        return amount

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(str(value)).quantize(CENT)


# Values JSON holds as they are (exact types; subclasses take the general path).
_PLAIN: frozenset[type] = frozenset({str, int, bool, type(None)})


def jsonable(value: Any, *, allow_float: bool = True) -> Any:
    """`value` with every Decimal turned into its string form (recursively).

    Tuples become lists; mappings must have string keys (JSON has no other kind).
    """
    # Payloads are mostly dicts, lists and strings: those exact types skip the general checks
    # below (the same result, a fraction of the calls; bulk intake binds every payload).
    kind = type(value)
    if kind is dict:
        out: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str and not isinstance(key, str):
                raise TypeError(f"JSON object keys must be str, not {type(key).__name__}")
            out[key] = item if type(item) in _PLAIN else jsonable(item, allow_float=allow_float)
        return out
    if kind is list:
        return [
            item if type(item) in _PLAIN else jsonable(item, allow_float=allow_float)
            for item in value
        ]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, float):
        if not allow_float:
            raise TypeError(
                f"float {value!r} in an exact JSON column: amounts must be Decimal or str"
            )
        return value
    if isinstance(value, Mapping):
        mapped: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be str, not {type(key).__name__}")
            mapped[key] = jsonable(item, allow_float=allow_float)
        return mapped
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [jsonable(item, allow_float=allow_float) for item in value]
    raise TypeError(f"{type(value).__name__} is not JSON serialisable: {value!r}")


class JSONValue(TypeDecorator[Any]):
    """JSON on SQLite, JSONB on PostgreSQL; Decimals stored as strings (module docstring)."""

    impl = JSON(none_as_null=True)
    cache_ok = True

    def __init__(self, *, allow_float: bool = True) -> None:
        super().__init__()
        self.allow_float = allow_float

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(JSON(none_as_null=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return jsonable(value, allow_float=self.allow_float)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return value
