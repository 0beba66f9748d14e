"""How Polygon's wire values become event values: codes, tapes, sides, timestamps.

This module owns the field conversions of the Polygon protocol (the
normalisation choices ``docs/guide/providers.rst`` lists), built on the
checks every protocol shares (:mod:`puffin_trio.providers._values`). Each
raises ``TypeError``/``ValueError`` on a value it cannot convert, which the
protocol turns into :class:`~puffin_trio.providers._base.Malformed`. It must
not build events or do I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from puffin_trio.providers._values import SANE_TS_NS, decimal_size, price, size
from puffin_trio.providers.polygon._wire import NS_PER_MS

__all__ = [
    "CODE_TEXT",
    "CODE_TUPLES",
    "SANE_TS_MS",
    "TAPE_LETTERS",
    "any_unit_to_ns",
    "code",
    "codes",
    "crypto_sides",
    "levels",
    "ms_to_ns",
    "seq_number",
    "size_or_decimal",
    "tape",
    "text_field",
]

#: Text of the small integer codes (exchanges, conditions), made once.
CODE_TEXT: tuple[str, ...] = tuple(str(i) for i in range(1024))
#: The one-code tuples (a stock quote's condition), made once.
CODE_TUPLES: tuple[tuple[str], ...] = tuple((text,) for text in CODE_TEXT)
#: Polygon tape number -> the SIP's tape letter.
_TAPES: Mapping[int, str] = {1: "A", 2: "B", 3: "C"}
#: The same, indexed by tape number (1 to 3), for the decoders' fast path.
TAPE_LETTERS: tuple[str, ...] = ("", *_TAPES.values())
#: Crypto trade condition -> taker side (0: no side).
_CRYPTO_SIDES: Mapping[int, str] = {1: "S", 2: "B"}
#: :data:`~puffin_trio.providers._values.SANE_TS_NS` in ms, for the ms timestamps.
SANE_TS_MS: tuple[int, int] = (SANE_TS_NS[0] // NS_PER_MS, SANE_TS_NS[1] // NS_PER_MS)
_MS_LOW, _MS_HIGH = SANE_TS_MS


def code(value: object) -> str:
    """An integer code (exchange, condition) as text; ``None`` (absent) is ``""``."""
    if type(value) is int and 0 <= value < 1024:
        return CODE_TEXT[value]
    if value is None:
        return ""
    if type(value) is int or type(value) is str:
        return str(value)
    raise TypeError(f"a code must be an integer, got {type(value).__name__}")


def codes(value: object) -> tuple[str, ...]:
    """A list of integer codes (``c`` of a trade, ``i`` of LULD) as a tuple of text."""
    if value is None:
        return ()
    if type(value) is not list:
        raise TypeError(f"codes must be a list, got {type(value).__name__}")
    return tuple([code(v) for v in value])


def tape(value: object) -> str:
    """A tape number as the SIP's letter (1 -> ``"A"``); other codes as text."""
    if type(value) is int:
        letter = _TAPES.get(value)
        if letter is not None:
            return letter
    return code(value)


def seq_number(value: object) -> int | None:
    if value is None or type(value) is int:
        return value
    raise TypeError(f"sequence number 'q' must be an integer, got {type(value).__name__}")


def ms_to_ns(value: object) -> int:
    """Unix ms -> ns, inside the sane range. Only integers: a float or text is malformed."""
    if type(value) is not int:
        raise TypeError(f"timestamp must be integer milliseconds, got {type(value).__name__}")
    if _MS_LOW <= value < _MS_HIGH:
        return value * NS_PER_MS
    raise ValueError(f"timestamp {value} ms is outside 1990..2200")


def any_unit_to_ns(value: object) -> int:
    """A timestamp whose unit is uncertain (LULD ``t``), read from its magnitude.

    Below 10**14 it is ms (ms timestamps stay below that until the year 5138),
    below 10**17 µs, else ns (ns timestamps passed 10**17 in 1973).
    """
    if type(value) is not int:
        raise TypeError(f"timestamp must be an integer, got {type(value).__name__}")
    if value < 10**14:
        ns = value * NS_PER_MS
    elif value < 10**17:
        ns = value * 1_000
    else:
        ns = value
    if SANE_TS_NS[0] <= ns < SANE_TS_NS[1]:
        return ns
    raise ValueError(f"timestamp {value} is outside 1990..2200")


def text_field(value: object, field: str) -> str:
    if type(value) is not str:
        raise TypeError(f"{field!r} must be a string, got {type(value).__name__}")
    return value


def levels(value: object) -> tuple[tuple[float, float], ...]:
    """An XL2 side, ``[[price, size], ...]`` (absent: empty)."""
    if type(value) is not list:
        raise TypeError(f"book side must be a list of [price, size], got {type(value).__name__}")
    return tuple([(price(level_price), size(level_size)) for level_price, level_size in value])


def size_or_decimal(value: object) -> float:
    """A size or volume, as a number or as decimal text (``ds``, ``dv``: fractional shares).

    Other scripts' digits are refused with the rest (a UnicodeEncodeError is a ValueError).
    """
    if type(value) is not str:
        return size(value)
    return decimal_size(value.encode("ascii"))


def crypto_sides(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if type(value) is not list:
        raise TypeError(f"conditions must be a list, got {type(value).__name__}")
    sides = []
    for condition in value:
        side = _CRYPTO_SIDES.get(condition) if type(condition) is int else None
        if side is not None:
            sides.append(side)
        elif condition != 0:
            sides.append(code(condition))
    return tuple(sides)
