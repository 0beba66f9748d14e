"""Polygon/Massive provider configuration and sans-IO protocol (puffin_trio.providers.polygon).

Server frames are written here by hand as plain JSON (the samples of
Polygon's documentation among them), independently of the simulator, so the two
cross-check each other.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from puffin_trio.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionLimitError,
    ProviderError,
    SubscriptionError,
    TransientProviderError,
)
from puffin_trio.events import Bar, LimitBands, OrderBookUpdate, Quote, Trade
from puffin_trio.market_hours import AlwaysOpenCalendar, USEquityCalendar
from puffin_trio.providers._base import (
    SAMPLE_LIMIT,
    Authenticated,
    Connected,
    Malformed,
    ProviderFailure,
    ProviderNotice,
    SubscriptionAck,
    UnknownMessage,
)
from puffin_trio.providers.polygon import (
    DEFAULT_MAX_FRAME_BYTES,
    PolygonProtocol,
    PolygonProvider,
    StrictPolygonProtocol,
    error_for,
)
from puffin_trio.subscriptions import SubscriptionState

KEY = "pk-never-print-me"
TS_RECV = 1_700_000_000_123_456_789
MS = 1_712_413_506_542
NS = MS * 1_000_000


def stocks(**kw: Any) -> PolygonProtocol:
    return PolygonProtocol(key=KEY, market="stocks", **kw)


def crypto(**kw: Any) -> PolygonProtocol:
    return PolygonProtocol(key=KEY, market="crypto", **kw)


def receive(proto: PolygonProtocol, *messages: Any) -> list[Any]:
    return proto.receive(orjson.dumps(list(messages)).decode(), TS_RECV)


def receive_one(proto: PolygonProtocol, message: Any) -> Any:
    items = receive(proto, message)
    assert len(items) == 1
    return items[0]


def status(state: str, message: str) -> dict[str, str]:
    return {"ev": "status", "status": state, "message": message}


def sent(proto: PolygonProtocol) -> list[Any]:
    return [orjson.loads(frame) for frame in proto.data_to_send()]


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MASSIVE_API_KEY", raising=False)
    monkeypatch.delenv("POLYGON_API_KEY", raising=False)


# --------------------------------------------------------------------------- handshake


def test_nothing_is_queued_before_the_server_hello() -> None:
    assert stocks().data_to_send() == []


def test_connected_yields_connected_and_queues_the_auth_frame() -> None:
    proto = stocks()
    item = receive_one(proto, status("connected", "Connected Successfully"))
    assert item == Connected("Connected Successfully")
    [frame] = proto.data_to_send()
    assert isinstance(frame, str), "Polygon frames are JSON text"
    assert orjson.loads(frame) == {"action": "auth", "params": KEY}
    assert proto.data_to_send() == []


def test_auth_success_yields_authenticated() -> None:
    assert receive_one(stocks(), status("auth_success", "authenticated")) == Authenticated(
        "authenticated"
    )


def test_the_key_is_not_in_the_protocol_repr() -> None:
    assert KEY not in repr(stocks()) and KEY not in repr(crypto())
    assert repr(crypto()) == "PolygonProtocol(market='crypto')"


# --------------------------------------------------------------------------- failure statuses


@pytest.mark.parametrize(
    ("state", "message", "cls", "fatal"),
    [
        ("auth_failed", "authentication failed", AuthenticationError, True),
        ("auth_timeout", "No authentication request received.", TransientProviderError, False),
        ("max_connections", "Maximum number of connections exceeded.", ConnectionLimitError, False),
        ("slow_consumer", "slow consumer", TransientProviderError, False),
        ("force_disconnect", "forced", TransientProviderError, False),
        ("error", "not authorized", SubscriptionError, True),
        (
            "error",
            "Subscription limit reached for feed. Please remove some subscriptions and try again.",
            SubscriptionError,
            True,
        ),
        ("error", "something broke", TransientProviderError, False),
    ],
)
def test_failure_statuses_become_typed_provider_failures(
    state: str, message: str, cls: type[ProviderError], fatal: bool
) -> None:
    item = receive_one(stocks(), status(state, message))
    assert isinstance(item, ProviderFailure)
    assert type(item.error) is cls
    assert item.error.fatal is fatal
    assert item.error.code == state
    assert item.error.provider == "polygon"
    assert str(item.error).startswith(f"[polygon] {message}")
    assert KEY not in str(item.error)
    assert (item.channel, item.symbol) == ("", "")


def test_auth_failure_tells_the_user_where_the_key_comes_from() -> None:
    error = error_for("auth_failed", "authentication failed")
    assert error is not None
    assert "MASSIVE_API_KEY" in str(error) and "POLYGON_API_KEY" in str(error)


def test_statuses_that_are_not_failures_have_no_error() -> None:
    assert error_for("success", "subscribed to: T.AAPL") is None
    assert error_for("brand_new", "hello") is None


def test_an_unknown_status_is_a_notice() -> None:
    assert receive_one(stocks(), status("maintenance", "back soon")) == ProviderNotice(
        "maintenance", "back soon"
    )


def test_a_success_that_confirms_no_topic_of_ours_is_a_notice() -> None:
    proto = stocks()
    assert receive_one(proto, status("success", "hello")) == ProviderNotice("success", "hello")
    other_cluster = status("success", "subscribed to: XT.BTC-USD")
    assert receive_one(proto, other_cluster) == ProviderNotice(
        "success", "subscribed to: XT.BTC-USD"
    )


def test_a_status_without_message_still_decodes() -> None:
    assert receive_one(stocks(), {"ev": "status", "status": "auth_success"}) == Authenticated("")


def test_a_status_whose_status_is_not_text_is_malformed() -> None:
    item = receive_one(stocks(), {"ev": "status", "status": 7, "message": "x"})
    assert isinstance(item, Malformed)
    assert "'status'" in item.reason


# --------------------------------------------------------------------------- subscription acks


def test_each_subscribed_topic_is_acked_on_its_own_in_our_channel_names() -> None:
    proto = stocks()
    items = receive(
        proto,
        status("success", "subscribed to: T.AAPL"),
        status("success", "subscribed to: Q.*"),
        status("success", "subscribed to: AM.BRK.A"),
        status("success", "subscribed to: A.MSFT"),
        status("success", "subscribed to: LULD.TSLA"),
    )
    assert items == [
        SubscriptionAck({"trades": frozenset({"AAPL"})}, complete=False),
        SubscriptionAck({"quotes": frozenset({"*"})}, complete=False),
        SubscriptionAck({"bars": frozenset({"BRK.A"})}, complete=False),
        SubscriptionAck({"second_bars": frozenset({"MSFT"})}, complete=False),
        SubscriptionAck({"lulds": frozenset({"TSLA"})}, complete=False),
    ]


def test_crypto_topics_are_acked_in_our_channel_names() -> None:
    items = receive(
        crypto(),
        status("success", "subscribed to: XT.BTC-USD"),
        status("success", "subscribed to: XQ.BTC-USD"),
        status("success", "subscribed to: XL2.BTC-USD"),
        status("success", "subscribed to: XA.ETH-USD"),
        status("success", "subscribed to: XAS.ETH-USD"),
    )
    assert [item.topics for item in items] == [
        {"trades": frozenset({"BTC-USD"})},
        {"quotes": frozenset({"BTC-USD"})},
        {"books": frozenset({"BTC-USD"})},
        {"bars": frozenset({"ETH-USD"})},
        {"second_bars": frozenset({"ETH-USD"})},
    ]


def test_an_unsubscription_acks_the_removed_topics_only() -> None:
    """Incremental, like a subscription's ack: its cost does not grow with what stays."""
    proto = stocks()
    receive(
        proto,
        status("success", "subscribed to: T.AAPL"),
        status("success", "subscribed to: T.MSFT"),
        status("success", "subscribed to: Q.AAPL"),
    )
    assert receive_one(proto, status("success", "unsubscribed to: T.AAPL")) == SubscriptionAck(
        {"trades": frozenset({"AAPL"})}, complete=False, removed=True
    )
    assert receive_one(
        proto, status("success", "unsubscribed to: T.MSFT,Q.AAPL")
    ) == SubscriptionAck(
        {"trades": frozenset({"MSFT"}), "quotes": frozenset({"AAPL"})},
        complete=False,
        removed=True,
    )


