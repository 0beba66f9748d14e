"""The IB TWS API protocol: exact request bytes, every incoming layout, every error path.

Layouts are those of the TWS API at server version 176;
where ib_async is installed, requests are also compared byte for byte with
what ib_async 2.1.0's own client encodes.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from puffin_trio import (
    AuthenticationError,
    Bar,
    ConfigurationError,
    FatalProviderError,
    OrderBook,
    OrderBookUpdate,
    ProtocolError,
    Quote,
    SubscriptionError,
    Trade,
)
from puffin_trio.market_hours import calendar_for
from puffin_trio.providers._base import (
    Authenticated,
    Connected,
    HeartbeatReply,
    Malformed,
    ProviderFailure,
    ProviderNotice,
    UnknownMessage,
)
from puffin_trio.providers.ib import (
    PROLOGUE,
    DepthRows,
    IBContract,
    IBProtocol,
    IBProvider,
)

TS = 1_721_831_460_123_000_000
AAPL = IBContract(
    "AAPL", con_id=265598, primary_exchange="NASDAQ", local_symbol="AAPL", trading_class="NMS"
)


def wire(*fields: str) -> bytes:
    """A length-prefixed TWS message with these fields (each NUL-terminated)."""
    payload = "".join(f + "\0" for f in fields).encode()
    return struct.pack(">I", len(payload)) + payload


def msg(*fields: str) -> bytes:
    """A de-framed TWS payload (what the transport hands the protocol)."""
    return wire(*fields)[4:]


def started(first_id: int = 1, **kwargs: Any) -> IBProtocol:
    """A protocol past the handshake, its outbox emptied."""
    proto = IBProtocol(request_ids=itertools.count(first_id), **kwargs)
    proto.receive(msg("176", "20240724 10:31:00 EST"), TS)
    proto.receive(msg("9", "1", "1"), TS)
    proto.data_to_send()
    return proto


def fields_of(frames: list[Any]) -> list[list[str]]:
    out = []
    for frame in frames:
        assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4
        out.append(frame[4:].decode().split("\0")[:-1])
    return out


# --------------------------------------------------------------------------- handshake


def test_the_prologue_is_queued_at_construction_exactly_as_ib_async_sends_it() -> None:
    proto = IBProtocol()
    assert proto.data_to_send() == [b"API\x00\x00\x00\x00\tv157..178"]
    assert PROLOGUE == b"API\x00\x00\x00\x00\tv157..178"
    assert proto.data_to_send() == []


def test_the_handshake_reply_connects_and_queues_start_api_with_the_client_id() -> None:
    proto = IBProtocol(client_id=7)
    proto.data_to_send()
    [connected] = proto.receive(msg("176", "20240724 10:31:00 EST"), TS)
    assert isinstance(connected, Connected)
    assert "176" in connected.detail and "20240724 10:31:00 EST" in connected.detail
    assert proto.server_version == 176
    assert proto.data_to_send() == [wire("71", "2", "7", "")]


def test_next_valid_id_authenticates_once_and_managed_accounts_are_kept() -> None:
    proto = IBProtocol()
    proto.receive(msg("176", "t"), TS)
    assert proto.receive(msg("15", "1", "DU1234567,DU7654321,"), TS) == []
    assert proto.accounts == ("DU1234567", "DU7654321")
    [auth] = proto.receive(msg("9", "1", "117"), TS)
    assert isinstance(auth, Authenticated)
    assert proto.next_valid_id == 117
    assert proto.receive(msg("9", "1", "118"), TS) == []


def test_a_delayed_market_data_type_is_requested_right_after_the_session_starts() -> None:
    proto = IBProtocol(market_data_type=3)
    proto.receive(msg("176", "t"), TS)
    proto.data_to_send()
    proto.receive(msg("9", "1", "1"), TS)
    assert proto.data_to_send() == [wire("59", "1", "3")]


def test_messages_before_the_handshake_reply_are_skipped() -> None:
    proto = IBProtocol()
    [item] = proto.receive(msg("4", "2", "-1", "2104", "farm OK", ""), TS)
    assert isinstance(item, UnknownMessage) and "before the handshake" in item.kind
    assert proto.server_version == 0


@pytest.mark.parametrize(
    ("version", "error", "match"),
    [
        ("150", FatalProviderError, "too old"),
        ("180", FatalProviderError, "outside the range 157..178"),
        ("HTTP/1.1", ProtocolError, "is this a TWS API port"),
    ],
)
def test_an_unusable_handshake_reply_fails_the_connection(
    version: str, error: type[Exception], match: str
) -> None:
    proto = IBProtocol()
    [failure] = proto.receive(msg(version, "t"), TS)
    assert isinstance(failure, ProviderFailure) and not failure.symbol
    assert type(failure.error) is error
    assert failure.error.provider == "ib"
    with pytest.raises(error, match=match):
        raise failure.error


# --------------------------------------------------------------------------- requests


def test_requests_are_encoded_exactly_per_the_tws_api_layouts() -> None:
    proto = started(
        4,
        contracts={"AAPL": AAPL, "IBM": IBContract("IBM", con_id=8314)},
        depth_rows=5,
        quotes_via="tick_by_tick",
    )
    proto.subscribe({"quotes": ["AAPL"]})
    assert proto.data_to_send() == [
        wire(
            "97", "4", "265598", "AAPL", "STK", "", "0.0", "", "", "SMART", "NASDAQ", "USD",
            "AAPL", "NMS", "BidAsk", "0", "0",
        )
    ]  # fmt: skip
    proto.subscribe({"books": ["IBM"]})
    assert proto.data_to_send() == [
        wire(
            "10", "5", "5", "8314", "IBM", "STK", "", "0.0", "", "", "SMART", "", "USD", "", "",
            "5", "1", "",
        )
    ]  # fmt: skip
    proto = started(4, contracts={"AAPL": AAPL})
    proto.subscribe({"quotes": ["AAPL"], "trades": ["AAPL"], "bars": ["AAPL"]})
    contract = ["265598", "AAPL", "STK", "", "0.0", "", "", "SMART", "NASDAQ", "USD", "AAPL", "NMS"]
    assert fields_of(proto.data_to_send()) == [
        ["50", "3", "4", *contract, "5", "TRADES", "0", ""],
        ["1", "11", "5", *contract, "0", "", "0", "0", ""],
        ["97", "6", *contract, "AllLast", "0", "0"],
    ]
    proto.unsubscribe({"quotes": ["AAPL"], "trades": ["AAPL"], "bars": ["AAPL"]})
    assert proto.data_to_send() == [wire("51", "1", "4"), wire("2", "2", "5"), wire("98", "6")]
    assert proto.heartbeat() is True
    assert proto.data_to_send() == [wire("49", "1")]


def test_requests_are_byte_identical_to_ib_async() -> None:
    pytest.importorskip("ib_async")
    from ib_async.client import Client
    from ib_async.contract import Stock
    from ib_async.wrapper import Wrapper

    class Capture:
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        def sendMsg(self, message: bytes) -> None:
            self.sent.append(message)

    client = Client(Wrapper.__new__(Wrapper))
    client.conn = capture = Capture()
    client.connState = Client.CONNECTED
    client._serverVersion = 176
    client.clientId, client.optCapab = 7, ""
    stock = Stock("AAPL", "SMART", "USD")

    def theirs(request: Any) -> bytes:
        request()
        return capture.sent.pop()

    def ours(channel: str, req_id: int, **kwargs: Any) -> tuple[bytes, bytes]:
        """(request, cancel) for one topic, with request id ``req_id``."""
        proto = started(req_id, **kwargs)
        proto.subscribe({channel: ["AAPL"]})
        [request] = proto.data_to_send()
        proto.unsubscribe({channel: ["AAPL"]})
        [cancel] = proto.data_to_send()
        return request, cancel

    handshake = IBProtocol(client_id=7, market_data_type=3)
    handshake.receive(msg("176", "t"), TS)
    assert handshake.data_to_send()[1] == theirs(client.startApi)
    handshake.receive(msg("9", "1", "1"), TS)
    assert handshake.data_to_send() == [theirs(lambda: client.reqMarketDataType(3))]
    assert ours("trades", 1) == (
        theirs(lambda: client.reqTickByTickData(1, stock, "AllLast", 0, False)),
        theirs(lambda: client.cancelTickByTickData(1)),
    )
    assert ours("trades", 2, trade_ticks="Last")[0] == theirs(
        lambda: client.reqTickByTickData(2, stock, "Last", 0, False)
    )
    assert ours("quotes", 3, quotes_via="tick_by_tick") == (
        theirs(lambda: client.reqTickByTickData(3, stock, "BidAsk", 0, False)),
        theirs(lambda: client.cancelTickByTickData(3)),
    )
    assert ours("quotes", 4) == (
        theirs(lambda: client.reqMktData(4, stock, "", False, False, [])),
        theirs(lambda: client.cancelMktData(4)),
    )
    assert ours("books", 5) == (
        theirs(lambda: client.reqMktDepth(5, stock, 10, True, [])),
        theirs(lambda: client.cancelMktDepth(5, True)),
    )
    assert ours("bars", 6) == (
        theirs(lambda: client.reqRealTimeBars(6, stock, 5, "TRADES", False, [])),
        theirs(lambda: client.cancelRealTimeBars(6)),
    )
    heartbeat = started()
    heartbeat.heartbeat()
    assert heartbeat.data_to_send() == [theirs(client.reqCurrentTime)]


def test_subscribing_an_open_topic_cancels_it_and_opens_a_new_request() -> None:
    proto = started(10)
    proto.subscribe({"books": ["AAPL"]})
    proto.data_to_send()
    proto.subscribe({"books": ["AAPL"]})
    first, second = fields_of(proto.data_to_send())
    assert first == ["11", "1", "10", "1"]
    assert second[:3] == ["10", "5", "11"]
    proto.unsubscribe({"books": ["AAPL", "MSFT"]})
    assert proto.data_to_send() == [wire("11", "1", "11", "1")]
    proto.unsubscribe({"books": ["AAPL"]})
    assert proto.data_to_send() == []


def test_a_contract_maps_a_subscribed_name_to_ibs_symbol() -> None:
    proto = started(contracts={"BRK.B": IBContract("BRK B", primary_exchange="NYSE")})
    proto.subscribe({"quotes": ["BRK.B"]})
    [request] = fields_of(proto.data_to_send())
    assert request[4:12] == ["BRK B", "STK", "", "0.0", "", "", "SMART", "NYSE"]


@pytest.mark.parametrize(
    ("topics", "match"),
    [
        ({"depth": ["AAPL"]}, "unknown channel"),
        ({"quotes": "AAPL"}, "list of symbols"),
        ({"quotes": ["AA\x00PL"]}, "printable ASCII"),
        ({"quotes": ["ÄPFEL"]}, "printable ASCII"),
    ],
)
def test_a_bad_subscription_is_a_configuration_error(topics: Any, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        started().subscribe(topics)
    with pytest.raises(ConfigurationError, match=match):
        IBProvider().normalize(topics)


# --------------------------------------------------------------------------- market data


def test_bid_and_ask_ticks_combine_into_one_consistent_quote() -> None:
    proto = started(4)
    proto.subscribe({"quotes": ["AAPL"]})
    assert proto.receive(msg("1", "6", "4", "1", "218.45", "300", "1"), TS) == []
    [quote] = proto.receive(msg("1", "6", "4", "2", "218.47", "200", "1"), TS)
    assert quote == Quote(
        provider="ib", symbol="AAPL", ts_event=TS, ts_recv=TS,
        bid=218.45, ask=218.47, bid_size=300.0, ask_size=200.0,
    )  # fmt: skip
    [quote] = proto.receive(msg("2", "6", "4", "0", "500"), TS + 1)
    assert (quote.bid, quote.bid_size, quote.ask, quote.ask_size) == (218.45, 500.0, 218.47, 200.0)
    assert quote.ts_event == quote.ts_recv == TS + 1
    [quote] = proto.receive(msg("1", "6", "4", "2", "218.46", "100", "1"), TS)
    assert (quote.ask, quote.ask_size, quote.bid_size) == (218.46, 100.0, 500.0)
    assert proto.receive(msg("2", "6", "4", "3", "100"), TS) == [], "nothing changed"
    [quote] = proto.receive(msg("1", "6", "4", "1", "-1", "0", "0"), TS)
    assert (quote.bid, quote.bid_size) == (0.0, 0.0), "no bid"
    assert quote.mid is None
    [quote] = proto.receive(msg("2", "6", "4", "3", "0"), TS)
    assert (quote.ask, quote.ask_size) == (0.0, 0.0), "no ask"


def test_delayed_bid_and_ask_ticks_are_quotes_too_and_other_ticks_are_ignored() -> None:
    proto = started(4, market_data_type=3)
    proto.subscribe({"quotes": ["AAPL"]})
    for tick in (("4", "218.46", "100"), ("9", "217.0", "0"), ("6", "219", "0")):
        assert proto.receive(msg("1", "6", "4", *tick, "0"), TS) == []
    assert proto.receive(msg("2", "6", "4", "8", "152340"), TS) == []
    assert proto.receive(msg("1", "6", "4", "1", "", "0", "0"), TS) == []
    assert proto.receive(msg("46", "6", "4", "45", "1721831460"), TS) == []
    assert proto.receive(msg("45", "6", "4", "49", "0"), TS) == []
    assert proto.receive(msg("1", "6", "4", "66", "10.5", "3", "0"), TS) == []
    [quote] = proto.receive(msg("1", "6", "4", "67", "10.7", "4", "0"), TS)
    assert (quote.bid, quote.ask) == (10.5, 10.7)
    [quote] = proto.receive(msg("2", "6", "4", "70", "9"), TS)
    assert quote.ask_size == 9.0
    [quote] = proto.receive(msg("2", "6", "4", "69", "8"), TS)
    assert quote.bid_size == 8.0


def test_tick_by_tick_trades_and_quotes_decode_with_second_timestamps() -> None:
    proto = started(5, quotes_via="tick_by_tick")
    proto.subscribe({"trades": ["AAPL"]})
    proto.subscribe({"quotes": ["MSFT"]})
    [trade] = proto.receive(
        msg("99", "5", "2", "1721831460", "218.46", "100", "0", "ISLAND", ""), TS
    )
    assert trade == Trade(
        provider="ib", symbol="AAPL", ts_event=1_721_831_460_000_000_000, ts_recv=TS,
        price=218.46, size=100.0, exchange="ISLAND",
    )  # fmt: skip
    [trade] = proto.receive(msg("99", "5", "1", "1721831461", "218.5", "7", "2", "ARCA", "I T"), TS)
    assert trade.conditions == ("I", "T") and trade.size == 7.0
    [quote] = proto.receive(
        msg("99", "6", "3", "1721831462", "420.1", "420.2", "300", "0.5", "0"), TS
    )
    assert quote == Quote(
        provider="ib", symbol="MSFT", ts_event=1_721_831_462_000_000_000, ts_recv=TS,
        bid=420.1, ask=420.2, bid_size=300.0, ask_size=0.5,
    )  # fmt: skip
    assert proto.receive(msg("99", "6", "4", "1721831462", "420.15"), TS) == []


def test_data_for_a_request_that_is_no_longer_open_is_dropped() -> None:
    proto = started(5)
    proto.subscribe({"trades": ["AAPL"]})
    proto.unsubscribe({"trades": ["AAPL"]})
    assert proto.receive(msg("99", "5", "2", "1", "1.0", "1", "0", "X", ""), TS) == []
    assert proto.receive(msg("1", "6", "77", "1", "1.0", "1", "0"), TS) == []
    assert proto.receive(msg("2", "6", "77", "0", "1"), TS) == []
    assert proto.receive(msg("12", "1", "77", "0", "0", "1", "1.0", "1"), TS) == []
    assert proto.receive(msg("50", "3", "77", "1", "1", "1", "1", "1", "1", "1", "1"), TS) == []


def test_real_time_bars_decode_as_five_second_bars() -> None:
    proto = started(9)
    proto.subscribe({"bars": ["AAPL"]})
    [bar] = proto.receive(
        msg(
            "50", "3", "9", "1721831455", "218.4", "218.6", "218.3", "218.5", "1200", "218.47", "9"
        ),
        TS,
    )
    assert bar == Bar(
        provider="ib", symbol="AAPL", ts_event=1_721_831_455_000_000_000, ts_recv=TS,
        open=218.4, high=218.6, low=218.3, close=218.5, volume=1200.0, interval_s=5,
        trade_count=9, vwap=218.47,
    )  # fmt: skip


def test_current_time_is_the_heartbeat_reply() -> None:
    [reply] = started().receive(msg("49", "1", "1721831461"), TS)
    assert reply == HeartbeatReply(1_721_831_461_000_000_000)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (msg("99", "5", "2", "1721831460", "bad", "100", "0", "X", ""), "has a bad field"),
        (msg("99", "5", "2", "1721831460"), "lacks a field"),
        (msg("49", "1"), "lacks a field"),
        (msg("4", "2", "x", "200", "text", ""), "has a bad field"),
    ],
)
def test_a_message_that_does_not_parse_is_malformed_with_a_readable_sample(
    message: bytes, reason: str
) -> None:
    proto = started(5)
    proto.subscribe({"trades": ["AAPL"]})
    [item] = proto.receive(message, TS)
    assert isinstance(item, Malformed)
    assert reason in item.reason
    assert "\x00" not in item.sample and "," in item.sample


def test_a_text_frame_is_malformed() -> None:
    [item] = started().receive("49\x001\x00", TS)
    assert isinstance(item, Malformed) and "bytes" in item.reason


@pytest.mark.parametrize("msg_id", ["10", "52", "999"])
def test_messages_we_do_not_handle_are_unknown_and_ignored(msg_id: str) -> None:
    assert started().receive(msg(msg_id, "1", "4", "1"), TS) == [UnknownMessage(msg_id)]


def test_tick_req_params_and_the_market_data_type_that_answer_every_reqmktdata_are_known() -> None:
    """TWS answers each reqMktData with tickReqParams (81) and marketDataType (58):
    understood and quiet while the data is of the type asked for."""
    proto = started(4)
    proto.subscribe({"quotes": ["AAPL"]})
    assert proto.receive(msg("81", "4", "0.01", "9c0001", "3"), TS) == []
    assert proto.receive(msg("58", "1", "4", "1"), TS) == []


def test_a_market_data_type_other_than_the_one_asked_for_is_a_notice() -> None:
    proto = started(4)
    proto.subscribe({"quotes": ["AAPL"]})
    [notice] = proto.receive(msg("58", "1", "4", "3"), TS)
    assert isinstance(notice, ProviderNotice) and notice.code == "marketDataType"
    assert "quotes AAPL" in notice.message and "delayed" in notice.message
    assert notice.stale is None and not notice.resubscribe


@pytest.mark.parametrize(
    "price",
    ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "1_0", " 218.4", "218.4 ", "0x10", ""],
)
def test_a_price_that_is_not_a_plain_finite_decimal_is_malformed(price: str) -> None:
    proto = started(5)
    proto.subscribe({"trades": ["AAPL"]})
    [item] = proto.receive(msg("99", "5", "2", "1721831460", price, "100", "0", "X", ""), TS)
    assert isinstance(item, Malformed), item


@pytest.mark.parametrize("size", ["nan", "inf", "-1", "-0.5", "1e999", "1_00", " 100"])
def test_a_trade_size_that_is_not_a_finite_decimal_at_or_above_zero_is_malformed(
    size: str,
) -> None:
    proto = started(5)
    proto.subscribe({"trades": ["AAPL"]})
    [item] = proto.receive(msg("99", "5", "2", "1721831460", "218.4", size, "0", "X", ""), TS)
    assert isinstance(item, Malformed), item


@pytest.mark.parametrize(
    "time", ["0", "-1721831460", "99999999999", " 1721831460", "1721831460.5", "1_721_831_460"]
)
def test_a_tick_time_outside_1990_to_2200_or_not_whole_seconds_is_malformed(time: str) -> None:
    proto = started(5)
    proto.subscribe({"trades": ["AAPL"]})
    [item] = proto.receive(msg("99", "5", "2", time, "218.4", "100", "0", "X", ""), TS)
    assert isinstance(item, Malformed), item


def test_negative_prices_pass_because_spreads_and_some_futures_trade_below_zero() -> None:
    proto = started(5)
    proto.subscribe({"trades": ["CL"], "quotes": ["CL"]})  # 5 quotes, 6 trades
    [trade] = proto.receive(msg("99", "6", "1", "1587398400", "-37.63", "2", "0", "NYMEX", ""), TS)
    assert isinstance(trade, Trade) and trade.price == -37.63
    proto.receive(msg("1", "6", "5", "1", "-37.7", "3", "1"), TS)
    [quote] = proto.receive(msg("1", "6", "5", "2", "-37.5", "4", "1"), TS)
    assert (quote.bid, quote.bid_size, quote.ask, quote.ask_size) == (-37.7, 3.0, -37.5, 4.0)


def test_an_empty_message_is_malformed() -> None:
    [item] = started().receive(b"", TS)
    assert isinstance(item, Malformed) and "empty" in item.reason


# --------------------------------------------------------------------------- depth


def depth_l2(req_id: int, position: int, op: int, side: int, price: float, size: float) -> bytes:
    return msg("13", "1", str(req_id), str(position), "NSDQ", str(op), str(side), repr(price),
               repr(size), "1")  # fmt: skip


def test_the_first_depth_row_is_a_snapshot_and_later_rows_are_level_deltas() -> None:
    proto = started(7)
    proto.subscribe({"books": ["AAPL"]})
    [first] = proto.receive(depth_l2(7, 0, 0, 1, 218.45, 300), TS)
    assert first == OrderBookUpdate(
        provider="ib", symbol="AAPL", ts_event=TS, ts_recv=TS, bids=((218.45, 300.0),),
        snapshot=True,
    )  # fmt: skip
    [ask] = proto.receive(msg("12", "1", "7", "0", "0", "0", "218.47", "200"), TS)
    assert (ask.asks, ask.bids, ask.snapshot) == (((218.47, 200.0),), (), False)
    # Insert a better bid at row 0: the old row moves down, its level is unchanged.
    [update] = proto.receive(depth_l2(7, 0, 0, 1, 218.46, 100), TS)
    assert update.bids == ((218.46, 100.0),)
    # Update row 1 to a new price: the old level goes, the new one comes.
    [update] = proto.receive(depth_l2(7, 1, 1, 1, 218.44, 50), TS)
    assert update.bids == ((218.45, 0.0), (218.44, 50.0))
    # A second row at the same price as row 0 (another venue) adds to the level.
    [update] = proto.receive(depth_l2(7, 1, 0, 1, 218.46, 25), TS)
    assert update.bids == ((218.46, 125.0),)
    # Deleting row 0 takes its share out of the level; the rest moves up.
    [update] = proto.receive(depth_l2(7, 0, 2, 1, 0.0, 0), TS)
    assert update.bids == ((218.46, 25.0),)
    assert proto.receive(depth_l2(7, 0, 1, 1, 218.46, 25), TS) == [], "no change, no event"


def test_a_depth_operation_at_an_impossible_row_is_malformed() -> None:
    proto = started(7)
    proto.subscribe({"books": ["AAPL"]})
    for bad in (depth_l2(7, 1, 0, 1, 1.0, 1), depth_l2(7, 0, 1, 1, 1.0, 1),
                depth_l2(7, 0, 2, 0, 1.0, 1), depth_l2(7, 0, 3, 0, 1.0, 1),
                depth_l2(7, 0, 0, 2, 1.0, 1)):  # fmt: skip
        [item] = proto.receive(bad, TS)
        assert isinstance(item, Malformed) and "depth" in item.reason


def test_a_depth_reset_empties_the_book_at_once() -> None:
    proto = started(7)
    proto.subscribe({"books": ["AAPL"]})
    proto.receive(depth_l2(7, 0, 0, 1, 218.45, 300), TS)
    notice, empty = proto.receive(
        msg("4", "2", "7", "317", "Market depth data has been RESET", ""), TS
    )
    assert isinstance(notice, ProviderNotice) and notice.code == 317
    assert isinstance(empty, OrderBookUpdate) and empty.snapshot and not empty.bids
    [update] = proto.receive(depth_l2(7, 0, 0, 1, 218.40, 100), TS)
    assert (update.bids, update.snapshot) == (((218.40, 100.0),), False)


_OPS = st.lists(
    st.tuples(
        st.sampled_from([0, 1]),  # side: ask, bid
        st.sampled_from([0, 1, 2]),  # insert, update, delete
        st.integers(0, 1000),  # position, reduced to a valid one
        st.integers(0, 9),  # price index within the side's band
        st.integers(1, 5).map(lambda n: n * 0.5),  # size (fractional sizes exist)
    ),
    max_size=120,
)


@given(_OPS)
def test_depth_rows_published_as_levels_always_equal_the_rows_aggregated_by_price(
    ops: list[tuple[int, int, int, int, float]],
) -> None:
    """Any sequence of valid TWS row operations (inserts shift rows down, deletes
    shift them up, updates may move a row to another price, two rows may share a
    price), decoded by the protocol and folded into an OrderBook, leaves the book
    equal to a naive row list aggregated by price after every single operation."""
    proto = started(3)
    proto.subscribe({"books": ["AAPL"]})
    rows: dict[int, list[tuple[float, float]]] = {0: [], 1: []}
    book = OrderBook("AAPL", "ib")
    for side, op, position, price_index, size in ops:
        side_rows = rows[side]
        if op != 0 and not side_rows:
            op = 0
        position %= len(side_rows) + (1 if op == 0 else 0)
        price = (90 + price_index) / 4 if side == 1 else (110 + price_index) / 4
        if op == 0:
            side_rows.insert(position, (price, size))
        elif op == 1:
            side_rows[position] = (price, size)
        else:
            side_rows.pop(position)
        for item in proto.receive(depth_l2(3, position, op, side, price, size), TS):
            assert isinstance(item, OrderBookUpdate)
            book.apply(item)
        for side_index, levels in ((1, book.bids), (0, book.asks)):
            expected: dict[float, float] = {}
            for row_price, row_size in rows[side_index]:
                expected[row_price] = expected.get(row_price, 0) + row_size
            assert dict(levels) == expected


@given(_OPS)
def test_depth_rows_levels_match_a_naive_aggregation_for_any_prices(
    ops: list[tuple[int, int, int, int, float]],
) -> None:
    """Without an OrderBook in between (so bids and asks may cross), DepthRows'
    own levels equal the naive aggregation, best first on each side."""
    depth = DepthRows()
    rows: dict[int, list[tuple[float, float]]] = {0: [], 1: []}
    for side, op, position, price_index, size in ops:
        if op != 0 and not rows[side]:
            op = 0
        position %= len(rows[side]) + (1 if op == 0 else 0)
        price = 100 + price_index * 0.01
        if op == 0:
            rows[side].insert(position, (price, size))
        elif op == 1:
            rows[side][position] = (price, size)
        else:
            rows[side].pop(position)
        depth.apply(position, op, side, price, size)
    bids, asks = depth.levels()
    for side, levels, descending in ((1, bids, True), (0, asks, False)):
        expected: dict[float, float] = {}
        for row_price, row_size in rows[side]:
            expected[row_price] = expected.get(row_price, 0) + row_size
        assert list(levels) == sorted(expected.items(), reverse=descending)


# --------------------------------------------------------------------------- errors


def error(req_id: int, code: int, text: str = "text") -> bytes:
    return msg("4", "2", str(req_id), str(code), text, "")


def test_duplicate_client_id_is_a_fatal_authentication_error_naming_the_fix() -> None:
    proto = IBProtocol(client_id=5)
    proto.receive(msg("176", "t"), TS)
    text = "Unable to connect as the client id is already in use."
    [failure] = proto.receive(error(-1, 326, text), TS)
    assert isinstance(failure, ProviderFailure) and not failure.symbol
    assert isinstance(failure.error, AuthenticationError)
    assert failure.error.code == 326 and failure.error.fatal
    assert "client id 5" in str(failure.error) and "client_id=" in str(failure.error)


def test_connectivity_loss_marks_data_stale_and_restoration_resubscribes() -> None:
    proto = started(3)
    proto.subscribe({"quotes": ["AAPL"]})
    proto.data_to_send()
    assert proto.receive(error(-1, 1100), TS) == [ProviderNotice(1100, "text", stale=True)]
    assert proto.receive(error(-1, 2110), TS) == [ProviderNotice(2110, "text", stale=None)]
    [restored] = proto.receive(error(-1, 1102), TS)
    assert restored == ProviderNotice(1102, "text", stale=False, resubscribe=True)
    # 1102: TWS kept the request; a resubscription cancels it and opens a new one.
    proto.subscribe({"quotes": ["AAPL"]})
    assert [f[0] for f in fields_of(proto.data_to_send())] == ["2", "1"]


def test_restoration_with_data_lost_forgets_the_requests_tws_dropped() -> None:
    proto = started(3)
    proto.subscribe({"quotes": ["AAPL"], "books": ["MSFT"]})
    proto.data_to_send()
    proto.receive(error(-1, 1100), TS)
    [restored] = proto.receive(error(-1, 1101), TS)
    assert restored.resubscribe and restored.stale is False  # type: ignore[union-attr]
    assert proto.receive(msg("1", "6", "4", "1", "1.0", "1", "0"), TS) == []
    proto.unsubscribe({"quotes": ["AAPL"]})
    assert proto.data_to_send() == [], "nothing left to cancel"
    proto.subscribe({"quotes": ["AAPL"]})
    assert [f[0] for f in fields_of(proto.data_to_send())] == ["1"]


def test_farm_status_is_tracked_per_farm_and_reported_only_when_staleness_changes() -> None:
    proto = started()
    ok = "Market data farm connection is OK:"
    broken = "Market data farm connection is broken:"
    assert proto.receive(error(-1, 2104, ok + "usfarm"), TS)[0].stale is None  # type: ignore[union-attr]
    assert proto.receive(error(-1, 2103, broken + "usfarm"), TS)[0].stale is True  # type: ignore[union-attr]
    assert proto.receive(error(-1, 2103, broken + "cashfarm"), TS)[0].stale is None  # type: ignore[union-attr]
    assert proto.receive(error(-1, 2104, ok + "usfarm"), TS)[0].stale is None  # type: ignore[union-attr]
    assert proto.receive(error(-1, 2104, ok + "cashfarm"), TS)[0].stale is False  # type: ignore[union-attr]
    for code in (2105, 2106, 2107, 2108, 2119, 2157, 2158):
        [notice] = proto.receive(error(-1, code), TS)
        assert notice == ProviderNotice(code, "text")


@pytest.mark.parametrize("code", [200, 101, 309, 322, 354, 10089, 10189, 10190, 162])
def test_a_refused_request_fails_only_its_own_subscription(code: int) -> None:
    proto = started(3)
    proto.subscribe({"quotes": ["AAPL", "NOPE"]})
    proto.data_to_send()
    [failure] = proto.receive(error(4, code, "No security definition"), TS)
    assert isinstance(failure, ProviderFailure)
    assert (failure.channel, failure.symbol) == ("quotes", "NOPE")
    assert isinstance(failure.error, SubscriptionError) and failure.error.code == code
    assert "quotes NOPE: No security definition" in str(failure.error)
    proto.unsubscribe({"quotes": ["NOPE"]})
    assert proto.data_to_send() == [], "the refused request is gone"
    assert proto.receive(msg("1", "6", "3", "1", "1.0", "1", "0"), TS) == []


@pytest.mark.parametrize("code", [100, 300, 310, 316, 1300, 10167, 10197, 2100, 2150])
def test_informational_codes_are_notices_even_with_a_request_id(code: int) -> None:
    proto = started(3)
    proto.subscribe({"quotes": ["AAPL"]})
    [notice] = proto.receive(error(3, code), TS)
    assert isinstance(notice, ProviderNotice) and notice.code == code
    assert notice.stale is None and not notice.resubscribe
    assert notice.message.startswith("quotes AAPL: text")


def test_an_error_for_an_unknown_request_is_a_notice() -> None:
    [notice] = started().receive(error(42, 200, "No security definition"), TS)
    assert notice == ProviderNotice(200, "No security definition")


# --------------------------------------------------------------------------- provider


def test_provider_defaults_follow_the_documented_ports_and_knobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("IB_HOST", "IB_PORT", "IB_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    provider = IBProvider()
    assert (provider.host, provider.port, provider.client_id) == ("127.0.0.1", 7497, 1)
    assert provider.name == "ib"
    assert provider.channels == {"trades", "quotes", "books", "bars"}
    assert (provider.ping_interval, provider.ping_timeout) == (10.0, 10.0)
    assert provider.max_messages_per_second == 45
    assert provider.calendar is calendar_for("us_equity")
    provider.check()


def test_provider_reads_host_port_and_client_id_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IB_HOST", "10.1.2.3")
    monkeypatch.setenv("IB_PORT", "4002")
    monkeypatch.setenv("IB_CLIENT_ID", "17")
    provider = IBProvider()
    assert (provider.host, provider.port, provider.client_id) == ("10.1.2.3", 4002, 17)
    assert IBProvider("gw", 4001, 3).port == 4001


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"port": 0}, "port"),
        ({"client_id": -1}, "client_id"),
        ({"host": ""}, "host"),
        ({"trade_ticks": "Trades"}, "trade_ticks"),
        ({"quotes_via": "depth"}, "quotes_via"),
        ({"market_data_type": 5}, "market_data_type"),
        ({"depth_rows": 0}, "depth_rows"),
        ({"max_messages_per_second": 60}, "max_messages_per_second"),
        ({"ping_timeout": 0}, "ping_timeout"),
        ({"stale_after": -1}, "stale_after"),
        ({"contracts": {"AAPL": "AAPL"}}, "IBContract"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_provider_settings_are_configuration_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        IBProvider(**kwargs)


def test_a_bad_port_in_the_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IB_PORT", "paper")
    with pytest.raises(ConfigurationError, match=r"IB_PORT.*'paper'"):
        IBProvider()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"symbol": "A\x00B"},
        {"symbol": ""},
        {"symbol": "X", "con_id": -1},
        {"symbol": "X", "exchange": "É"},
    ],
)
def test_a_contract_that_cannot_travel_on_the_wire_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        IBContract(**kwargs)


def test_each_connection_numbers_its_requests_from_one() -> None:
    """The request-id counter belongs to the protocol, one per connection (as ib_async's
    does), not to the frozen provider: two connections of one provider share nothing."""
    provider = IBProvider(port=7497)
    ids = []
    for _ in range(2):
        proto = provider.protocol()
        proto.receive(msg("176", "t"), TS)
        proto.receive(msg("9", "1", "1"), TS)
        proto.subscribe({"quotes": ["AAPL"], "trades": ["AAPL"]})
        ids += [
            int(f[2]) if f[0] == "1" else int(f[1]) for f in fields_of(proto.data_to_send()[2:])
        ]
    assert ids == [1, 2, 1, 2]
    assert provider == IBProvider(port=7497), "making protocols leaves the provider as it was"
