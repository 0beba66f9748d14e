"""What the typed-decoder tests share: frames written as raw JSON, and the differential check.

A provider's typed fast path either declines a frame or gives exactly what its
per-message decoder gives (:class:`Differential`). Frames are built pair by
pair as raw JSON text (:func:`encode`), so that values no encoder writes
(``1e999``, a lone surrogate, invalid UTF-8, duplicate keys) are among them.
The tricky values and the Hypothesis strategy of messages are parametrised by
what differs between providers (the tag's key, each kind's fields, the other
messages); this module knows no provider's wire format itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import orjson
from hypothesis import strategies as st

#: The receive time handed to both decoders.
TS_RECV = 1_700_000_000_123_456_789

#: A message as (key, raw JSON value) pairs, so keys may repeat and values be any text.
Pairs = list[tuple[str, bytes]]

#: Tricky values of every provider, first part: JSON literals, and numbers at the edges of
#: small codes (1023, 1024), of the floats (subnormal, largest, overflowing), of the
#: integers a float holds exactly, and of int64 and uint64.
TRICKY_SCALARS: tuple[bytes, ...] = (
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
)
#: Tricky values of every provider, last part: strings (empty, numeric, a lone surrogate,
#: invalid UTF-8, NUL) and arrays and objects of the wrong shape.
TRICKY_STRINGS_AND_CONTAINERS: tuple[bytes, ...] = (
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
)


def encode(messages: Sequence[Pairs]) -> bytes:
    """A frame: the JSON array of the messages, each pair written as given."""
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


@attrs.frozen
class Differential:
    """A typed fast path (``fast``, ``None`` when it declines) held to the per-message decoder
    that defines what a frame means (``slow``)."""

    fast: Callable[[bytes | str, int], list[Any] | None]
    slow: Callable[[bytes | str, int], list[Any]]

    def agrees(self, frame: bytes | str) -> bool:
        """The property: declined, or exactly what the per-message decoder gives. True if taken."""
        fast = self.fast(frame, TS_RECV)
        slow = self.slow(frame, TS_RECV)
        if fast is None:
            return False
        assert fast == slow, frame
        assert signature(fast) == signature(slow), frame
        return True

    def agrees_sent_as(self, frame: bytes, *, text: bool) -> bool:
        """:meth:`agrees` on the frame sent as bytes, or as text (invalid UTF-8 as surrogates)."""
        if not text:
            return self.agrees(frame)
        try:
            decoded = frame.decode()
        except UnicodeDecodeError:
            decoded = frame.decode("utf-8", "surrogateescape")
        return self.agrees(decoded)


def tricky_variants(base: Pairs, key: str, tricky: Sequence[bytes]) -> list[Pairs]:
    """``base`` with its field ``key`` absent and duplicated, and each tricky value in it: in
    place of the original (added if ``base`` has none), and duplicated before and after it."""
    original = dict(base).get(key)
    variants: list[Pairs] = [[kv for kv in base if kv[0] != key]]
    if original is not None:
        variants.append([*base, (key, original)])
    for value in tricky:
        if original is None:
            variants.append([*base, (key, value)])
        else:
            replaced = [(k, value if k == key else v) for k, v in base]
            variants += [replaced, [*base, (key, value)], [(key, value), *base]]
    return variants


def token(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """The raw JSON of valid values."""
    return valid.map(orjson.dumps)


#: Valid prices and sizes: floats up to 1e308 and integers, never negative.
PRICE = st.one_of(st.floats(0, 1e6), st.integers(0, 10**6), st.floats(0, 1e308))
#: Rolls of a die, uniform (integers() favours its bounds, which would make most rolls 0).
ROLL = st.sampled_from(range(60))


def anything(tricky: Sequence[bytes]) -> st.SearchStrategy[bytes]:
    """Anything a field may hold, valid or not: a tricky value, or any number, text or list."""
    return st.one_of(
        st.sampled_from(tricky),
        st.integers(-(2**70), 2**70).map(lambda n: str(n).encode()),
        st.floats(allow_nan=False, allow_infinity=False).map(orjson.dumps),
        st.text(max_size=4).map(orjson.dumps),
        st.lists(st.integers(-2, 1100), max_size=3).map(orjson.dumps),
    )


@attrs.frozen
class Kind:
    """A message the fast path models: its tag's raw JSON value, a strategy of valid raw values
    for each field, and the fields that may be absent."""

    tag: bytes
    fields: Mapping[str, st.SearchStrategy[bytes]]
    optional: frozenset[str]


def stock_messages(
    *,
    tag_key: str,
    trade: Kind,
    quote: Kind,
    others: Sequence[Pairs],
    extra_keys: Sequence[str],
    tricky: Sequence[bytes],
) -> st.SearchStrategy[Pairs]:
    """A provider's messages: 3 rolls in 60 one of ``others``, else a trade or a quote (half
    each), tagged under ``tag_key``, whose fields are each valid but at most one: that one
    holds anything (:func:`anything` of ``tricky``), is absent or is repeated; 3 rolls in 60
    add one of ``extra_keys`` holding anything; keys in any order."""
    junk = anything(tricky)

    @st.composite
    def message(draw: st.DrawFn, kind: Kind) -> Pairs:
        pairs: Pairs = [(tag_key, kind.tag)]
        pairs += [
            (k, draw(v))
            for k, v in kind.fields.items()
            if k not in kind.optional or draw(st.booleans())
        ]
        if draw(st.booleans()):
            index = draw(st.sampled_from(range(len(pairs))))
            key = pairs[index][0]
            how = draw(st.sampled_from(["anything", "absent", "before", "after"]))
            value = draw(junk)
            if how == "anything":
                pairs[index] = (key, value)
            elif how == "absent":
                del pairs[index]
            else:
                pairs.insert(0 if how == "before" else len(pairs), (key, value))
        if draw(ROLL) < 3:
            pairs.append((draw(st.sampled_from(extra_keys)), draw(junk)))
        return draw(st.permutations(pairs))

    other = st.sampled_from(others)
    return ROLL.flatmap(
        lambda roll: other if roll < 3 else message(trade) if roll % 2 else message(quote)
    )
