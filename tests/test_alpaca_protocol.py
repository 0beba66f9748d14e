"""Alpaca provider configuration and sans-IO protocol (puffin_trio.providers.alpaca).

The server side is written here by hand (a tiny encoder from plain dicts with
integer-ns timestamps to Alpaca JSON or msgpack frames), independently of the
simulator, so the two cross-check each other.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import msgpack
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from puffin_trio.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionLimitError,
    ProtocolError,
    ProviderError,
    SubscriptionError,
    TransientProviderError,
)
from puffin_trio.events import (
    Bar,
    LimitBands,
    OrderBookUpdate,
    Quote,
    Trade,
    TradeCancel,
    TradeCorrection,
    TradingStatus,
)
from puffin_trio.market_hours import AlwaysOpenCalendar, USEquityCalendar
from puffin_trio.providers import SANE_TS_NS, alpaca
from puffin_trio.providers._base import (
    SAMPLE_LIMIT,
    Authenticated,
    Connected,
    Frame,
    Malformed,
    ProviderFailure,
    ProviderNotice,
    SubscriptionAck,
    UnknownMessage,
)
from puffin_trio.providers.alpaca import (
    DEFAULT_MAX_FRAME_BYTES,
    AlpacaProtocol,
    AlpacaProvider,
    error_for,
    rfc3339_to_ns,
)
from puffin_trio.providers.alpaca import _timestamps as alpaca_timestamps

Encoding = Literal["json", "msgpack"]
ENCODINGS: tuple[Encoding, ...] = ("json", "msgpack")

KEY = "PKTEST-KEY-ID"
SECRET = "s3cr3t-never-print-me"
TS_RECV = 1_700_000_000_123_456_789
#: 2024-07-24T14:31:02.118230411Z
TS = 1_721_831_462_118_230_411


# --------------------------------------------------------------------------- server-side encoder


def rfc3339(ns: int) -> str:
    """Integer ns -> Alpaca's JSON timestamp (Go RFC3339Nano: trailing zeros trimmed)."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"


def encode(messages: Iterable[Any], encoding: Encoding) -> Frame:
    """Server messages (``t`` as int ns) -> one Alpaca frame in ``encoding``.

    Anything that is not a map is passed through as is (for malformed-input tests).
    """
    out = []
    for message in messages:
        if isinstance(message, Mapping) and isinstance(message.get("t"), int):
            message = dict(message)
            ns = message["t"]
            message["t"] = (
                rfc3339(ns) if encoding == "json" else msgpack.Timestamp.from_unix_nano(ns)
            )
        out.append(message)
    if encoding == "json":
        return orjson.dumps(out).decode()
    packed: bytes = msgpack.packb(out)
    return packed


def decode_sent(frame: Frame) -> Any:
    """A frame the client queued, decoded (msgpack bytes or JSON text)."""
    return orjson.loads(frame) if isinstance(frame, str) else msgpack.unpackb(frame)


def protocol(encoding: Encoding = "json", *, crypto: bool = False, **kw: Any) -> AlpacaProtocol:
    return AlpacaProtocol(key=KEY, secret=SECRET, crypto=crypto, encoding=encoding, **kw)


def receive_one(proto: AlpacaProtocol, message: Mapping[str, Any], encoding: Encoding) -> Any:
    items = proto.receive(encode([message], encoding), TS_RECV)
    assert len(items) == 1
    return items[0]


@pytest.fixture(params=ENCODINGS)
def encoding(request: pytest.FixtureRequest) -> Encoding:
    value: Encoding = request.param
    return value


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)


# --------------------------------------------------------------------------- handshake


def test_nothing_is_queued_before_the_server_hello() -> None:
    assert protocol().data_to_send() == []


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_connected_yields_connected_and_queues_the_auth_frame_in_the_chosen_encoding(
    encoding: Encoding,
) -> None:
    proto = protocol(encoding)
    item = receive_one(proto, {"T": "success", "msg": "connected"}, encoding)
    assert isinstance(item, Connected)
    [frame] = proto.data_to_send()
    assert isinstance(frame, bytes if encoding == "msgpack" else str)
    assert decode_sent(frame) == {"action": "auth", "key": KEY, "secret": SECRET}


def test_data_to_send_empties_the_queue() -> None:
    proto = protocol()
    proto.receive('[{"T":"success","msg":"connected"}]', TS_RECV)
    assert len(proto.data_to_send()) == 1
    assert proto.data_to_send() == []


def test_authenticated_yields_authenticated(encoding: Encoding) -> None:
    item = receive_one(protocol(encoding), {"T": "success", "msg": "authenticated"}, encoding)
    assert isinstance(item, Authenticated)


def test_an_unexpected_success_message_is_a_notice() -> None:
    item = receive_one(protocol(), {"T": "success", "msg": "hello there"}, "json")
    assert item == ProviderNotice("success", "hello there")


def test_the_server_may_answer_in_the_other_encoding() -> None:
    """JSON text in msgpack mode, msgpack binary in JSON mode: both decode."""
    hello = {"T": "success", "msg": "authenticated"}
    assert isinstance(receive_one(protocol("msgpack"), hello, "json"), Authenticated)
    assert isinstance(receive_one(protocol("json"), hello, "msgpack"), Authenticated)


def test_json_text_in_a_binary_frame_decodes() -> None:
    items = protocol().receive(b'[{"T":"success","msg":"authenticated"}]', TS_RECV)
    assert items == [Authenticated("authenticated")]


# --------------------------------------------------------------------------- subscription acks


