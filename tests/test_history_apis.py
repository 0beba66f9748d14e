"""The providers' historical trades APIs, sans-IO: requests, pages, rate-limit headers, options.

No sockets here: requests are compared as values and pages are parsed from
bytes written the way each API documents them (and the simulators serve them).
"""

from __future__ import annotations

import orjson
import pytest

from puffin_trio import ConfigurationError, Trade
from puffin_trio.errors import BackfillError, BackfillRefused
from puffin_trio.providers import AlpacaProvider, IBProtocol, IBProvider, PolygonProvider
from puffin_trio.providers._base import HistoryReply, Malformed
from puffin_trio.providers._history import HistoryQuery, HttpRequest
from puffin_trio.providers.ib._history import (
    SEAM,
    historical_trades,
    history_error,
    ib_utc_time,
)

NS = 1_000_000_000
#: 2024-07-24 14:31:02.118230411 UTC
T0 = 1_721_831_462_118_230_411
STAMP0 = "2024-07-24T14:31:02.118230411Z"


def alpaca(**kwargs: object) -> AlpacaProvider:
    return AlpacaProvider(key="k", secret="s", backfill="trades", **kwargs)  # type: ignore[arg-type]


def polygon(**kwargs: object) -> PolygonProvider:
    return PolygonProvider(key="pk", backfill="trades", **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("bad", ["quotes", "TRADES", True, 1, ""])
@pytest.mark.parametrize("make", [AlpacaProvider, PolygonProvider, IBProvider])
def test_backfill_takes_none_or_trades_and_anything_else_is_a_configuration_error(
    make: type, bad: object
) -> None:
    with pytest.raises(ConfigurationError, match="backfill must be None"):
        make(backfill=bad)


@pytest.mark.parametrize("make", [AlpacaProvider, PolygonProvider, IBProvider])
@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), "10"])
def test_backfill_timeout_must_be_positive_finite_seconds(make: type, bad: object) -> None:
    with pytest.raises(ConfigurationError, match="backfill_timeout"):
        make(backfill="trades", backfill_timeout=bad)


def test_backfill_is_off_by_default_on_every_provider() -> None:
    assert AlpacaProvider().backfill is None
    assert PolygonProvider().backfill is None
    assert IBProvider().backfill is None


@pytest.mark.parametrize("make", [AlpacaProvider, PolygonProvider])
@pytest.mark.parametrize(
    "bad", ["http://example.com", "ftp://127.0.0.1", "127.0.0.1:8080", "https://", 5]
)
def test_rest_url_is_https_or_loopback_http(make: type, bad: object) -> None:
    with pytest.raises(ConfigurationError, match="rest_url"):
        make(rest_url=bad)


def test_rest_url_defaults_to_the_providers_data_hosts() -> None:
    assert AlpacaProvider().rest_url == "https://data.alpaca.markets"
    assert AlpacaProvider(sandbox=True).rest_url == "https://data.sandbox.alpaca.markets"
    assert PolygonProvider().rest_url == "https://api.massive.com"
    assert PolygonProvider(rest_url="http://127.0.0.1:9/").rest_url == "http://127.0.0.1:9"


def test_the_alpaca_test_stream_has_no_history_to_backfill_from() -> None:
    with pytest.raises(ConfigurationError, match="test stream has no historical trades"):
        AlpacaProvider(feed="test", backfill="trades")


def test_credentials_stay_out_of_the_history_objects_repr() -> None:
    history = AlpacaProvider(key="KEY-123", secret="SECRET-456", backfill="trades").history()
    assert "KEY-123" not in repr(history) and "SECRET-456" not in repr(history)
    assert "PK-789" not in repr(PolygonProvider(key="PK-789").history())


# --------------------------------------------------------------------------- Alpaca


def test_alpaca_asks_for_every_symbol_in_one_request_in_whole_seconds_ascending() -> None:
    history = alpaca(feed="sip").history()
    (request,) = history.requests(HistoryQuery(("MSFT", "AAPL"), T0, T0 + 30 * NS))
    assert request.path == "/v2/stocks/trades"
    assert dict(request.params) == {
        "symbols": "AAPL,MSFT",
        "start": "2024-07-24T14:31:02Z",
        "end": "2024-07-24T14:31:33Z",
        "limit": "10000",
        "sort": "asc",
        "feed": "sip",
    }
    assert request.symbols == ("AAPL", "MSFT")
    assert ("APCA-API-KEY-ID", "k") in history.headers()


def test_alpaca_splits_many_symbols_into_requests_of_a_hundred() -> None:
    symbols = tuple(f"S{i:03d}" for i in range(250))
    requests = alpaca().history().requests(HistoryQuery(symbols, T0, T0))
    assert [len(r.symbols) for r in requests] == [100, 100, 50]


