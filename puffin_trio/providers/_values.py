"""What a value from the wire must be before it goes into an event: the trust boundary's checks.

This module owns the rules every provider protocol applies to the values it
copies into events (the per-provider choices, such as where a price may be
negative, are listed in ``docs/guide/providers.rst``):

* prices are finite numbers (:func:`price`, which also refuses a negative
  one), sizes finite numbers >= 0 (:func:`size`), counts integers >= 0
  (:func:`count`);
* event timestamps are integer nanoseconds inside :data:`SANE_TS_NS` (each
  protocol's timestamp reader checks the range as it converts, on the cheapest
  path its format allows);
* symbols are non-empty strings (:func:`symbol_of`), text fields strings
  (:func:`text`, :func:`texts`), identifiers integers or strings (:func:`ident`);
* numbers sent as text are plain decimals (:func:`decimal`, :func:`decimal_size`):
  Python's ``float()`` also reads ``"NaN"``, ``"1e999"`` (infinity), ``"1_0"``
  and ``" 1 "``, none of which a provider means as a number.

Each function returns the value as the event stores it, or raises
``TypeError``/``ValueError``, which the protocols turn into a
:class:`~puffin_trio.providers._base.Malformed` for that one message. They
are on the decoding hot path: a type test and a comparison or two, no
formatting unless the value is refused. This module must not build events,
read a clock or do I/O.
"""

from __future__ import annotations

import math
from typing import Final

__all__ = [
    "SANE_TS_NS",
    "count",
    "decimal",
    "decimal_size",
    "ident",
    "price",
    "size",
    "symbol_of",
    "text",
    "texts",
]

#: Event timestamps outside ``[SANE_TS_NS[0], SANE_TS_NS[1])`` are impossible:
#: 1990-01-01 to 2200-01-01 UTC, in ns since the epoch. These providers'
#: electronic feeds start in the 1990s, and int64 ns ends in 2262, so anything
#: past 2200 is a unit mix-up (ms read as ns) or a corrupt field, never a time.
#: The fuzz suite judges events by this same range.
SANE_TS_NS: Final = (631_152_000 * 10**9, 7_258_118_400 * 10**9)
_TS_LOW, _TS_HIGH = SANE_TS_NS
_INF = math.inf
#: The bytes a plain decimal is written with (:func:`decimal`).
_DECIMAL_BYTES = b"0123456789.-+eE"


def price(value: object) -> float:
    """A price that cannot be negative (stocks, crypto): a finite JSON/msgpack number >= 0."""
    if type(value) is float:
        if 0.0 <= value < _INF:
            return value
    elif type(value) is int and value >= 0:
        return float(value)  # OverflowError past 1.8e308
    raise _refused("price", value, "a finite number >= 0")


def size(value: object) -> float:
    """A size or volume: a finite JSON/msgpack number >= 0."""
    if type(value) is float:
        if 0.0 <= value < _INF:
            return value
    elif type(value) is int and value >= 0:
        return float(value)
    raise _refused("size", value, "a finite number >= 0")


def count(value: object) -> int:
    """A count (trades in a bar): an integer >= 0."""
    if type(value) is int and value >= 0:
        return value
    raise _refused("count", value, "an integer >= 0")


def symbol_of(value: object) -> str:
    """A symbol: a non-empty string."""
    if type(value) is str and value:
        return value
    raise _refused("symbol", value, "a non-empty string")


def ident(value: object) -> str:
    """An identifier (a trade id), as text: the wire has it as an integer or a string."""
    if type(value) is int:
        return str(value)
    if type(value) is str:
        return value
    raise _refused("identifier", value, "an integer or a string")


def text(value: object) -> str:
    """An optional text field (exchange, tape, status text): a string; absent is ``""``."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    raise _refused("text field", value, "a string")


def texts(value: object) -> tuple[str, ...]:
    """A list of text fields (conditions): a list of strings, or one bare string; absent is ``()``.

    (A bare string is what one of Alpaca's own mocks sends, and alpaca-py accepts it.)
    """
    if type(value) is list:
        items = tuple(value)
        "".join(items)  # TypeError unless every item is a string: one C loop
        return items
    if type(value) is str:
        return (value,)
    if value is None:
        return ()
    raise _refused("list of text", value, "a list of strings")


def decimal(raw: bytes) -> float:
    """A number sent as text (TWS fields; Polygon's decimal sizes, encoded): a plain,
    finite decimal.

    Only ASCII digits, a sign, a point and an exponent: ``float()`` also reads
    ``nan``, ``inf``, ``1e999`` (infinity), ``1_0`` and surrounding spaces, and
    each of those is a corrupt field, not a number. ``ValueError`` otherwise.
    """
    value = float(raw)
    if raw.strip(_DECIMAL_BYTES) or not -_INF < value < _INF:  # strip: b"" if only those
        raise ValueError(f"not a plain finite decimal: {raw[:40]!r}")
    return value


def decimal_size(raw: bytes) -> float:
    """A size sent as text: a plain, finite decimal >= 0 (see :func:`decimal`)."""
    value = float(raw)
    if raw.strip(_DECIMAL_BYTES) or not 0.0 <= value < _INF:
        raise ValueError(f"not a plain finite decimal >= 0: {raw[:40]!r}")
    return value


def _refused(what: str, value: object, wanted: str) -> Exception:
    """``ValueError`` for a number out of range, ``TypeError`` for the wrong type.

    Only a number is shown: any other value (a string, a nested list) is named
    by its type, so that the reason stays short whatever arrived.
    """
    if type(value) is int or type(value) is float:
        return ValueError(f"{what} {value!r} is not {wanted}")
    return TypeError(f"{what} of type {type(value).__name__} is not {wanted}")