def test_subscription_ack_is_the_complete_set_in_our_channel_names(encoding: Encoding) -> None:
    message = {
        "T": "subscription",
        "trades": ["AAPL"],
        "quotes": ["AMD", "CLDR"],
        "bars": ["*"],
        "updatedBars": ["AAPL"],
        "dailyBars": ["MSFT"],
        "statuses": ["TSLA"],
        "lulds": [],
        "corrections": ["AAPL"],
        "cancelErrors": ["AAPL"],
    }
    item = receive_one(protocol(encoding), message, encoding)
    assert item == SubscriptionAck(
        topics={
            "trades": frozenset({"AAPL"}),
            "quotes": frozenset({"AMD", "CLDR"}),
            "bars": frozenset({"*"}),
            "updated_bars": frozenset({"AAPL"}),
            "daily_bars": frozenset({"MSFT"}),
            "statuses": frozenset({"TSLA"}),
        },
        complete=True,
    )


def test_crypto_subscription_ack_maps_orderbooks_to_books() -> None:
    message = {"T": "subscription", "trades": [], "orderbooks": ["BTC/USD"], "quotes": []}
    item = receive_one(protocol(crypto=True), message, "json")
    assert item == SubscriptionAck(topics={"books": frozenset({"BTC/USD"})}, complete=True)


def test_subscription_ack_with_a_non_list_channel_is_malformed() -> None:
    item = receive_one(protocol(), {"T": "subscription", "trades": "AAPL"}, "json")
    assert isinstance(item, Malformed)
    assert "trades" in item.reason


# --------------------------------------------------------------------------- errors

ERROR_TABLE = [
    (400, "invalid syntax", SubscriptionError, True),
    (401, "not authenticated", ProtocolError, False),
    (402, "auth failed", AuthenticationError, True),
    (404, "auth timeout", TransientProviderError, False),
    (405, "symbol limit exceeded", SubscriptionError, True),
    (406, "connection limit exceeded", ConnectionLimitError, False),
    (407, "slow client", TransientProviderError, False),
    (409, "insufficient subscription", SubscriptionError, True),
    (410, "invalid subscribe action for this feed", SubscriptionError, True),
    (411, "insufficient scope", AuthenticationError, True),
    (500, "internal error", TransientProviderError, False),
    (499, "something new", TransientProviderError, False),
]


@pytest.mark.parametrize(("code", "text", "error_type", "fatal"), ERROR_TABLE)
def test_each_error_code_becomes_its_typed_failure(
    encoding: Encoding, code: int, text: str, error_type: type[ProviderError], fatal: bool
) -> None:
    item = receive_one(protocol(encoding), {"T": "error", "code": code, "msg": text}, encoding)
    assert isinstance(item, ProviderFailure)
    error = item.error
    assert type(error) is error_type
    assert error.fatal is fatal
    assert error.code == code
    assert error.provider == "alpaca"
    assert text in str(error)


def test_already_authenticated_is_a_notice_not_a_failure() -> None:
    item = receive_one(
        protocol(), {"T": "error", "code": 403, "msg": "already authenticated"}, "json"
    )
    assert item == ProviderNotice(403, "already authenticated")


@pytest.mark.parametrize("code", [None, "402", 402.0])
def test_an_error_without_an_integer_code_is_transient(code: object) -> None:
    message = {"T": "error", "msg": "mystery"} | ({} if code is None else {"code": code})
    item = receive_one(protocol(), message, "json")
    assert isinstance(item, ProviderFailure)
    assert type(item.error) is TransientProviderError
    assert "mystery" in str(item.error)


def test_an_auth_failure_tells_the_user_which_variables_to_check() -> None:
    error = error_for(402, "auth failed")
    assert error is not None
    assert "APCA_API_KEY_ID" in str(error) and "APCA_API_SECRET_KEY" in str(error)


# --------------------------------------------------------------------------- market data

STOCK_TRADE = {
    "T": "t",
    "S": "FAKEPACA",
    "i": 1042,
    "x": "V",
    "p": 134.21,
    "s": 50,
    "c": ["@", "I"],
    "t": TS,
    "z": "C",
}


def test_stock_trade(encoding: Encoding) -> None:
    item = receive_one(protocol(encoding), STOCK_TRADE, encoding)
    assert item == Trade(
        provider="alpaca",
        symbol="FAKEPACA",
        ts_event=TS,
        ts_recv=TS_RECV,
        price=134.21,
        size=50.0,
        exchange="V",
        trade_id="1042",
        conditions=("@", "I"),
        tape="C",
        seq=None,
    )
    assert type(item.size) is float


def test_trade_conditions_may_be_a_bare_string() -> None:
    item = receive_one(protocol(), STOCK_TRADE | {"c": "@"}, "json")
    assert item.conditions == ("@",)


def test_trade_without_optional_fields_gets_defaults() -> None:
    message = {"T": "t", "S": "AAPL", "p": 1.5, "s": 1, "t": TS}
    item = receive_one(protocol(), message, "json")
    assert (item.exchange, item.trade_id, item.conditions, item.tape) == ("", "", (), "")


def test_crypto_trade_has_fractional_size_and_the_taker_side_as_its_condition(
    encoding: Encoding,
) -> None:
    message = {"T": "t", "S": "BTC/USD", "p": 71859.53, "s": 0.0123, "t": TS, "i": 7, "tks": "B"}
    item = receive_one(protocol(encoding, crypto=True), message, encoding)
    assert item == Trade(
        provider="alpaca",
        symbol="BTC/USD",
        ts_event=TS,
        ts_recv=TS_RECV,
        price=71859.53,
        size=0.0123,
        trade_id="7",
        conditions=("B",),
    )


