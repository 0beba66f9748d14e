"""Benchmark cases for ``bench_e2e.py``: per provider, a blast server and the client pieces.

This module owns the provider-specific parts of the end-to-end benchmark,
one :class:`Case` per provider (Alpaca, Polygon, IB), and the
provider-neutral machinery the blast servers share (WebSocket framing,
chunking, the send loops). ``bench_e2e.py`` owns the sections, timing and
tables, and never knows a wire format.

A *blast server* speaks just enough of a provider's protocol to get a client
streaming (hello, authentication, subscription) and then writes data that
was encoded once, up front, as fast as the socket accepts it: the server
must never be what limits a throughput measurement. The messages are real
provider messages built from :class:`~puffin_trio.sim.MarketModel` ticks,
and already carry their transport framing (a WebSocket frame header; IB's
length prefix), so the send loop costs almost no CPU:

* WebSocket cases (Alpaca, Polygon) send one ``send_all`` per ~64 KiB chunk
  of whole frames; "B" is messages per WebSocket frame.
* IB sends one ``send(2)`` per group of B length-prefixed messages ("B" is
  messages per TCP write: 1 is TWS writing each message as it comes, 20 a
  burst), straight on the socket without a trio checkpoint per write (see
  :func:`blast_socket`). IB's request ids are only known once the client has
  asked, so its pool is message templates, filled in per connection.

Adding a provider is adding one :class:`Case` and registering it in
:data:`CASES`.

It must not time anything or print tables.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, runtime_checkable

import msgpack
import orjson
import trio
import trio_websocket

from puffin_trio._event_builder import event_builder
from puffin_trio.events import EVENT_TYPES, Gap, Quote, Status, Trade
from puffin_trio.providers._base import Frame, Provider, ProviderProtocol
from puffin_trio.providers.alpaca import DEFAULT_MAX_MESSAGE_SIZE, AlpacaProvider, rfc3339_to_ns
from puffin_trio.providers.ib import IBProvider
from puffin_trio.providers.polygon import PolygonProvider
from puffin_trio.sim import MarketModel, SimQuote, SimTrade, serve_alpaca, serve_polygon
from puffin_trio.sim.alpaca import rfc3339_ns
from puffin_trio.transports.tcp import DEFAULT_RECEIVE_SIZE, FrameDecoder, encode_frame
from puffin_trio.transports.ws import DEFAULT_MESSAGE_QUEUE_SIZE, DEFAULT_RECEIVE_BUFFER_SIZE

__all__ = [
    "CASES",
    "BareClient",
    "Case",
    "DecodeSample",
    "FloorClient",
    "SharedSendStream",
    "StampingClient",
    "blast",
    "blast_socket",
    "data_events",
    "open_bare_ws",
    "pack_chunks",
    "ws_frame",
]

#: Blast writes are grouped into chunks of at least this many bytes: one
#: ``send_all`` (one syscall when the socket has room) moves dozens of frames.
#: :func:`blast_socket` also lets other tasks run once per this many bytes.
CHUNK_BYTES = 64 * 1024
#: Seconds a client has to finish a blast server's handshake.
HANDSHAKE_TIMEOUT = 10.0
#: Ten liquid names, for every provider: enough distinct symbols that
#: per-symbol state (the session's liveness map, conflation slots, IB's L1
#: pairs, Polygon's guard streams) is exercised, few enough that the
#: subscription stays one small request (IB: 20 requests, well inside TWS's
#: 50 messages/s).
SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "AMD", "NFLX", "INTC")
#: Subscribed everywhere: every symbol's trades and quotes.
TOPICS: Mapping[str, Sequence[str]] = {"trades": SYMBOLS, "quotes": SYMBOLS}
#: Market-data event classes (what a consumer counts; Status and Gap are not data).
_DATA_TYPES = frozenset(EVENT_TYPES) - {Status, Gap}


# --------------------------------------------------------------------------- shared machinery


def ws_frame(payload: bytes, *, binary: bool) -> bytes:
    """One complete, unmasked server-to-client WebSocket frame (RFC 6455 section 5.2)."""
    first = 0x80 | (0x2 if binary else 0x1)  # FIN + opcode
    size = len(payload)
    if size < 126:
        header = bytes((first, size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, 126, size)
    else:
        header = struct.pack("!BBQ", first, 127, size)
    return header + payload


def pack_chunks(units: Sequence[bytes], target: int = CHUNK_BYTES) -> list[bytes]:
    """Concatenate transport-framed units into chunks of at least ``target`` bytes.

    Chunks end on unit boundaries, so a control frame (a pong, a close reply)
    sent between two chunks never lands inside a data frame.
    """
    chunks: list[bytes] = []
    pending: list[bytes] = []
    size = 0
    for unit in units:
        pending.append(unit)
        size += len(unit)
        if size >= target:
            chunks.append(b"".join(pending))
            pending, size = [], 0
    if pending:
        chunks.append(b"".join(pending))
    return chunks


class SharedSendStream(trio.abc.Stream):
    """A stream whose ``send_all`` callers take turns (a fair lock around the real one).

    The blast loop writes raw chunks while trio-websocket, on the same
    connection, answers pings and close frames; the lock keeps their writes
    from interleaving (and from raising ``BusyResourceError``).
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._lock = trio.Lock()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        async with self._lock:
            await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()


async def blast(stream: trio.abc.SendStream, chunks: Sequence[bytes]) -> None:
    """Send ``chunks`` round and round until the peer goes away. Never returns otherwise."""
    try:
        while True:
            for chunk in chunks:
                await stream.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return