def test_a_confirmation_listing_several_topics_acks_them_all() -> None:
    item = receive_one(stocks(), status("success", "subscribed to: T.AAPL, T.MSFT,Q.AAPL"))
    assert item == SubscriptionAck(
        {"trades": frozenset({"AAPL", "MSFT"}), "quotes": frozenset({"AAPL"})}, complete=False
    )


_TOPICS = st.tuples(st.sampled_from(["T", "Q", "AM"]), st.sampled_from(["AAPL", "MSFT", "*"]))
_CHANNEL = {"T": "trades", "Q": "quotes", "AM": "bars"}


@given(st.lists(st.tuples(st.booleans(), _TOPICS), max_size=40))
def test_acks_keep_the_session_in_step_with_the_server(
    changes: list[tuple[bool, tuple[str, str]]],
) -> None:
    """Whatever the server confirms and un-confirms, in any order, the session's confirmed
    set (fed the protocol's acks) equals the set of topics the server has confirmed."""
    proto = stocks()
    state = SubscriptionState()
    server: set[tuple[str, str]] = set()
    for adding, (prefix, symbol) in changes:
        verb = "subscribed" if adding else "unsubscribed"
        [ack] = receive(proto, status("success", f"{verb} to: {prefix}.{symbol}"))
        assert isinstance(ack, SubscriptionAck)
        if ack.removed:
            state.unconfirm(ack.topics)
        else:
            state.confirm(ack.topics, complete=ack.complete)
        if adding:
            server.add((_CHANNEL[prefix], symbol))
        else:
            server.discard((_CHANNEL[prefix], symbol))
        expected: dict[str, set[str]] = {}
        for channel, sym in server:
            expected.setdefault(channel, set()).add(sym)
        assert state.confirmed == {c: frozenset(s) for c, s in expected.items()}