def test_stock_quote(encoding: Encoding) -> None:
    message = {
        "T": "q",
        "S": "FAKEPACA",
        "bx": "V",
        "bp": 134.2,
        "bs": 3,
        "ax": "Q",
        "ap": 134.23,
        "as": 1,
        "c": ["R"],
        "t": TS,
        "z": "C",
    }
    item = receive_one(protocol(encoding), message, encoding)
    assert item == Quote(
        provider="alpaca",
        symbol="FAKEPACA",
        ts_event=TS,
        ts_recv=TS_RECV,
        bid=134.2,
        ask=134.23,
        bid_size=3.0,
        ask_size=1.0,
        bid_exchange="V",
        ask_exchange="Q",
        conditions=("R",),
        tape="C",
    )


def test_crypto_quote_has_no_exchanges(encoding: Encoding) -> None:
    message = {"T": "q", "S": "ETH/USD", "bp": 3000.5, "bs": 1.25, "ap": 3001.0, "as": 0.5, "t": TS}
    item = receive_one(protocol(encoding, crypto=True), message, encoding)
    assert item == Quote(
        provider="alpaca",
        symbol="ETH/USD",
        ts_event=TS,
        ts_recv=TS_RECV,
        bid=3000.5,
        ask=3001.0,
        bid_size=1.25,
        ask_size=0.5,
    )


BAR = {
    "T": "b",
    "S": "FAKEPACA",
    "o": 134.1,
    "h": 134.3,
    "l": 134.05,
    "c": 134.21,
    "v": 1840,
    "n": 23,
    "vw": 134.18,
    "t": 1_721_831_400_000_000_000,
}


@pytest.mark.parametrize(
    ("kind", "interval_s", "updated"), [("b", 60, False), ("u", 60, True), ("d", 86_400, False)]
)
def test_bars(encoding: Encoding, kind: str, interval_s: int, updated: bool) -> None:
    item = receive_one(protocol(encoding), BAR | {"T": kind}, encoding)
    assert item == Bar(
        provider="alpaca",
        symbol="FAKEPACA",
        ts_event=1_721_831_400_000_000_000,
        ts_recv=TS_RECV,
        open=134.1,
        high=134.3,
        low=134.05,
        close=134.21,
        volume=1840.0,
        interval_s=interval_s,
        trade_count=23,
        vwap=134.18,
        updated=updated,
    )


def test_bar_without_trade_count_and_vwap_gets_zeros() -> None:
    message = {k: v for k, v in BAR.items() if k not in ("n", "vw")}
    item = receive_one(protocol(), message, "json")
    assert (item.trade_count, item.vwap) == (0, 0.0)


def test_orderbook_snapshot(encoding: Encoding) -> None:
    message = {
        "T": "o",
        "S": "BTC/USD",
        "t": TS,
        "b": [{"p": 71859.53, "s": 0.27994}, {"p": 71850.0, "s": 1}],
        "a": [{"p": 71939.7, "s": 0.83953}],
        "r": True,
    }
    item = receive_one(protocol(encoding, crypto=True), message, encoding)
    assert item == OrderBookUpdate(
        provider="alpaca",
        symbol="BTC/USD",
        ts_event=TS,
        ts_recv=TS_RECV,
        bids=((71859.53, 0.27994), (71850.0, 1.0)),
        asks=((71939.7, 0.83953),),
        snapshot=True,
    )


def test_orderbook_update_without_reset_flag_or_one_side_is_an_incremental_update() -> None:
    message = {"T": "o", "S": "BTC/USD", "t": TS, "b": [{"p": 1.0, "s": 0}]}
    item = receive_one(protocol(crypto=True), message, "json")
    assert (item.bids, item.asks, item.snapshot) == (((1.0, 0.0),), (), False)


def test_trade_correction(encoding: Encoding) -> None:
    message = {
        "T": "c",
        "S": "AAPL",
        "x": "Q",
        "oi": 1,
        "op": 100.5,
        "os": 10,
        "oc": ["@"],
        "ci": 2,
        "cp": 100.25,
        "cs": 12,
        "cc": ["@", "F"],
        "t": TS,
        "z": "C",
    }
    item = receive_one(protocol(encoding), message, encoding)
    assert item == TradeCorrection(
        provider="alpaca",
        symbol="AAPL",
        ts_event=TS,
        ts_recv=TS_RECV,
        original_id="1",
        original_price=100.5,
        original_size=10.0,
        corrected_id="2",
        corrected_price=100.25,
        corrected_size=12.0,
        original_conditions=("@",),
        corrected_conditions=("@", "F"),
        exchange="Q",
        tape="C",
    )


@pytest.mark.parametrize(("action", "is_error"), [("C", False), ("E", True)])
def test_trade_cancel_or_error(encoding: Encoding, action: str, is_error: bool) -> None:
    message = {"T": "x", "S": "AAPL", "i": 9, "x": "V", "p": 99.0, "s": 5, "a": action, "t": TS}
    item = receive_one(protocol(encoding), message | {"z": "C"}, encoding)
    assert item == TradeCancel(
        provider="alpaca",
        symbol="AAPL",
        ts_event=TS,
        ts_recv=TS_RECV,
        trade_id="9",
        price=99.0,
        size=5.0,
        is_error=is_error,
        exchange="V",
        tape="C",
    )


def test_trading_status(encoding: Encoding) -> None:
    message = {
        "T": "s",
        "S": "AAPL",
        "sc": "H",
        "sm": "Trading Halt",
        "rc": "T12",
        "rm": "Additional Information Requested by NASDAQ",
        "t": TS,
        "z": "C",
    }
    item = receive_one(protocol(encoding), message, encoding)
    assert item == TradingStatus(
        provider="alpaca",
        symbol="AAPL",
        ts_event=TS,
        ts_recv=TS_RECV,
        status_code="H",
        status_message="Trading Halt",
        reason_code="T12",
        reason_message="Additional Information Requested by NASDAQ",
        tape="C",
    )


