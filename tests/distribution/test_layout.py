"""The stream layout and the entry encoding, without a server: names, ids, positions, bytes."""

from __future__ import annotations

import math
import zlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from puffin_trio import CodecError, ConfigurationError, Quote, Status, Trade, codec
from puffin_trio.events import Event
from puffin_trio.redis._encoding import TAGS, decode_batch, encode_batch, sample
from puffin_trio.redis._layout import (
    SHARDS,
    Layout,
    Position,
    entry_id,
    id_before,
    parse_id,
    shard_of,
    subscribed_suffixes,
)
from puffin_trio.testing import events

QUOTE = Quote(
    provider="alpaca", symbol="AAPL", ts_event=1, ts_recv=2, bid=1.5, ask=1.75, bid_size=3.0,
    ask_size=4.0, conditions=("R",),
)


def same(a: list[Event], b: list[Event | None]) -> bool:
    """Equal event by event, NaN included (compared through the codec's exact bytes)."""
    def exact(event: Event | None) -> bytes:
        assert event is not None
        return codec.dumps(event, format="msgpack")

    return len(a) == len(b) and all(
        type(x) is type(y) and exact(x) == exact(y) for x, y in zip(a, b, strict=True)
    )


@given(st.lists(events(), max_size=8))
def test_any_batch_of_events_round_trips_exactly(batch: list[Event]) -> None:
    """decode(encode(events)) gives back equal events, of the same classes, in order."""
    assert same(batch, decode_batch(encode_batch(sample(batch))))


def test_an_integer_where_a_float_is_expected_is_accepted_as_that_float() -> None:
    values = list(sample([QUOTE])[1])
    values[4] = 2  # bid
    [decoded] = decode_batch(msgpack.packb([TAGS[Quote], values]))
    assert isinstance(decoded, Quote) and decoded.bid == 2.0 and type(decoded.bid) is float


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({4: "1.5"}, "bid"),
        ({2: 2**63}, "ts_event"),
        ({10: ["R", 5]}, "conditions"),
        ({0: None}, "provider"),
    ],
)
def test_a_wrong_value_is_a_codec_error_naming_the_field(
    change: dict[int, object], message: str
) -> None:
    values = list(sample([QUOTE])[1])
    for index, value in change.items():
        values[index] = value
    with pytest.raises(CodecError, match=message):
        decode_batch(msgpack.packb([TAGS[Quote], values]))


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",  # never used in msgpack
        msgpack.packb({"not": "an array"}),
        msgpack.packb([TAGS[Quote]]),  # odd length
        msgpack.packb([99, [1, 2]]),  # unknown tag
        msgpack.packb(["quote", [1, 2]]),  # a tag must be an index
        msgpack.packb([TAGS[Quote], [1, 2, 3]]),  # wrong arity
        msgpack.packb([TAGS[Status], ["p", 1, 2, "sleeping", "", "", 0, "", None]]),  # enum
    ],
)
def test_a_bad_payload_is_a_codec_error(payload: bytes) -> None:
    with pytest.raises(CodecError):
        decode_batch(payload)
    with pytest.raises(CodecError):
        decode_batch(payload, lambda tag, values: True)


def test_a_filter_sees_raw_values_and_leaves_a_hole() -> None:
    trade = Trade(provider="ib", symbol="MSFT", ts_event=3, ts_recv=4, price=1.0, size=2.0)
    decoded = decode_batch(encode_batch(sample([QUOTE, trade])), lambda tag, v: v[1] == "MSFT")
    assert decoded == [None, trade]


def test_shards_are_crc32_and_stable_across_processes() -> None:
    assert shard_of("AAPL") == zlib.crc32(b"AAPL") % SHARDS
    assert {shard_of(s) for s in ("AAPL", "MSFT", "BTC/USD")} <= set(range(SHARDS))
    assert subscribed_suffixes(["AAPL"], ["quotes", "trades"]) == [
        "c", f"q{shard_of('AAPL'):02d}", f"t{shard_of('AAPL'):02d}",
    ]
    assert len(subscribed_suffixes(None, ["quotes"])) == 1 + SHARDS


def test_key_names_and_bad_prefixes() -> None:
    layout = Layout("md")
    assert layout.key("c") == "md:control"
    assert layout.key("q07") == "md:quotes:07"
    assert layout.clock == "md:clock" and layout.meta == "md:layout"
    for prefix in ("", "a b", "x" * 65, "a:b", 7):
        with pytest.raises(ConfigurationError):
            Layout(prefix)  # type: ignore[arg-type]


@given(st.integers(1, 2**40), st.integers(0, 2**62))
def test_id_before_is_the_largest_id_below(epoch: int, g: int) -> None:
    """id_before(e, g) < (e, g), and no id lies between them."""
    before = parse_id(id_before(epoch, g))
    assert before < (epoch, g)
    assert before == ((epoch, g - 1) if g else (epoch - 1, 2**64 - 1))
    assert parse_id(entry_id(epoch, g)) == (epoch, g)


@given(
    st.integers(0, 2**45),
    st.integers(0, 2**50),
    st.dictionaries(
        st.sampled_from(subscribed_suffixes(None, ["trades", "quotes", "statuses"])),
        st.integers(0, 2**50),
    ),
)
def test_positions_round_trip_through_their_text(
    epoch: int, tx: int, counts: dict[str, int]
) -> None:
    """Position.decode(p.encode()) == p for any position."""
    position = Position(epoch, tx, counts)
    assert Position.decode(position.encode()) == position


@pytest.mark.parametrize(
    "text", ["", "latest-ish", "p2:1:2:", "p1:x:2:", "p1:1:2:q99=3", "p1:1:2:z00=1", "p1:1:-2:"]
)
def test_a_malformed_position_is_a_configuration_error(text: str) -> None:
    with pytest.raises(ConfigurationError):
        Position.decode(text)


def test_non_finite_floats_survive() -> None:
    quote = Quote(provider="p", symbol="s", ts_event=1, ts_recv=1, bid=math.inf, ask=-0.0,
                  bid_size=math.nan, ask_size=5e-324)  # fmt: skip
    [back] = decode_batch(encode_batch(sample([quote])))
    assert same([quote], [back])