# --------------------------------------------------------------------------- stocks data


def test_stock_trade_decodes_every_field() -> None:
    message = {
        "ev": "T", "sym": "MSFT", "x": 4, "i": "52983525029461", "z": 3, "p": 411.27, "s": 100,
        "c": [12, 37], "t": MS, "q": 3681328, "trfi": 202, "trft": MS,
    }  # fmt: skip
    assert receive_one(stocks(), message) == Trade(
        provider="polygon",
        symbol="MSFT",
        ts_event=NS,
        ts_recv=TS_RECV,
        price=411.27,
        size=100.0,
        exchange="4",
        trade_id="52983525029461",
        conditions=("12", "37"),
        tape="C",
        seq=3681328,
    )


def test_stock_trade_optional_fields_may_be_absent() -> None:
    trade = receive_one(stocks(), {"ev": "T", "sym": "AAPL", "p": 1.5, "s": 3, "t": MS})
    assert (trade.exchange, trade.trade_id, trade.conditions, trade.tape, trade.seq) == (
        "",
        "",
        (),
        "",
        None,
    )


def test_decimal_size_wins_over_the_integer_size() -> None:
    message = {"ev": "T", "sym": "AAPL", "p": 200.0, "s": 0, "ds": "0.125", "t": MS, "q": 1}
    assert receive_one(stocks(), message).size == 0.125


@pytest.mark.parametrize(("z", "tape"), [(1, "A"), (2, "B"), (3, "C"), (9, "9")])
def test_tape_numbers_become_tape_letters(z: int, tape: str) -> None:
    message = {"ev": "T", "sym": "AAPL", "p": 1.0, "s": 1, "t": MS, "z": z}
    assert receive_one(stocks(), message).tape == tape


def test_stock_quote_decodes_every_field_with_sizes_in_round_lots() -> None:
    message = {
        "ev": "Q", "sym": "MSFT", "bx": 12, "bp": 411.26, "bs": 2, "ax": 11, "ap": 411.28,
        "as": 3, "c": 1, "i": [604], "t": MS + 1, "q": 50385480, "z": 3,
    }  # fmt: skip
    assert receive_one(stocks(), message) == Quote(
        provider="polygon",
        symbol="MSFT",
        ts_event=NS + 1_000_000,
        ts_recv=TS_RECV,
        bid=411.26,
        ask=411.28,
        bid_size=2.0,
        ask_size=3.0,
        bid_exchange="12",
        ask_exchange="11",
        conditions=("1",),
        tape="C",
        seq=50385480,
    )


@pytest.mark.parametrize(("ev", "interval"), [("AM", 60), ("A", 1)])
def test_stock_aggregates_become_bars_opening_at_the_window_start(ev: str, interval: int) -> None:
    message = {
        "ev": ev, "sym": "MSFT", "v": 48213, "av": 9120334, "op": 410.02, "vw": 411.1932,
        "o": 411.05, "c": 411.27, "h": 411.4, "l": 410.98, "a": 410.7712, "z": 96,
        "s": 1712413440000, "e": 1712413440000 + interval * 1000,
    }  # fmt: skip
    assert receive_one(stocks(), message) == Bar(
        provider="polygon",
        symbol="MSFT",
        ts_event=1712413440000 * 1_000_000,
        ts_recv=TS_RECV,
        open=411.05,
        high=411.4,
        low=410.98,
        close=411.27,
        volume=48213.0,
        interval_s=interval,
        vwap=411.1932,
    )


@pytest.mark.parametrize("text", ["NaN", "inf", "1e999", "1_0", " 1", "-1", "0x1", "\u0661", ""])
def test_a_decimal_size_that_is_not_plain_finite_text_at_or_above_zero_is_malformed(
    text: str,
) -> None:
    good = {"ev": "T", "sym": "AAPL", "p": 200.0, "s": 0, "t": MS, "q": 1}
    bad, trade = receive(stocks(), {**good, "ds": text}, {**good, "ds": "0.125"})
    assert isinstance(bad, Malformed), bad
    assert isinstance(trade, Trade) and trade.size == 0.125


def test_decimal_volume_wins_over_the_integer_volume() -> None:
    message = {
        "ev": "AM", "sym": "X", "v": 1, "dv": "1.5", "o": 1, "h": 1, "l": 1, "c": 1, "s": MS,
    }  # fmt: skip
    bar = receive_one(stocks(), message)
    assert (bar.volume, bar.vwap) == (1.5, 0.0)


