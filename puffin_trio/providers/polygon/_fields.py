"""How Polygon's wire values become event values: codes, tapes, sides, timestamps.

This module owns the field conversions of the Polygon protocol (the
normalisation choices ``docs/guide/providers.rst`` lists). Each raises
``TypeError``/``ValueError`` on a value it cannot convert, which the protocol
turns into :class:`~puffin_trio.providers._base.Malformed`. It must not build
events or do I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from puffin_trio.providers.polygon._wire import NS_PER_MS

__all__ = [
    "any_unit_to_ns",
    "code",
    "codes",
    "crypto_sides",
    "levels",
    "ms_to_ns",
    "seq_number",
    "tape",
    "text_field",
]

#: Text of the small integer codes (exchanges, conditions), made once.
_CODE_TEXT: tuple[str, ...] = tuple(str(i) for i in range(1024))
#: Polygon tape number -> the SIP's tape letter.
_TAPES: Mapping[int, str] = {1: "A", 2: "B", 3: "C"}
#: Crypto trade condition -> taker side (0: no side).
_CRYPTO_SIDES: Mapping[int, str] = {1: "S", 2: "B"}


def code(value: object) -> str:
    """An integer code (exchange, condition) as text; ``None`` (absent) is ``""``."""
    if type(value) is int and 0 <= value < 1024:
        return _CODE_TEXT[value]
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
    if value is None:
        return ""
    letter = _TAPES.get(value)  # type: ignore[call-overload]
    return letter if letter is not None else code(value)


def seq_number(value: object) -> int | None:
    if value is None or type(value) is int:
        return value
    raise TypeError(f"sequence number 'q' must be an integer, got {type(value).__name__}")


def ms_to_ns(value: object) -> int:
    """Unix milliseconds -> ns. Only integers: a float or text timestamp is malformed."""
    if type(value) is not int:
        raise TypeError(f"timestamp must be integer milliseconds, got {type(value).__name__}")
    return value * NS_PER_MS


def any_unit_to_ns(value: object) -> int:
    """A timestamp whose unit is uncertain (LULD ``t``), read from its magnitude.

    Below 10**14 it is ms (ms timestamps stay below that until the year 5138),
    below 10**17 µs, else ns (ns timestamps passed 10**17 in 1973).
    """
    if type(value) is not int:
        raise TypeError(f"timestamp must be an integer, got {type(value).__name__}")
    if value < 10**14:
        return value * NS_PER_MS
    if value < 10**17:
        return value * 1_000
    return value


def text_field(value: object, field: str) -> str:
    if type(value) is not str:
        raise TypeError(f"{field!r} must be a string, got {type(value).__name__}")
    return value


def levels(value: object) -> tuple[tuple[float, float], ...]:
    """An XL2 side, ``[[price, size], ...]`` (absent: empty)."""
    if type(value) is not list:
        raise TypeError(f"book side must be a list of [price, size], got {type(value).__name__}")
    return tuple([(float(price), float(size)) for price, size in value])


def crypto_sides(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if type(value) is not list:
        raise TypeError(f"conditions must be a list, got {type(value).__name__}")
    sides = []
    for condition in value:
        side = _CRYPTO_SIDES.get(condition)
        if side is not None:
            sides.append(side)
        elif condition != 0:
            sides.append(code(condition))
    return tuple(sides)
