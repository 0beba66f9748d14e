"""How TWS's text fields become event values: decimals, whole numbers, times.

This module owns the field conversions of the IB protocol, built on the
checks every protocol shares (:mod:`puffin_trio.providers._values`). TWS
sends every value as ASCII text; Python's ``int()`` and ``float()`` would
also read ``b" 1"``, ``b"1_0"``, ``b"nan"`` and ``b"1e999"``, so each field is
held to the plain form TWS writes. Each raises ``ValueError`` on a field it
cannot convert, which the protocol turns into
:class:`~puffin_trio.providers._base.Malformed`. It must not build events or
do I/O.

Prices may be negative on IB (see ``docs/guide/providers.rst``): spreads and
combos trade below zero, and so did a front-month oil future in April 2020.
"""

from __future__ import annotations

from puffin_trio.providers._values import SANE_TS_NS, decimal, decimal_size

__all__ = ["amount", "number", "seconds_to_ns", "whole"]

_NS = 1_000_000_000
_TS_LOW, _TS_HIGH = SANE_TS_NS

#: A price: any finite decimal (negative where the instrument allows it).
number = decimal
#: A size or volume: a finite decimal >= 0.
amount = decimal_size


def whole(raw: bytes) -> int:
    """A non-negative whole number (a row position, a count): ASCII digits only."""
    if raw.isdigit():  # bytes.isdigit() is ASCII-only
        return int(raw)
    raise ValueError(f"not a whole number: {raw[:40]!r}")


def seconds_to_ns(raw: bytes) -> int:
    """A Unix time in whole seconds, as ns inside the sane range (one flat call: hot path)."""
    if raw.isdigit():
        ns = int(raw) * _NS
        if _TS_LOW <= ns < _TS_HIGH:
            return ns
    raise ValueError(f"not a time in whole seconds from 1990 to 2200: {raw[:40]!r}")
