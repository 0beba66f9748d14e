"""The simulators' historical endpoints over real loopback sockets: formats, pages, faults.

Each simulator answers plain HTTP (Alpaca, Polygon) on its WebSocket port, or
``reqHistoricalTicks`` on its TWS port, from the trades its market printed,
including those printed while no client was connected.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import trio
from trio.testing import MockClock

from puffin_trio import ConfigurationError, Trade
from puffin_trio.providers import IBProvider
from puffin_trio.sim import FaultPlan
from puffin_trio.sim._alpaca_rest import parse_rfc3339
from puffin_trio.sim.faults import Fault, FaultKind
from tests._support import KEY, MARKET_OPEN_NS, POLYGON_KEY, SECRET, alpaca_sim, ib_sim, polygon_sim

ALPACA_HEADERS = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}
ALL_DAY = {"start": "2026-11-24T00:00:00Z", "end": "2026-11-25T00:00:00Z"}


def http_base(url: str) -> str:
    return "http://" + url.split("//")[1].split("/")[0]


async def let_the_market_print(seconds: float) -> None:
    """Nobody is connected: the market goes on by itself."""
    await trio.sleep(seconds)


# --------------------------------------------------------------------------- Alpaca


async def test_alpaca_serves_every_trade_its_market_printed_while_nobody_was_connected(
    autojump_clock: MockClock,
) -> None:
    async with alpaca_sim(rate=50.0) as (url, recorder, _):
        # A client must have streamed once (the market draws what it drew).
        from puffin_trio import open_feed
        from puffin_trio.providers import AlpacaProvider

        provider = AlpacaProvider(key=KEY, secret=SECRET, url=url)
        async with open_feed(provider, trades=["AAPL", "MSFT"]) as events:
            async for event in events:
                if isinstance(event, Trade):
                    break
        before = recorder.tape.recorded
        await let_the_market_print(10.0)
        printed = recorder.tape.recorded - before
        assert 400 <= printed <= 600  # 50 trades a second (only trades were subscribed)
        async with httpx.AsyncClient(base_url=http_base(url)) as client:
            rows: dict[str, list[dict[str, Any]]] = {"AAPL": [], "MSFT": []}
            params = {"symbols": "MSFT,AAPL", "limit": "10000", **ALL_DAY}
            response = await client.get("/v2/stocks/trades", params=params, headers=ALPACA_HEADERS)
            assert response.status_code == 200
            page = response.json()
            assert page["next_page_token"] is None
            for symbol, got in page["trades"].items():
                rows[symbol] += got
    for symbol in ("AAPL", "MSFT"):
        tape = recorder.tape.between(symbol, 0, 2**63 - 1)
        assert [r["i"] for r in rows[symbol]] == [t.trade_id for t in tape]
        assert [parse_rfc3339(r["t"]) for r in rows[symbol]] == [t.ts_ns for t in tape]
        first = rows[symbol][0]
        assert set(first) == {"t", "x", "p", "s", "c", "i", "z"}


async def fetch_all_alpaca(
    client: httpx.AsyncClient, params: dict[str, str]
) -> tuple[list[dict[str, Any]], int]:
    pages, out = 0, []
    while pages < 1000:
        response = await client.get("/v2/stocks/trades", params=params, headers=ALPACA_HEADERS)
        assert response.status_code == 200, response.text
        page = response.json()
        pages += 1
        for symbol, rows in page["trades"].items():
            out += [{**r, "S": symbol} for r in rows]
        if page["next_page_token"] is None:
            return out, pages
        params = {**params, "page_token": page["next_page_token"]}
    raise AssertionError("more than 1000 pages")


async def test_alpaca_pages_run_by_symbol_then_time_and_cap_at_the_page_size(
    autojump_clock: MockClock,
) -> None:
    async with alpaca_sim(history_page_size=7) as (url, recorder, _):
        await stream_briefly(url)
        async with httpx.AsyncClient(base_url=http_base(url)) as client:
            rows, pages = await fetch_all_alpaca(client, {"symbols": "AAPL,MSFT", **ALL_DAY})
    symbols = [r["S"] for r in rows]
    assert symbols == sorted(symbols)
    assert pages == -(-len(rows) // 7) or pages == -(-len(rows) // 7) + 1
    tape = recorder.tape
    expected = [(s, t.trade_id) for s in ("AAPL", "MSFT") for t in tape.between(s, 0, 2**62)]
    got = [(r["S"], r["i"]) for r in rows]
    assert got == expected[: len(got)] and len(got) >= len(expected) - 60


async def stream_briefly(url: str, seconds: float = 2.0) -> None:
    from puffin_trio import open_feed
    from puffin_trio.providers import AlpacaProvider, PolygonProvider

    if "/v2/" in url:
        provider: Any = AlpacaProvider(key=KEY, secret=SECRET, url=url)
    else:
        provider = PolygonProvider(key=POLYGON_KEY, url=url)
    async with open_feed(provider, trades=["AAPL", "MSFT"]) as events:
        with trio.move_on_after(seconds):
            async for _ in events:
                pass


@pytest.mark.parametrize(
    ("params", "headers", "status"),
    [
        ({"symbols": "AAPL"}, {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": "wrong"}, 401),
        ({"symbols": "AAPL"}, {}, 401),
        ({}, ALPACA_HEADERS, 400),
        ({"symbols": "AAPL", "limit": "10001"}, ALPACA_HEADERS, 422),
        ({"symbols": "AAPL", "sort": "desc"}, ALPACA_HEADERS, 422),
        ({"symbols": "AAPL", "start": "noon"}, ALPACA_HEADERS, 400),
        ({"symbols": "AAPL", "page_token": "!!"}, ALPACA_HEADERS, 400),
    ],
)
async def test_alpaca_refuses_a_bad_request_as_alpaca_does(
    params: dict[str, str], headers: dict[str, str], status: int
) -> None:
    async with alpaca_sim() as (url, recorder, _):
        async with httpx.AsyncClient(base_url=http_base(url)) as client:
            response = await client.get("/v2/stocks/trades", params=params, headers=headers)
            assert response.status_code == status
            assert "message" in response.json()
            assert (await client.get("/v2/stocks/bars", headers=ALPACA_HEADERS)).status_code == 404
    assert recorder.history[0][1] == status
    assert SECRET not in str(recorder.history)


async def test_alpaca_history_faults_fire_by_request_number(autojump_clock: MockClock) -> None:
    plan = (
        FaultPlan.rate_limited(0, reset=3.0)
        + FaultPlan.http_error(1, status=503, count=2)
        + FaultPlan.truncated_page(3)
        + FaultPlan.slow_page(4, delay=3.0)
    )
    async with alpaca_sim(faults=plan) as (url, recorder, wall):
        await stream_briefly(url)
        async with httpx.AsyncClient(base_url=http_base(url)) as client:
            get = lambda: client.get(  # noqa: E731
                "/v2/stocks/trades", params={"symbols": "AAPL", **ALL_DAY}, headers=ALPACA_HEADERS
            )
            limited = await get()
            assert limited.status_code == 429
            reset = int(limited.headers["X-RateLimit-Reset"])
            assert reset * 1e9 - wall() == pytest.approx(3e9, abs=1e9)
            assert limited.headers["X-RateLimit-Remaining"] == "0"
            assert [(await get()).status_code for _ in range(2)] == [503, 503]
            truncated = await get()
            assert truncated.status_code == 200
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(truncated.content)
            started = trio.current_time()
            slow = await get()
            assert slow.status_code == 200 and trio.current_time() - started >= 3.0
            assert (await get()).status_code == 200
    assert [status for _, status in recorder.history] == [429, 503, 503, 200, 200, 200]


async def test_alpaca_rate_limit_counts_requests_per_minute(autojump_clock: MockClock) -> None:
    async with alpaca_sim(history_rate_limit=3) as (url, _, __):
        async with httpx.AsyncClient(base_url=http_base(url)) as client:
            statuses, remaining = [], []
            for _ in range(4):
                response = await client.get(
                    "/v2/stocks/trades", params={"symbols": "AAPL"}, headers=ALPACA_HEADERS
                )
                statuses.append(response.status_code)
                remaining.append(response.headers.get("X-RateLimit-Remaining"))
            assert statuses == [200, 200, 200, 429]
            assert remaining == ["2", "1", "0", "0"]
            await trio.sleep(60.0)
            again = await client.get(
                "/v2/stocks/trades", params={"symbols": "AAPL"}, headers=ALPACA_HEADERS
            )
            assert again.status_code == 200


def test_history_faults_belong_to_no_connection_and_are_counted_by_request() -> None:
    with pytest.raises(ConfigurationError, match="connection"):
        Fault(FaultKind.RATE_LIMITED, 0, 1)
    with pytest.raises(ConfigurationError, match="delay"):
        FaultPlan.slow_page(0, delay=0.0)
    plan = FaultPlan.rate_limited(2) + FaultPlan.http_error(0, count=2)
    schedule = plan.for_connection(1)
    assert schedule.take_due(10**6) == [] and schedule.room(0) is None
    history = plan.for_history()
    assert [[f.kind for f in history.next_request()] for _ in range(4)] == [
        [FaultKind.HTTP_ERROR], [FaultKind.HTTP_ERROR], [FaultKind.RATE_LIMITED], [],
    ]  # fmt: skip


# --------------------------------------------------------------------------- Polygon


async def test_polygon_serves_pages_by_next_url_numbered_as_the_stream(
    autojump_clock: MockClock,
) -> None:
    async with polygon_sim(history_page_size=5) as (url, recorder, _):
        await stream_briefly(url)
        sent = [m for c in recorder.connections for m in c.data_messages() if m["ev"] == "T"]
        async with httpx.AsyncClient(base_url=http_base(url)) as client:
            rows: list[dict[str, Any]] = []
            target = "/v3/trades/AAPL"
            params: dict[str, str] | None = {"order": "asc", "timestamp.gte": "0", "limit": "50"}
            for _ in range(1000):
                response = await client.get(
                    target, params=params, headers={"Authorization": f"Bearer {POLYGON_KEY}"}
                )
                page = response.json()
                assert response.status_code == 200 and page["status"] == "OK"
                assert len(page["results"]) <= 5
                rows += page["results"]
                if "next_url" not in page:
                    break
                target, params = page["next_url"].split(http_base(url))[1], None
            else:
                raise AssertionError("more than 1000 pages")
    live = {m["q"]: m["i"] for m in sent if m["sym"] == "AAPL"}
    assert live
    by_seq = {r["sequence_number"]: r["id"] for r in rows}
    assert all(by_seq[q] == i for q, i in live.items())  # the same trade, the same number
    seqs = [r["sequence_number"] for r in rows]
    assert seqs == sorted(seqs) and seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert set(rows[0]) >= {"sip_timestamp", "participant_timestamp", "sequence_number", "id",
                            "price", "size", "exchange", "tape"}  # fmt: skip


@pytest.mark.parametrize(
    ("target", "headers", "status"),
    [
        ("/v3/trades/AAPL?order=asc", {"Authorization": "Bearer nope"}, 401),
        ("/v3/trades/AAPL?order=asc", {}, 401),
        (f"/v3/trades/AAPL?order=asc&apiKey={POLYGON_KEY}&limit=50001", {}, 400),
        (f"/v3/trades/AAPL?apiKey={POLYGON_KEY}", {}, 400),  # the API's default order is desc
        (f"/v3/trades/AAPL?order=asc&apiKey={POLYGON_KEY}&cursor=zzz", {}, 400),
    ],
)
async def test_polygon_refuses_a_bad_request_as_massive_does(
    target: str, headers: dict[str, str], status: int
) -> None:
    async with polygon_sim() as (url, recorder, _):
        async with httpx.AsyncClient(base_url=http_base(url)) as client:
            response = await client.get(target, headers=headers)
    assert response.status_code == status and response.json()["status"] != "OK"
    assert POLYGON_KEY not in str(recorder.history)


async def test_polygon_answers_a_429_with_retry_after(autojump_clock: MockClock) -> None:
    async with polygon_sim(faults=FaultPlan.rate_limited(0, reset=7.0)) as (url, _, __):
        async with httpx.AsyncClient(base_url=http_base(url)) as client:
            response = await client.get(
                "/v3/trades/AAPL", params={"order": "asc", "apiKey": POLYGON_KEY}
            )
    assert response.status_code == 429 and response.headers["Retry-After"] == "7"


# --------------------------------------------------------------------------- IB


async def ib_history(port: int, start_ns: int, **faults: Any) -> list[Any]:
    """Ask the fake TWS for historical trades with our own protocol over its TCP transport."""
    provider = IBProvider(port=port, client_id=9)
    proto = provider.protocol()
    replies: list[Any] = []
    async with provider.open_transport() as transport:
        await transport.send_all(proto.data_to_send())
        with trio.fail_after(30):
            while True:
                frame = await transport.receive()
                for item in proto.receive(frame, 0):
                    if type(item).__name__ == "Authenticated":
                        proto.request_history("AAPL", start_ns)
                    elif type(item).__name__ == "HistoryReply":
                        replies.append(item)
                        if item.done:
                            return replies
                await transport.send_all(proto.data_to_send())


async def test_ib_answers_req_historical_ticks_from_its_tape(autojump_clock: MockClock) -> None:
    async with ib_sim(rate=400.0) as (port, recorder, _):
        from puffin_trio import open_feed

        async with open_feed(IBProvider(port=port), trades=["AAPL"]) as events:
            with trio.move_on_after(5.0):
                async for _ in events:
                    pass
        await let_the_market_print(5.0)
        (reply,) = await ib_history(port, MARKET_OPEN_NS)
    tape = recorder.tape.between("AAPL", 0, 2**62)
    assert len(reply.trades) == min(len(tape), 1000) or (
        len(reply.trades) > 1000
        and reply.trades[999].ts_event == reply.trades[-1].ts_event  # the last second completed
    )
    assert [(t.ts_event, t.price, t.size) for t in reply.trades] == [
        (p.ts_ns // 10**9 * 10**9, p.price, p.size) for p in tape[: len(reply.trades)]
    ]
    assert all(t.backfilled for t in reply.trades)


@pytest.mark.parametrize(
    ("plan", "error"),
    [
        (FaultPlan.rate_limited(0), "pacing violation"),
        (FaultPlan.http_error(0, status=500), "HMDS server error"),
        (FaultPlan.http_error(0, status=403), "No market data permissions"),
    ],
)
async def test_ib_history_faults_are_error_162(
    autojump_clock: MockClock, plan: FaultPlan, error: str
) -> None:
    async with ib_sim(faults=plan) as (port, _, __):
        (reply,) = await ib_history(port, MARKET_OPEN_NS)
    assert reply.error is not None and error in str(reply.error) and reply.error.code == 162


async def test_ib_truncated_history_is_malformed(autojump_clock: MockClock) -> None:
    async with ib_sim(faults=FaultPlan.truncated_page(0), rate=200.0) as (port, _, __):
        from puffin_trio import open_feed

        async with open_feed(IBProvider(port=port), trades=["AAPL"]) as events:
            with trio.move_on_after(2.0):
                async for _ in events:
                    pass
        (reply,) = await ib_history(port, MARKET_OPEN_NS)
    assert reply.error is not None and "malformed" in str(reply.error)


@pytest.mark.parametrize(
    "bad", [{"history_page_size": 0}, {"history_rate_limit": -1}, {"history_page_size": 2.5},
            {"history_rate_limit": True}]
)  # fmt: skip
@pytest.mark.parametrize("serve", ["alpaca", "polygon"])
async def test_bad_historical_settings_are_refused(serve: str, bad: dict[str, Any]) -> None:
    from puffin_trio.sim import serve_alpaca, serve_polygon

    server = serve_alpaca if serve == "alpaca" else serve_polygon
    with pytest.raises(ConfigurationError, match="history_"):
        await server(**bad)  # type: ignore[operator]
