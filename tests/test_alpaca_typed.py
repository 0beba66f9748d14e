"""The typed fast path of Alpaca's JSON stock trades and quotes against the per-message decoder.

``AlpacaProtocol.receive`` first offers a JSON stock frame to
:func:`~puffin_trio.providers.alpaca._typed.typed_json_stock_frame`, which
either declines it or returns its events; the per-message decoder (the trust
checks of ``_values``, the timestamp reader of ``_timestamps``) stays the
definition of what a frame means. These tests hold the fast path to it, value
by value, on frames written as raw JSON text, so that values no encoder writes
(``1e999``, a lone surrogate, invalid UTF-8, duplicate keys) are among them
(the kit is in ``tests/_typed_kit.py``).
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from puffin_trio.events import Quote, Trade
from puffin_trio.providers.alpaca import AlpacaProtocol
from puffin_trio.providers.alpaca._typed import typed_json_stock_frame

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

TS = b'"2024-04-06T11:54:26.839159730Z"'

TRADE: Pairs = [
    ("T", b'"t"'),
    ("S", b'"MSFT"'),
    ("i", b"96921"),
    ("x", b'"D"'),
    ("p", b"126.55"),
    ("s", b"1"),
    ("c", b'["@","I"]'),
    ("t", TS),
    ("z", b'"C"'),
]
QUOTE: Pairs = [
    ("T", b'"q"'),
    ("S", b'"AAPL"'),
    ("bx", b'"W"'),
    ("bp", b"123.25"),
    ("bs", b"4"),
    ("ax", b'"Q"'),
    ("ap", b"123.5"),
    ("as", b"1"),
    ("c", b'["R"]'),
    ("t", TS),
    ("z", b'"A"'),
]
STATUS: Pairs = [("T", b'"success"'), ("msg", b'"authenticated"')]
BAR: Pairs = [("T", b'"b"'), ("S", b'"MSFT"'), ("o", b"1"), ("h", b"2"), ("c", b"2")]

#: Values that are wrong somewhere, or right only in some fields, or that only
#: the JSON text can carry: each goes into every field of both messages.
TRICKY: list[bytes] = [
    *TRICKY_SCALARS,
    TS,
    b'"2024-04-06T11:54:26Z"',
    b'"2024-04-06T11:54:26.8Z"',
    b'"2024-04-06T11:54:26.8391597301Z"',
    b'"2024-04-06T11:54:26.839+00:00"',
    b'"2024-04-06 11:54:26.839Z"',
    b'"2024-04-06T11:54:26.\\u0663Z"',
    b'"1989-12-31T23:59:59.999999999Z"',
    b'"2200-01-01T00:00:00Z"',
    b'"9999-12-31T23:59:59Z"',
    b"1712413506",
    b'"t"',
    b'"q"',
    b'["@"]',
    *TRICKY_STRINGS_AND_CONTAINERS,
]


def _per_message(frame: bytes | str, ts_recv: int) -> list[Any]:
    """The definition of what a frame means: a fresh protocol's per-message decoder."""
    protocol = AlpacaProtocol(key="k", secret="s", encoding="json")
    return protocol._receive_per_message(frame, ts_recv)


#: The typed fast path held to the per-message decoder.
FAST_PATH = Differential(fast=typed_json_stock_frame, slow=_per_message)


def test_typed_path_takes_the_common_frame_and_builds_the_same_events() -> None:
    frame = encode([TRADE, QUOTE] * 10)
    assert FAST_PATH.agrees(frame)
    assert FAST_PATH.agrees(frame.decode())
    items = AlpacaProtocol(key="k", secret="s", encoding="json").receive(frame, TS_RECV)
    assert [type(i) for i in items] == [Trade, Quote] * 10


def test_typed_path_takes_an_empty_frame_and_absent_optional_fields() -> None:
    assert FAST_PATH.agrees(b"[]")
    optional = {"i", "x", "c", "z", "bx", "ax"}
    bare_trade = [kv for kv in TRADE if kv[0] not in optional]
    bare_quote = [kv for kv in QUOTE if kv[0] not in optional]
    null_conditions = [(k, b"null" if k == "c" else v) for k, v in TRADE]
    text_id = [(k, b'"abc"' if k == "i" else v) for k, v in TRADE]
    assert FAST_PATH.agrees(encode([bare_trade, bare_quote, null_conditions, text_id]))