@pytest.mark.parametrize("t", [MS, NS, NS // 1000], ids=["ms", "ns", "us"])
def test_luld_time_unit_is_read_from_its_magnitude(t: int) -> None:
    message = {
        "ev": "LULD", "T": "AAPL", "h": 230.5, "l": 210.25, "i": [17, 18], "z": 3, "t": t, "q": 7,
    }  # fmt: skip
    assert receive_one(stocks(), message) == LimitBands(
        provider="polygon",
        symbol="AAPL",
        ts_event=NS,
        ts_recv=TS_RECV,
        limit_up=230.5,
        limit_down=210.25,
        indicator="17,18",
        tape="C",
        seq=7,
    )


# --------------------------------------------------------------------------- crypto data


@pytest.mark.parametrize(
    ("conditions", "sides"),
    [([1], ("S",)), ([2], ("B",)), ([0], ()), ([], ()), ([1, 9], ("S", "9"))],
)
def test_crypto_trade_conditions_become_the_taker_side(
    conditions: list[int], sides: tuple[str, ...]
) -> None:
    message = {
        "ev": "XT", "pair": "BTC-USD", "p": 33021.9, "s": 0.01, "t": MS, "c": conditions,
        "i": "14272084", "x": 1, "r": MS + 3,
    }  # fmt: skip
    assert receive_one(crypto(), message) == Trade(
        provider="polygon",
        symbol="BTC-USD",
        ts_event=NS,
        ts_recv=TS_RECV,
        price=33021.9,
        size=0.01,
        exchange="1",
        trade_id="14272084",
        conditions=sides,
    )


def test_crypto_trade_id_may_be_an_integer_or_absent() -> None:
    base = {"ev": "XT", "pair": "BTC-USD", "p": 1.0, "s": 1.0, "t": MS}
    assert receive_one(crypto(), {**base, "i": 123456789}).trade_id == "123456789"
    assert receive_one(crypto(), base).trade_id == ""


def test_crypto_quote_decodes_with_fractional_sizes() -> None:
    message = {
        "ev": "XQ", "pair": "BTC-USD", "bp": 65001.5, "bs": 0.42, "ap": 65002.0, "as": 0.8,
        "t": MS, "x": 1, "r": MS,
    }  # fmt: skip
    assert receive_one(crypto(), message) == Quote(
        provider="polygon",
        symbol="BTC-USD",
        ts_event=NS,
        ts_recv=TS_RECV,
        bid=65001.5,
        ask=65002.0,
        bid_size=0.42,
        ask_size=0.8,
        bid_exchange="1",
        ask_exchange="1",
    )


def test_level2_book_is_a_snapshot_of_price_size_pairs() -> None:
    message = {
        "ev": "XL2", "pair": "BTC-USD", "b": [[65001.5, 0.42], [65001.0, 1.3]],
        "a": [[65002.0, 0.8], [65003.5, 2.1]], "t": 1712413506100, "x": 1, "r": 1712413506112,
    }  # fmt: skip
    assert receive_one(crypto(), message) == OrderBookUpdate(
        provider="polygon",
        symbol="BTC-USD",
        ts_event=1712413506100 * 1_000_000,
        ts_recv=TS_RECV,
        bids=((65001.5, 0.42), (65001.0, 1.3)),
        asks=((65002.0, 0.8), (65003.5, 2.1)),
        snapshot=True,
    )


def test_a_book_side_left_out_is_empty() -> None:
    message = {"ev": "XL2", "pair": "BTC-USD", "b": [[1.0, 2.0]], "t": MS}
    book = receive_one(crypto(), message)
    assert (book.bids, book.asks, book.snapshot) == (((1.0, 2.0),), (), True)


@pytest.mark.parametrize(("ev", "interval"), [("XA", 60), ("XAS", 1)])
def test_crypto_aggregates_become_bars(ev: str, interval: int) -> None:
    message = {
        "ev": ev, "pair": "BTC-USD", "o": 1.0, "c": 2.0, "h": 3.0, "l": 0.5, "v": 0.75,
        "vw": 1.5, "s": MS, "e": MS + interval * 1000, "z": 0.1,
    }  # fmt: skip
    assert receive_one(crypto(), message) == Bar(
        provider="polygon",
        symbol="BTC-USD",
        ts_event=NS,
        ts_recv=TS_RECV,
        open=1.0,
        high=3.0,
        low=0.5,
        close=2.0,
        volume=0.75,
        interval_s=interval,
        vwap=1.5,
    )


# --------------------------------------------------------------------------- frames


def test_a_frame_decodes_statuses_and_data_in_wire_order() -> None:
    items = receive(
        stocks(),
        status("success", "subscribed to: T.AAPL"),
        {"ev": "T", "sym": "AAPL", "p": 1.0, "s": 1, "t": MS, "q": 1},
        {"ev": "Q", "sym": "AAPL", "bp": 1, "ap": 2, "bs": 1, "as": 1, "t": MS, "q": 1},
    )
    assert [type(item) for item in items] == [SubscriptionAck, Trade, Quote]


def test_a_binary_frame_of_json_decodes() -> None:
    frame = orjson.dumps([status("auth_success", "authenticated")])
    assert stocks().receive(frame, TS_RECV) == [Authenticated("authenticated")]


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("\x00garbage", "undecodable JSON frame"),
        ('{"ev":"T"}', "frame is not an array"),
        ("[1,", "undecodable JSON frame"),
    ],
)
def test_an_undecodable_frame_is_one_malformed_item(frame: str, reason: str) -> None:
    [item] = stocks().receive(frame, TS_RECV)
    assert isinstance(item, Malformed)
    assert item.reason.startswith(reason)
    assert item.sample == frame


