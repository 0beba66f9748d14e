"""The typed fast path of Polygon's stock trades and quotes against the per-message decoder.

``PolygonProtocol.receive`` first offers a stock frame to
:func:`~puffin_trio.providers.polygon._typed.typed_stock_frame`, which either
declines it or returns its events; the per-message decoder (the trust checks
of ``_values``/``_fields``) stays the definition of what a frame means. These
tests hold the fast path to it, value by value, on frames written as raw JSON
text, so that values no encoder writes (``1e999``, a lone surrogate, invalid
UTF-8, duplicate keys) are among them (the kit is in ``tests/_typed_kit.py``).
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from puffin_trio.events import Quote, Trade
from puffin_trio.providers.polygon import PolygonProtocol
from puffin_trio.providers.polygon._fields import SANE_TS_MS
from puffin_trio.providers.polygon._typed import typed_stock_frame

from ._typed_kit import (
    PRICE,
    TRICKY_SCALARS,
    TRICKY_STRINGS_AND_CONTAINERS,
    TS_RECV,
    Differential,
    Kind,
    Pairs,
    encode,
    stock_messages,
    token,
    tricky_variants,
)

MS = 1_712_413_506_542

TRADE: Pairs = [
    ("ev", b'"T"'),
    ("sym", b'"MSFT"'),
    ("x", b"4"),
    ("i", b'"12345"'),
    ("z", b"3"),
    ("p", b"114.125"),
    ("s", b"100"),
    ("c", b"[0,12]"),
    ("t", str(MS).encode()),
    ("q", b"3681328"),
]
QUOTE: Pairs = [
    ("ev", b'"Q"'),
    ("sym", b'"AAPL"'),
    ("bx", b"4"),
    ("bp", b"114.125"),
    ("bs", b"100"),
    ("ax", b"7"),
    ("ap", b"114.128"),
    ("as", b"160"),
    ("c", b"0"),
    ("t", str(MS).encode()),
    ("q", b"50385480"),
    ("z", b"3"),
]
STATUS: Pairs = [
    ("ev", b'"status"'),
    ("status", b'"success"'),
    ("message", b'"subscribed to: T.MSFT"'),
]
BAR: Pairs = [("ev", b'"AM"'), ("sym", b'"MSFT"'), ("o", b"1"), ("h", b"2"), ("c", b"2")]

#: Values that are wrong somewhere, or right only in some fields, or that only
#: the JSON text can carry: each goes into every field of both messages.
TRICKY: list[bytes] = [
    *TRICKY_SCALARS,
    str(SANE_TS_MS[0] - 1).encode(),
    str(SANE_TS_MS[0]).encode(),
    str(SANE_TS_MS[1] - 1).encode(),
    str(SANE_TS_MS[1]).encode(),
    str(MS * 1_000_000).encode(),
    str(float(MS)).encode(),
    *TRICKY_STRINGS_AND_CONTAINERS,
]


def _per_message(frame: bytes | str, ts_recv: int) -> list[Any]:
    """The definition of what a frame means: a fresh protocol's per-message decoder."""
    return PolygonProtocol(key="k")._receive_per_message(frame, ts_recv)


#: The typed fast path held to the per-message decoder.
FAST_PATH = Differential(fast=typed_stock_frame, slow=_per_message)


def test_typed_path_takes_the_common_frame_and_builds_the_same_events() -> None:
    frame = encode([TRADE, QUOTE] * 10)
    assert FAST_PATH.agrees(frame)
    assert FAST_PATH.agrees(frame.decode())
    items = PolygonProtocol(key="k").receive(frame, TS_RECV)
    assert [type(i) for i in items] == [Trade, Quote] * 10


def test_typed_path_takes_an_empty_frame_and_absent_optional_fields() -> None:
    assert FAST_PATH.agrees(b"[]")
    bare_trade = [kv for kv in TRADE if kv[0] != "c"]
    bare_quote = [kv for kv in QUOTE if kv[0] != "c"]
    extras = [("trfi", b"202"), ("trft", str(MS * 10**6).encode()), ("ds", b"null")]
    indicators = [*QUOTE, ("i", b"[604]")]
    assert FAST_PATH.agrees(encode([bare_trade, bare_quote, [*TRADE, *extras], indicators]))


