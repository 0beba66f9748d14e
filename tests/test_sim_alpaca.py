"""Specification of the Alpaca simulator (puffin_trio.sim.alpaca) and of fault plans.

The simulator is exercised end to end with a bare trio-websocket client that
decodes frames with orjson/msgpack itself, never with puffin_trio's own codec.
Timing-sensitive tests run on ``MockClock(autojump_threshold=0)`` (the
``autojump_clock`` fixture), so virtual minutes pass instantly.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import msgpack
import orjson
import pytest
import trio
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    DisconnectionTimeout,
    WebSocketConnection,
    open_websocket_url,
)
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from puffin_trio.errors import ConfigurationError
from puffin_trio.sim import (
    AlpacaSimRecorder,
    Fault,
    FaultKind,
    FaultPlan,
    FaultSchedule,
    MarketModel,
    PausableStream,
    serve_alpaca,
)
from puffin_trio.sim._common import HANDSHAKE_TIMEOUT
from puffin_trio.sim.alpaca import (
    CRYPTO_CHANNELS,
    DEFAULT_KEY,
    DEFAULT_SECRET,
    ERROR_MESSAGES,
    rfc3339_ns,
)

from ._support import serving

#: A wall-clock instant with every nanosecond digit set (2023-11-14T22:13:20.123456789Z).
WALL_NS = 1_700_000_000_123_456_789
#: Upper bound on the frames a test reads while looking for something.
MAX_FRAMES = 2000

Message = dict[str, Any]


@asynccontextmanager
async def running_sim(**kwargs: Any) -> AsyncIterator[tuple[int, AlpacaSimRecorder]]:
    """A simulator on a free loopback port, with a recorder; cancelled on exit."""
    recorder = AlpacaSimRecorder()
    kwargs.setdefault("wall_clock", lambda: WALL_NS)
    async with serving(serve_alpaca, recorder=recorder, **kwargs) as port:
        yield port, recorder


class Client:
    """A bare Alpaca client: raw frames in and out, decoded by hand."""

    def __init__(self, ws: WebSocketConnection, binary: bool) -> None:
        self.ws = ws
        self.binary = binary

    async def recv(self) -> list[Message]:
        frame = await self.ws.get_message()
        if self.binary:
            assert isinstance(frame, bytes), "msgpack mode must use binary frames"
            decoded = msgpack.unpackb(frame)
        else:
            assert isinstance(frame, str), "JSON mode must use text frames"
            decoded = orjson.loads(frame)
        assert isinstance(decoded, list)
        return decoded

    async def send(self, message: Message) -> None:
        if self.binary:
            await self.ws.send_message(msgpack.packb(message))
        else:
            await self.ws.send_message(orjson.dumps(message).decode())

    async def login(self, key: str = DEFAULT_KEY, secret: str = DEFAULT_SECRET) -> None:
        assert await self.recv() == [{"T": "success", "msg": "connected"}]
        await self.send({"action": "auth", "key": key, "secret": secret})
        assert await self.recv() == [{"T": "success", "msg": "authenticated"}]

    async def control(self) -> Message:
        """The next control message, skipping data frames sent before it."""
        for _ in range(MAX_FRAMES):
            frame = await self.recv()
            if frame[0]["T"] in ("success", "error", "subscription"):
                assert len(frame) == 1, "control messages come alone"
                return frame[0]
        raise AssertionError("no control message")

    async def subscribe(self, action: str = "subscribe", **channels: list[str]) -> Message:
        await self.send({"action": action, **channels})
        reply = await self.control()
        assert reply["T"] == "subscription", reply
        return reply

    async def data(self, count: int) -> list[Message]:
        """Exactly ``count`` data messages (fails if a control message comes instead)."""
        messages: list[Message] = []
        while len(messages) < count:
            frame = await self.recv()
            assert all(m["T"] not in ("success", "error", "subscription") for m in frame), frame
            messages.extend(frame)
        assert len(messages) == count, "the simulator sent more than expected in one frame"
        return messages


@asynccontextmanager
async def connect(
    port: int, *, binary: bool = False, headers: list[tuple[bytes, bytes]] | None = None
) -> AsyncIterator[Client]:
    extra = [(b"Content-Type", b"application/msgpack")] if binary else []
    async with open_websocket_url(
        f"ws://127.0.0.1:{port}/v2/iex", extra_headers=extra + (headers or [])
    ) as ws:
        yield Client(ws, binary)


def close_code(closed: ConnectionClosed) -> int:
    assert closed.reason is not None
    return closed.reason.code


def error(code: int) -> Message:
    return {"T": "error", "code": code, "msg": ERROR_MESSAGES[code]}


# -- handshake and authentication ---------------------------------------------


async def test_json_client_gets_connected_then_authenticated_as_text_frames(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim() as (port, recorder), connect(port) as client:
        await client.login()
    record = recorder.connections[0]
    assert (record.number, record.path, record.msgpack) == (1, "/v2/iex", False)
    assert record.authenticated
    assert record.received == [{"action": "auth", "key": DEFAULT_KEY, "secret": DEFAULT_SECRET}]


async def test_msgpack_client_gets_binary_frames_and_may_send_msgpack(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim() as (port, recorder), connect(port, binary=True) as client:
        await client.login()
    assert recorder.connections[0].msgpack


async def test_json_sent_in_a_binary_frame_is_accepted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim() as (port, _), connect(port) as client:
        assert await client.recv() == [{"T": "success", "msg": "connected"}]
        auth = {"action": "auth", "key": DEFAULT_KEY, "secret": DEFAULT_SECRET}
        await client.ws.send_message(orjson.dumps(auth))
        assert await client.recv() == [{"T": "success", "msg": "authenticated"}]


async def test_any_path_is_served(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        running_sim() as (port, recorder),
        open_websocket_url(f"ws://127.0.0.1:{port}/") as ws,
    ):
        assert orjson.loads(await ws.get_message()) == [{"T": "success", "msg": "connected"}]
    assert recorder.connections[0].path == "/"


@pytest.mark.parametrize(
    ("key", "secret"), [("wrong", DEFAULT_SECRET), (DEFAULT_KEY, "wrong"), ("ключ", "秘密")]
)
async def test_bad_credentials_get_402_and_the_client_may_retry(
    autojump_clock: trio.testing.MockClock, key: str, secret: str
) -> None:
    async with running_sim() as (port, _), connect(port) as client:
        assert await client.recv() == [{"T": "success", "msg": "connected"}]
        await client.send({"action": "auth", "key": key, "secret": secret})
        assert await client.recv() == [error(402)]
        await client.send({"action": "auth", "key": DEFAULT_KEY, "secret": DEFAULT_SECRET})
        assert await client.recv() == [{"T": "success", "msg": "authenticated"}]


async def test_custom_credentials_are_the_ones_accepted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim(key="k1", secret="s1") as (port, _), connect(port) as client:
        await client.login("k1", "s1")


async def test_subscribing_before_auth_is_401(autojump_clock: trio.testing.MockClock) -> None:
    async with running_sim() as (port, _), connect(port) as client:
        await client.recv()
        await client.send({"action": "subscribe", "trades": ["AAPL"]})
        assert await client.recv() == [error(401)]


async def test_a_second_auth_is_403(autojump_clock: trio.testing.MockClock) -> None:
    async with running_sim() as (port, _), connect(port) as client:
        await client.login()
        await client.send({"action": "auth", "key": DEFAULT_KEY, "secret": DEFAULT_SECRET})
        assert await client.recv() == [error(403)]


async def test_no_auth_within_the_window_gets_404_and_a_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim(auth_timeout=3.0) as (port, _), connect(port) as client:
        start = trio.current_time()
        await client.recv()
        assert await client.recv() == [error(404)]
        assert trio.current_time() - start == pytest.approx(3.0)
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
        assert close_code(closed.value) == 1008


async def test_a_failed_auth_does_not_restart_the_auth_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim(auth_timeout=3.0) as (port, _), connect(port) as client:
        await client.recv()
        await trio.sleep(2)
        await client.send({"action": "auth", "key": "wrong", "secret": "wrong"})
        assert await client.recv() == [error(402)]
        assert await client.recv() == [error(404)]


# -- malformed client messages --------------------------------------------------


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{not json", 400),
        (b"\xc1", 400),
        ("[]", 400),
        ('{"key": "k"}', 400),
        ('{"action": "dance"}', 400),
        ('{"action": "subscribe", "trades": "AAPL"}', 400),
        ('{"action": "subscribe", "trades": [42]}', 400),
        ('{"action": "subscribe", "trades": ["aapl"]}', 400),
        ('{"action": "subscribe", "trades": ["BTC/USD"]}', 400),
        ('{"action": "subscribe", "bogus": ["AAPL"]}', 400),
        ('{"action": "subscribe", "corrections": ["AAPL"]}', 400),
        ('{"action": "subscribe", "orderbooks": ["AAPL"]}', 410),
        ('{"action": "subscribe", "news": ["*"]}', 410),
    ],
)
async def test_invalid_client_messages_get_the_documented_error_and_change_nothing(
    autojump_clock: trio.testing.MockClock, message: str | bytes, code: int
) -> None:
    async with running_sim() as (port, recorder), connect(port) as client:
        await client.login()
        await client.ws.send_message(message)
        assert await client.recv() == [error(code)]
        assert await client.subscribe(quotes=["AAPL"]) == {
            "T": "subscription",
            "trades": [],
            "quotes": ["AAPL"],
            "bars": [],
            "updatedBars": [],
            "dailyBars": [],
            "statuses": [],
            "lulds": [],
            "corrections": [],
            "cancelErrors": [],
        }
    assert recorder.connections[0].authenticated


async def test_auth_without_string_credentials_is_400(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim() as (port, _), connect(port) as client:
        await client.recv()
        await client.send({"action": "auth", "key": DEFAULT_KEY})
        assert await client.recv() == [error(400)]


async def test_statuses_are_not_a_crypto_channel(autojump_clock: trio.testing.MockClock) -> None:
    async with running_sim(symbols=["BTC/USD"]) as (port, _), connect(port) as client:
        await client.login()
        await client.send({"action": "subscribe", "statuses": ["BTC/USD"]})
        assert await client.recv() == [error(410)]


# -- subscriptions ----------------------------------------------------------------


async def test_the_subscription_reply_lists_every_channel_and_mirrors_trades(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim() as (port, recorder), connect(port) as client:
        await client.login()
        reply = await client.subscribe(trades=["AAPL"], quotes=["AMD", "MSFT"], bars=["*"])
    expected = {
        "T": "subscription",
        "trades": ["AAPL"],
        "quotes": ["AMD", "MSFT"],
        "bars": ["*"],
        "updatedBars": [],
        "dailyBars": [],
        "statuses": [],
        "lulds": [],
        "corrections": ["AAPL"],
        "cancelErrors": ["AAPL"],
    }
    assert reply == expected
    assert list(reply) == list(expected)
    assert recorder.connections[0].subscriptions == {k: v for k, v in expected.items() if k != "T"}


async def test_subscribe_adds_and_unsubscribe_removes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim() as (port, _), connect(port) as client:
        await client.login()
        await client.subscribe(trades=["AAPL"], quotes=["AAPL"])
        reply = await client.subscribe(trades=["MSFT", "AAPL"])
        assert (reply["trades"], reply["quotes"]) == (["AAPL", "MSFT"], ["AAPL"])
        reply = await client.subscribe("unsubscribe", trades=["AAPL"], quotes=["NVDA"])
        assert (reply["trades"], reply["quotes"]) == (["MSFT"], ["AAPL"])
        assert (reply["corrections"], reply["cancelErrors"]) == (["MSFT"], ["MSFT"])


async def test_a_crypto_stream_confirms_crypto_channels_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim(symbols=["BTC/USD"]) as (port, _), connect(port) as client:
        await client.login()
        reply = await client.subscribe(trades=["BTC/USD"], orderbooks=["ETH/USD"])
    assert list(reply) == ["T", *CRYPTO_CHANNELS]
    assert (reply["trades"], reply["orderbooks"]) == (["BTC/USD"], ["ETH/USD"])


# -- data ---------------------------------------------------------------------------


async def test_data_flows_only_for_subscribed_symbols_and_channels(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        running_sim(symbols=["AAPL", "MSFT", "NVDA"], rate=None) as (port, _),
        connect(port) as client,
    ):
        await client.login()
        await client.subscribe(trades=["AAPL"], quotes=["MSFT"])
        seen = {(m["T"], m["S"]) for m in await client.data(200)}
        assert seen == {("t", "AAPL"), ("q", "MSFT")}
        await client.subscribe("unsubscribe", trades=["AAPL"])
        assert {(m["T"], m["S"]) for m in await client.data(100)} == {("q", "MSFT")}


async def test_nothing_is_sent_until_something_is_subscribed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim(rate=None) as (port, _), connect(port) as client:
        await client.login()
        with trio.move_on_after(30) as waited:
            await client.recv()
        assert waited.cancelled_caught


async def test_a_wildcard_covers_every_symbol_and_new_symbols_get_data(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        running_sim(symbols=["AAPL", "MSFT"], rate=None) as (port, _),
        connect(port) as client,
    ):
        await client.login()
        await client.subscribe(quotes=["*"], trades=["TSLA"])
        seen = {(m["T"], m["S"]) for m in await client.data(300)}
    assert seen == {("q", "AAPL"), ("q", "MSFT"), ("q", "TSLA"), ("t", "TSLA")}


async def test_stock_trades_and_quotes_carry_the_documented_fields(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim(rate=None) as (port, _), connect(port) as client:
        await client.login()
        await client.subscribe(trades=["AAPL"], quotes=["AAPL"])
        messages = await client.data(100)
    trades = [m for m in messages if m["T"] == "t"]
    quotes = [m for m in messages if m["T"] == "q"]
    assert trades and quotes
    for t in trades:
        assert set(t) == {"T", "S", "i", "x", "p", "s", "c", "t", "z"}
        assert isinstance(t["i"], int) and isinstance(t["s"], int) and isinstance(t["p"], float)
        assert isinstance(t["c"], list) and len(t["x"]) == 1 and t["z"] in "ABC"
    for q in quotes:
        assert set(q) == {"T", "S", "bx", "bp", "bs", "ax", "ap", "as", "c", "t", "z"}
        assert 0 < q["bp"] < q["ap"]
        assert isinstance(q["bs"], int) and isinstance(q["as"], int)


async def test_trade_ids_keep_increasing_across_reconnects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ids: list[int] = []
    async with running_sim(symbols=["AAPL"], rate=None) as (port, recorder):
        for connection in range(2):
            async with connect(port) as client:
                await client.login()
                await client.subscribe(trades=["AAPL"])
                ids += [m["i"] for m in await client.data(20)]
            await recorder.connections[connection].ended.wait()
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_crypto_trades_quotes_and_books_carry_the_documented_fields(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        running_sim(symbols=["BTC/USD", "ETH/USD"], rate=None) as (port, _),
        connect(port, binary=True) as client,
    ):
        await client.login()
        await client.subscribe(trades=["BTC/USD"], quotes=["BTC/USD"], orderbooks=["BTC/USD"])
        messages = await client.data(300)
    by_type: dict[str, list[Message]] = {}
    for m in messages:
        assert m["S"] == "BTC/USD"
        by_type.setdefault(m["T"], []).append(m)
    assert set(by_type) == {"t", "q", "o"}
    assert all(set(t) == {"T", "S", "p", "s", "t", "i", "tks"} for t in by_type["t"])
    assert all(t["tks"] in ("B", "S") and isinstance(t["s"], float) for t in by_type["t"])
    assert all(set(q) == {"T", "S", "bp", "bs", "ap", "as", "t"} for q in by_type["q"])
    books = by_type["o"]
    assert books[0]["r"] is True
    assert all("r" not in b for b in books[1:])
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for book in books:
        assert {"T", "S", "t", "b", "a"} <= set(book), "both sides are always present"
        for side, levels in ((bids, book["b"]), (asks, book["a"])):
            for level in levels:
                if level["s"] == 0:
                    del side[level["p"]]
                else:
                    side[level["p"]] = level["s"]
        assert max(bids) < min(asks), "the rebuilt book is never crossed"


async def test_resubscribing_a_book_starts_with_a_full_book_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        running_sim(symbols=["BTC/USD"], rate=None) as (port, _),
        connect(port) as client,
    ):
        await client.login()
        await client.subscribe(orderbooks=["BTC/USD"])
        first, *rest = await client.data(5)
        assert first["r"] is True and all("r" not in m for m in rest)
        await client.subscribe("unsubscribe", orderbooks=["BTC/USD"])
        await client.subscribe(orderbooks=["BTC/USD"])
        assert (await client.data(1))[0]["r"] is True


async def test_an_explicit_crypto_flag_serves_crypto_channels(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim(crypto=True) as (port, _), connect(port) as client:
        await client.login()
        reply = await client.subscribe(orderbooks=["BTC/USD"])
    assert reply["orderbooks"] == ["BTC/USD"]


# -- encodings and timestamps ----------------------------------------------------------


@pytest.mark.parametrize(
    ("ts_ns", "text"),
    [
        (WALL_NS, "2023-11-14T22:13:20.123456789Z"),
        (1_700_000_000_120_000_000, "2023-11-14T22:13:20.12Z"),
        (1_700_000_000_000_000_001, "2023-11-14T22:13:20.000000001Z"),
        (1_613_999_700_000_000_000, "2021-02-22T13:15:00Z"),
    ],
)
def test_rfc3339_timestamps_keep_nanoseconds_and_trim_trailing_zeros(ts_ns: int, text: str) -> None:
    assert rfc3339_ns(ts_ns) == text


async def test_json_timestamps_are_rfc3339_strings_of_the_wall_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim(rate=None) as (port, _), connect(port) as client:
        await client.login()
        await client.subscribe(trades=["AAPL"])
        (trade,) = await client.data(1)
    assert trade["t"] == "2023-11-14T22:13:20.123456789Z"


async def test_msgpack_timestamps_are_extension_minus_one_with_nanoseconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim(rate=None) as (port, _), connect(port, binary=True) as client:
        await client.login()
        await client.subscribe(trades=["AAPL"])
        frame = await client.ws.get_message()
    assert isinstance(frame, bytes)
    assert b"\xd7\xff" in frame, "a timestamp-64 extension (fixext 8, type -1)"
    (trade,) = msgpack.unpackb(frame, timestamp=0)
    assert trade["t"] == msgpack.Timestamp.from_unix_nano(WALL_NS)
    assert msgpack.unpackb(frame, timestamp=2)[0]["t"] == WALL_NS


async def test_a_minute_bar_follows_the_minute_with_the_aggregate_of_its_trades(
    autojump_clock: trio.testing.MockClock,
) -> None:
    minute_ns = 60_000_000_000
    bar_start = 28_333_333 * minute_ns  # 2023-11-14T22:13:00Z
    start = trio.current_time()

    def wall_clock() -> int:
        return bar_start + 45_000_000_000 + int((trio.current_time() - start) * 1e9)

    async with (
        running_sim(symbols=["AAPL"], rate=20.0, wall_clock=wall_clock) as (port, _),
        connect(port, binary=True) as client,
    ):
        await client.login()
        await client.subscribe(trades=["AAPL"], bars=["AAPL"])
        trades: list[Message] = []
        for _ in range(MAX_FRAMES):
            (message,) = await client.data(1)
            if message["T"] == "b":
                break
            trades.append(message)
        bar = message
    assert bar["t"].to_unix_nano() == bar_start
    assert all(bar_start <= t["t"].to_unix_nano() < bar_start + minute_ns for t in trades)
    assert len(trades) == pytest.approx(15 * 20, abs=2)
    volume = sum(t["s"] for t in trades)
    assert bar == {
        "T": "b",
        "S": "AAPL",
        "o": trades[0]["p"],
        "h": max(t["p"] for t in trades),
        "l": min(t["p"] for t in trades),
        "c": trades[-1]["p"],
        "v": volume,
        "t": bar["t"],
        "n": len(trades),
        "vw": pytest.approx(sum(t["p"] * t["s"] for t in trades) / volume),
    }


async def test_bars_only_subscriptions_send_bars_but_no_trades(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()

    def wall_clock() -> int:
        return int((trio.current_time() - start) * 1e9)

    async with (
        running_sim(symbols=["AAPL"], rate=10.0, wall_clock=wall_clock) as (port, _),
        connect(port) as client,
    ):
        await client.login()
        await client.subscribe(bars=["AAPL"])
        (bar,) = await client.data(1)
    assert (bar["T"], bar["t"], bar["n"]) == (
        "b",
        "1970-01-01T00:00:00Z",
        pytest.approx(600, abs=2),
    )


# -- pacing ------------------------------------------------------------------------------


async def test_rate_paces_frames_of_batch_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim(rate=10.0, batch=2) as (port, _), connect(port) as client:
        await client.login()
        await client.subscribe(quotes=["AAPL"])
        times = []
        for _ in range(5):
            assert len(await client.recv()) == 2
            times.append(trio.current_time())
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == pytest.approx([0.2] * 4)


async def test_unlimited_rate_sends_without_virtual_time_passing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim(rate=None, batch=20) as (port, _), connect(port) as client:
        await client.login()
        await client.subscribe(quotes=["*"])
        start = trio.current_time()
        assert len(await client.data(2000)) == 2000
        assert trio.current_time() == start


# -- connections -------------------------------------------------------------------------


async def test_a_second_connection_with_the_same_key_gets_406_and_the_first_keeps_streaming(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim(rate=None) as (port, recorder), connect(port) as first:
        await first.login()
        await first.subscribe(quotes=["AAPL"])
        async with connect(port) as second:
            assert await second.recv() == [{"T": "success", "msg": "connected"}]
            await second.send({"action": "auth", "key": DEFAULT_KEY, "secret": DEFAULT_SECRET})
            assert await second.recv() == [error(406)]
            assert len(await first.data(10)) == 10
            await first.ws.aclose()
            await recorder.connections[0].ended.wait()
            await second.send({"action": "auth", "key": DEFAULT_KEY, "secret": DEFAULT_SECRET})
            assert await second.recv() == [{"T": "success", "msg": "authenticated"}]


async def test_many_connections_stream_concurrently_within_the_key_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    received: list[int] = []

    async def one_client(port: int) -> None:
        async with connect(port) as client:
            await client.login()
            await client.subscribe(trades=["*"], quotes=["*"])
            received.append(len(await client.data(50)))

    async with running_sim(rate=100.0, max_connections_per_key=5) as (port, recorder):
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(one_client, port)
        assert received == [50] * 5
        assert recorder.accepted == 5


async def test_a_client_vanishing_mid_stream_does_not_disturb_the_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim(rate=None) as (port, recorder):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host="127.0.0.1", target="/v2/iex")))
        events: list[object] = []
        for _ in range(MAX_FRAMES):
            ws.receive_data(await stream.receive_some())
            events.extend(ws.events())
            if len(events) == 1 and isinstance(events[0], AcceptConnection):
                for message in (
                    {"action": "auth", "key": DEFAULT_KEY, "secret": DEFAULT_SECRET},
                    {"action": "subscribe", "quotes": ["*"]},
                ):
                    await stream.send_all(ws.send(TextMessage(orjson.dumps(message).decode())))
            if sum(isinstance(e, TextMessage) for e in events) >= 10:
                break
        assert isinstance(events[0], AcceptConnection)
        await stream.aclose()  # no close frame, mid-stream
        await recorder.connections[0].ended.wait()
        async with connect(port) as client:
            await client.login()


async def test_a_peer_that_never_upgrades_is_dropped_after_the_handshake_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_sim() as (port, recorder):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        start = trio.current_time()
        assert await stream.receive_some() == b""
        assert trio.current_time() - start == pytest.approx(HANDSHAKE_TIMEOUT)
        garbage = await trio.open_tcp_stream("127.0.0.1", port)
        await garbage.send_all(b"\x00\x01 not http\r\n\r\n")
        with trio.fail_after(HANDSHAKE_TIMEOUT + 1):
            while await garbage.receive_some():
                pass
        async with connect(port) as client:
            await client.login()
        assert recorder.accepted == 1


# -- recorder -----------------------------------------------------------------------------


async def test_the_recorder_keeps_messages_both_ways_and_redacts_secret_headers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        running_sim(rate=None, batch=3) as (port, recorder),
        connect(port, headers=[(b"Authorization", b"Bearer hush")]) as client,
    ):
        await client.login()
        await client.subscribe(trades=["AAPL"])
        received = await client.data(6)
        await client.subscribe("unsubscribe", trades=["AAPL"])
    record = recorder.connections[0]
    assert record.headers["authorization"] == "<redacted>"
    assert [m["action"] for m in record.received] == ["auth", "subscribe", "unsubscribe"]
    assert record.actions("subscribe") == [{"action": "subscribe", "trades": ["AAPL"]}]
    assert record.sent[0] == [{"T": "success", "msg": "connected"}]
    assert orjson.loads(orjson.dumps(record.data_messages()[:6])) == received
    assert record.subscriptions["trades"] == []


async def test_the_recorder_stops_keeping_frames_past_its_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = AlpacaSimRecorder(max_frames=5)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_alpaca, recorder=recorder, rate=None))
        async with connect(port) as client:
            await client.login()
            await client.subscribe(quotes=["AAPL"])
            await client.data(10)
        nursery.cancel_scope.cancel()
    record = recorder.connections[0]
    assert len(record.sent) == 5
    assert record.frames_not_kept >= 8


# -- configuration errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"host": "0.0.0.0"}, "only listens on loopback"),
        ({"host": "example.com"}, "only listens on loopback"),
        ({"rate": -1.0}, "rate must be >= 0"),
        ({"batch": 0}, "batch must be at least 1"),
        ({"auth_timeout": 0.0}, "auth_timeout must be > 0"),
        ({"max_connections_per_key": 0}, "max_connections_per_key must be at least 1"),
        ({"symbols": ["AAPL", "BTC/USD"]}, "mix stocks and crypto"),
    ],
)
async def test_bad_simulator_settings_are_configuration_errors(
    kwargs: dict[str, Any], message: str
) -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(ConfigurationError, match=message):
            await nursery.start(partial(serve_alpaca, **kwargs))


async def test_a_given_model_is_used_and_extended_with_the_given_symbols(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = MarketModel(["AAPL"], seed=9)
    async with running_sim(model=model, symbols=["MSFT"], rate=None) as (port, _):
        assert model.symbols == ("AAPL", "MSFT")
        async with connect(port) as client:
            await client.login()
            await client.subscribe(quotes=["*"])
            assert {m["S"] for m in await client.data(100)} == {"AAPL", "MSFT"}


# -- fault plans (pure) --------------------------------------------------------------------


def test_plans_combine_in_order_and_target_connections() -> None:
    plan = FaultPlan.drop_after(5) + FaultPlan.silent_after(3, connection=2, duration=1.5)
    assert list(plan) == [
        Fault(FaultKind.DROP, 5, 1),
        Fault(FaultKind.SILENT, 3, 2, duration=1.5),
    ]
    assert len(plan + FaultPlan.connection_limit(connection=None)) == 3
    assert FaultPlan.reject_auth(409).faults[0].code == 409
    assert FaultPlan.malformed_after(1, payload="x").faults[0].payload == "x"
    assert FaultPlan.close_after(1).faults[0].code == 1011
    assert FaultPlan.slow_after(0, delay=0.5).faults[0].delay == 0.5
    assert FaultPlan.ignore_pings_after(2).faults[0].kind is FaultKind.IGNORE_PINGS
    assert FaultPlan.unknown_message_after(2).faults[0].kind is FaultKind.UNKNOWN_MESSAGE


def test_a_schedule_releases_faults_in_order_once_each() -> None:
    plan = (
        FaultPlan.silent_after(4)
        + FaultPlan.unknown_message_after(2, connection=None)
        + FaultPlan.malformed_after(2)
        + FaultPlan.drop_after(1, connection=3)
        + FaultPlan.reject_auth(402)
    )
    schedule = plan.for_connection(1)
    assert schedule.take_auth_fault() == Fault(FaultKind.REJECT_AUTH, code=402)
    assert schedule.take_auth_fault() is None
    assert schedule.room(0) == 2
    assert schedule.take_due(1) == []
    assert [f.kind for f in schedule.take_due(2)] == [
        FaultKind.UNKNOWN_MESSAGE,
        FaultKind.MALFORMED,
    ]
    assert schedule.take_due(2) == []
    assert schedule.room(3) == 1
    assert [f.kind for f in schedule.take_due(9)] == [FaultKind.SILENT]
    assert schedule.room(9) is None
    other = plan.for_connection(3)
    assert [f.kind for f in other.take_due(2)] == [FaultKind.DROP, FaultKind.UNKNOWN_MESSAGE]
    assert FaultSchedule().room(0) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "drop"}, "must be a FaultKind"),
        ({"kind": FaultKind.DROP, "after": -1}, "after must be >= 0"),
        ({"kind": FaultKind.REJECT_AUTH, "after": 2}, "fires on the auth message"),
        ({"kind": FaultKind.DROP, "connection": 0}, "connection numbers start at 1"),
        ({"kind": FaultKind.SILENT, "duration": 0.0}, "duration must be > 0"),
        ({"kind": FaultKind.SLOW, "delay": -1.0}, "delay must be >= 0"),
        ({"kind": FaultKind.SLOW}, "needs a delay > 0"),
    ],
)
def test_impossible_faults_are_configuration_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Fault(**kwargs)


async def test_a_paused_stream_holds_incoming_bytes_until_resumed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    near, far = trio.testing.memory_stream_pair()
    stream = PausableStream(near)
    await far.send_all(b"before")
    assert await stream.receive_some() == b"before"
    stream.pause()
    await far.send_all(b"ping1")
    with trio.move_on_after(10) as waited:
        await stream.receive_some()
    assert waited.cancelled_caught
    await far.send_all(b"ping2")
    await stream.send_all(b"out")  # sending is never paused
    assert await far.receive_some() == b"out"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_resume_later, stream)
        assert await stream.receive_some(3) == b"pin"
    assert await stream.receive_some() == b"g1ping2"


async def _resume_later(stream: PausableStream) -> None:
    await trio.sleep(5)
    stream.resume()


async def test_a_paused_stream_still_notices_the_peer_closing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    near, far = trio.testing.memory_stream_pair()
    stream = PausableStream(near)
    stream.pause()
    await far.send_all(b"ping")
    await far.aclose()
    assert await stream.receive_some() == b""


# -- faults on the wire ---------------------------------------------------------------------


async def test_drop_closes_tcp_without_a_close_frame_after_n_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        running_sim(faults=FaultPlan.drop_after(3), batch=2) as (port, recorder),
        connect(port) as client,
    ):
        await client.login()
        await client.subscribe(quotes=["AAPL"])
        assert len(await client.data(3)) == 3
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
    assert close_code(closed.value) == 1006
    assert recorder.connections[0].faults == [FaultKind.DROP]


async def test_close_sends_the_close_code(autojump_clock: trio.testing.MockClock) -> None:
    plan = FaultPlan.close_after(2, code=4001)
    async with running_sim(faults=plan) as (port, _), connect(port) as client:
        await client.login()
        await client.subscribe(quotes=["AAPL"])
        await client.data(2)
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
    assert close_code(closed.value) == 4001


async def test_faults_hit_only_their_connection_unless_planned_for_all(
    autojump_clock: trio.testing.MockClock,
) -> None:
    plan = FaultPlan.drop_after(1, connection=2) + FaultPlan.close_after(3, connection=None)
    async with running_sim(faults=plan, rate=None) as (port, recorder):
        for expected_messages, expected_code in ((3, 1011), (1, 1006), (3, 1011)):
            async with connect(port) as client:
                await client.login()
                await client.subscribe(quotes=["AAPL"])
                await client.data(expected_messages)
                with pytest.raises(ConnectionClosed) as closed:
                    await client.recv()
                assert close_code(closed.value) == expected_code
            await recorder.connections[-1].ended.wait()
    assert [r.faults for r in recorder.connections] == [
        [FaultKind.CLOSE],
        [FaultKind.DROP],
        [FaultKind.CLOSE],
    ]


async def test_silent_stops_data_but_answers_pings_and_control_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        running_sim(faults=FaultPlan.silent_after(2)) as (port, _),
        connect(port) as client,
    ):
        await client.login()
        await client.subscribe(quotes=["AAPL"])
        await client.data(2)
        with trio.move_on_after(120) as waited:
            await client.recv()
        assert waited.cancelled_caught
        with trio.fail_after(1):
            await client.ws.ping(b"still there?")
        reply = await client.subscribe(trades=["MSFT"])
        assert reply["trades"] == ["MSFT"]
        with trio.move_on_after(120) as waited:
            await client.recv()
        assert waited.cancelled_caught


async def test_a_silence_with_a_duration_ends(autojump_clock: trio.testing.MockClock) -> None:
    plan = FaultPlan.silent_after(2, duration=30.0)
    async with running_sim(faults=plan, rate=10.0) as (port, _), connect(port) as client:
        await client.login()
        await client.subscribe(quotes=["AAPL"])
        await client.data(2)
        start = trio.current_time()
        await client.data(1)
        assert trio.current_time() - start == pytest.approx(30.0)


@pytest.mark.parametrize(
    ("binary", "payload", "expected"),
    [
        (True, None, b"\x00garbage"),
        (False, None, "\x00garbage"),
        (False, b"\xff\xfe", b"\xff\xfe"),
        (True, "{oops", "{oops"),
    ],
)
async def test_malformed_sends_one_undecodable_frame_then_data_resumes(
    autojump_clock: trio.testing.MockClock,
    binary: bool,
    payload: bytes | str | None,
    expected: bytes | str,
) -> None:
    plan = FaultPlan.malformed_after(1, payload=payload)
    async with running_sim(faults=plan) as (port, _), connect(port, binary=binary) as client:
        await client.login()
        await client.subscribe(quotes=["AAPL"])
        await client.data(1)
        assert await client.ws.get_message() == expected
        assert len(await client.data(2)) == 2


async def test_unknown_message_type_is_sent_once_then_data_resumes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    plan = FaultPlan.unknown_message_after(1)
    async with running_sim(faults=plan) as (port, _), connect(port) as client:
        await client.login()
        await client.subscribe(quotes=["AAPL"])
        await client.data(1)
        (unknown,) = await client.recv()
        assert unknown["T"] not in {"success", "error", "subscription", "t", "q", "b", "o"}
        assert len(await client.data(2)) == 2


@pytest.mark.parametrize(
    ("plan", "code"),
    [
        (FaultPlan.reject_auth(402), 402),
        (FaultPlan.reject_auth(409), 409),
        (FaultPlan.connection_limit(), 406),
    ],
)
async def test_auth_faults_answer_the_auth_with_their_error_once(
    autojump_clock: trio.testing.MockClock, plan: FaultPlan, code: int
) -> None:
    async with running_sim(faults=plan) as (port, recorder), connect(port) as client:
        assert await client.recv() == [{"T": "success", "msg": "connected"}]
        await client.send({"action": "auth", "key": DEFAULT_KEY, "secret": DEFAULT_SECRET})
        assert await client.recv() == [error(code)]
        await client.send({"action": "auth", "key": DEFAULT_KEY, "secret": DEFAULT_SECRET})
        assert await client.recv() == [{"T": "success", "msg": "authenticated"}]
    assert len(recorder.connections[0].faults) == 1


async def test_slow_delays_every_frame_for_its_duration(
    autojump_clock: trio.testing.MockClock,
) -> None:
    plan = FaultPlan.slow_after(1, delay=2.0, duration=7.0)
    async with running_sim(faults=plan, rate=None) as (port, _), connect(port) as client:
        await client.login()
        await client.subscribe(quotes=["AAPL"])
        await client.data(1)
        times = [trio.current_time()]
        for _ in range(6):
            await client.data(1)
            times.append(trio.current_time())
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == pytest.approx([2.0, 2.0, 2.0, 2.0, 0.0, 0.0])


async def test_ignore_pings_leaves_pings_unanswered_while_data_flows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The server stops reading: no pong, and not even a close handshake (the client times
    out closing and drops TCP, which the server notices)."""
    plan = FaultPlan.ignore_pings_after(1)
    async with running_sim(faults=plan, rate=10.0) as (port, recorder):
        with pytest.raises(DisconnectionTimeout):
            async with connect(port) as client:
                await client.login()
                await client.subscribe(quotes=["AAPL"])
                await client.data(2)
                pong = trio.Event()

                async def ping() -> None:
                    await client.ws.ping(b"hello?")
                    pong.set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(ping)
                    assert len(await client.data(100)) == 100  # 10 s of data, no pong
                    assert not pong.is_set()
                    nursery.cancel_scope.cancel()
        with trio.fail_after(10):
            await recorder.connections[0].ended.wait()


async def test_pings_are_answered_again_when_the_pause_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    plan = FaultPlan.ignore_pings_after(1, duration=20.0)
    async with running_sim(faults=plan, rate=10.0) as (port, _), connect(port) as client:
        await client.login()
        await client.subscribe(quotes=["AAPL"])
        await client.data(2)
        start = trio.current_time()
        answered: list[float] = []
        async with trio.open_nursery() as nursery:

            async def ping() -> None:
                await client.ws.ping(b"hello?")
                answered.append(trio.current_time() - start)
                nursery.cancel_scope.cancel()

            nursery.start_soon(ping)
            for _ in range(MAX_FRAMES):  # keep reading, or the client could not see the pong
                await client.data(1)
    assert answered == [pytest.approx(19.9)]
