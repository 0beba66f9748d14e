"""The typed fast path of Alpaca's JSON stock trades and quotes against the per-message decoder.

``AlpacaProtocol.receive`` first offers a JSON stock frame to
:func:`~puffin_trio.providers.alpaca._typed.typed_json_stock_frame`, which
either declines it or returns its events; the per-message decoder (the trust
checks of ``_values``, the timestamp reader of ``_timestamps``) stays the
definition of what a frame means. These tests hold the fast path to it, value
by value, on frames written as raw JSON text, so that values no encoder writes
(``1e999``, a lone surrogate, invalid UTF-8, duplicate keys) are among them.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from puffin_trio.events import Quote, Trade
from puffin_trio.providers.alpaca import AlpacaProtocol
from puffin_trio.providers.alpaca._typed import typed_json_stock_frame

TS_RECV = 1_700_000_000_123_456_789
TS = b'"2024-04-06T11:54:26.839159730Z"'

#: A message as (key, raw JSON value) pairs, so keys may repeat and values be any text.
Pairs = list[tuple[str, bytes]]

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
    b"null",
    b"true",
    b"false",
    b"0",
    b"-1",
    b"1023",
    b"3",
    b"1024",
    b"4",
    b"2.0",
    b"-0.0",
    b"0.0",
    b"1e-400",
    b"-1e-400",
    b"1e308",
    b"1.7976931348623157e308",
    b"1e999",
    b"-1e999",
    b"1E400",
    b"NaN",
    b"Infinity",
    b"9007199254740993",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"99999999999999999999999",
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
    b'""',
    b'"A"',
    b'"1.5"',
    b'"\\ud800"',
    b'"\xff"',
    b'"\\u0000"',
    b"[]",
    b"[1]",
    b"[1024]",
    b"[-1]",
    b'["1"]',
    b"[null]",
    b"[1.0]",
    b"[true]",
    b"{}",
    b"[[[[]]]]",
]


def encode(messages: list[Pairs]) -> bytes:
    body = b",".join(
        b"{" + b",".join(orjson.dumps(k) + b":" + v for k, v in pairs) + b"}" for pairs in messages
    )
    return b"[" + body + b"]"


def signature(items: list[Any]) -> list[Any]:
    """Each item's class, each field's type and repr (``-0.0`` and ``0.0`` differ, 1 and 1.0)."""
    out: list[Any] = []
    for item in items:
        if attrs.has(type(item)):
            values = attrs.astuple(item, recurse=False)
            out.append((type(item), [(type(v), repr(v)) for v in values]))
        else:
            out.append((type(item), repr(item)))
    return out


def check_agrees(frame: bytes | str) -> bool:
    """The property: declined, or exactly what the per-message decoder gives. True if taken."""
    fast = typed_json_stock_frame(frame, TS_RECV)
    slow = AlpacaProtocol(key="k", secret="s", encoding="json")._receive_per_message(
        frame, TS_RECV
    )
    if fast is None:
        return False
    assert fast == slow, frame
    assert signature(fast) == signature(slow), frame
    return True


def test_typed_path_takes_the_common_frame_and_builds_the_same_events() -> None:
    frame = encode([TRADE, QUOTE] * 10)
    assert check_agrees(frame)
    assert check_agrees(frame.decode())
    items = AlpacaProtocol(key="k", secret="s", encoding="json").receive(frame, TS_RECV)
    assert [type(i) for i in items] == [Trade, Quote] * 10


def test_typed_path_takes_an_empty_frame_and_absent_optional_fields() -> None:
    assert check_agrees(b"[]")
    optional = {"i", "x", "c", "z", "bx", "ax"}
    bare_trade = [kv for kv in TRADE if kv[0] not in optional]
    bare_quote = [kv for kv in QUOTE if kv[0] not in optional]
    null_conditions = [(k, b"null" if k == "c" else v) for k, v in TRADE]
    text_id = [(k, b'"abc"' if k == "i" else v) for k, v in TRADE]
    assert check_agrees(encode([bare_trade, bare_quote, null_conditions, text_id]))


@pytest.mark.parametrize("kind", ["T", "Q"])
def test_typed_path_declines_frames_it_does_not_model(kind: str) -> None:
    message = TRADE if kind == "T" else QUOTE
    crypto_trade = [*TRADE, ("tks", b'"B"')]
    for other in (STATUS, BAR, crypto_trade, [("zz", b"1"), *message]):
        assert not check_agrees(encode([message, other]))
    assert not check_agrees(b'{"T":"t"}')
    assert not check_agrees(encode([message]) + b" x")


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
    original = dict(base).get(key)
    variants: list[Pairs] = [[kv for kv in base if kv[0] != key]]
    if original is not None:
        variants.append([*base, (key, original)])
    for value in TRICKY:
        replaced = [(k, value if k == key else v) for k, v in base]
        if key not in dict(base):
            replaced.append((key, value))
        variants.append(replaced)
        if original is not None:
            variants.append([*base, (key, value)])
            variants.append([(key, value), *base])
    taken = sum(check_agrees(encode([base, variant])) for variant in variants)
    assert taken >= 1


#: Anything a field may hold, valid or not.
_ANYTHING = st.one_of(
    st.sampled_from(TRICKY),
    st.integers(-(2**70), 2**70).map(lambda n: str(n).encode()),
    st.floats(allow_nan=False, allow_infinity=False).map(orjson.dumps),
    st.text(max_size=4).map(orjson.dumps),
    st.lists(st.integers(-2, 1100), max_size=3).map(orjson.dumps),
)


def _token(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return valid.map(orjson.dumps)


_PRICE = st.one_of(st.floats(0, 1e6), st.integers(0, 10**6), st.floats(0, 1e308))
_TEXT = st.text(max_size=3)
_TS = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2199, 12, 31)
).flatmap(
    lambda moment: st.sampled_from(["", ".1", ".123456", ".123456789"]).map(
        lambda fraction: moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"
    )
)
_COMMON = {
    "S": _token(st.text(min_size=1, max_size=5)),
    "t": _token(_TS),
    "z": _token(_TEXT),
    "c": _token(st.one_of(st.none(), _TEXT, st.lists(_TEXT, max_size=3))),
}
_TRADE_FIELDS = {
    **_COMMON,
    "x": _token(_TEXT),
    "i": _token(st.one_of(st.none(), st.integers(0, 2**63 - 1), _TEXT)),
    "p": _token(_PRICE),
    "s": _token(_PRICE),
}
_QUOTE_FIELDS = {
    **_COMMON,
    "bx": _token(_TEXT),
    "ax": _token(_TEXT),
    "bp": _token(_PRICE),
    "ap": _token(_PRICE),
    "bs": _token(_PRICE),
    "as": _token(_PRICE),
}
_OPTIONAL = {id(_TRADE_FIELDS): {"c", "x", "i", "z"}, id(_QUOTE_FIELDS): {"c", "bx", "ax", "z"}}
#: Rolls of a die, uniform (integers() favours its bounds, which would make most rolls 0).
_ROLL = st.sampled_from(range(60))


@st.composite
def _message(draw: st.DrawFn, ev: bytes, fields: dict[str, st.SearchStrategy[bytes]]) -> Pairs:
    """Each field valid but at most one: anything, absent or repeated; maybe an unknown key."""
    optional = _OPTIONAL[id(fields)]
    pairs: Pairs = [("T", ev)]
    pairs += [(k, draw(v)) for k, v in fields.items() if k not in optional or draw(st.booleans())]
    if draw(st.booleans()):
        index = draw(st.sampled_from(range(len(pairs))))
        key = pairs[index][0]
        how = draw(st.sampled_from(["anything", "absent", "before", "after"]))
        value = draw(_ANYTHING)
        if how == "anything":
            pairs[index] = (key, value)
        elif how == "absent":
            del pairs[index]
        else:
            pairs.insert(0 if how == "before" else len(pairs), (key, value))
    if draw(_ROLL) < 3:
        pairs.append((draw(st.sampled_from(["zz", "tks", "i", "x", "bx"])), draw(_ANYTHING)))
    return draw(st.permutations(pairs))


_OTHER = st.sampled_from([STATUS, BAR, [("T", b'"l"')], [("T", b"7")], []])
_MESSAGES = _ROLL.flatmap(
    lambda roll: _OTHER
    if roll < 3
    else _message(b'"t"', _TRADE_FIELDS)
    if roll % 2
    else _message(b'"q"', _QUOTE_FIELDS)
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
    frame = encode(messages)
    if as_text:
        try:
            check_agrees(frame.decode())
        except UnicodeDecodeError:
            check_agrees(frame.decode("utf-8", "surrogateescape"))
    else:
        check_agrees(frame)


def test_typed_path_takes_integer_prices_and_any_conditions_list() -> None:
    """The properties are only as good as what the fast path takes: valid variants pass."""
    trades = [[*TRADE[:6], ("c", orjson.dumps(c)), *TRADE[7:]] for c in ([], "@", ["@", "I"])]
    quotes = [[(k, v) for k, v in QUOTE if k != "bp"] + [("bp", p)] for p in (b"1", b"0.5")]
    for combo in itertools.product(trades, quotes):
        assert check_agrees(encode(list(combo)))
