"""Specification of puffin_trio.codec: exact round trips, and strict rejection of bad bytes."""

from __future__ import annotations

import contextlib
import math
import re
from typing import Any, cast

import attrs
import msgpack
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from puffin_trio.codec import TYPE_TAGS, Format, converter, dumps, from_dict, loads, to_dict
from puffin_trio.errors import CodecError, ConfigurationError
from puffin_trio.events import (
    EVENT_TYPES,
    Bar,
    Event,
    Gap,
    GapReason,
    LimitBands,
    OrderBookUpdate,
    Quote,
    SessionState,
    Status,
    Trade,
    TradeCancel,
    TradeCorrection,
    TradingStatus,
)
from puffin_trio.testing._events import events, trades

FORMATS: tuple[Format, ...] = ("json", "msgpack")
NAN, INF = float("nan"), float("inf")
T0 = 1_700_000_000_000_000_000

TRADE = Trade(
    provider="alpaca",
    symbol="AAPL",
    ts_event=T0,
    ts_recv=T0 + 1_500,
    price=189.23,
    size=100.0,
    exchange="V",
    trade_id="52983525029461",
    conditions=("@", "T"),
    tape="C",
    seq=42,
)
#: One event of each type, every field away from its default.
EXAMPLES: dict[type, Any] = {
    Trade: TRADE,
    Quote: Quote(
        provider="polygon",
        symbol="MSFT",
        ts_event=T0,
        ts_recv=T0 + 1,
        bid=410.1,
        ask=410.12,
        bid_size=300.0,
        ask_size=0.5,
        bid_exchange="Q",
        ask_exchange="P",
        conditions=("R",),
        tape="C",
        seq=7,
    ),
    OrderBookUpdate: OrderBookUpdate(
        provider="sim",
        symbol="BTC/USD",
        ts_event=T0,
        ts_recv=T0,
        bids=((64_000.5, 0.25), (64_000.0, 0.0)),
        asks=((64_001.0, 1.125),),
        snapshot=True,
        seq=2**40,
    ),
    Bar: Bar(
        provider="alpaca",
        symbol="SPY",
        ts_event=T0,
        ts_recv=T0 + 60 * 10**9,
        open=500.0,
        high=501.5,
        low=499.25,
        close=501.0,
        volume=123_456.0,
        interval_s=60,
        trade_count=789,
        vwap=500.75,
        updated=True,
        seq=3,
    ),
    TradeCorrection: TradeCorrection(
        provider="alpaca",
        symbol="AAPL",
        ts_event=T0,
        ts_recv=T0,
        original_id="1",
        original_price=1.5,
        original_size=2.0,
        corrected_id="2",
        corrected_price=1.25,
        corrected_size=3.0,
        original_conditions=("@",),
        corrected_conditions=("F", "I"),
        exchange="N",
        tape="A",
        seq=9,
    ),
    TradeCancel: TradeCancel(
        provider="alpaca",
        symbol="AAPL",
        ts_event=T0,
        ts_recv=T0,
        trade_id="1",
        price=1.5,
        size=2.0,
        is_error=True,
        exchange="N",
        tape="A",
        seq=10,
    ),
    TradingStatus: TradingStatus(
        provider="alpaca",
        symbol="GME",
        ts_event=T0,
        ts_recv=T0,
        status_code="H",
        status_message="Trading Halt",
        reason_code="LUDP",
        reason_message="Volatility Trading Pause",
        tape="A",
        seq=11,
    ),
    LimitBands: LimitBands(
        provider="polygon",
        symbol="GME",
        ts_event=T0,
        ts_recv=T0,
        limit_up=30.5,
        limit_down=25.0,
        indicator="B",
        tape="A",
        seq=12,
    ),
    Status: Status(
        provider="alpaca",
        ts_event=T0,
        ts_recv=T0,
        state=SessionState.RECONNECTING,
        session="alpaca-0",
        detail="connection lost",
        attempt=3,
        symbol="",
        seq=13,
    ),
    Gap: Gap(
        provider="polygon",
        symbol="AAPL",
        ts_event=T0,
        ts_recv=T0,
        stream="polygon:T:AAPL",
        reason=GapReason.RECONNECT,
        expected=100,
        received=105,
        missing=5,
        window_start=T0 - 10**9,
        window_end=T0,
        seq=14,
    ),
}