@pytest.mark.parametrize("kind", ["T", "Q"])
def test_typed_path_declines_frames_it_does_not_model(kind: str) -> None:
    message = TRADE if kind == "T" else QUOTE
    for other in (STATUS, BAR, [("ev", b'"XT"'), *message[1:]], [("zz", b"1"), *message]):
        assert not FAST_PATH.agrees(encode([message, other]))
    assert not FAST_PATH.agrees(b'{"ev":"T"}')
    assert not FAST_PATH.agrees(encode([message]) + b" x")


@pytest.mark.parametrize(
    ("base", "key"),
    [(m, k) for m in (TRADE, QUOTE) for k, _ in m[1:]]
    + [(TRADE, "ds"), (TRADE, "trfi"), (TRADE, "trft"), (QUOTE, "i")],
)
def test_each_tricky_value_in_each_field_is_declined_or_decoded_alike(
    base: Pairs, key: str
) -> None:
    """Every value of TRICKY in the field ``key``, alone, also absent and duplicated (first
    and last): the fast path declines or agrees, and it takes at least the valid ones."""
    variants = tricky_variants(base, key, TRICKY)
    taken = sum(FAST_PATH.agrees(encode([base, variant])) for variant in variants)
    assert taken >= 1


_CODE = st.integers(0, 1023)
_COMMON = {
    "sym": token(st.text(min_size=1, max_size=5)),
    "t": token(st.integers(SANE_TS_MS[0], SANE_TS_MS[1] - 1)),
    "q": token(st.integers(-(2**63), 2**63 - 1)),
    "z": token(st.integers(1, 3)),
}
_TRADE = Kind(
    tag=b'"T"',
    fields={
        **_COMMON,
        "x": token(_CODE),
        "i": token(st.text(max_size=5)),
        "p": token(PRICE),
        "s": token(PRICE),
        "c": token(st.one_of(st.none(), st.lists(_CODE, max_size=3))),
        "ds": token(st.none()),
        "trfi": token(st.integers(0, 300)),
    },
    optional=frozenset({"c", "ds", "trfi"}),
)
_QUOTE = Kind(
    tag=b'"Q"',
    fields={
        **_COMMON,
        "bx": token(_CODE),
        "ax": token(_CODE),
        "bp": token(PRICE),
        "ap": token(PRICE),
        "bs": token(PRICE),
        "as": token(PRICE),
        "c": token(st.one_of(st.none(), _CODE)),
        "i": token(st.lists(_CODE, max_size=2)),
    },
    optional=frozenset({"c", "i"}),
)
_MESSAGES = stock_messages(
    tag_key="ev",
    trade=_TRADE,
    quote=_QUOTE,
    others=[STATUS, BAR, [("ev", b'"LULD"')], [("ev", b"7")], []],
    extra_keys=["zz", "ds", "trfi", "trft", "i"],
    tricky=TRICKY,
)


@settings(max_examples=5 * settings().max_examples)
@given(st.lists(_MESSAGES, max_size=4), st.booleans())
def test_typed_path_declines_or_gives_exactly_the_per_message_items(
    messages: list[Pairs], as_text: bool
) -> None:
    """Differential property: for any frame of stock trades, quotes, statuses and other
    messages, each field drawn mostly valid but also of the wrong type or out of range
    (NaN, 1e999, negative sizes, bools, floats for integers, integers past int64, empty
    symbols, timestamps outside 1990..2200), absent, duplicated or joined by unknown keys,
    keys in any order, sent as bytes or text: ``typed_stock_frame`` returns ``None``, or a
    list equal to ``PolygonProtocol._receive_per_message``'s, item for item, with every
    field of the same type and repr. (Random frames rarely hold just the one bad value a
    looser decoder would let through; the test above tries each such value in each field.)"""
    FAST_PATH.agrees_sent_as(encode(messages), text=as_text)


def test_typed_path_takes_integer_prices_and_any_conditions_list() -> None:
    """The properties are only as good as what the fast path takes: valid variants pass."""
    trades = [[*TRADE[:7], ("c", orjson.dumps(c)), *TRADE[8:]] for c in ([], [1, 2])]
    quotes = [[(k, v) for k, v in QUOTE if k != "bp"] + [("bp", p)] for p in (b"1", b"0.5")]
    for combo in itertools.product(trades, quotes):
        assert FAST_PATH.agrees(encode(list(combo)))