async def blast_socket(
    stream: trio.SocketStream, units: Sequence[bytes], replies: list[bytes]
) -> None:
    """Send ``units`` round and round, one ``send(2)`` each, until the peer goes away.

    ``trio.SocketStream.send_all`` costs a scheduler pass per call, which for
    one 40-byte message per write would make the server slower than the
    client it measures; this loop calls the socket's own non-blocking
    ``send`` and only waits (``wait_writable``) when the socket buffer is
    full; otherwise it checkpoints once per :data:`CHUNK_BYTES` so other
    tasks run. It is the connection's only writer: another task queues whole
    messages in ``replies``, sent at the next such checkpoint, between two
    units, never inside one. Never returns while the peer is there.
    """
    raw = socket.socket(fileno=os.dup(stream.socket.fileno()))
    raw.setblocking(False)
    send = raw.send
    wait_writable = partial(trio.lowlevel.wait_writable, stream.socket)
    since = 0
    with raw:
        try:
            while True:
                for unit in units:
                    view: bytes | memoryview = unit
                    while True:
                        try:
                            sent = send(view)
                        except BlockingIOError:
                            await wait_writable()
                            continue
                        if sent == len(view):
                            break
                        view = memoryview(view)[sent:]
                    since += len(unit)
                    if since >= CHUNK_BYTES:
                        since = 0
                        while replies:
                            await _send_whole(raw, stream, replies.pop(0))
                        await trio.lowlevel.checkpoint()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            return