@pytest.mark.parametrize("kind", ["T", "Q"])
def test_typed_path_declines_frames_it_does_not_model(kind: str) -> None:
    message = TRADE if kind == "T" else QUOTE
    crypto_trade = [*TRADE, ("tks", b'"B"')]
    for other in (STATUS, BAR, crypto_trade, [("zz", b"1"), *message]):
        assert not FAST_PATH.agrees(encode([message, other]))
    assert not FAST_PATH.agrees(b'{"T":"t"}')
    assert not FAST_PATH.agrees(encode([message]) + b" x")


@pytest.mark.parametrize(
    ("base", "key"),
    [(m, k) for m in (TRADE, QUOTE) for k, _ in m[1:]]
    + [(TRADE, "tks"), (QUOTE, "i")],
)
def test_each_tricky_value_in_each_field_is_declined_or_decoded_alike(
    base: Pairs, key: str
) -> None:
    """Every value of TRICKY in the field ``key``, alone, also absent and duplicated (first
    and last): the fast path declines or agrees, and it takes at least the valid ones."""
    variants = tricky_variants(base, key, TRICKY)
    taken = sum(FAST_PATH.agrees(encode([base, variant])) for variant in variants)
    assert taken >= 1


_TEXT = st.text(max_size=3)
_TS = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2199, 12, 31)
).flatmap(
    lambda moment: st.sampled_from(["", ".1", ".123456", ".123456789"]).map(
        lambda fraction: moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"
    )
)
_COMMON = {
    "S": token(st.text(min_size=1, max_size=5)),
    "t": token(_TS),
    "z": token(_TEXT),
    "c": token(st.one_of(st.none(), _TEXT, st.lists(_TEXT, max_size=3))),
}
_TRADE = Kind(
    tag=b'"t"',
    fields={
        **_COMMON,
        "x": token(_TEXT),
        "i": token(st.one_of(st.none(), st.integers(0, 2**63 - 1), _TEXT)),
        "p": token(PRICE),
        "s": token(PRICE),
    },
    optional=frozenset({"c", "x", "i", "z"}),
)
_QUOTE = Kind(
    tag=b'"q"',
    fields={
        **_COMMON,
        "bx": token(_TEXT),
        "ax": token(_TEXT),
        "bp": token(PRICE),
        "ap": token(PRICE),
        "bs": token(PRICE),
        "as": token(PRICE),
    },
    optional=frozenset({"c", "bx", "ax", "z"}),
)
_MESSAGES = stock_messages(
    tag_key="T",
    trade=_TRADE,
    quote=_QUOTE,
    others=[STATUS, BAR, [("T", b'"l"')], [("T", b"7")], []],
    extra_keys=["zz", "tks", "i", "x", "bx"],
    tricky=TRICKY,
)


@settings(max_examples=5 * settings().max_examples)
@given(st.lists(_MESSAGES, max_size=4), st.booleans())
def test_typed_path_declines_or_gives_exactly_the_per_message_items(
    messages: list[Pairs], as_text: bool
) -> None:
    """Differential property: for any frame of stock trades, quotes, statuses and other
    messages, each field drawn mostly valid but also of the wrong type or out of range
    (1e999, negative sizes, bools, numbers for text, integers past int64, empty symbols,
    timestamps outside 1990..2200 or not RFC 3339), absent, duplicated or joined by unknown
    keys, keys in any order, sent as bytes or text: ``typed_json_stock_frame`` returns
    ``None``, or a list equal to ``AlpacaProtocol._receive_per_message``'s, item for item,
    with every
    field of the same type and repr. (Random frames rarely hold just the one bad value a
    looser decoder would let through; the test above tries each such value in each field.)"""
    FAST_PATH.agrees_sent_as(encode(messages), text=as_text)


def test_typed_path_takes_integer_prices_and_any_conditions_list() -> None:
    """The properties are only as good as what the fast path takes: valid variants pass."""
    trades = [[*TRADE[:6], ("c", orjson.dumps(c)), *TRADE[7:]] for c in ([], "@", ["@", "I"])]
    quotes = [[(k, v) for k, v in QUOTE if k != "bp"] + [("bp", p)] for p in (b"1", b"0.5")]
    for combo in itertools.product(trades, quotes):
        assert FAST_PATH.agrees(encode(list(combo)))