def identical(a: object, b: object) -> bool:
    """Same types and values, where NaN equals NaN and ``-0.0`` differs from ``0.0``."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        assert isinstance(b, float)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, tuple):
        assert isinstance(b, tuple)
        return len(a) == len(b) and all(map(identical, a, b))
    if attrs.has(type(a)):
        return all(
            identical(getattr(a, field.name), getattr(b, field.name))
            for field in attrs.fields(cast(Any, type(a)))
        )
    return a == b


def round_trip(event: Event, fmt: Format) -> Event:
    return loads(dumps(event, format=fmt), format=fmt)


def encode(obj: object, fmt: Format) -> bytes:
    """Raw bytes for ``obj`` in ``fmt``, bypassing the codec (to forge bad input)."""
    return orjson.dumps(obj) if fmt == "json" else msgpack.packb(obj)


def wire(event: Event) -> dict[str, Any]:
    """The event's serialised map (tagged), to tamper with."""
    return orjson.loads(dumps(event))  # type: ignore[no-any-return]


# --- round trips ----------------------------------------------------------------------


def test_there_is_an_example_of_every_event_type() -> None:
    assert set(EXAMPLES) == set(EVENT_TYPES)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_every_event_type_round_trips_exactly(cls: type, fmt: Format) -> None:
    event = EXAMPLES[cls]
    assert identical(round_trip(event, fmt), event)


@pytest.mark.parametrize("fmt", FORMATS)
def test_events_with_only_required_fields_and_empty_tuples_round_trip(fmt: Format) -> None:
    event = OrderBookUpdate(provider="", symbol="", ts_event=0, ts_recv=0)
    assert event.bids == () and event.asks == ()
    assert identical(round_trip(event, fmt), event)


EXTREME_FLOATS = [
    1.7976931348623157e308,
    -1.7976931348623157e308,
    2.2250738585072014e-308,
    5e-324,
    -5e-324,
    0.0,
    -0.0,
    0.1,
    NAN,
    INF,
    -INF,
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("value", EXTREME_FLOATS, ids=repr)
def test_extreme_and_non_finite_floats_round_trip_bit_for_bit(value: float, fmt: Format) -> None:
    trade = attrs.evolve(TRADE, price=value, size=-value)
    book = attrs.evolve(EXAMPLES[OrderBookUpdate], bids=((value, 1.0), (2.0, value)))
    assert identical(round_trip(trade, fmt), trade)
    assert identical(round_trip(book, fmt), book)


@pytest.mark.parametrize(
    ("value", "spelling"), [(NAN, "NaN"), (INF, "Infinity"), (-INF, "-Infinity")]
)
def test_json_spells_non_finite_floats_as_strings_and_msgpack_keeps_them_as_floats(
    value: float, spelling: str
) -> None:
    trade = attrs.evolve(TRADE, price=value)
    book = attrs.evolve(EXAMPLES[OrderBookUpdate], asks=((value, 1.0),))
    assert orjson.loads(dumps(trade))["price"] == spelling
    assert orjson.loads(dumps(book))["asks"] == [[spelling, 1.0]]
    packed = msgpack.unpackb(dumps(trade, format="msgpack"))["price"]
    assert isinstance(packed, float) and identical(packed, value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_int64_extremes_round_trip(fmt: Format) -> None:
    event = attrs.evolve(
        EXAMPLES[Gap],
        ts_event=-(2**63),
        ts_recv=2**63 - 1,
        expected=-(2**63),
        received=2**63 - 1,
        seq=2**63 - 1,
    )
    assert identical(round_trip(event, fmt), event)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (Trade, "ts_event", 2**63),
        (Trade, "ts_recv", -(2**63) - 1),
        (Trade, "seq", 2**64),
        (Gap, "expected", 2**63),
        (Gap, "missing", 10**30),
        (Bar, "interval_s", -(2**70)),
    ],
)
def test_integers_outside_int64_are_refused_when_encoding(
    cls: type, field: str, value: int, fmt: Format
) -> None:
    event = attrs.evolve(EXAMPLES[cls], **{field: value})
    tag = TYPE_TAGS[cls]
    with pytest.raises(CodecError, match=rf"cannot encode {tag} event: {field}=.* 64-bit range"):
        dumps(event, format=fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "text",
    [
        "",
        "BTC/USD",
        "\U0001d504\U0001d504\U0001d513\U0001d50f",
        "🚀🌕",
        "株式",
        "a\x00b",
        "e\u0301",
    ],
)
def test_any_unicode_text_round_trips(text: str, fmt: Format) -> None:
    trade = attrs.evolve(TRADE, symbol=text, provider=text, conditions=(text, text))
    assert identical(round_trip(trade, fmt), trade)