def test_limit_bands(encoding: Encoding) -> None:
    message = {"T": "l", "S": "AAPL", "u": 140.5, "d": 127.1, "i": "B", "t": TS, "z": "C"}
    item = receive_one(protocol(encoding), message, encoding)
    assert item == LimitBands(
        provider="alpaca",
        symbol="AAPL",
        ts_event=TS,
        ts_recv=TS_RECV,
        limit_up=140.5,
        limit_down=127.1,
        indicator="B",
        tape="C",
    )


@pytest.mark.parametrize("kind", ["i", "n", "zz"])
def test_imbalance_news_and_unknown_types_are_unknown_messages(
    encoding: Encoding, kind: str
) -> None:
    item = receive_one(protocol(encoding), {"T": kind, "S": "AAPL", "t": TS}, encoding)
    assert item == UnknownMessage(kind)


def test_a_batched_frame_decodes_in_wire_order(encoding: Encoding) -> None:
    messages = [STOCK_TRADE, BAR, {"T": "zz"}, STOCK_TRADE | {"i": 1043}]
    items = protocol(encoding).receive(encode(messages, encoding), TS_RECV)
    assert [type(i) for i in items] == [Trade, Bar, UnknownMessage, Trade]
    assert [items[0].trade_id, items[3].trade_id] == ["1042", "1043"]


# --------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ('[{"T":"t",', "undecodable JSON"),
        (b"\xc1", "undecodable msgpack"),
        (b"", "undecodable msgpack"),
        (msgpack.packb([1]) + b"\x00", "undecodable msgpack"),
        ('{"T":"success","msg":"connected"}', "not an array"),
        (msgpack.packb({"T": "success"}), "not an array"),
        ('"hello"', "not an array"),
    ],
    ids=["bad-json", "bad-msgpack", "empty", "trailing-bytes", "json-map", "msgpack-map", "str"],
)
def test_a_bad_frame_is_one_malformed_item(frame: Frame, reason: str) -> None:
    [item] = protocol().receive(frame, TS_RECV)
    assert isinstance(item, Malformed)
    assert reason in item.reason


def test_a_malformed_sample_is_truncated() -> None:
    [item] = protocol().receive("[" + "x" * 10_000, TS_RECV)
    assert isinstance(item, Malformed)
    assert len(item.sample) < SAMPLE_LIMIT + 30


BAD_MESSAGES = [
    (1, "not a map"),
    (["T", "t"], "not a map"),
    ({"S": "AAPL", "p": 1.0}, "no 'T'"),
    ({"T": 5}, "not a string"),
    ({k: v for k, v in STOCK_TRADE.items() if k != "p"}, "lacks field 'p'"),
    ({k: v for k, v in STOCK_TRADE.items() if k != "t"}, "lacks field 't'"),
    ({k: v for k, v in STOCK_TRADE.items() if k != "S"}, "lacks field 'S'"),
    (STOCK_TRADE | {"p": "abc"}, "bad field"),
    (STOCK_TRADE | {"p": None}, "bad field"),
    (STOCK_TRADE | {"S": 42}, "bad field"),
    (STOCK_TRADE | {"c": 7}, "bad field"),
    (STOCK_TRADE | {"t": "2024-07-24 14:31:02Z"}, "bad field"),
    (STOCK_TRADE | {"t": "yesterday"}, "bad field"),
    (STOCK_TRADE | {"t": 1.5}, "bad field"),
    (BAR | {"v": [1]}, "bad field"),
    ({"T": "o", "S": "BTC/USD", "t": TS, "b": [{"p": 1.0}], "a": []}, "lacks field 's'"),
    ({"T": "o", "S": "BTC/USD", "t": TS, "b": None, "a": []}, "bad field"),
    ({"T": "s", "S": "AAPL", "t": TS}, "lacks field 'sc'"),
]


@pytest.mark.parametrize(("message", "reason"), BAD_MESSAGES)
def test_a_bad_message_is_malformed_and_its_neighbours_still_decode(
    encoding: Encoding, message: Any, reason: str
) -> None:
    proto = protocol(encoding, crypto=isinstance(message, dict) and message.get("T") == "o")
    good = {"T": "success", "msg": "authenticated"}
    items = proto.receive(encode([good, message, good], encoding), TS_RECV)
    assert len(items) == 3
    assert items[0] == items[2] == Authenticated("authenticated")
    assert isinstance(items[1], Malformed)
    assert reason in items[1].reason
    assert items[1].sample


def test_a_json_frame_must_carry_string_timestamps() -> None:
    """Integer ns are what msgpack's ext -1 decodes to; in JSON they would be a unit guess."""
    frame = orjson.dumps([STOCK_TRADE]).decode()
    [item] = protocol().receive(frame, TS_RECV)
    assert isinstance(item, Malformed)