def test_alpaca_crypto_uses_the_crypto_path_without_a_feed() -> None:
    history = alpaca(feed="crypto", crypto_location="us-1").history()
    (request,) = history.requests(HistoryQuery(("BTC/USD",), T0, T0))
    assert request.path == "/v1beta3/crypto/us-1/trades"
    assert "feed" not in dict(request.params)


def alpaca_page(trades: dict[str, list[dict[str, object]]], token: str | None) -> bytes:
    return orjson.dumps({"trades": trades, "next_page_token": token})


def row(i: int, **overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "t": STAMP0, "x": "V", "p": 134.21, "s": 50, "c": ["@"], "i": i, "z": "C",
    }  # fmt: skip
    return {**base, **overrides}


def test_an_alpaca_page_becomes_backfilled_trades_and_the_next_request() -> None:
    history = alpaca().history()
    (request,) = history.requests(HistoryQuery(("AAPL", "MSFT"), T0, T0))
    page = history.parse(
        request, alpaca_page({"AAPL": [row(1)], "MSFT": [row(7, p=410.5)]}, "tok=="), 99
    )
    assert page.trades == (
        Trade(provider="alpaca", symbol="AAPL", ts_event=T0, ts_recv=99, price=134.21, size=50.0,
              exchange="V", trade_id="1", conditions=("@",), tape="C", backfilled=True),
        Trade(provider="alpaca", symbol="MSFT", ts_event=T0, ts_recv=99, price=410.5, size=50.0,
              exchange="V", trade_id="7", conditions=("@",), tape="C", backfilled=True),
    )  # fmt: skip
    assert page.next == request.with_param("page_token", "tok==")
    assert history.parse(request, alpaca_page({}, None), 0).next is None


@pytest.mark.parametrize(
    "bad",
    [{"p": "1e999"}, {"p": -1.0}, {"s": -5}, {"s": "5"}, {"i": "12"}, {"t": "yesterday"},
     {"t": "1970-01-01T00:00:00Z"}, {"t": "2262-04-11T23:47:16Z"}, {"c": "@"}, {"x": 7}],
)  # fmt: skip
def test_an_alpaca_row_with_an_impossible_value_is_dropped_and_counted(
    bad: dict[str, object],
) -> None:
    history = alpaca().history()
    (request,) = history.requests(HistoryQuery(("AAPL",), T0, T0))
    body = alpaca_page({"AAPL": [row(1), {**row(2), **bad}, row(3)]}, None)
    page = history.parse(request, body, 0)
    assert [t.trade_id for t in page.trades] == ["1", "3"]
    assert page.malformed == 1 and page.dropped == (("AAPL", 1),)


@pytest.mark.parametrize(
    "body",
    [b'{"trades": {"AAPL": [', b"[]", b'{"bars": {}}', b'{"trades": []}',
     b'{"trades": {}, "next_page_token": 5}', b'{"trades": {"AAPL": {}}}'],
)  # fmt: skip
def test_an_alpaca_body_that_is_not_a_page_is_a_value_error(body: bytes) -> None:
    history = alpaca().history()
    (request,) = history.requests(HistoryQuery(("AAPL",), T0, T0))
    with pytest.raises(ValueError):
        history.parse(request, body, 0)


def test_alpaca_waits_until_its_rate_limit_resets_after_a_429_or_an_empty_budget() -> None:
    history = alpaca().history()
    now = 1_000 * NS
    assert history.rate_limit_wait(429, {"x-ratelimit-reset": "1003"}, now) == 3.0
    assert history.rate_limit_wait(200, {"x-ratelimit-remaining": "0",
                                          "x-ratelimit-reset": "1002"}, now) == 2.0  # fmt: skip
    assert history.rate_limit_wait(200, {"x-ratelimit-remaining": "7",
                                          "x-ratelimit-reset": "1002"}, now) is None  # fmt: skip
    assert history.rate_limit_wait(429, {"x-ratelimit-reset": "999"}, now) == 0.0
    assert history.rate_limit_wait(429, {"retry-after": "4"}, now) == 4.0
    assert history.rate_limit_wait(429, {}, now) is None
    assert history.rate_limit_wait(429, {"x-ratelimit-reset": "soon"}, now) is None


# --------------------------------------------------------------------------- Polygon


def test_polygon_asks_one_ticker_a_request_oldest_first_in_ns() -> None:
    history = polygon().history()
    requests = history.requests(HistoryQuery(("MSFT", "AAPL"), T0, T0 + NS))
    assert [r.path for r in requests] == ["/v3/trades/AAPL", "/v3/trades/MSFT"]
    assert dict(requests[0].params) == {
        "timestamp.gte": str(T0),
        "timestamp.lte": str(T0 + NS),
        "order": "asc",
        "sort": "timestamp",
        "limit": "50000",
    }
    assert history.headers() == [("Authorization", "Bearer pk")]