@pytest.mark.parametrize("fmt", FORMATS)
def test_text_with_a_lone_surrogate_is_refused_when_encoding(fmt: Format) -> None:
    with pytest.raises(CodecError, match=f"cannot encode trade event as {fmt}"):
        dumps(attrs.evolve(TRADE, symbol="\ud800"), format=fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_enums_come_back_as_enum_members(fmt: Format) -> None:
    status = round_trip(EXAMPLES[Status], fmt)
    gap = round_trip(EXAMPLES[Gap], fmt)
    assert isinstance(status, Status) and type(status.state) is SessionState
    assert isinstance(gap, Gap) and type(gap.reason) is GapReason


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("reason", list(GapReason), ids=str)
def test_every_gap_reason_round_trips(fmt: Format, reason: GapReason) -> None:
    gap = attrs.evolve(EXAMPLES[Gap], reason=reason)
    back = round_trip(gap, fmt)
    assert back == gap and back.reason is reason  # type: ignore[union-attr]
    assert wire(gap)["reason"] == str(reason)


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_every_serialised_event_carries_its_snake_case_type_tag(cls: type) -> None:
    expected = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
    assert TYPE_TAGS[cls] == expected
    assert wire(EXAMPLES[cls])["type"] == expected
    assert msgpack.unpackb(dumps(EXAMPLES[cls], format="msgpack"))["type"] == expected


@pytest.mark.parametrize("fmt", FORMATS)
def test_fields_with_defaults_may_be_omitted(fmt: Format) -> None:
    minimal = {
        "type": "trade",
        "provider": "p",
        "symbol": "S",
        "ts_event": 1,
        "ts_recv": 2,
        "price": 1.5,
        "size": 2.0,
    }
    assert loads(encode(minimal, fmt), format=fmt) == Trade(
        provider="p", symbol="S", ts_event=1, ts_recv=2, price=1.5, size=2.0
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_integer_where_a_float_is_expected_becomes_a_float(fmt: Format) -> None:
    obj = wire(TRADE) | {"price": 100, "size": -3}
    trade = loads(encode(obj, fmt), format=fmt)
    assert isinstance(trade, Trade)
    assert identical(trade.price, 100.0) and identical(trade.size, -3.0)


def test_loads_accepts_any_bytes_like_buffer() -> None:
    data = dumps(TRADE)
    assert loads(bytearray(data)) == TRADE
    assert loads(memoryview(data)) == TRADE


def test_to_dict_gives_a_tagged_plain_dict_that_from_dict_reads_back() -> None:
    obj = to_dict(EXAMPLES[Status])
    assert obj["type"] == "status"
    assert type(obj["state"]) is str
    snapshot = dict(obj)
    assert from_dict(obj) == EXAMPLES[Status]
    assert obj == snapshot, "from_dict must not modify its argument"


def test_the_converter_structures_what_it_unstructures() -> None:
    for cls, event in EXAMPLES.items():
        assert converter.structure(converter.unstructure(event), cls) == event


# --- refusing to encode ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("obj", [None, {"type": "trade"}, "trade", object()], ids=repr)
def test_dumps_refuses_what_is_not_an_event(obj: Any, fmt: Format) -> None:
    with pytest.raises(CodecError, match="not an event"):
        dumps(obj, format=fmt)
    with pytest.raises(CodecError, match="not an event"):
        to_dict(obj)


def test_an_unknown_format_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown codec format 'yaml'"):
        dumps(TRADE, format="yaml")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unknown codec format 'yaml'"):
        loads(b"{}", format="yaml")  # type: ignore[arg-type]


# --- refusing to decode: the bytes ----------------------------------------------------


@pytest.mark.parametrize(
    "data", [b"", b"{", b"\xff\xfe", b"NaN", b"{'type': 'trade'}", b"1e400", b"[1,]"]
)
def test_bytes_that_are_not_json_are_refused(data: bytes) -> None:
    with pytest.raises(CodecError, match="not valid JSON"):
        loads(data)


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x81", b"\xdb\x00\x00\x00\x05ab"])
def test_bytes_that_are_not_msgpack_are_refused(data: bytes) -> None:
    with pytest.raises(CodecError, match="not valid msgpack"):
        loads(data, format="msgpack")


@pytest.mark.parametrize("fmt", FORMATS)
def test_trailing_bytes_after_an_event_are_refused(fmt: Format) -> None:
    with pytest.raises(CodecError, match="not valid"):
        loads(dumps(TRADE, format=fmt) + b"\x00", format=fmt)


@given(event=events(), fmt=st.sampled_from(FORMATS), data=st.data())
def test_every_truncation_of_an_event_is_refused(event: Event, fmt: Format, data: Any) -> None:
    """For any event and format, every strict prefix of its bytes raises CodecError."""
    encoded = dumps(event, format=fmt)
    cut = data.draw(st.integers(0, len(encoded) - 1), label="cut")
    with pytest.raises(CodecError, match="not valid"):
        loads(encoded[:cut], format=fmt)


@given(data=st.binary(max_size=64), fmt=st.sampled_from(FORMATS))
def test_arbitrary_bytes_give_an_event_or_a_codec_error(data: bytes, fmt: Format) -> None:
    """For any bytes, loads either returns an event or raises CodecError, nothing else."""
    with contextlib.suppress(CodecError):
        assert isinstance(loads(data, format=fmt), EVENT_TYPES)


# --- refusing to decode: the structure ------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("obj", [[1, 2], "trade", 42, None, True, 1.5], ids=repr)
def test_a_top_level_that_is_not_a_map_is_refused(obj: object, fmt: Format) -> None:
    with pytest.raises(CodecError, match="expected a map with a 'type' tag at the top level"):
        loads(encode(obj, fmt), format=fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_map_without_a_type_tag_is_refused(fmt: Format) -> None:
    obj = wire(TRADE)
    del obj["type"]
    with pytest.raises(CodecError, match=r"missing 'type' tag .*trade, quote, order_book_update"):
        loads(encode(obj, fmt), format=fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("tag", ["trades", "Trade", "", 5, ["trade"], {"t": 1}], ids=repr)
def test_an_unknown_type_tag_is_refused(tag: object, fmt: Format) -> None:
    obj = wire(TRADE) | {"type": tag}
    with pytest.raises(CodecError, match=r"unknown 'type' tag .*\(one of trade, quote"):
        loads(encode(obj, fmt), format=fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("field", ["provider", "symbol", "ts_event", "ts_recv", "price", "size"])
def test_a_missing_required_field_is_refused_by_name(field: str, fmt: Format) -> None:
    obj = wire(TRADE)
    del obj[field]
    with pytest.raises(
        CodecError, match=rf"invalid trade event: required field missing @ trade\.{field}$"
    ):
        loads(encode(obj, fmt), format=fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_unknown_field_is_refused_not_ignored(fmt: Format) -> None:
    obj = wire(TRADE) | {"colour": "red", "venue": 1}
    with pytest.raises(CodecError, match=r"unknown field\(s\) 'colour', 'venue' @ trade$"):
        loads(encode(obj, fmt), format=fmt)


WRONG_FIELDS = [
    (Trade, "price", "1.5", "expected a number"),
    (Trade, "price", "nan", "expected a number"),
    (Trade, "price", None, "expected a number"),
    (Trade, "price", True, "expected a number"),
    (Trade, "size", [1.0], "expected a number"),
    (Trade, "ts_event", 1.5, "expected an integer"),
    (Trade, "ts_event", 3.0, "expected an integer"),
    (Trade, "ts_event", "3", "expected an integer"),
    (Trade, "ts_recv", True, "expected an integer"),
    (Trade, "ts_event", 2**63, "outside the signed 64-bit range"),
    (Trade, "seq", False, "expected an integer or null"),
    (Trade, "seq", 1.0, "expected an integer or null"),
    (Trade, "seq", 2**64 - 1, "outside the signed 64-bit range"),
    (Trade, "provider", 5, "expected a string"),
    (Trade, "symbol", None, "expected a string"),
    (Trade, "conditions", "abc", "expected an array of strings"),
    (Trade, "conditions", ["@", 1], "element 1: expected a string"),
    (Trade, "conditions", {"a": "b"}, "expected an array of strings"),
    (OrderBookUpdate, "snapshot", 1, "expected a boolean"),
    (OrderBookUpdate, "snapshot", "true", "expected a boolean"),
    (OrderBookUpdate, "bids", "x", "expected an array of [price, size] pairs"),
    (OrderBookUpdate, "bids", [[1.0]], "level 0: expected a [price, size] pair"),
    (OrderBookUpdate, "bids", [[1.0, 2.0], [1.0, 2.0, 3.0]], "level 1: expected a [price, size]"),
    (OrderBookUpdate, "asks", [[1.0, "2"]], "level 0: expected a number"),
    (OrderBookUpdate, "asks", [{"price": 1.0}], "level 0: expected a [price, size] pair"),
    (Bar, "interval_s", 60.0, "expected an integer"),
    (Bar, "updated", 0, "expected a boolean"),
    (Status, "state", "sleeping", "expected one of 'connecting', 'authenticating'"),
    (Status, "state", 1, "expected one of"),
    (Status, "state", "RECONNECTING", "expected one of"),
    (Gap, "reason", "gap", "expected one of 'sequence', 'reconnect', 'overflow'"),
    (Gap, "expected", "100", "expected an integer or null"),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("cls", "field", "value", "problem"),
    WRONG_FIELDS,
    ids=[f"{c.__name__}.{f}={v!r}" for c, f, v, _ in WRONG_FIELDS],
)
def test_a_field_of_the_wrong_type_is_refused_by_name(
    cls: type, field: str, value: object, problem: str, fmt: Format
) -> None:
    tag = TYPE_TAGS[cls]
    obj = wire(EXAMPLES[cls]) | {field: value}
    pattern = rf"^invalid {tag} event: .*{re.escape(problem)}.* @ {tag}\.{field}$"
    with pytest.raises(CodecError, match=pattern):
        loads(encode(obj, fmt), format=fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_bad_field_is_reported_at_once(fmt: Format) -> None:
    obj = wire(TRADE) | {"price": "x", "ts_event": 1.5}
    del obj["symbol"]
    with pytest.raises(CodecError) as caught:
        loads(encode(obj, fmt), format=fmt)
    message = str(caught.value)
    for path in ("trade.price", "trade.ts_event", "trade.symbol"):
        assert f"@ {path}" in message


def test_from_dict_applies_the_same_rules() -> None:
    with pytest.raises(CodecError, match=r"too large for a float @ trade\.price"):
        from_dict(to_dict(TRADE) | {"price": 10**400})
    with pytest.raises(CodecError, match="missing 'type' tag"):
        from_dict({"provider": "p"})
    with pytest.raises(CodecError, match="expected a mapping"):
        from_dict([("type", "trade")])  # type: ignore[arg-type]


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)


@given(event=events(), fmt=st.sampled_from(FORMATS), data=st.data())
def test_tampering_with_one_field_gives_an_event_or_a_codec_error(
    event: Event, fmt: Format, data: Any
) -> None:
    """For any event, replacing one field's value with any JSON value decodes to
    an event or raises CodecError, never another exception."""
    obj = to_dict(event)
    field = data.draw(st.sampled_from(sorted(obj)), label="field")
    obj[field] = data.draw(JSON_VALUES, label="value")
    try:
        encoded = encode(obj, fmt)
    except (TypeError, ValueError, OverflowError):
        return  # the forged value is not representable in this format at all
    with contextlib.suppress(CodecError):
        assert isinstance(loads(encoded, format=fmt), EVENT_TYPES)


# --- properties -----------------------------------------------------------------------


@given(event=events(), fmt=st.sampled_from(FORMATS))
def test_any_event_round_trips_exactly_in_both_formats(event: Event, fmt: Format) -> None:
    """For any event of any type (any text, float, int64), decoding its encoding gives
    an identical event: same types, NaN for NaN, -0.0 for -0.0."""
    assert identical(round_trip(event, fmt), event)


@given(event=events(finite=True), fmt=st.sampled_from(FORMATS))
def test_finite_events_come_back_equal(event: Event, fmt: Format) -> None:
    """For any event without NaN, decoding its encoding gives an equal (==) event."""
    assert round_trip(event, fmt) == event


@given(event=events(realistic=True))
def test_json_and_msgpack_decode_to_the_same_event(event: Event) -> None:
    """For any realistic event, both formats carry the same information."""
    assert loads(dumps(event)) == loads(dumps(event, format="msgpack"), format="msgpack")


@given(event=events())
def test_to_dict_and_from_dict_round_trip(event: Event) -> None:
    """For any event, ``from_dict(to_dict(e))`` is identical to ``e``."""
    assert identical(from_dict(to_dict(event)), event)


@given(trade=trades(symbols=["AAPL", "MSFT"], provider="alpaca", finite=True))
def test_strategy_constraints_are_honoured(trade: Trade) -> None:
    """trades(symbols=..., provider=..., finite=True) draws only from what was asked."""
    assert trade.symbol in ("AAPL", "MSFT") and trade.provider == "alpaca"
    assert math.isfinite(trade.price) and math.isfinite(trade.size)