def test_a_msgpack_frame_may_carry_string_timestamps() -> None:
    frame = msgpack.packb([STOCK_TRADE | {"t": "2024-07-24T14:31:02.118230411Z"}])
    [item] = protocol("msgpack").receive(frame, TS_RECV)
    assert item.ts_event == TS


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)
#: Every field a handler reads, by message type.
FIELDS = (
    *("S", "t", "p", "s", "c", "i", "x", "z", "tks"),  # trades
    *("bp", "ap", "bs", "as", "bx", "ax"),  # quotes
    *("o", "h", "l", "v", "n", "vw"),  # bars
    *("b", "a", "r"),  # order books
    *("oi", "op", "os", "oc", "ci", "cp", "cs", "cc"),  # corrections
    *("sc", "sm", "rc", "rm", "u", "d"),  # statuses, LULD
    *("msg", "code", "trades", "quotes", "orderbooks"),  # control
)
KINDS = ("t", "q", "b", "u", "d", "o", "c", "x", "s", "l", "i", "n")
message_strategy = st.fixed_dictionaries(
    {"T": st.sampled_from((*KINDS, "error", "success", "subscription"))},
    optional={
        field: json_values | st.just(rfc3339(TS)) | st.just(1.5) | st.just([{"p": 1.0, "s": 2.0}])
        for field in FIELDS
    },
)


@given(messages=st.lists(message_strategy | json_values, max_size=8), crypto=st.booleans())
def test_every_message_of_an_array_yields_exactly_one_item(
    messages: list[Any], crypto: bool
) -> None:
    """For any array of arbitrary messages, in either encoding, ``receive`` never raises
    and yields exactly one item per message."""
    for encoding in ENCODINGS:
        frame = (
            orjson.dumps(messages, option=orjson.OPT_NON_STR_KEYS).decode()
            if encoding == "json"
            else msgpack.packb(messages)
        )
        assert len(protocol(encoding, crypto=crypto).receive(frame, TS_RECV)) == len(messages)


@given(frame=st.binary(max_size=64) | st.text(max_size=64))
def test_receive_never_raises_on_arbitrary_frames(frame: Frame) -> None:
    """Any bytes or text at all decode to a list of items without raising."""
    assert isinstance(protocol().receive(frame, TS_RECV), list)


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2023-04-06T11:54:26.839159731Z", 1_680_782_066_839_159_731),
        ("2023-04-06T11:54:26.83915973Z", 1_680_782_066_839_159_730),
        ("2023-04-06T11:54:26.839159Z", 1_680_782_066_839_159_000),
        ("2023-04-06T11:54:26.8Z", 1_680_782_066_800_000_000),
        ("2021-02-22T19:15:00Z", 1_614_021_300_000_000_000),
        ("1970-01-01T00:00:00.000000001Z", 1),
    ],
)
def test_rfc3339_timestamps_parse_to_exact_nanoseconds(text: str, ns: int) -> None:
    assert rfc3339_to_ns(text) == ns
    assert rfc3339_to_ns(text) == ns  # the second call is answered from the seconds cache


@pytest.mark.parametrize(
    "text",
    [
        "2023-04-06T11:54:26",
        "2023-04-06T11:54:26Z ",
        "2023-04-06 11:54:26Z",
        "2023-04-06T11:54:26.Z",
        "2023-04-06T11:54:26.1234567891Z",
        "2023-04-06T11:54:26.12+00:00",
        "2023-04-06T11:54:26+00:00",
        "2023-04-06T11:54:26.1_2Z",
        "2023-04-06T11:54:26.-1Z",
        "2023-04-06T11:54:26.\u0663Z",
        "2023-13-06T11:54:26Z",
        "2023/04/06T11:54:26Z",
        "",
    ],
)
def test_anything_but_rfc3339_utc_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        rfc3339_to_ns(text)


@pytest.mark.parametrize("value", [None, 12, 1.5, ["2023-04-06T11:54:26Z" * 2]])
def test_a_non_string_timestamp_is_a_type_error(value: Any) -> None:
    with pytest.raises(TypeError):
        rfc3339_to_ns(value)


@given(ns=st.integers(0, 2**63 - 1))
def test_rfc3339_round_trip(ns: int) -> None:
    """Every ns timestamp, printed as Alpaca prints it, parses back to itself."""
    assert rfc3339_to_ns(rfc3339(ns)) == ns


def test_the_seconds_cache_stays_bounded() -> None:
    start = 1_600_000_000
    for second in range(start, start + 2 * alpaca_timestamps._SECONDS_CACHE_SIZE):
        assert rfc3339_to_ns(rfc3339(second * 1_000_000_000 + 5)) == second * 1_000_000_000 + 5
    assert len(alpaca_timestamps._SECONDS_CACHE) <= alpaca_timestamps._SECONDS_CACHE_SIZE


@pytest.mark.parametrize(
    "stamp",
    [
        msgpack.Timestamp(1_721_831_462, 0),  # 32-bit form
        msgpack.Timestamp(1_721_831_462, 118_230_411),  # 64-bit form
    ],
    ids=["ts32", "ts64"],
)
def test_msgpack_timestamp_extension_decodes_to_exact_nanoseconds(
    stamp: msgpack.Timestamp,
) -> None:
    frame = msgpack.packb([STOCK_TRADE | {"t": stamp}])
    [item] = protocol("msgpack").receive(frame, TS_RECV)
    assert item.ts_event == stamp.to_unix_nano()