def test_a_malformed_sample_is_truncated() -> None:
    [item] = stocks().receive("{" + "x" * 5000, TS_RECV)
    assert isinstance(item, Malformed)
    assert len(item.sample) < SAMPLE_LIMIT + 40


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (7, "message is not a map"),
        (["ev", "T"], "message is not a map"),
        ({"sym": "AAPL"}, "message has no 'ev'"),
        ({"ev": ["T"]}, "event type 'ev' is not a string"),
        ({"ev": "T", "sym": "AAPL", "p": 1.0, "s": 1}, "'T' message lacks field 't'"),
        ({"ev": "T", "sym": "AAPL", "p": 1.0, "s": 1, "t": 1.5e12}, "'T' message has a bad field"),
        ({"ev": "T", "sym": "AAPL", "p": 1.0, "s": 1, "t": "1"}, "'T' message has a bad field"),
        ({"ev": "T", "sym": 5, "p": 1.0, "s": 1, "t": MS}, "'T' message has a bad field"),
        ({"ev": "T", "sym": "A", "p": "x", "s": 1, "t": MS}, "'T' message has a bad field"),
        ({"ev": "T", "sym": "A", "p": 1, "s": 1, "t": MS, "q": "1"}, "'T' message has a bad"),
        ({"ev": "T", "sym": "A", "p": 1, "s": 1, "t": MS, "c": 12}, "'T' message has a bad"),
        ({"ev": "T", "sym": "A", "p": 1, "s": 1, "t": MS, "x": 1.5}, "'T' message has a bad"),
        ({"ev": "T", "sym": "A", "p": 1, "s": 1, "t": MS, "z": [1]}, "'T' message has a bad"),
        ({"ev": "Q", "sym": "A", "bp": 1, "ap": 1, "bs": 1, "t": MS}, "'Q' message lacks"),
        ({"ev": "AM", "sym": "A", "o": 1, "h": 1, "l": 1, "c": 1, "v": 1}, "'AM' message lacks"),
        ({"ev": "LULD", "T": "A", "h": 1, "l": 1, "t": 1.0}, "'LULD' message has a bad field"),
        ({"ev": "status"}, "'status' message lacks field 'status'"),
    ],
)
def test_a_bad_message_is_malformed_and_its_neighbours_still_decode(
    message: Any, reason: str
) -> None:
    good = {"ev": "T", "sym": "AAPL", "p": 1.0, "s": 1, "t": MS, "q": 1}
    before, bad, after = receive(stocks(), good, message, good)
    assert isinstance(before, Trade) and isinstance(after, Trade)
    assert isinstance(bad, Malformed)
    assert bad.reason.startswith(reason), bad.reason


@pytest.mark.parametrize(
    "message",
    [
        {"ev": "XL2", "pair": "BTC-USD", "b": [[1.0, 2.0, 3.0]], "t": MS},
        {"ev": "XL2", "pair": "BTC-USD", "b": [[1.0]], "t": MS},
        {"ev": "XL2", "pair": "BTC-USD", "a": {"1.0": 2.0}, "t": MS},
        {"ev": "XL2", "pair": "BTC-USD", "a": [["x", 1]], "t": MS},
        {"ev": "XT", "pair": "BTC-USD", "p": 1, "s": 1, "t": MS, "c": 1},
        {"ev": "XQ", "pair": "BTC-USD", "bp": 1, "ap": 1, "bs": 1, "as": 1},
    ],
)
def test_bad_crypto_messages_are_malformed(message: dict[str, Any]) -> None:
    assert isinstance(receive_one(crypto(), message), Malformed)


@pytest.mark.parametrize("ev", ["FMV", "NOI", "LV", "ZZ", "XT", "XL2"])
def test_event_types_the_stocks_cluster_does_not_model_are_unknown(ev: str) -> None:
    assert receive_one(stocks(), {"ev": ev, "sym": "AAPL"}) == UnknownMessage(ev)


