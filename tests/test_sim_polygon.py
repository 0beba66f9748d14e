"""Specification of the Polygon/Massive simulator (puffin_trio.sim.polygon).

The simulator is exercised end to end with a bare trio-websocket client that
decodes frames with orjson itself, never with puffin_trio's own codec. Tests
run on ``MockClock(autojump_threshold=0)`` (the ``autojump_clock`` fixture), so
virtual minutes pass instantly.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from puffin_trio.errors import ConfigurationError
from puffin_trio.sim import FaultPlan, MarketModel
from puffin_trio.sim.faults import FaultKind
from puffin_trio.sim.polygon import (
    DEFAULT_KEY,
    STATUS_MESSAGES,
    PolygonSimRecorder,
    serve_polygon,
)
from puffin_trio.testing import mock_wall_clock

from ._support import serving

#: 2026-11-24T15:00:00Z, a whole minute (bar windows start on it).
WALL_NS = 1_795_532_400_000_000_000
#: Upper bound on the frames a test reads while looking for something.
MAX_FRAMES = 5000

Message = dict[str, Any]


@asynccontextmanager
async def running_sim(**kwargs: Any) -> AsyncIterator[tuple[int, PolygonSimRecorder]]:
    """A simulator on a free loopback port, with a recorder; cancelled on exit."""
    recorder = PolygonSimRecorder()
    kwargs.setdefault("wall_clock", mock_wall_clock(WALL_NS))
    kwargs.setdefault("rate", None)
    async with serving(serve_polygon, recorder=recorder, **kwargs) as port:
        yield port, recorder


def status(state: str, message: str | None = None) -> Message:
    text = STATUS_MESSAGES[state] if message is None else message
    return {"ev": "status", "status": state, "message": text}


class Client:
    """A bare Polygon client: raw JSON frames in and out."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def recv(self) -> list[Message]:
        frame = await self.ws.get_message()
        assert isinstance(frame, str), "Polygon frames are text"
        decoded = orjson.loads(frame)
        assert isinstance(decoded, list), "every server frame is an array"
        return decoded

    async def send(self, message: Message) -> None:
        await self.ws.send_message(orjson.dumps(message).decode())

    async def login(self, key: str = DEFAULT_KEY) -> None:
        assert await self.recv() == [status("connected")]
        await self.send({"action": "auth", "params": key})
        assert await self.recv() == [status("auth_success")]

    async def statuses(self, count: int) -> list[Message]:
        """The next ``count`` status messages, skipping data sent before them."""
        found: list[Message] = []
        for _ in range(MAX_FRAMES):
            frame = await self.recv()
            statuses = [m for m in frame if m["ev"] == "status"]
            if statuses:
                assert len(statuses) == len(frame), "statuses come in frames of their own"
                found += statuses
                if len(found) == count:
                    return found
        raise AssertionError("no status message")

    async def subscribe(self, params: str, action: str = "subscribe") -> list[Message]:
        """Send the action; return its statuses (one per non-empty topic)."""
        await self.send({"action": action, "params": params})
        return await self.statuses(len([t for t in params.split(",") if t.strip()]))

    async def data(self, count: int) -> list[Message]:
        """Exactly ``count`` data messages (fails if a status comes instead)."""
        messages: list[Message] = []
        while len(messages) < count:
            frame = await self.recv()
            assert all(m["ev"] != "status" for m in frame), frame
            messages.extend(frame)
        assert len(messages) == count, "the simulator sent more than expected in one frame"
        return messages


@asynccontextmanager
async def connect(port: int, market: str = "stocks") -> AsyncIterator[Client]:
    async with open_websocket_url(f"ws://127.0.0.1:{port}/{market}") as ws:
        yield Client(ws)


def close_code(closed: ConnectionClosed) -> int:
    assert closed.reason is not None
    return closed.reason.code


async def closed_with(client: Client) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        for _ in range(MAX_FRAMES):
            await client.recv()
    return close_code(closed.value)