@pytest.mark.parametrize(
    "stamp",
    [
        msgpack.Timestamp(2**34 + 5, 999_999_999),  # the 96-bit form: past the year 2514
        msgpack.Timestamp(-1, 0),  # the 96-bit form too: before 1970
        msgpack.Timestamp(0, 0),  # 1970
        msgpack.Timestamp(SANE_TS_NS[1] // 10**9, 0),  # 2200-01-01: the range's end
    ],
    ids=["ts96", "negative", "epoch", "2200"],
)
def test_a_msgpack_timestamp_outside_1990_to_2200_is_malformed(stamp: msgpack.Timestamp) -> None:
    frame = msgpack.packb([STOCK_TRADE | {"t": stamp}, STOCK_TRADE])
    bad, good = protocol("msgpack").receive(frame, TS_RECV)
    assert isinstance(bad, Malformed) and "outside 1990..2200" in bad.reason
    assert isinstance(good, Trade)


# --------------------------------------------------------------------------- round trip property

symbols = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ.", min_size=1, max_size=8)
prices = st.floats(0, 1e7, allow_nan=False, allow_infinity=False)
timestamps = st.integers(SANE_TS_NS[0], SANE_TS_NS[1] - 1)
codes = st.text("@ABCFIKMOPQRTUVWXZ4", min_size=1, max_size=2)

trade_messages = st.fixed_dictionaries(
    {
        "T": st.just("t"),
        "S": symbols,
        "i": st.integers(0, 2**63 - 1),
        "x": st.sampled_from("ABCDHIJKLMNPQSTUVWXYZ"),
        "p": prices,
        "s": st.integers(0, 10**9),
        "c": st.lists(codes, max_size=4),
        "t": timestamps,
        "z": st.sampled_from("ABCO"),
    }
)
quote_messages = st.fixed_dictionaries(
    {
        "T": st.just("q"),
        "S": symbols,
        "bx": st.sampled_from("ABCDHIJKLMNPQSTUVWXYZ"),
        "bp": prices,
        "bs": st.integers(0, 10**6),
        "ax": st.sampled_from("ABCDHIJKLMNPQSTUVWXYZ"),
        "ap": prices,
        "as": st.integers(0, 10**6),
        "c": st.lists(codes, max_size=2),
        "t": timestamps,
        "z": st.sampled_from("ABCO"),
    }
)


def expected_event(m: Mapping[str, Any]) -> Trade | Quote:
    if m["T"] == "t":
        return Trade(
            provider="alpaca",
            symbol=m["S"],
            ts_event=m["t"],
            ts_recv=TS_RECV,
            price=m["p"],
            size=float(m["s"]),
            exchange=m["x"],
            trade_id=str(m["i"]),
            conditions=tuple(m["c"]),
            tape=m["z"],
        )
    return Quote(
        provider="alpaca",
        symbol=m["S"],
        ts_event=m["t"],
        ts_recv=TS_RECV,
        bid=m["bp"],
        ask=m["ap"],
        bid_size=float(m["bs"]),
        ask_size=float(m["as"]),
        bid_exchange=m["bx"],
        ask_exchange=m["ax"],
        conditions=tuple(m["c"]),
        tape=m["z"],
    )


@given(messages=st.lists(trade_messages | quote_messages, max_size=20))
def test_trades_and_quotes_survive_the_wire_in_both_encodings(
    messages: list[dict[str, Any]],
) -> None:
    """Any list of trades and quotes, encoded as an Alpaca JSON or msgpack frame,
    decodes back to events with exactly the values sent (ns timestamps included)."""
    expected = [expected_event(m) for m in messages]
    for encoding in ENCODINGS:
        assert protocol(encoding).receive(encode(messages, encoding), TS_RECV) == expected


# --------------------------------------------------------------------------- subscribing


def sent(proto: AlpacaProtocol) -> list[Any]:
    return [decode_sent(frame) for frame in proto.data_to_send()]


def test_subscribe_queues_one_frame_with_wire_channel_names(encoding: Encoding) -> None:
    proto = protocol(encoding)
    proto.subscribe(
        {"trades": ["AAPL"], "quotes": ["MSFT", "AMD"], "updated_bars": ["X"], "daily_bars": ["Y"]}
    )
    frames = proto.data_to_send()
    assert len(frames) == 1
    assert isinstance(frames[0], bytes if encoding == "msgpack" else str)
    assert decode_sent(frames[0]) == {
        "action": "subscribe",
        "trades": ["AAPL"],
        "quotes": ["AMD", "MSFT"],
        "updatedBars": ["X"],
        "dailyBars": ["Y"],
    }


def test_unsubscribe_queues_an_unsubscribe_frame() -> None:
    proto = protocol()
    proto.unsubscribe({"bars": ["*"]})
    assert sent(proto) == [{"action": "unsubscribe", "bars": ["*"]}]


def test_crypto_books_go_out_as_orderbooks() -> None:
    proto = protocol(crypto=True)
    proto.subscribe({"books": ["BTC/USD"]})
    assert sent(proto) == [{"action": "subscribe", "orderbooks": ["BTC/USD"]}]


def test_subscribing_to_nothing_sends_nothing() -> None:
    proto = protocol()
    proto.subscribe({})
    proto.subscribe({"trades": []})
    assert proto.data_to_send() == []


def union(frames: list[Any], action: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for frame in frames:
        assert frame["action"] == action
        for wire, symbols in frame.items():
            if wire != "action":
                out.setdefault(wire, set()).update(symbols)
    return out


def test_a_700_symbol_subscribe_is_split_into_frames_under_the_limit(encoding: Encoding) -> None:
    symbols = [f"S{i:04d}" for i in range(700)]
    proto = protocol(encoding)
    proto.subscribe({"trades": symbols, "quotes": symbols, "bars": symbols[:10]})
    frames = proto.data_to_send()
    assert len(frames) >= 3  # ~11 KiB of symbols in 4 KiB frames
    assert all(len(frame) <= DEFAULT_MAX_FRAME_BYTES for frame in frames)
    decoded = [decode_sent(frame) for frame in frames]
    assert union(decoded, "subscribe") == {
        "trades": set(symbols),
        "quotes": set(symbols),
        "bars": set(symbols[:10]),
    }
    assert sum(len(v) for f in decoded for k, v in f.items() if k != "action") == 1410


@given(
    topics=st.dictionaries(
        st.sampled_from(["trades", "quotes", "bars", "updated_bars", "daily_bars", "lulds"]),
        st.lists(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ.é/", min_size=1, max_size=12), max_size=300),
        max_size=6,
    ),
    limit=st.integers(128, 8192),
    encoding=st.sampled_from(ENCODINGS),
    action=st.sampled_from(["subscribe", "unsubscribe"]),
)
def test_split_frames_respect_the_limit_and_add_up_to_the_request(
    topics: dict[str, list[str]], limit: int, encoding: Encoding, action: str
) -> None:
    """For any topics and any frame limit, every frame is at most ``limit`` bytes
    (UTF-8 for JSON text), each is a complete request of its own, and together
    they hold exactly the requested (channel, symbol) pairs."""
    proto = protocol(encoding, max_frame_bytes=limit)
    getattr(proto, action)(topics)
    frames = proto.data_to_send()
    for frame in frames:
        size = len(frame.encode()) if isinstance(frame, str) else len(frame)
        assert size <= limit
    wire = alpaca.STOCK_CHANNELS
    expected = {wire[c]: set(s) for c, s in topics.items() if s}
    assert union([decode_sent(f) for f in frames], action) == expected


def test_a_symbol_that_cannot_fit_in_a_frame_is_a_configuration_error() -> None:
    proto = protocol(max_frame_bytes=128)
    with pytest.raises(ConfigurationError, match="max_frame_bytes"):
        proto.subscribe({"trades": ["A" * 200]})


@pytest.mark.parametrize(
    ("crypto", "topics", "match"),
    [
        (False, {"books": ["AAPL"]}, "crypto"),
        (True, {"lulds": ["BTC/USD"]}, "stock"),
        (True, {"statuses": ["BTC/USD"]}, "stock"),
        (False, {"corrections": ["AAPL"]}, "come with trades"),
        (False, {"cancelErrors": ["AAPL"]}, "come with trades"),
        (False, {"news": ["AAPL"]}, "unknown channel"),
        (False, {"trades": "AAPL"}, "list of symbols"),
        (False, {"trades": ["AAPL", "BAD SYMBOL"]}, "bad symbol"),
        (False, {"trades": [""]}, "bad symbol"),
    ],
)
def test_bad_topics_are_refused_before_anything_is_sent(
    crypto: bool, topics: dict[str, Any], match: str
) -> None:
    proto = protocol(crypto=crypto)
    with pytest.raises(ConfigurationError, match=match):
        proto.subscribe(topics)
    assert proto.data_to_send() == []
    provider = AlpacaProvider(feed="crypto" if crypto else "iex", key=KEY, secret=SECRET)
    with pytest.raises(ConfigurationError, match=match):
        provider.normalize(topics)


# --------------------------------------------------------------------------- provider configuration


@pytest.mark.parametrize(
    ("kwargs", "url"),
    [
        ({}, "wss://stream.data.alpaca.markets/v2/iex"),
        ({"feed": "sip"}, "wss://stream.data.alpaca.markets/v2/sip"),
        ({"feed": "delayed_sip"}, "wss://stream.data.alpaca.markets/v2/delayed_sip"),
        ({"feed": "test"}, "wss://stream.data.alpaca.markets/v2/test"),
        ({"feed": "crypto"}, "wss://stream.data.alpaca.markets/v1beta3/crypto/us"),
        (
            {"feed": "crypto", "crypto_location": "eu-1"},
            "wss://stream.data.alpaca.markets/v1beta3/crypto/eu-1",
        ),
        ({"sandbox": True}, "wss://stream.data.sandbox.alpaca.markets/v2/iex"),
        ({"url": "ws://127.0.0.1:8765"}, "ws://127.0.0.1:8765"),
        ({"url": "wss://example.com/custom"}, "wss://example.com/custom"),
    ],
)
def test_the_url_follows_feed_location_and_sandbox(kwargs: dict[str, Any], url: str) -> None:
    assert AlpacaProvider(**kwargs).url == url


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"feed": "nasdaq"}, "unknown feed 'nasdaq'; expected one of iex, sip, delayed_sip"),
        ({"feed": "crypto", "crypto_location": "mars"}, "crypto_location"),
        ({"encoding": "xml"}, "encoding"),
        ({"url": "https://example.com"}, "WebSocket URL"),
        ({"url": "ws://203.0.113.7:8765"}, "clear"),
        ({"url": 8765}, "url"),
        ({"sandbox": "yes"}, "sandbox"),
        ({"ping_interval": 0}, "ping_interval"),
        ({"ping_timeout": -1.0}, "ping_timeout"),
        ({"ping_timeout": math.nan}, "ping_timeout"),
        ({"ping_interval": math.inf}, "finite"),
        ({"limit_cooldown": "90"}, "limit_cooldown"),
        ({"stale_after": True}, "stale_after"),
        ({"max_message_size": 1000}, "max_message_size"),
        ({"max_frame_bytes": 64}, "max_frame_bytes"),
        ({"max_frame_bytes": 4096.0}, "max_frame_bytes"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_configuration_fails_at_construction(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        AlpacaProvider(**kwargs)


def test_unknown_feed_lists_every_valid_feed() -> None:
    with pytest.raises(ConfigurationError) as info:
        AlpacaProvider(feed="options")
    for feed in ("iex", "sip", "delayed_sip", "test", "crypto"):
        assert feed in str(info.value)


def test_stale_after_defaults_per_feed_and_can_be_switched_off() -> None:
    assert AlpacaProvider(feed="iex").stale_after == 300.0
    assert AlpacaProvider(feed="sip").stale_after == 60.0
    assert AlpacaProvider(feed="crypto").stale_after == 60.0
    assert AlpacaProvider(stale_after=5).stale_after == 5.0
    assert AlpacaProvider(stale_after=math.inf).stale_after == math.inf


def test_timing_knob_defaults() -> None:
    provider = AlpacaProvider()
    assert (provider.ping_interval, provider.ping_timeout, provider.limit_cooldown) == (
        10.0,
        10.0,
        90.0,
    )
    assert provider.max_message_size == 16 * 1024 * 1024
    assert provider.max_frame_bytes == DEFAULT_MAX_FRAME_BYTES


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_headers_pick_the_encoding(encoding: Encoding) -> None:
    assert AlpacaProvider(encoding=encoding).headers() == [
        ("Content-Type", f"application/{encoding}")
    ]


def test_channels_per_feed() -> None:
    assert AlpacaProvider(feed="sip").channels == {
        "trades",
        "quotes",
        "bars",
        "updated_bars",
        "daily_bars",
        "statuses",
        "lulds",
    }
    assert AlpacaProvider(feed="crypto").channels == {
        "trades",
        "quotes",
        "bars",
        "updated_bars",
        "daily_bars",
        "books",
    }


def test_normalize_returns_clean_frozensets() -> None:
    provider = AlpacaProvider()
    assert provider.normalize({"trades": ["AAPL", "AAPL"], "quotes": []}) == {
        "trades": frozenset({"AAPL"})
    }


@pytest.mark.parametrize(
    ("feed", "calendar"),
    [
        ("iex", USEquityCalendar),
        ("sip", USEquityCalendar),
        ("crypto", AlwaysOpenCalendar),
        ("test", AlwaysOpenCalendar),
    ],
)
def test_calendar_is_us_equity_for_stocks_and_always_open_for_crypto_and_test(
    feed: str, calendar: type
) -> None:
    assert isinstance(AlpacaProvider(feed=feed).calendar, calendar)


def test_the_session_name_is_configurable_but_events_say_alpaca() -> None:
    provider = AlpacaProvider(name="alpaca-sip", key=KEY, secret=SECRET)
    assert provider.session_name == "alpaca-sip"
    assert provider.name == "alpaca"
    item = receive_one(provider.protocol(), STOCK_TRADE, "msgpack")
    assert item.provider == "alpaca"


def test_the_protocol_follows_the_provider_configuration() -> None:
    provider = AlpacaProvider(feed="crypto", key=KEY, secret=SECRET, encoding="json")
    proto = provider.protocol()
    assert proto.guard_mode == "none"
    proto.subscribe({"books": ["BTC/USD"]})
    assert proto.data_to_send() == ['{"action":"subscribe","orderbooks":["BTC/USD"]}']


# --------------------------------------------------------------------------- credentials


@pytest.mark.usefixtures("no_env")
@pytest.mark.parametrize(
    ("kwargs", "missing", "present"),
    [
        ({}, ["APCA_API_KEY_ID", "APCA_API_SECRET_KEY"], []),
        ({"key": KEY}, ["APCA_API_SECRET_KEY"], ["APCA_API_KEY_ID"]),
        ({"secret": SECRET}, ["APCA_API_KEY_ID"], ["APCA_API_SECRET_KEY"]),
    ],
)
def test_check_says_which_credentials_are_missing(
    kwargs: dict[str, str], missing: list[str], present: list[str]
) -> None:
    provider = AlpacaProvider(**kwargs)
    with pytest.raises(ConfigurationError) as info:
        provider.check()
    text = str(info.value)
    assert all(name in text for name in missing)
    assert not any(name in text for name in present)
    assert SECRET not in text
    with pytest.raises(ConfigurationError):
        provider.protocol()


def test_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    proto = AlpacaProvider(encoding="json").protocol()
    proto.receive('[{"T":"success","msg":"connected"}]', TS_RECV)
    assert decode_sent(proto.data_to_send()[0]) == {"action": "auth", "key": KEY, "secret": SECRET}


def test_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APCA_API_KEY_ID", "env-key")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "env-secret")
    proto = AlpacaProvider(key=KEY, secret=SECRET, encoding="json").protocol()
    proto.receive('[{"T":"success","msg":"connected"}]', TS_RECV)
    assert decode_sent(proto.data_to_send()[0])["secret"] == SECRET


@pytest.mark.usefixtures("no_env")
@pytest.mark.parametrize("kwargs", [{"key": ""}, {"secret": 12345}, {"secret": b"raw"}])
def test_a_badly_typed_credential_is_refused_without_echoing_it(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as info:
        AlpacaProvider(**kwargs)
    assert "12345" not in str(info.value) and "raw" not in str(info.value)


def test_the_secret_never_appears_in_repr_str_or_errors() -> None:
    provider = AlpacaProvider(key=KEY, secret=SECRET, feed="sip")
    proto = provider.protocol()
    texts = [repr(provider), str(provider), repr(proto), str(proto)]
    items = proto.receive(encode([{"T": "success", "msg": "connected"}], "msgpack"), TS_RECV)
    for code, text, _, _ in ERROR_TABLE:
        items += proto.receive(encode([{"T": "error", "code": code, "msg": text}], "json"), TS_RECV)
    items += proto.receive('[{"T":"t"}, 5, {"T":"zz"}]', TS_RECV)
    for item in items:
        texts.append(repr(item))
        if isinstance(item, ProviderFailure):
            texts.append(str(item.error))
    for bad in ({"url": "http://x"}, {"feed": "nope"}):
        with pytest.raises(ConfigurationError) as info:
            AlpacaProvider(key=KEY, secret=SECRET, **bad)
        texts.append(str(info.value))
    assert all(SECRET not in text and KEY not in text for text in texts)