@pytest.mark.parametrize("ev", ["T", "Q", "LULD", "AM", "FMV"])
def test_event_types_the_crypto_cluster_does_not_model_are_unknown(ev: str) -> None:
    assert receive_one(crypto(), {"ev": ev, "pair": "BTC-USD"}) == UnknownMessage(ev)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what JSON encoders emit
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["ev", "sym", "pair", "p", "s", "t", "q", "b", "a", "status", "message"]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)
_EVENTS = st.sampled_from(["T", "Q", "A", "AM", "LULD", "XT", "XQ", "XL2", "XA", "XAS", "status"])


@given(st.lists(st.dictionaries(st.just("ev"), _EVENTS) | _JSON, max_size=6), st.booleans())
def test_decoding_never_raises_and_yields_one_item_per_message(
    messages: list[Any], is_crypto: bool
) -> None:
    """Any JSON array decodes without raising, into exactly one item per message."""
    proto = crypto() if is_crypto else stocks()
    assert len(proto.receive(orjson.dumps(messages).decode(), TS_RECV)) == len(messages)


# --------------------------------------------------------------------------- sequence guard keys


def test_q_is_guarded_monotonically_by_default_and_strictly_on_request() -> None:
    assert PolygonProtocol.guard_mode == "monotonic"
    assert StrictPolygonProtocol.guard_mode == "strict"
    provider = PolygonProvider(key=KEY)
    assert type(provider.protocol()) is PolygonProtocol
    assert type(PolygonProvider(key=KEY, sequence="strict").protocol()) is StrictPolygonProtocol


def test_stream_keys_are_per_event_type_and_symbol() -> None:
    proto = stocks()
    trade, quote, minute, second, luld = receive(
        proto,
        {"ev": "T", "sym": "AAPL", "p": 1.0, "s": 1, "t": MS, "q": 1},
        {"ev": "Q", "sym": "AAPL", "bp": 1, "ap": 2, "bs": 1, "as": 1, "t": MS, "q": 1},
        {"ev": "AM", "sym": "AAPL", "o": 1, "h": 1, "l": 1, "c": 1, "v": 1, "s": MS},
        {"ev": "A", "sym": "AAPL", "o": 1, "h": 1, "l": 1, "c": 1, "v": 1, "s": MS},
        {"ev": "LULD", "T": "AAPL", "h": 1, "l": 1, "t": MS, "q": 1},
    )
    keys = [proto.stream_key(e) for e in (trade, quote, minute, second, luld)]
    assert keys == ["T:AAPL", "Q:AAPL", "AM:AAPL", "A:AAPL", "LULD:AAPL"]
    assert proto.stream_key(trade) is keys[0], "keys are cached, not rebuilt per event"


def test_crypto_stream_keys_use_the_crypto_event_types() -> None:
    proto = crypto()
    trade, book = receive(
        proto,
        {"ev": "XT", "pair": "BTC-USD", "p": 1.0, "s": 1.0, "t": MS},
        {"ev": "XL2", "pair": "BTC-USD", "b": [], "a": [], "t": MS},
    )
    assert [proto.stream_key(trade), proto.stream_key(book)] == ["XT:BTC-USD", "XL2:BTC-USD"]


# --------------------------------------------------------------------------- subscribing


def test_subscribe_sends_comma_joined_topics() -> None:
    proto = stocks()
    proto.subscribe(
        {"trades": ["MSFT", "AAPL"], "quotes": ["*"], "bars": ["AAPL"], "second_bars": ["A"]}
    )
    assert sent(proto) == [
        {"action": "subscribe", "params": "AM.AAPL,Q.*,A.A,T.AAPL,T.MSFT"},
    ]


def test_unsubscribe_sends_the_same_topics() -> None:
    proto = crypto()
    proto.unsubscribe({"books": ["BTC-USD"], "trades": ["ETH-USD"]})
    assert sent(proto) == [{"action": "unsubscribe", "params": "XL2.BTC-USD,XT.ETH-USD"}]


@given(
    st.lists(
        st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ.", min_size=1, max_size=12),
        min_size=1,
        max_size=300,
        unique=True,
    ),
    st.integers(min_value=64, max_value=2048),
)
def test_subscribe_frames_cover_every_topic_once_and_stay_under_the_limit(
    symbols: list[str], limit: int
) -> None:
    """For any symbols and frame limit, the frames name each topic exactly once and none
    is longer than the limit in bytes."""
    proto = stocks(max_frame_bytes=limit)
    proto.subscribe({"trades": symbols, "quotes": symbols})
    frames = proto.data_to_send()
    assert all(isinstance(frame, str) and len(frame.encode()) <= limit for frame in frames)
    topics = [t for frame in frames for t in orjson.loads(frame)["params"].split(",")]
    assert sorted(topics) == sorted([f"T.{s}" for s in symbols] + [f"Q.{s}" for s in symbols])


def test_the_default_frame_limit_holds_hundreds_of_topics() -> None:
    proto = stocks()
    proto.subscribe({"trades": [f"S{i:04d}" for i in range(1000)]})
    frames = proto.data_to_send()
    assert 1 < len(frames) <= 3
    assert all(len(f) <= DEFAULT_MAX_FRAME_BYTES for f in frames)