def per_stream(messages: list[Message]) -> dict[tuple[str, str], list[int]]:
    """``q`` of each stock message by (event type, symbol), in wire order."""
    streams: dict[tuple[str, str], list[int]] = {}
    for m in messages:
        if "q" in m:
            streams.setdefault((m["ev"], m["sym"]), []).append(m["q"])
    return streams


# -- handshake and authentication ---------------------------------------------


async def test_connected_then_auth_success_on_the_stocks_cluster(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim() as (port, recorder), connect(port) as client:
        await client.login()
    record = recorder.connections[0]
    assert (record.number, record.path, record.market) == (1, "/stocks", "stocks")
    assert record.authenticated
    assert record.received == [{"action": "auth", "params": DEFAULT_KEY}]
    assert record.statuses() == [status("connected"), status("auth_success")]


async def test_the_crypto_cluster_is_served_on_the_same_port(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim() as (port, recorder), connect(port, "crypto") as client:
        await client.login()
    assert recorder.connections[0].market == "crypto"


async def test_an_unknown_cluster_is_refused_with_404(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim() as (port, recorder):
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(f"ws://127.0.0.1:{port}/options"):
                pass
    assert rejected.value.status_code == 404
    assert recorder.accepted == 0


@pytest.mark.parametrize("key", ["wrong", "ключ", 42, None])
async def test_a_bad_key_gets_auth_failed_and_the_client_may_retry(
    autojump_clock: trio.testing.MockClock, key: object
) -> None:
    async with running_sim() as (port, _), connect(port) as client:
        assert await client.recv() == [status("connected")]
        await client.send({"action": "auth", "params": key})
        assert await client.recv() == [status("auth_failed")]
        await client.send({"action": "auth", "params": DEFAULT_KEY})
        assert await client.recv() == [status("auth_success")]


async def test_a_custom_key_is_the_one_accepted(autojump_clock: trio.testing.MockClock) -> None:
    async with running_sim(key="k1") as (port, _), connect(port) as client:
        await client.login("k1")


async def test_a_second_auth_is_answered_auth_success_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim() as (port, _), connect(port) as client:
        await client.login()
        await client.send({"action": "auth", "params": DEFAULT_KEY})
        assert await client.recv() == [status("auth_success")]


async def test_no_auth_in_time_gets_auth_timeout_then_close_1008(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim(auth_timeout=3.0) as (port, recorder), connect(port) as client:
        start = trio.current_time()
        await client.recv()
        assert await client.recv() == [status("auth_timeout")]
        assert trio.current_time() - start == pytest.approx(3.0)
        assert await closed_with(client) == 1008
    assert recorder.connections[0].close_code == 1008


async def test_reject_auth_fault_refuses_the_right_key_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        running_sim(faults=FaultPlan.reject_auth(1)) as (port, recorder),
        connect(port) as client,
    ):
        assert await client.recv() == [status("connected")]
        await client.send({"action": "auth", "params": DEFAULT_KEY})
        assert await client.recv() == [status("auth_failed")]
        await client.send({"action": "auth", "params": DEFAULT_KEY})
        assert await client.recv() == [status("auth_success")]
    assert recorder.connections[0].faults == [FaultKind.REJECT_AUTH]


@pytest.mark.parametrize(
    ("message", "reply"),
    [
        ("{not json", status("error", "invalid message")),
        ("[1, 2]", status("error", "invalid message")),
        ('{"action": "dance"}', status("error", "unknown action: 'dance'")),
        ('{"action": "subscribe", "params": ["T.AAPL"]}', None),
    ],
)
async def test_invalid_client_messages_get_an_error_status_and_change_nothing(
    autojump_clock: trio.testing.MockClock, message: str, reply: Message | None
) -> None:
    async with running_sim() as (port, recorder), connect(port) as client:
        await client.login()
        await client.ws.send_message(message)
        expected = reply or status("error", "params must be a string of topics")
        assert await client.recv() == [expected]
        assert await client.subscribe("Q.AAPL") == [status("success", "subscribed to: Q.AAPL")]
    assert recorder.connections[0].topics == ["Q.AAPL"]


async def test_subscribing_before_auth_is_an_error(autojump_clock: trio.testing.MockClock) -> None:
    async with running_sim() as (port, _), connect(port) as client:
        await client.recv()
        await client.send({"action": "subscribe", "params": "T.AAPL"})
        assert await client.recv() == [status("error", "not authenticated")]


# -- subscriptions ----------------------------------------------------------------


async def test_each_topic_gets_its_own_success_status_all_in_one_frame_before_any_data(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim() as (port, recorder), connect(port) as client:
        await client.login()
        await client.send({"action": "subscribe", "params": "T.AAPL, Q.AAPL,,AM.*"})
        assert await client.recv() == [
            status("success", "subscribed to: T.AAPL"),
            status("success", "subscribed to: Q.AAPL"),
            status("success", "subscribed to: AM.*"),
        ]
        assert (await client.recv())[0]["ev"] in ("T", "Q")
    assert recorder.connections[0].topics == ["T.AAPL", "Q.AAPL", "AM.*"]


async def test_unsubscribe_is_confirmed_per_topic_and_stops_the_data(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim(symbols=["AAPL", "MSFT"]) as (port, recorder), connect(port) as c:
        await c.login()
        await c.subscribe("T.AAPL,Q.MSFT")
        assert {(m["ev"], m["sym"]) for m in await c.data(200)} == {("T", "AAPL"), ("Q", "MSFT")}
        assert await c.subscribe("T.AAPL", "unsubscribe") == [
            status("success", "unsubscribed to: T.AAPL")
        ]
        assert {(m["ev"], m["sym"]) for m in await c.data(100)} == {("Q", "MSFT")}
    assert recorder.connections[0].topics == ["Q.MSFT"]


async def test_topics_the_plan_lacks_are_not_authorized(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim(entitlements={"T"}) as (port, _), connect(port) as client:
        await client.login()
        assert await client.subscribe("T.AAPL,Q.AAPL") == [
            status("success", "subscribed to: T.AAPL"),
            status("error", "not authorized"),
        ]
        assert {m["ev"] for m in await client.data(50)} == {"T"}


async def test_nothing_is_sent_until_something_is_subscribed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim() as (port, _), connect(port) as client:
        await client.login()
        with trio.move_on_after(30) as waited:
            await client.recv()
        assert waited.cancelled_caught


# -- stocks data ---------------------------------------------------------------------


async def test_stock_trades_and_quotes_carry_the_documented_fields(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim(symbols=["AAPL"]) as (port, _), connect(port) as client:
        await client.login()
        await client.subscribe("T.AAPL,Q.AAPL")
        messages = await client.data(300)
    trades = [m for m in messages if m["ev"] == "T"]
    quotes = [m for m in messages if m["ev"] == "Q"]
    assert trades and quotes
    for t in trades:
        assert set(t) - {"c"} == {"ev", "sym", "i", "x", "p", "s", "t", "q", "z"}
        assert isinstance(t["i"], str) and isinstance(t["s"], int) and isinstance(t["x"], int)
        assert t["z"] in (1, 2, 3)
        assert WALL_NS // 1_000_000 <= t["t"] < WALL_NS // 1_000_000 + 60_000, "Unix ms"
        assert ("c" in t) == (t["s"] < 100), "only odd lots carry a condition (37)"
    for q in quotes:
        assert set(q) == {"ev", "sym", "bx", "bp", "bs", "ax", "ap", "as", "c", "t", "q", "z"}
        assert 0 < q["bp"] < q["ap"]
        assert isinstance(q["bs"], int) and 0 < q["bs"] < 100, "sizes are in round lots"


async def test_contiguous_sequences_count_up_by_one_per_event_type_and_symbol(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim(symbols=["AAPL", "MSFT"]) as (port, _), connect(port) as client:
        await client.login()
        await client.subscribe("T.*,Q.*")
        streams = per_stream(await client.data(400))
    assert set(streams) == {("T", "AAPL"), ("T", "MSFT"), ("Q", "AAPL"), ("Q", "MSFT")}
    for numbers in streams.values():
        assert numbers == list(range(1, len(numbers) + 1))


async def test_polygon_sequences_increase_with_holes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        running_sim(symbols=["AAPL"], sequence="polygon") as (port, _),
        connect(port) as client,
    ):
        await client.login()
        await client.subscribe("T.AAPL,Q.AAPL")
        streams = per_stream(await client.data(300))
    for numbers in streams.values():
        steps = [b - a for a, b in itertools.pairwise(numbers)]
        assert all(step >= 1 for step in steps)
        assert any(step > 1 for step in steps)


async def test_a_stock_wildcard_covers_every_stock_but_no_crypto_pair(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim() as (port, _), connect(port) as client:
        await client.login()
        await client.subscribe("Q.*,T.TSLA")
        seen = {(m["ev"], m["sym"]) for m in await client.data(500)}
    assert seen == {("Q", s) for s in ("AAPL", "MSFT", "NVDA", "TSLA")} | {("T", "TSLA")}


async def test_second_and_minute_aggregates_sum_the_connections_trades(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        running_sim(symbols=["AAPL"], rate=100.0, batch=20) as (port, _),
        connect(port) as client,
    ):
        await client.login()
        await client.subscribe("T.AAPL,A.AAPL,AM.AAPL")
        messages = await client.data(13_000)
    trades = [m for m in messages if m["ev"] == "T"]
    for ev, width in (("A", 1000), ("AM", 60_000)):
        bars = [m for m in messages if m["ev"] == ev]
        assert len(bars) >= 2
        for bar in bars[1:]:  # the first window opened mid-way
            inside = [t for t in trades if bar["s"] <= t["t"] < bar["e"]]
            assert bar["e"] - bar["s"] == width and bar["s"] % width == 0
            assert bar["v"] == sum(t["s"] for t in inside)
            assert (bar["o"], bar["c"]) == (inside[0]["p"], inside[-1]["p"])
            assert bar["h"] == max(t["p"] for t in inside)
            assert bar["l"] == min(t["p"] for t in inside)
            assert set(bar) == {
                "ev", "sym", "v", "av", "op", "vw", "o", "c", "h", "l", "a", "z", "s", "e",
            }  # fmt: skip


# -- crypto data ---------------------------------------------------------------------


async def test_crypto_events_use_pairs_spelled_with_a_dash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        running_sim(symbols=["BTC-USD", "ETH-USD"]) as (port, _),
        connect(port, "crypto") as client,
    ):
        await client.login()
        await client.subscribe("XT.BTC-USD,XQ.*,XL2.ETH-USD")
        messages = await client.data(400)
    seen = {(m["ev"], m["pair"]) for m in messages}
    assert seen == {("XT", "BTC-USD"), ("XQ", "BTC-USD"), ("XQ", "ETH-USD"), ("XL2", "ETH-USD")}
    keys = {m["ev"]: set(m) for m in messages}
    assert keys["XT"] == {"ev", "pair", "p", "s", "t", "c", "i", "x", "r"}
    assert keys["XQ"] == {"ev", "pair", "bp", "bs", "ap", "as", "t", "x", "r"}
    assert keys["XL2"] == {"ev", "pair", "b", "a", "t", "x", "r"}
    assert all(m["c"] in ([1], [2]) for m in messages if m["ev"] == "XT")
    assert all("q" not in m for m in messages), "crypto events carry no sequence number"


async def test_every_level2_message_is_the_whole_book_of_the_model(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = MarketModel(["BTC/USD"], seed=3, depth=5)
    faults = FaultPlan.silent_after(60)
    async with (
        running_sim(model=model, faults=faults) as (port, _),
        connect(port, "crypto") as client,
    ):
        await client.login()
        await client.subscribe("XL2.BTC-USD")
        books = await client.data(60)
        last = model.book_snapshot("BTC/USD", 0)
    assert all(len(b["b"]) == len(b["a"]) == 5 for b in books)
    assert all(b["b"][0][0] < b["a"][0][0] for b in books)
    assert books[-1]["b"] == [list(level) for level in last.bids]
    assert books[-1]["a"] == [list(level) for level in last.asks]


async def test_crypto_minute_aggregates_are_sent(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        running_sim(symbols=["BTC-USD"], rate=20.0) as (port, _),
        connect(port, "crypto") as client,
    ):
        await client.login()
        await client.subscribe("XA.BTC-USD,XQ.BTC-USD")
        messages = await client.data(2500)
    bars = [m for m in messages if m["ev"] == "XA"]
    assert bars and set(bars[0]) == {"ev", "pair", "o", "c", "h", "l", "v", "vw", "s", "e", "z"}
    assert bars[0]["pair"] == "BTC-USD"


# -- connection limit -------------------------------------------------------------


async def test_a_new_connection_evicts_the_oldest_with_max_connections_and_1008(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim() as (port, recorder):
        async with connect(port) as first:
            await first.login()
            await first.subscribe("Q.AAPL")
            async with connect(port) as second:
                await second.login()
                statuses = await first.statuses(1)
                assert statuses == [status("max_connections")]
                assert await closed_with(first) == 1008
                await second.subscribe("Q.AAPL")
                await second.data(10)
    assert [r.close_code for r in recorder.connections] == [1008, None]


async def test_reject_new_refuses_the_extra_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim(on_connection_limit="reject_new") as (port, recorder):
        async with connect(port) as first, connect(port) as second:
            await first.login()
            assert await second.recv() == [status("connected")]
            await second.send({"action": "auth", "params": DEFAULT_KEY})
            assert await second.recv() == [status("max_connections")]
            assert await closed_with(second) == 1008
            await first.subscribe("Q.AAPL")
            await first.data(10)
    assert not recorder.connections[1].authenticated


async def test_a_closed_connection_frees_its_slot(autojump_clock: trio.testing.MockClock) -> None:
    async with running_sim(on_connection_limit="reject_new") as (port, recorder):
        async with connect(port) as first:
            await first.login()
        await recorder.connections[0].ended.wait()
        async with connect(port) as second:
            await second.login()


async def test_connection_limit_fault_sends_max_connections_then_1008(
    autojump_clock: trio.testing.MockClock,
) -> None:
    faults = FaultPlan.connection_limit(connection=1)
    async with running_sim(faults=faults) as (port, recorder):
        async with connect(port) as client:
            assert await client.recv() == [status("connected")]
            await client.send({"action": "auth", "params": DEFAULT_KEY})
            assert await client.recv() == [status("max_connections")]
            assert await closed_with(client) == 1008
        async with connect(port) as client:
            await client.login()
    assert recorder.connections[0].faults == [FaultKind.CONNECTION_LIMIT]


# -- faults -------------------------------------------------------------------------


async def test_drop_closes_tcp_without_a_close_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim(faults=FaultPlan.drop_after(20)) as (port, recorder):
        async with connect(port) as client:
            await client.login()
            await client.subscribe("Q.AAPL")
            assert len(await client.data(20)) == 20
            assert await closed_with(client) == 1006
    assert recorder.connections[0].close_code is None
    assert recorder.connections[0].faults == [FaultKind.DROP]


@pytest.mark.parametrize("code", [1000, 1008, 1011])
async def test_close_sends_a_close_frame_with_the_code(
    autojump_clock: trio.testing.MockClock, code: int
) -> None:
    async with running_sim(faults=FaultPlan.close_after(5, code=code)) as (port, recorder):
        async with connect(port) as client:
            await client.login()
            await client.subscribe("Q.AAPL")
            assert len(await client.data(5)) == 5
            assert await closed_with(client) == code
    assert recorder.connections[0].close_code == code


async def test_silence_stops_data_but_statuses_are_still_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    faults = FaultPlan.silent_after(10, duration=30.0)
    async with running_sim(faults=faults, rate=10.0) as (port, _), connect(port) as client:
        await client.login()
        await client.subscribe("Q.AAPL")
        await client.data(10)
        start = trio.current_time()
        assert await client.subscribe("T.AAPL") == [status("success", "subscribed to: T.AAPL")]
        await client.data(1)
        assert trio.current_time() - start >= 30.0


async def test_malformed_sends_one_undecodable_text_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim(faults=FaultPlan.malformed_after(3)) as (port, _):
        async with connect(port) as client:
            await client.login()
            await client.subscribe("Q.AAPL")
            await client.data(3)
            assert await client.ws.get_message() == "\x00garbage"
            await client.data(3)


async def test_unknown_message_sends_an_event_type_polygon_does_not_define(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim(faults=FaultPlan.unknown_message_after(3)) as (port, _):
        async with connect(port) as client:
            await client.login()
            await client.subscribe("Q.AAPL")
            await client.data(3)
            assert await client.recv() == [
                {"ev": "ZZ", "message": "simulated unknown message type"}
            ]


async def test_a_gap_skips_messages_and_their_sequence_numbers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    faults = FaultPlan.gap_after(10, count=4)
    async with running_sim(faults=faults, symbols=["AAPL"]) as (port, recorder):
        async with connect(port) as client:
            await client.login()
            await client.subscribe("Q.AAPL")
            numbers = [m["q"] for m in await client.data(20)]
    assert numbers == list(range(1, 11)) + list(range(15, 25))
    assert [m["q"] for m in recorder.connections[0].skipped] == [11, 12, 13, 14]


async def test_duplicate_sends_the_last_messages_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    faults = FaultPlan.duplicate_after(10, count=3)
    async with running_sim(faults=faults, symbols=["AAPL"]) as (port, _):
        async with connect(port) as client:
            await client.login()
            await client.subscribe("Q.AAPL")
            messages = await client.data(16)
    assert [m["q"] for m in messages] == [*range(1, 11), 8, 9, 10, 11, 12, 13]
    assert messages[10:13] == messages[7:10]


async def test_reorder_sends_the_next_messages_in_reverse(
    autojump_clock: trio.testing.MockClock,
) -> None:
    faults = FaultPlan.reorder_after(5, count=3)
    async with running_sim(faults=faults, symbols=["AAPL"]) as (port, _):
        async with connect(port) as client:
            await client.login()
            await client.subscribe("Q.AAPL")
            numbers = [m["q"] for m in await client.data(10)]
    assert numbers == [1, 2, 3, 4, 5, 8, 7, 6, 9, 10]


async def test_ignore_pings_stops_reading_while_data_flows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    faults = FaultPlan.ignore_pings_after(5, duration=20.0)
    async with running_sim(faults=faults, rate=10.0) as (port, _), connect(port) as client:
        await client.login()
        await client.subscribe("Q.AAPL")
        await client.data(6)
        with trio.move_on_after(5) as waited:
            await client.ws.ping()
        assert waited.cancelled_caught
        await client.data(10)


async def test_slow_delays_every_frame(autojump_clock: trio.testing.MockClock) -> None:
    faults = FaultPlan.slow_after(5, delay=1.0)
    async with running_sim(faults=faults) as (port, _), connect(port) as client:
        await client.login()
        await client.subscribe("Q.AAPL")
        await client.data(5)
        start = trio.current_time()
        await client.data(10)
        assert trio.current_time() - start >= 10.0


# -- settings and hygiene ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"host": "0.0.0.0"}, "only listens on loopback"),
        ({"sequence": "random"}, "sequence must be 'contiguous' or 'polygon'"),
        ({"on_connection_limit": "kick"}, "on_connection_limit must be"),
        ({"entitlements": "T"}, "entitlements takes a collection"),
        ({"symbols": "AAPL"}, "symbols takes a list"),
        ({"batch": 0}, "batch must be at least 1"),
        ({"rate": -1.0}, "rate must be >= 0"),
    ],
)
async def test_bad_settings_are_refused_before_listening(
    autojump_clock: trio.testing.MockClock, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        await serve_polygon(**kwargs)


async def test_the_key_is_never_logged(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    faults = FaultPlan.drop_after(5)
    async with running_sim(key="sekrit-key", faults=faults) as (port, _):
        async with connect(port) as client:
            await client.login("sekrit-key")
            await client.subscribe("Q.AAPL")
            await closed_with(client)
    assert not [r for r in caplog.records if "sekrit-key" in r.getMessage()]
