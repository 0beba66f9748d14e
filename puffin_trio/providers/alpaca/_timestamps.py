"""Alpaca's timestamps: RFC 3339 text (JSON frames) or msgpack Timestamps, to integer ns.

This module owns :func:`rfc3339_to_ns`, exact to the nanosecond and fast on
the hot path (a cache of the seconds part), and the two readers of an event's
``t`` field, :func:`json_event_ns` and :func:`msgpack_event_ns`, which also
hold it to :data:`~puffin_trio.providers._values.SANE_TS_NS`. It must not
read a clock or do I/O.
"""

from __future__ import annotations

import calendar as _calendar
from collections.abc import Callable
from datetime import datetime

from puffin_trio.providers._values import SANE_TS_NS

__all__ = ["json_event_ns", "msgpack_event_ns", "rfc3339_to_ns"]

_TS_LOW, _TS_HIGH = SANE_TS_NS

#: ``10 ** (9 - n)`` for a fraction of ``n`` digits (index 0 unused).
_FRACTION_SCALE: tuple[int, ...] = tuple(10 ** (9 - n) for n in range(10))
#: Seconds part (``"2023-04-06T11:54:26"``) -> ns since the epoch, and the same
#: with the fraction's dot (``"2023-04-06T11:54:26."``), the fast path's key.
#: Consecutive messages share their second, so a hit is the common case.
#: Bounded at 4096 entries (~0.5 MB; half an hour of distinct live seconds) and
#: cleared wholesale when full: O(1), and a miss costs only ~1 µs. It holds
#: only seconds inside the sane range, so that a hit needs no range check.
_SECONDS_CACHE: dict[str, int] = {}
_SECONDS_CACHE_SIZE = 4096


def _seconds_to_ns(head: str) -> int:
    """``"2023-04-06T11:54:26"`` -> ns since the epoch, remembered in the cache."""
    if len(head) != 19 or head[10] != "T" or head[4] + head[7] + head[13] + head[16] != "--::":
        raise ValueError(f"not an RFC 3339 UTC timestamp: {head!r}")
    try:
        moment = datetime.fromisoformat(head)
    except ValueError:
        raise ValueError(f"not an RFC 3339 UTC timestamp: {head!r}") from None
    value = _calendar.timegm(moment.timetuple()) * 1_000_000_000
    if _TS_LOW <= value < _TS_HIGH:  # whole seconds: the fraction keeps it below _TS_HIGH
        if len(_SECONDS_CACHE) >= _SECONDS_CACHE_SIZE:
            _SECONDS_CACHE.clear()
        _SECONDS_CACHE[head] = value
        _SECONDS_CACHE[head + "."] = value
    return value


def _with_fast_path(fallback: Callable[[str], int]) -> Callable[[str], int]:
    """A timestamp reader: the fast path below, then ``fallback`` for everything else.

    The fast path (~0.35 µs): a cached second with its dot, then 1-9 ASCII
    digits and "Z". isascii(): isdigit() also accepts other scripts' digits,
    which int() would read. A hit is inside the sane range (the cache holds
    nothing else), so both readers share it and differ only in the fallback.
    """

    def read(text: str) -> int:
        base = _SECONDS_CACHE.get(text[:20])
        if base is not None:
            fraction = text[20:-1]
            if fraction.isdigit() and fraction.isascii() and text[-1] == "Z":
                digits = len(fraction)
                if digits == 9:
                    return base + int(fraction)
                if digits < 9:
                    return base + int(fraction) * _FRACTION_SCALE[digits]
        return fallback(text)

    return read


def _rfc3339_checked(text: str) -> int:
    """:func:`rfc3339_to_ns` for whatever its fast path did not take."""
    base = _SECONDS_CACHE.get(text[:19])
    if base is None:
        base = _seconds_to_ns(text[:19])
    fraction = text[20:-1]
    if (
        text[19:20] == "."
        and text[-1] == "Z"
        and fraction.isdigit()
        and fraction.isascii()
        and len(fraction) <= 9
    ):
        return base + int(fraction) * _FRACTION_SCALE[len(fraction)]
    if text[19:] == "Z":
        return base
    raise ValueError(f"not an RFC 3339 UTC timestamp: {text[:40]!r}")


def _event_checked(text: str) -> int:
    """:func:`json_event_ns` for whatever its fast path did not take."""
    ns = _rfc3339_checked(text)
    if _TS_LOW <= ns < _TS_HIGH:
        return ns
    raise ValueError(f"timestamp {text[:40]!r} is outside 1990..2200")


rfc3339_to_ns = _with_fast_path(_rfc3339_checked)
rfc3339_to_ns.__doc__ = """Alpaca's JSON timestamp -> integer nanoseconds since the epoch, exactly.

Accepts UTC with a ``Z`` suffix and 0 to 9 fractional digits (Go's
``RFC3339Nano``: ``"2023-04-06T11:54:26.83915973Z"``,
``"2021-02-22T19:15:00Z"``). The fraction is read as digits, not through
``datetime`` (which keeps only microseconds). Raises ``ValueError`` for any
other string and ``TypeError`` for a non-string.
"""

json_event_ns = _with_fast_path(_event_checked)
json_event_ns.__doc__ = """A JSON frame's event timestamp (read as :func:`rfc3339_to_ns`).

``ValueError`` for a time outside the sane range (year 9999 does not even fit
int64 ns).
"""


def msgpack_event_ns(value: object) -> int:
    """A msgpack frame's event timestamp: ext -1, which the unpacker turns into int ns.

    A string is read as in JSON frames; anything else raises ``TypeError``,
    and a time outside the sane range ``ValueError`` (``Timestamp(2**40, 0)``
    would be the year 36812).
    """
    if type(value) is int:
        if _TS_LOW <= value < _TS_HIGH:
            return value
        raise ValueError(f"timestamp {value} ns is outside 1990..2200")
    if type(value) is not str:
        raise TypeError(f"timestamp must be a msgpack Timestamp, got {type(value).__name__}")
    return json_event_ns(value)