def test_a_topic_longer_than_the_frame_limit_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="does not fit in a 64-byte subscribe frame"):
        stocks(max_frame_bytes=64).subscribe({"trades": ["X" * 100]})


@pytest.mark.parametrize(
    ("proto", "topics", "message"),
    [
        (stocks, {"books": ["AAPL"]}, "books= .* only on the crypto cluster"),
        (crypto, {"lulds": ["BTC-USD"]}, "lulds= exists only on the stocks cluster"),
        (crypto, {"trades": ["BTC/USD"]}, "written FROM-TO on Polygon \\('BTC-USD'\\)"),
        (stocks, {"news": ["AAPL"]}, "unknown channel 'news'"),
        (stocks, {"trades": "AAPL"}, "takes a list of symbols"),
        (stocks, {"trades": ["A,B"]}, "bad symbol"),
        (stocks, {"trades": [""]}, "bad symbol"),
    ],
)
def test_bad_subscriptions_are_refused_with_a_hint(
    proto: Any, topics: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        proto().subscribe(topics)


# --------------------------------------------------------------------------- provider


def test_default_urls_per_cluster_and_delay() -> None:
    assert PolygonProvider(key=KEY).url == "wss://socket.massive.com/stocks"
    assert PolygonProvider(key=KEY, delayed=True).url == "wss://delayed.massive.com/stocks"
    assert PolygonProvider(key=KEY, market="crypto").url == "wss://socket.massive.com/crypto"


def test_a_url_override_is_checked() -> None:
    url = "wss://socket.polygon.io/stocks"
    assert PolygonProvider(key=KEY, url=url).url == url
    assert PolygonProvider(key=KEY, url="ws://127.0.0.1:9/stocks").url.startswith("ws://")
    with pytest.raises(ConfigurationError, match="refusing plain ws://"):
        PolygonProvider(key=KEY, url="ws://example.com/stocks")
    with pytest.raises(ConfigurationError, match="bad WebSocket URL"):
        PolygonProvider(key=KEY, url="https://socket.massive.com/stocks")
    with pytest.raises(ConfigurationError, match="url must be a string"):
        PolygonProvider(key=KEY, url=42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"market": "forex"}, "unknown market 'forex'"),
        ({"market": "crypto", "delayed": True}, "crypto is real-time only"),
        ({"delayed": "yes"}, "delayed must be True or False"),
        ({"sequence": "loose"}, "sequence must be 'monotonic'"),
        ({"ping_interval": 0}, "ping_interval must be a positive, finite number"),
        ({"ping_timeout": math.inf}, "ping_timeout must be a positive, finite number"),
        ({"stale_after": -1}, "stale_after must be a positive number"),
        ({"limit_cooldown": "90"}, "limit_cooldown must be a number of seconds"),
        ({"max_message_size": 10}, "max_message_size must be an integer number of bytes"),
        ({"max_frame_bytes": True}, "max_frame_bytes must be an integer number of bytes"),
        ({"name": ""}, "name must be a non-empty string"),
        ({"key": ""}, "key= must be a non-empty string"),
    ],
)
def test_bad_settings_fail_fast_with_a_clear_message(kwargs: dict[str, Any], message: str) -> None:
    kwargs.setdefault("key", KEY)
    with pytest.raises(ConfigurationError, match=message) as info:
        PolygonProvider(**kwargs)
    assert KEY not in str(info.value)


def test_stale_after_may_be_infinite() -> None:
    assert PolygonProvider(key=KEY, stale_after=math.inf).stale_after == math.inf


@pytest.mark.usefixtures("no_env")
def test_a_missing_key_names_the_argument_and_both_variables() -> None:
    provider = PolygonProvider()
    with pytest.raises(ConfigurationError) as info:
        provider.check()
    assert all(name in str(info.value) for name in ("key=", "MASSIVE_API_KEY", "POLYGON_API_KEY"))
    with pytest.raises(ConfigurationError):
        provider.protocol()


@pytest.mark.usefixtures("no_env")
def test_the_key_comes_from_massive_then_polygon_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POLYGON_API_KEY", "from-polygon")
    assert PolygonProvider()._key == "from-polygon"
    monkeypatch.setenv("MASSIVE_API_KEY", "from-massive")
    assert PolygonProvider()._key == "from-massive"
    assert PolygonProvider(key="given")._key == "given"


def test_the_key_never_appears_in_repr_or_str() -> None:
    provider = PolygonProvider(key=KEY)
    assert KEY not in repr(provider) and KEY not in str(provider)
    assert "socket.massive.com" in repr(provider)