async def _send_whole(raw: socket.socket, stream: trio.SocketStream, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[raw.send(view) :]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(stream.socket)


# --------------------------------------------------------------------------- the case contract


@dataclass(frozen=True)
class DecodeSample:
    """One decode-section sample: what the codec gets per call, and the bare-parse baseline."""

    label: str
    #: Data messages per call (one 20-message frame; 20 IB messages).
    messages: int
    #: Decode the sample once: ``decode(ts_recv)`` -> everything the codec returned.
    decode: Callable[[int], list[Any]]
    #: The codec ``decode`` drives, ready (IB: handshake done, requests open).
    protocol: ProviderProtocol
    #: The bare parse of the same bytes (``orjson.loads``, a NUL split, ...).
    baseline: Callable[[], object]
    baseline_label: str
    #: The bare parse plus one event built per message, unchecked (see FloorClient).
    floor: Callable[[], object] | None = None


@dataclass(frozen=True)
class Case:
    """Everything ``bench_e2e.py`` needs to benchmark one provider.

    * ``provider(port, variant)``: the provider as a user would build it, pointed
      at ``127.0.0.1:port``; ``variant`` is a wire encoding (``"json"``).
    * ``topics``: the subscription (``sup.add(provider, **topics)``).
    * ``wire(variant, batch, messages)``: the blast server's pool for one
      variant, ``messages`` data messages with ``batch`` per frame (IB: per
      write), built once in the server process; only ``serve`` reads it.
    * ``cycles``: whether the pool may be sent round and round. Polygon's
      ``q`` must keep increasing on a connection (the sequence guard drops
      every message of a second lap as late), so its pool holds a whole run.
    * ``serve(stream, pools)``: one blast connection: handshake, then blast
      ``pools[variant]`` of the variant the client asked for.
    * ``bare(port, variant)``: an async context manager yielding a
      :class:`BareClient` that has done the handshake: the transport tuned as
      the package tunes it and a bare parse, nothing else (the throughput
      ceiling, and with ``sim``, the latency floor).
    * ``ceiling``: how the bare client works, for the table notes.
    * ``sim(rate, batch, task_status)``: the package's own simulator on a free
      loopback port, reporting the port (latency and memory runs); ``None``
      leaves the case out of those sections, for the reason in ``no_sim``.
    * ``stamp_resolution_ns``: the resolution of the wire's event time
      (``ts_event`` is truncated to it, which latency figures include).
    * ``decode_samples()``: samples for the decode section.
    """

    name: str
    variants: tuple[str, ...]
    topics: Mapping[str, Sequence[str]]
    provider: Callable[[int, str], Provider]
    wire: Callable[[str, int, int], Any]
    serve: Callable[[trio.SocketStream, Mapping[str, Any]], Awaitable[None]]
    bare: Callable[[int, str], AbstractAsyncContextManager[BareClient]]
    ceiling: str
    decode_samples: Callable[[], list[DecodeSample]]
    sim: Callable[..., Awaitable[Any]] | None = None
    no_sim: str = ""
    cycles: bool = True
    stamp_resolution_ns: int = 1
    #: Whether the bare client is a :class:`FloorClient` (the throughput floor column).
    floor: bool = False


class BareClient(Protocol):
    """A connected, subscribed client with no pipeline: data in, a bare parse, nothing built."""

    async def receive(self) -> Frame:
        """The next frame (IB: the next socket read). A checkpoint."""

    def count(self, frame: Frame) -> int:
        """Parse ``frame``; the number of data messages in it."""


@runtime_checkable
class FloorClient(BareClient, Protocol):
    """A bare client that can also build the events (the throughput floor)."""

    def build(self, frame: Frame) -> int:
        """Parse ``frame`` and build one event per data message, with no checks; the count."""


#: The events a floor client builds: every field positional, the way the decoders
#: build them (event_builder), values taken from the message as they are.
_FLOOR_TRADE = event_builder(
    Trade, "provider", "symbol", "ts_event", "ts_recv", "price", "size", "conditions"
)
_FLOOR_QUOTE = event_builder(
    Quote, "provider", "symbol", "ts_event", "ts_recv", "bid", "ask", "bid_size", "ask_size"
)


@runtime_checkable
class StampingClient(BareClient, Protocol):
    """A bare client that can also read each message's event time (latency floor)."""

    def stamps(self, frame: Frame) -> list[int]:
        """Parse ``frame``; the event time (ns since the epoch) of each data message."""


@asynccontextmanager
async def open_bare_ws(
    url: str,
    *,
    headers: Sequence[tuple[str, str]],
    handshake: Callable[[trio_websocket.WebSocketConnection], Awaitable[None]],
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """trio-websocket tuned like :mod:`puffin_trio.transports.ws`, after ``handshake``."""
    async with trio_websocket.open_websocket_url(
        url,
        extra_headers=[(k.encode(), v.encode()) for k, v in headers],
        message_queue_size=DEFAULT_MESSAGE_QUEUE_SIZE,
        receive_buffer_size=DEFAULT_RECEIVE_BUFFER_SIZE,
        max_message_size=DEFAULT_MAX_MESSAGE_SIZE,
    ) as ws:
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            await handshake(ws)
        yield ws


def data_events(items: Sequence[object]) -> list[object]:
    """The market-data events among a codec's output (control items left out)."""
    return [item for item in items if type(item) in _DATA_TYPES]


_WS_CEILING = (
    "trio-websocket (receive_buffer_size 64 KiB, message_queue_size 256) + {parse} per frame, "
    "counting messages"
)


# --------------------------------------------------------------------------- Alpaca

ALPACA_KEY = "bench-key"
ALPACA_SECRET = "bench-secret"
#: Alpaca and Polygon send stock quote sizes in round lots of 100 shares.
_ROUND_LOT = 100


def _alpaca_provider(port: int, variant: str) -> AlpacaProvider:
    return AlpacaProvider(
        feed="iex",
        key=ALPACA_KEY,
        secret=ALPACA_SECRET,
        url=f"ws://127.0.0.1:{port}/v2/iex",
        encoding="msgpack" if variant == "msgpack" else "json",
    )


def _alpaca_trade(t: SimTrade, stamp: object) -> dict[str, Any]:
    return {
        "T": "t", "S": t.symbol, "i": t.trade_id, "x": t.exchange, "p": t.price, "s": t.size,
        "c": list(t.conditions), "t": stamp, "z": t.tape,
    }  # fmt: skip


def _alpaca_quote(q: SimQuote, stamp: object) -> dict[str, Any]:
    return {
        "T": "q", "S": q.symbol, "bx": q.bid_exchange, "bp": q.bid,
        "bs": int(q.bid_size) // _ROUND_LOT, "ax": q.ask_exchange, "ap": q.ask,
        "as": int(q.ask_size) // _ROUND_LOT, "c": list(q.conditions), "t": stamp,
        "z": q.tape,
    }  # fmt: skip


def _alpaca_stamp(variant: str, ts_ns: int) -> object:
    if variant == "msgpack":
        return msgpack.Timestamp.from_unix_nano(ts_ns)
    return rfc3339_ns(ts_ns)


def _alpaca_encode(variant: str, value: object) -> bytes:
    if variant == "msgpack":
        packed: bytes = msgpack.packb(value)
        return packed
    return orjson.dumps(value)


def _tick_stream(kind: str, seed: int) -> Iterator[tuple[int, SimTrade | SimQuote]]:
    """(ts_ns, tick) from a seeded market, without end: trades, quotes or both (1:3).

    Timestamps start now and advance 1 µs per tick, as in a busy second.
    """
    model = MarketModel(SYMBOLS, seed=seed)
    base = time.time_ns()
    for i in itertools.count():
        ts = base + i * 1000
        symbol = SYMBOLS[i % len(SYMBOLS)]
        if kind == "trades":
            yield ts, model.trade(symbol, ts)
        elif kind == "quotes":
            yield ts, model.quote(symbol, ts)
        else:
            tick = model.next_tick(ts, trades=SYMBOLS, quotes=SYMBOLS)
            assert type(tick) is SimTrade or type(tick) is SimQuote
            yield ts, tick


def _ticks(count: int, kind: str, seed: int) -> list[tuple[int, SimTrade | SimQuote]]:
    """The first ``count`` ticks of :func:`_tick_stream`."""
    return list(itertools.islice(_tick_stream(kind, seed), count))


def _alpaca_messages(variant: str, count: int, kind: str = "mixed") -> list[dict[str, Any]]:
    """``count`` Alpaca data messages (see :func:`_ticks`)."""
    return [
        _alpaca_trade(tick, _alpaca_stamp(variant, ts))
        if type(tick) is SimTrade
        else _alpaca_quote(tick, _alpaca_stamp(variant, ts))  # type: ignore[arg-type]
        for ts, tick in _ticks(count, kind, seed=1)
    ]


def _alpaca_wire(variant: str, batch: int, messages: int) -> list[bytes]:
    data = _alpaca_messages(variant, messages)
    binary = variant == "msgpack"
    return pack_chunks(
        [
            ws_frame(_alpaca_encode(variant, data[i : i + batch]), binary=binary)
            for i in range(0, len(data) - batch + 1, batch)
        ]
    )


def _alpaca_decode(frame: Frame) -> Any:
    if isinstance(frame, str) or frame[:1] in (b"[", b"{"):
        return orjson.loads(frame)
    return msgpack.unpackb(frame, timestamp=2)


async def _alpaca_serve(stream: trio.SocketStream, pools: Mapping[str, Any]) -> None:
    """One Alpaca blast connection: connected -> auth -> subscribe -> blast."""
    shared = SharedSendStream(stream)
    async with trio.open_nursery() as nursery:  # trio-websocket's reader task
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            request = await trio_websocket.wrap_server_stream(
                nursery, shared, max_message_size=1 << 20
            )
            headers = {k.decode().lower(): v.decode() for k, v in request.headers}
            binary = headers.get("content-type", "").startswith("application/msgpack")
            variant = "msgpack" if binary else "json"
            ws = await request.accept()

            async def reply(message: dict[str, Any]) -> None:
                payload = _alpaca_encode(variant, [message])
                await ws.send_message(payload if binary else payload.decode())

            await reply({"T": "success", "msg": "connected"})
            auth = _alpaca_decode(await ws.get_message())
            if auth.get("action") != "auth":
                raise RuntimeError(f"blast server: expected auth, got {auth!r}")
            await reply({"T": "success", "msg": "authenticated"})
            sub = _alpaca_decode(await ws.get_message())
            if sub.get("action") != "subscribe":
                raise RuntimeError(f"blast server: expected subscribe, got {sub!r}")
            await reply(
                {
                    "T": "subscription",
                    "trades": sub.get("trades", []),
                    "quotes": sub.get("quotes", []),
                    "bars": [],
                }
            )
        await blast(shared, pools[variant])
        nursery.cancel_scope.cancel()


def _alpaca_floor(messages: list[dict[str, Any]], binary: bool) -> list[Trade | Quote]:
    """One event per parsed Alpaca trade/quote message, built unchecked (the floor)."""
    ts: Callable[[Any], int] = _same if binary else rfc3339_to_ns
    return [
        _FLOOR_TRADE("alpaca", m["S"], ts(m["t"]), 0, m["p"], m["s"], m.get("c"))
        if m["T"] == "t"
        else _FLOOR_QUOTE("alpaca", m["S"], ts(m["t"]), 0, m["bp"], m["ap"], m["bs"], m["as"])
        for m in messages
    ]


def _same(value: int) -> int:
    return value


class _AlpacaBare:
    """The bare Alpaca client: orjson.loads / msgpack.unpackb(timestamp=2) of each frame."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, variant: str) -> None:
        self.receive = ws.get_message
        self._binary = variant == "msgpack"

    def _parse(self, frame: Frame) -> list[dict[str, Any]]:
        if self._binary:
            parsed: list[dict[str, Any]] = msgpack.unpackb(frame, timestamp=2)
            return parsed
        return orjson.loads(frame)  # type: ignore[no-any-return]

    def count(self, frame: Frame) -> int:
        return len(self._parse(frame))

    def build(self, frame: Frame) -> int:
        return len(_alpaca_floor(self._parse(frame), self._binary))

    def stamps(self, frame: Frame) -> list[int]:
        if self._binary:
            return [m["t"] for m in self._parse(frame)]
        return [rfc3339_to_ns(m["t"]) for m in self._parse(frame)]


@asynccontextmanager
async def _alpaca_bare(port: int, variant: str) -> AsyncIterator[BareClient]:
    binary = variant == "msgpack"

    def send(message: dict[str, Any]) -> Frame:
        payload = _alpaca_encode(variant, message)
        return payload if binary else payload.decode()

    async def handshake(ws: trio_websocket.WebSocketConnection) -> None:
        await ws.get_message()  # connected
        await ws.send_message(send({"action": "auth", "key": ALPACA_KEY, "secret": ALPACA_SECRET}))
        await ws.get_message()  # authenticated
        await ws.send_message(send({"action": "subscribe", **_ALPACA_WIRE_TOPICS}))
        await ws.get_message()  # subscription

    async with open_bare_ws(
        f"ws://127.0.0.1:{port}/v2/iex",
        headers=[("Content-Type", f"application/{variant}")],
        handshake=handshake,
    ) as ws:
        yield _AlpacaBare(ws, variant)


async def _alpaca_sim(
    rate: float, batch: int, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    await serve_alpaca(
        symbols=SYMBOLS,
        rate=rate,
        batch=batch,
        key=ALPACA_KEY,
        secret=ALPACA_SECRET,
        # A "block" consumer may get its session reconnected (heartbeat timeout);
        # a spare slot keeps the 406 cool-down out of a memory measurement.
        max_connections_per_key=4,
        task_status=task_status,
    )


def _alpaca_decode_samples() -> list[DecodeSample]:
    samples = []
    for kind in ("trades", "quotes"):
        for variant in ("json", "msgpack"):
            payload = _alpaca_encode(variant, _alpaca_messages(variant, 20, kind))
            frame: Frame = payload if variant == "msgpack" else payload.decode()
            if variant == "msgpack":
                baseline: Callable[[], object] = partial(msgpack.unpackb, frame, timestamp=2)
                baseline_label = "msgpack.unpackb(timestamp=2)"
            else:
                baseline, baseline_label = partial(orjson.loads, frame), "orjson.loads"

            def floor(
                parse: Callable[[], Any] = baseline, binary: bool = variant == "msgpack"
            ) -> object:
                return _alpaca_floor(parse(), binary)

            protocol = _alpaca_provider(1, variant).protocol()
            samples.append(
                DecodeSample(
                    f"alpaca {kind[:-1]}, {variant}",
                    20,
                    partial(protocol.receive, frame),
                    protocol,
                    baseline,
                    baseline_label,
                    floor,
                )
            )
    return samples


_ALPACA_WIRE_TOPICS = {"trades": list(SYMBOLS), "quotes": list(SYMBOLS)}

ALPACA = Case(
    name="alpaca",
    variants=("json", "msgpack"),
    topics=TOPICS,
    provider=_alpaca_provider,
    wire=_alpaca_wire,
    serve=_alpaca_serve,
    bare=_alpaca_bare,
    ceiling=_WS_CEILING.format(parse="orjson.loads / msgpack.unpackb(timestamp=2)"),
    decode_samples=_alpaca_decode_samples,
    sim=_alpaca_sim,
    floor=True,
)


# --------------------------------------------------------------------------- Polygon

POLYGON_KEY = "bench-key"
#: Polygon's exchange ids for the model's exchange letters (IEX 15, Nasdaq 12,
#: NYSE 10, NYSE Arca 11, Cboe EDGX 8, Cboe BZX 19), its tape numbers, and the
#: condition codes of an odd lot (37) and a regular quote (1).
_POLYGON_EXCHANGES = {"V": 15, "Q": 12, "N": 10, "P": 11, "K": 8, "Z": 19}
_POLYGON_TAPES = {"A": 1, "B": 2, "C": 3}
_POLYGON_ODD_LOT = 37
_POLYGON_REGULAR_QUOTE = 1
_POLYGON_WIRE_TOPICS = ",".join(f"{ev}.{s}" for ev in ("T", "Q") for s in SYMBOLS)


def _polygon_provider(port: int, variant: str) -> PolygonProvider:
    return PolygonProvider(key=POLYGON_KEY, url=f"ws://127.0.0.1:{port}/stocks")


def _polygon_messages(count: int, kind: str = "mixed") -> list[dict[str, Any]]:
    """``count`` Polygon stocks ``T``/``Q`` messages (see :func:`_ticks`), as the real
    feed spells them: millisecond ``t``, and a ``q`` counting up per event type and symbol."""
    seqs: dict[tuple[str, str], int] = {}
    out: list[dict[str, Any]] = []
    for ts, tick in _ticks(count, kind, seed=2):
        ms = ts // 1_000_000
        if type(tick) is SimTrade:
            q = seqs[("T", tick.symbol)] = seqs.get(("T", tick.symbol), 0) + 1
            message: dict[str, Any] = {
                "ev": "T", "sym": tick.symbol, "i": str(tick.trade_id),
                "x": _POLYGON_EXCHANGES[tick.exchange], "p": tick.price, "s": int(tick.size),
                "t": ms, "q": q, "z": _POLYGON_TAPES[tick.tape],
            }  # fmt: skip
            if "I" in tick.conditions:
                message["c"] = [_POLYGON_ODD_LOT]
        else:
            assert type(tick) is SimQuote
            q = seqs[("Q", tick.symbol)] = seqs.get(("Q", tick.symbol), 0) + 1
            message = {
                "ev": "Q", "sym": tick.symbol, "bx": _POLYGON_EXCHANGES[tick.bid_exchange],
                "bp": tick.bid, "bs": int(tick.bid_size) // _ROUND_LOT,
                "ax": _POLYGON_EXCHANGES[tick.ask_exchange], "ap": tick.ask,
                "as": int(tick.ask_size) // _ROUND_LOT, "c": _POLYGON_REGULAR_QUOTE,
                "t": ms, "q": q, "z": _POLYGON_TAPES[tick.tape],
            }  # fmt: skip
        out.append(message)
    return out


def _polygon_wire(variant: str, batch: int, messages: int) -> list[bytes]:
    data = _polygon_messages(messages)
    return pack_chunks(
        [
            ws_frame(orjson.dumps(data[i : i + batch]), binary=False)
            for i in range(0, len(data) - batch + 1, batch)
        ]
    )


def _polygon_status(status: str, message: str) -> str:
    return orjson.dumps([{"ev": "status", "status": status, "message": message}]).decode()


async def _polygon_serve(stream: trio.SocketStream, pools: Mapping[str, Any]) -> None:
    """One Polygon blast connection: connected -> auth -> subscribe (a status per topic)."""
    shared = SharedSendStream(stream)
    async with trio.open_nursery() as nursery:  # trio-websocket's reader task
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            request = await trio_websocket.wrap_server_stream(
                nursery, shared, max_message_size=1 << 20
            )
            ws = await request.accept()
            await ws.send_message(_polygon_status("connected", "Connected Successfully"))
            auth = orjson.loads(await ws.get_message())
            if auth.get("action") != "auth":
                raise RuntimeError(f"blast server: expected auth, got {auth!r}")
            await ws.send_message(_polygon_status("auth_success", "authenticated"))
            sub = orjson.loads(await ws.get_message())
            if sub.get("action") != "subscribe":
                raise RuntimeError(f"blast server: expected subscribe, got {sub!r}")
            for topic in sub["params"].split(","):
                await ws.send_message(_polygon_status("success", f"subscribed to: {topic}"))
        await blast(shared, pools["json"])
        nursery.cancel_scope.cancel()


class _PolygonBare:
    """The bare Polygon client: orjson.loads of each frame."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.receive = ws.get_message

    def count(self, frame: Frame) -> int:
        return len(orjson.loads(frame))

    def build(self, frame: Frame) -> int:
        events = [
            _FLOOR_TRADE("polygon", m["sym"], m["t"] * 1_000_000, 0, m["p"], m["s"], m.get("c"))
            if m["ev"] == "T"
            else _FLOOR_QUOTE(
                "polygon", m["sym"], m["t"] * 1_000_000, 0, m["bp"], m["ap"], m["bs"], m["as"]
            )
            for m in orjson.loads(frame)
        ]
        return len(events)

    def stamps(self, frame: Frame) -> list[int]:
        return [m["t"] * 1_000_000 for m in orjson.loads(frame)]


@asynccontextmanager
async def _polygon_bare(port: int, variant: str) -> AsyncIterator[BareClient]:
    topics = _POLYGON_WIRE_TOPICS.split(",")

    async def handshake(ws: trio_websocket.WebSocketConnection) -> None:
        await ws.get_message()  # connected
        await ws.send_message(orjson.dumps({"action": "auth", "params": POLYGON_KEY}).decode())
        await ws.get_message()  # auth_success
        subscribe = {"action": "subscribe", "params": _POLYGON_WIRE_TOPICS}
        await ws.send_message(orjson.dumps(subscribe).decode())
        for _ in topics:  # one "subscribed to" status per topic
            await ws.get_message()

    async with open_bare_ws(f"ws://127.0.0.1:{port}/stocks", headers=[], handshake=handshake) as ws:
        yield _PolygonBare(ws)


async def _polygon_sim(
    rate: float, batch: int, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    await serve_polygon(
        symbols=SYMBOLS,
        rate=rate,
        batch=batch,
        key=POLYGON_KEY,
        # As for Alpaca: a reconnect must not evict a connection still closing.
        max_connections_per_key=4,
        task_status=task_status,
    )


def _polygon_decode_samples() -> list[DecodeSample]:
    samples = []
    for kind in ("trades", "quotes"):
        frame = orjson.dumps(_polygon_messages(20, kind)).decode()
        protocol = _polygon_provider(1, "json").protocol()
        samples.append(
            DecodeSample(
                f"polygon {kind[:-1]}, json",
                20,
                partial(protocol.receive, frame),
                protocol,
                partial(orjson.loads, frame),
                "orjson.loads",
            )
        )
    return samples


POLYGON = Case(
    name="polygon",
    variants=("json",),
    topics=TOPICS,
    provider=_polygon_provider,
    wire=_polygon_wire,
    serve=_polygon_serve,
    bare=_polygon_bare,
    ceiling=_WS_CEILING.format(parse="orjson.loads"),
    decode_samples=_polygon_decode_samples,
    sim=_polygon_sim,
    cycles=False,
    stamp_resolution_ns=1_000_000,
    floor=True,
)


# --------------------------------------------------------------------------- IB

#: Our key for an IB request: (channel, symbol).
_IBKey = tuple[str, str]
#: A data message whose request id is filled in per connection: payload = head + id + tail.
_IBTemplate = tuple[_IBKey, bytes, bytes]

IB_ACCOUNT = "DU1234567"
#: The server version the blast server answers (the simulator's, inside our 157..178).
IB_SERVER_VERSION = "176"
#: Exchange names TWS prints on a trade, for the model's exchange letters.
_IB_VENUES = {"V": "IEX", "Q": "NASDAQ", "N": "NYSE", "P": "ARCA", "K": "EDGX", "Z": "BATS"}


def _ib_provider(port: int, variant: str) -> IBProvider:
    return IBProvider("127.0.0.1", port)


def _tws(*fields: str) -> bytes:
    """One length-prefixed TWS message, every field NUL-terminated."""
    return encode_frame(("\0".join(fields) + "\0").encode())


def _tws_tail(*fields: str) -> bytes:
    """The part of a message after its request id (the NUL ending the id included)."""
    return ("\0" + "\0".join(fields) + "\0").encode()


def _ib_when() -> str:
    return time.strftime("%Y%m%d %H:%M:%S", time.gmtime()) + " UTC"


def _ib_number(value: float) -> str:
    """A number as TWS prints it: integers without a fraction."""
    return str(int(value)) if value == int(value) else repr(value)


def _ib_contract(symbol: str) -> list[str]:
    """A SMART-routed US stock's 12 contract fields, as IBProvider sends them."""
    return ["0", symbol, "STK", "", "0.0", "", "", "SMART", "", "USD", "", ""]


def _ib_request(fields: list[bytes]) -> tuple[_IBKey, bytes] | None:
    """A data request's (channel, symbol) and request id, from its fields; else None.

    reqMktData (1) is quotes; reqTickByTickData (97) is trades for ``AllLast``
    and ``Last`` ticks, quotes for ``BidAsk``; reqMktDepth (10) is books.
    """
    kind = fields[0]
    if kind == b"1":
        return ("quotes", fields[4].decode()), fields[2]
    if kind == b"97":
        channel = "trades" if fields[14] in (b"AllLast", b"Last") else "quotes"
        return (channel, fields[3].decode()), fields[1]
    if kind == b"10":
        return ("books", fields[4].decode()), fields[2]
    return None


def _ib_templates(count: int, kind: str = "mixed") -> list[_IBTemplate]:
    """``count`` data messages from model ticks: a trade is one tick-by-tick ``AllLast``
    (99); a quote is a tickPrice (1) for each side whose price moved, or a tickSize (2)
    for a side whose size alone did (none if neither did), as TWS sends L1."""
    last: dict[tuple[str, str], tuple[float, float]] = {}
    out: list[_IBTemplate] = []
    for ts, tick in _tick_stream(kind, seed=3):
        if len(out) >= count:
            break
        seconds = str(ts // 1_000_000_000)
        if type(tick) is SimTrade:
            conditions = " ".join(c for c in tick.conditions if c != "@")
            tail = _tws_tail(
                "2", seconds, repr(tick.price), _ib_number(tick.size), "0",
                _IB_VENUES[tick.exchange], conditions,
            )  # fmt: skip
            out.append((("trades", tick.symbol), b"99\0", tail))
            continue
        assert type(tick) is SimQuote
        for price_type, size_type, price, size in (
            ("1", "0", tick.bid, tick.bid_size),
            ("2", "3", tick.ask, tick.ask_size),
        ):
            before = last.get((tick.symbol, price_type))
            key = ("quotes", tick.symbol)
            if before is None or before[0] != price:
                tail = _tws_tail(price_type, repr(price), _ib_number(size), "1")
                out.append((key, b"1\x006\x00", tail))
            elif before[1] != size:
                out.append((key, b"2\x006\x00", _tws_tail(size_type, _ib_number(size))))
            last[(tick.symbol, price_type)] = (price, size)
    return out[:count]


def _ib_ready_protocol() -> tuple[ProviderProtocol, dict[_IBKey, bytes]]:
    """IBProvider's codec after the handshake and the subscription, and its request ids."""
    protocol = _ib_provider(1, "tws").protocol()
    protocol.receive(f"{IB_SERVER_VERSION}\0{_ib_when()}\0".encode(), 0)
    protocol.receive(b"9\x001\x001\x00", 0)  # nextValidId: the API session is up
    protocol.data_to_send()
    protocol.subscribe(TOPICS)
    ids: dict[_IBKey, bytes] = {}
    for frame in protocol.data_to_send():
        assert isinstance(frame, bytes)
        request = _ib_request(frame[4:].split(b"\0"))
        if request is not None:
            ids[request[0]] = request[1]
    return protocol, ids


def _ib_effective(templates: list[_IBTemplate]) -> list[_IBTemplate]:
    """``templates`` without the messages that give no event when the list is repeated.

    Sent round and round, a tickPrice/tickSize equal to the side's value from
    the lap before gives no Quote (IBProtocol combines L1 and emits on a
    change), nor does any quote message of a symbol whose other side never
    comes, so the pipeline would count fewer events than the ceiling counts
    messages. Those are dropped until, on a fresh connection's codec, every
    message of the second lap gives exactly one event (empty if none can).
    """
    while templates:
        protocol, ids = _ib_ready_protocol()
        receive = protocol.receive
        payloads = [head + ids[key] + tail for key, head, tail in templates]
        for payload in payloads:  # the first lap, as a connection sees it
            receive(payload, 0)
        counts = [len(data_events(receive(payload, 0))) for payload in payloads]
        if max(counts) > 1:
            raise RuntimeError("IB pool: a message gave more than one event")
        if min(counts) == 1:
            break
        templates = [t for t, n in zip(templates, counts, strict=True) if n]
    return templates


@dataclass
class _IBPool:
    """An IB blast pool: templates, encoded per set of request ids into writes of ``batch``."""

    batch: int
    templates: list[_IBTemplate]
    _units: dict[tuple[tuple[_IBKey, bytes], ...], list[bytes]] = field(default_factory=dict)

    @property
    def keys(self) -> set[_IBKey]:
        """The requests the pool's messages answer."""
        return {key for key, _, _ in self.templates}

    def units(self, ids: Mapping[_IBKey, bytes]) -> list[bytes]:
        """The writes, with the client's request ids (made once per set of ids)."""
        cache = tuple(sorted((key, ids[key]) for key in self.keys))
        units = self._units.get(cache)
        if units is None:
            frames = [encode_frame(head + ids[key] + tail) for key, head, tail in self.templates]
            batch = self.batch
            units = self._units[cache] = [
                b"".join(frames[i : i + batch]) for i in range(0, len(frames) - batch + 1, batch)
            ]
        return units


def _ib_wire(variant: str, batch: int, messages: int) -> _IBPool:
    return _IBPool(batch, _ib_effective(_ib_templates(messages)))


class _TwsReader:
    """What a TWS client sends: the unframed ``API\\0``, then length-prefixed messages."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._decoder = FrameDecoder()
        self._ready: deque[bytes] = deque()

    async def prologue(self) -> bytes:
        """The first four bytes (``API\\0`` from a TWS client)."""
        head = b""
        while len(head) < 4:
            data = await self._stream.receive_some()
            if not data:
                break
            head += data
        self._ready.extend(self._decoder.feed(head[4:]))
        return head[:4]

    async def fields(self) -> list[bytes] | None:
        """The next message's fields (the empty one after the last NUL included), or
        None once the client has gone (closed, or reset the connection)."""
        while not self._ready:
            try:
                data = await self._stream.receive_some()
            except trio.BrokenResourceError:
                return None
            if not data:
                return None
            self._ready.extend(self._decoder.feed(data))
        return self._ready.popleft().split(b"\0")


async def _ib_serve(stream: trio.SocketStream, pools: Mapping[str, Any]) -> None:
    """One IB blast connection: API\\0 + versions -> server version; startApi ->
    managedAccounts + nextValidId; reqCurrentTime answered throughout; once every
    request the pool needs has arrived, its messages with the client's request ids."""
    pool: _IBPool = pools["tws"]
    reader = _TwsReader(stream)
    ids: dict[_IBKey, bytes] = {}
    with trio.fail_after(HANDSHAKE_TIMEOUT):
        if await reader.prologue() != b"API\0" or await reader.fields() is None:
            raise RuntimeError("blast server: expected API\\0 and a version range")
        await stream.send_all(_tws(IB_SERVER_VERSION, _ib_when()))
        while not pool.keys <= ids.keys():
            fields = await reader.fields()
            if fields is None:
                return
            if fields[0] == b"71":  # startApi
                await stream.send_all(_tws("15", "1", IB_ACCOUNT) + _tws("9", "1", "1"))
            elif fields[0] == b"49":  # reqCurrentTime
                await stream.send_all(_tws("49", "1", str(time.time_ns() // 1_000_000_000)))
            else:
                request = _ib_request(fields)
                if request is not None:
                    ids[request[0]] = request[1]
    replies: list[bytes] = []

    async def answer() -> None:
        while (fields := await reader.fields()) is not None:
            if fields[0] == b"49":
                replies.append(_tws("49", "1", str(time.time_ns() // 1_000_000_000)))
        nursery.cancel_scope.cancel()  # the client has gone

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer)
        await blast_socket(stream, pool.units(ids), replies)
        nursery.cancel_scope.cancel()


class _IBBare:
    """The bare IB client: 64 KiB reads, FrameDecoder, a NUL split per message."""

    def __init__(self, stream: trio.SocketStream, decoder: FrameDecoder) -> None:
        self._receive_some = stream.receive_some
        self._feed = decoder.feed

    async def receive(self) -> bytes:
        data = await self._receive_some(DEFAULT_RECEIVE_SIZE)
        if not data:
            raise ConnectionError("the blast server closed the connection")
        return bytes(data)

    def count(self, frame: Frame) -> int:
        payloads = self._feed(frame)  # type: ignore[arg-type]
        for payload in payloads:
            payload.split(b"\0")
        return len(payloads)


@asynccontextmanager
async def _ib_bare(port: int, variant: str) -> AsyncIterator[BareClient]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        decoder = FrameDecoder()
        ready: deque[bytes] = deque()

        async def message_id() -> bytes:
            while not ready:
                data = await stream.receive_some(DEFAULT_RECEIVE_SIZE)
                if not data:
                    raise ConnectionError("the blast server closed the connection")
                ready.extend(decoder.feed(data))
            return ready.popleft().split(b"\0", 1)[0]

        with trio.fail_after(HANDSHAKE_TIMEOUT):
            await stream.send_all(b"API\0" + encode_frame(b"v157..178"))
            await message_id()  # server version, connection time
            await stream.send_all(_tws("71", "2", "1", ""))  # startApi, client id 1
            while await message_id() != b"9":  # nextValidId
                pass
            requests = []
            for i, symbol in enumerate(SYMBOLS):
                contract = _ib_contract(symbol)
                requests.append(_tws("1", "11", str(2 * i + 1), *contract, "0", "", "0", "0", ""))
                requests.append(_tws("97", str(2 * i + 2), *contract, "AllLast", "0", "0"))
            await stream.send_all(b"".join(requests))
        yield _IBBare(stream, decoder)


def _ib_decode_samples() -> list[DecodeSample]:
    trades = _ib_effective(_ib_templates(20, "trades"))
    # The shortest run of quote messages that repeats with one event per message keeps
    # 20 of them (or, if no prefix keeps exactly 20, the first that keeps more).
    candidates = _ib_templates(100, "quotes")
    laps = [_ib_effective(candidates[:k]) for k in range(20, len(candidates) + 1)]
    quotes = next((kept for kept in laps if len(kept) == 20), None) or next(
        kept for kept in laps if len(kept) > 20
    )
    samples = []
    for label, templates in (
        ("ib trade (99 AllLast), tws", trades),
        ("ib quote (1/2 L1), tws", quotes),
    ):
        protocol, ids = _ib_ready_protocol()
        payloads = [head + ids[key] + tail for key, head, tail in templates]
        decode = partial(_ib_decode, protocol.receive, payloads)
        decode(0)  # both sides of every symbol seen: from now on, one event per message
        samples.append(
            DecodeSample(
                label, len(payloads), decode, protocol, partial(_nul_split, payloads),
                "bytes.split(b'\\0')",
            )
        )  # fmt: skip
    return samples


def _ib_decode(
    receive: Callable[[Frame, int], list[Any]], payloads: list[bytes], ts_recv: int
) -> list[Any]:
    out: list[Any] = []
    for payload in payloads:
        out += receive(payload, ts_recv)
    return out


def _nul_split(payloads: list[bytes]) -> list[list[bytes]]:
    return [payload.split(b"\0") for payload in payloads]


IB = Case(
    name="ib",
    variants=("tws",),
    topics=TOPICS,
    provider=_ib_provider,
    wire=_ib_wire,
    serve=_ib_serve,
    bare=_ib_bare,
    ceiling=(
        "a trio TCP stream (receive_some 64 KiB) + puffin_trio.transports.tcp.FrameDecoder + "
        "bytes.split(b'\\0') per message, counting messages"
    ),
    decode_samples=_ib_decode_samples,
    no_sim=(
        "IB's event times are whole seconds (tick-by-tick) or absent (reqMktData quotes take "
        "ts_recv), so there is no feed latency to measure; and serve_ib sends one market step "
        "per timer wake-up, too slow for the 5,000 msg/s memory run"
    ),
)

#: Every benchmarked provider, by name (``--serve NAME`` picks one in the child).
CASES: Mapping[str, Case] = {"alpaca": ALPACA, "polygon": POLYGON, "ib": IB}