def test_polygon_crypto_tickers_are_x_prefixed() -> None:
    history = polygon(market="crypto").history()
    (request,) = history.requests(HistoryQuery(("BTC-USD",), T0, T0))
    assert request.path == "/v3/trades/X:BTCUSD"
    assert history.seam.ordered is False


def polygon_row(seq: int, **overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "conditions": [37], "exchange": 12, "id": f"t{seq}", "participant_timestamp": T0 - 5,
        "price": 411.27, "sequence_number": seq, "sip_timestamp": T0, "size": 100, "tape": 3,
    }  # fmt: skip
    return {**base, **overrides}


def test_a_polygon_page_becomes_trades_and_next_url_stays_on_our_host() -> None:
    history = polygon(sequence="strict").history()
    (request,) = history.requests(HistoryQuery(("MSFT",), T0, T0))
    body = orjson.dumps(
        {"results": [polygon_row(3681328)], "status": "OK", "request_id": "x",
         "next_url": "https://evil.example.com/v3/trades/MSFT?cursor=abc%3D&x=1"}
    )  # fmt: skip
    page = history.parse(request, body, 7)
    assert page.trades == (
        Trade(provider="polygon", symbol="MSFT", ts_event=T0, ts_recv=7, price=411.27,
              size=100.0, exchange="12", trade_id="t3681328", conditions=("37",), tape="C",
              seq=3681328, backfilled=True),
    )  # fmt: skip
    assert page.next == HttpRequest("/v3/trades/MSFT", (("cursor", "abc="), ("x", "1")), ("MSFT",))
    assert history.seam.ordered and history.seam.contiguous
    assert history.seam.key(page.trades[0]) == 3681328


def test_polygon_next_url_to_another_path_is_refused() -> None:
    history = polygon().history()
    (request,) = history.requests(HistoryQuery(("MSFT",), T0, T0))
    body = orjson.dumps({"results": [], "status": "OK", "next_url": "https://x/v3/quotes/MSFT"})
    with pytest.raises(ValueError, match="another path"):
        history.parse(request, body, 0)


@pytest.mark.parametrize(
    "body",
    [b'{"results": [', b'{"status": "ERROR", "error": "bad"}', b"[]", b'{"status": "OK",'
     b' "results": {}}'],
)  # fmt: skip
def test_a_polygon_body_that_is_not_a_good_page_is_a_value_error(body: bytes) -> None:
    history = polygon().history()
    (request,) = history.requests(HistoryQuery(("MSFT",), T0, T0))
    with pytest.raises(ValueError):
        history.parse(request, body, 0)


@pytest.mark.parametrize(
    "bad", [{"sequence_number": None}, {"price": -1.0}, {"size": -1}, {"sip_timestamp": "now"},
            {"id": 5}, {"sip_timestamp": 10**12}]
)  # fmt: skip
def test_a_polygon_row_without_a_usable_value_is_dropped_and_counted(
    bad: dict[str, object],
) -> None:
    history = polygon().history()
    (request,) = history.requests(HistoryQuery(("MSFT",), T0, T0))
    rows = [polygon_row(1), {**polygon_row(2), **bad}, polygon_row(3)]
    page = history.parse(request, orjson.dumps({"results": rows, "status": "OK"}), 0)
    assert [t.seq for t in page.trades] == [1, 3]
    assert page.malformed == 1 and page.dropped == (("MSFT", 1),)


def test_polygon_honours_retry_after() -> None:
    history = polygon().history()
    assert history.rate_limit_wait(429, {"retry-after": "12"}, 0) == 12.0
    assert history.rate_limit_wait(429, {"retry-after": "-3"}, 0) is None
    assert history.rate_limit_wait(429, {}, 0) is None


# --------------------------------------------------------------------------- IB


def test_ib_requests_historical_trades_as_ib_async_does() -> None:
    proto = IBProtocol(client_id=3)
    proto.data_to_send()
    req_id = proto.request_history("AAPL", T0)
    (frame,) = proto.data_to_send()
    fields = frame[4:].split(b"\0")[:-1]
    assert req_id == 1
    assert fields[0] == b"96" and fields[1] == b"1"
    assert fields[2:14] == [b"0", b"AAPL", b"STK", b"", b"0.0", b"", b"", b"SMART", b"", b"USD",
                            b"", b""]  # fmt: skip
    assert fields[14:] == [b"0", b"20240724 14:31:02 UTC", b"", b"1000", b"TRADES", b"0", b"0", b""]
    assert ib_utc_time(T0) == "20240724 14:31:02 UTC"