def test_channels_and_calendars_depend_on_the_cluster() -> None:
    stock = PolygonProvider(key=KEY)
    coin = PolygonProvider(key=KEY, market="crypto")
    assert stock.channels == {"trades", "quotes", "bars", "second_bars", "lulds"}
    assert coin.channels == {"trades", "quotes", "bars", "second_bars", "books"}
    assert isinstance(stock.calendar, USEquityCalendar)
    assert isinstance(coin.calendar, AlwaysOpenCalendar)
    assert not stock.is_crypto and coin.is_crypto


def test_normalize_checks_topics_for_the_cluster() -> None:
    coin = PolygonProvider(key=KEY, market="crypto")
    assert coin.normalize({"books": ["BTC-USD"]}) == {"books": frozenset({"BTC-USD"})}
    with pytest.raises(ConfigurationError, match="only on the crypto cluster"):
        PolygonProvider(key=KEY).normalize({"books": ["AAPL"]})


def test_the_session_name_defaults_to_polygon_and_can_be_changed() -> None:
    assert PolygonProvider(key=KEY).session_name == "polygon"
    named = PolygonProvider(key=KEY, name="polygon-crypto", market="crypto")
    assert named.session_name == "polygon-crypto"
    assert named.name == "polygon"


# -- the one-pass trade and quote decoders ----------------------------------------------

#: Values a field may take: the usual ones and every kind the checks refuse or convert.
_VALUES: list[Any] = [
    *(0, 1, 2, 3, 4, 1023, 1024, -1, 2**70, 10**310, True, False, None),
    *(0.0, -0.0, 1.5, -1.5, math.inf, -math.inf, math.nan, 1e308),
    *("", "AAPL", "1", "x", "NaN", "1.5"),
    *([], [12, 37], [1.5], ["a"], {"a": 1}),
    *(MS, MS * 1000, MS // 1000, float(MS), str(MS)),
]
_FIELD_VALUES = st.sampled_from(_VALUES)
_TRADE = {"ev": "T", "sym": "AAPL", "i": "52983525029461", "x": 4, "p": 411.27, "s": 100,
          "c": [12, 37], "t": MS, "q": 3681328, "z": 3}  # fmt: skip
_QUOTE = {"ev": "Q", "sym": "MSFT", "bx": 12, "bp": 411.26, "bs": 2, "ax": 11, "ap": 411.28,
          "as": 3, "c": 1, "t": MS, "q": 50385480, "z": 3}  # fmt: skip


def _outcome(decode: Any, message: dict[str, Any]) -> object:
    try:
        return decode(message, TS_RECV)
    except Exception as exc:  # the outcome compared is the exception itself
        return (type(exc), str(exc))


def _same_outcome(proto: PolygonProtocol, message: dict[str, Any]) -> bool:
    if message["ev"] == "T":
        return _outcome(proto._trade, message) == _outcome(proto._checked_trade, message)
    return _outcome(proto._quote, message) == _outcome(proto._checked_quote, message)


def test_one_changed_or_missing_field_decodes_as_the_field_by_field_checks_decode_it() -> None:
    proto = stocks()
    for template in (_TRADE, _QUOTE):
        for field in [*_QUOTE, *_TRADE, "ds"]:
            if field != "ev":
                missing = {k: v for k, v in template.items() if k != field}
                assert _same_outcome(proto, missing), missing
            for value in _VALUES:
                changed = {**template, field: value}
                assert _same_outcome(proto, changed), changed


@given(
    st.sampled_from([_TRADE, _QUOTE]),
    st.dictionaries(st.sampled_from([*_QUOTE, *_TRADE, "ds"]), _FIELD_VALUES, max_size=3),
    st.sets(st.sampled_from([*_QUOTE, *_TRADE])),
)
def test_the_one_pass_decoders_give_what_the_field_by_field_checks_give(
    template: dict[str, Any], changed: dict[str, Any], removed: set[str]
) -> None:
    """For any trade or quote near a real one (fields changed to any kind of value, or
    missing), the one-pass decoder returns the same event, or raises the same error
    with the same text, as the checked decoder that applies each field's check in turn."""
    message = {k: v for k, v in {**template, **changed}.items() if k not in removed - {"ev"}}
    message["ev"] = template["ev"]
    assert _same_outcome(stocks(), message)


def test_a_complete_common_trade_and_quote_take_the_one_pass_path() -> None:
    proto = stocks()
    trade, quote = receive(proto, _TRADE, _QUOTE)
    assert trade == Trade(
        provider="polygon", symbol="AAPL", ts_event=NS, ts_recv=TS_RECV, price=411.27,
        size=100.0, exchange="4", trade_id="52983525029461", conditions=("12", "37"),
        tape="C", seq=3681328,
    )  # fmt: skip
    assert quote == Quote(
        provider="polygon", symbol="MSFT", ts_event=NS, ts_recv=TS_RECV, bid=411.26,
        ask=411.28, bid_size=2.0, ask_size=3.0, bid_exchange="12", ask_exchange="11",
        conditions=("1",), tape="C", seq=50385480,
    )  # fmt: skip