def ticks_last(req_id: bytes, ticks: list[tuple[int, float, float]], done: bool) -> bytes:
    fields = [b"98", req_id, str(len(ticks)).encode()]
    for seconds, price, size in ticks:
        fields += [str(seconds).encode(), b"0", repr(price).encode(), repr(size).encode(),
                   b"NASDAQ", b"T"]  # fmt: skip
    fields.append(b"1" if done else b"0")
    return b"\0".join(fields) + b"\0"


def started_protocol() -> IBProtocol:
    proto = IBProtocol()
    proto.receive(b"176\x0020240724 10:31:00 EST\x00", 0)
    proto.receive(b"9\x001\x001\x00", 0)
    proto.data_to_send()
    return proto


def test_ib_historical_ticks_last_answers_its_request_with_backfilled_trades() -> None:
    proto = started_protocol()
    req_id = proto.request_history("AAPL", T0)
    frame = ticks_last(str(req_id).encode(), [(1721831462, 218.46, 100.0)] * 2, True)
    (reply,) = proto.receive(frame, 5)
    assert reply == HistoryReply(
        req_id,
        (Trade(provider="ib", symbol="AAPL", ts_event=1721831462 * NS, ts_recv=5, price=218.46,
               size=100.0, exchange="NASDAQ", conditions=("T",), backfilled=True),) * 2,
        True,
    )  # fmt: skip
    assert SEAM.key(reply.trades[0]) == (1721831462 * NS, 218.46, 100.0)
    assert proto.receive(frame, 5) == []  # the request is over: a late copy is ignored


def test_a_broken_historical_answer_is_malformed_and_fails_its_request() -> None:
    proto = started_protocol()
    req_id = proto.request_history("AAPL", T0)
    frame = ticks_last(str(req_id).encode(), [(1721831462, 1.0, 1.0)] * 4, True)
    truncated = frame.replace(b"\x004\x00", b"\x009\x00", 1)
    items = proto.receive(truncated, 0)
    assert isinstance(items[0], Malformed)
    assert isinstance(items[1], HistoryReply) and isinstance(items[1].error, BackfillError)
    assert items[1].request_id == req_id and items[1].done


def test_an_error_for_a_historical_request_ends_it_typed() -> None:
    proto = started_protocol()
    req_id = proto.request_history("AAPL", T0)
    text = b"Historical Market Data Service error message:No market data permissions for ISLAND"
    (reply,) = proto.receive(b"4\x002\x00" + str(req_id).encode() + b"\x00162\x00" + text
                             + b"\x00\x00", 0)  # fmt: skip
    assert isinstance(reply, HistoryReply) and isinstance(reply.error, BackfillRefused)
    assert reply.error.code == 162


@pytest.mark.parametrize(
    ("code", "text", "refused"),
    [
        (162, "Historical data request pacing violation", False),
        (162, "HMDS query returned no data", False),
        (162, "No market data permissions for NYSE STK", True),
        (354, "Requested market data is not subscribed", True),
        (200, "No security definition has been found", True),
        (366, "No historical data query found for ticker id", False),
    ],
)
def test_ib_history_errors_are_refusals_only_when_retrying_cannot_help(
    code: int, text: str, refused: bool
) -> None:
    error = history_error(code, text, "AAPL")
    assert isinstance(error, BackfillRefused) is refused
    assert isinstance(error, BackfillError) and error.code == code and "AAPL" in str(error)


def test_ib_trade_ticks_with_impossible_values_are_dropped_and_counted() -> None:
    """A NaN price, a negative size, a time before 1990: each tick alone is dropped."""
    s = T0 // NS
    ticks = [(s, 1.0, 1.0), (s, float("nan"), 1.0), (s + 1, 2.0, -1.0), (1, 2.0, 1.0),
             (s + 2, -0.5, 1.0)]  # fmt: skip
    fields = ticks_last(b"1", ticks, True)
    trades, done, malformed = historical_trades(fields.split(b"\0")[:-1], "AAPL", 0)
    # IB prices may be negative (spreads, combos): that one stays.
    assert [(t.ts_event, t.price) for t in trades] == [(s * NS, 1.0), ((s + 2) * NS, -0.5)]
    assert done and malformed == 3


def test_a_provider_without_historical_trades_cannot_backfill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A provider whose protocol has no in-band history and no REST ``history()``."""
    from puffin_trio import FanOut
    from puffin_trio.history import Backfiller

    monkeypatch.setattr(IBProtocol, "history_limit", 0)
    with pytest.raises(ConfigurationError, match="no historical trades"):
        Backfiller(
            IBProvider(backfill="trades"),
            stream="ib",
            fanout=FanOut(),
            wall_clock=lambda: 0,
            status=lambda detail: None,  # type: ignore[arg-type,return-value]
        )
