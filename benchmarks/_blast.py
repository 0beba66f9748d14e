"""Benchmark cases for ``bench_e2e.py``: per provider, a blast server and the client pieces.

This module owns the provider-specific parts of the end-to-end benchmark,
one :class:`Case` per provider, and the provider-neutral machinery the blast
servers share (WebSocket framing, chunking, the send loop). ``bench_e2e.py``
owns the sections, timing and tables, and never knows a wire format.

A *blast server* speaks just enough of a provider's protocol to get a client
streaming (hello, authentication, subscription) and then writes data frames
that were encoded once, up front, as fast as the socket accepts them: the
server must never be what limits a throughput measurement. The frames are
real provider messages built from :class:`~puffin_trio.sim.MarketModel`
ticks, and already carry their transport framing (a WebSocket frame header
here; IB's length prefix for an IB case), so the send loop is one
``send_all`` per ~64 KiB chunk and costs almost no CPU.

Adding a provider (Polygon, IB) is adding one :class:`Case` and registering
it in :data:`CASES`: a provider factory for a port, the data frames, a
connection handler (handshake, then :func:`blast`), a bare client (the
throughput ceiling and latency floor), a simulator launcher, and decode
samples.

It must not time anything or print tables.
"""

from __future__ import annotations

import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack
import orjson
import trio
import trio_websocket

from puffin_trio.providers._base import Frame, Provider, ProviderProtocol
from puffin_trio.providers.alpaca import DEFAULT_MAX_MESSAGE_SIZE, AlpacaProvider, rfc3339_to_ns
from puffin_trio.sim import MarketModel, SimQuote, SimTrade, serve_alpaca
from puffin_trio.sim.alpaca import rfc3339_ns
from puffin_trio.transports.ws import DEFAULT_MESSAGE_QUEUE_SIZE, DEFAULT_RECEIVE_BUFFER_SIZE

__all__ = [
    "CASES",
    "BareClient",
    "Case",
    "DecodeSample",
    "SharedSendStream",
    "blast",
    "open_bare_ws",
    "pack_chunks",
    "ws_frame",
]

#: Blast writes are grouped into chunks of at least this many bytes: one
#: ``send_all`` (one syscall when the socket has room) moves dozens of frames.
CHUNK_BYTES = 64 * 1024
#: Seconds a client has to finish a blast server's handshake.
HANDSHAKE_TIMEOUT = 10.0


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


# --------------------------------------------------------------------------- the case contract


@dataclass(frozen=True)
class DecodeSample:
    """One frame for the decode section: what the codec gets, and the bare-parse baseline."""

    label: str
    frame: Frame
    messages: int
    #: The bare parse of the same frame (``orjson.loads``, ``msgpack.unpackb``).
    baseline: Callable[[Frame], object]
    baseline_label: str


@dataclass(frozen=True)
class Case:
    """Everything ``bench_e2e.py`` needs to benchmark one provider.

    * ``provider(port, variant)``: the provider as a user would build it, pointed
      at ``127.0.0.1:port``; ``variant`` is a wire encoding (``"json"``).
    * ``topics``: the subscription (``sup.add(provider, **topics)``).
    * ``wire(variant, batch, messages)``: ``messages`` data messages in frames
      of ``batch``, each already transport-framed, ready for :func:`pack_chunks`.
    * ``serve(stream, chunks)``: one blast connection: handshake, then
      :func:`blast` the chunks of the variant the client asked for.
    * ``bare(port, variant)``: an async context manager yielding a
      :class:`BareClient` that has done the handshake: the transport tuned as
      the package tunes it, and nothing else (the throughput ceiling and the
      latency floor).
    * ``sim(rate, batch, task_status)``: the package's own simulator on a free
      loopback port, reporting the port (for latency and memory runs).
    * ``decode_samples()``: frames for the decode section.
    """

    name: str
    variants: tuple[str, ...]
    topics: Mapping[str, Sequence[str]]
    provider: Callable[[int, str], Provider]
    wire: Callable[[str, int, int], list[bytes]]
    serve: Callable[[trio.SocketStream, Mapping[str, Sequence[bytes]]], Awaitable[None]]
    bare: Callable[[int, str], AbstractAsyncContextManager[BareClient]]
    sim: Callable[..., Awaitable[Any]]
    decode_samples: Callable[[], list[DecodeSample]]

    def protocol(self, variant: str) -> ProviderProtocol:
        """A fresh codec for ``variant`` (the decode section drives it without I/O)."""
        return self.provider(1, variant).protocol()


class BareClient(Protocol):
    """A connected, subscribed client with no pipeline: frames in, a parse, nothing built."""

    async def receive(self) -> Frame:
        """The next data frame (a checkpoint)."""

    def count(self, frame: Frame) -> int:
        """Parse ``frame``; the number of data messages in it."""

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


# --------------------------------------------------------------------------- Alpaca

ALPACA_KEY = "bench-key"
ALPACA_SECRET = "bench-secret"
#: Ten liquid names: enough distinct symbols that per-symbol state (the
#: session's liveness map, conflation slots) is exercised, few enough that the
#: subscription reply stays small.
ALPACA_SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "AMD", "NFLX", "INTC")
_ALPACA_ROUND_LOT = 100


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
        "bs": int(q.bid_size) // _ALPACA_ROUND_LOT, "ax": q.ask_exchange, "ap": q.ask,
        "as": int(q.ask_size) // _ALPACA_ROUND_LOT, "c": list(q.conditions), "t": stamp,
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


def _alpaca_messages(variant: str, count: int, kind: str = "mixed") -> list[dict[str, Any]]:
    """``count`` Alpaca data messages from a seeded market: trades, quotes or both (1:3).

    Timestamps start now and advance 1 µs per message, as in a busy second.
    """
    model = MarketModel(ALPACA_SYMBOLS, seed=1)
    base = time.time_ns()
    out: list[dict[str, Any]] = []
    for i in range(count):
        ts = base + i * 1000
        stamp = _alpaca_stamp(variant, ts)
        symbol = ALPACA_SYMBOLS[i % len(ALPACA_SYMBOLS)]
        if kind == "trades":
            out.append(_alpaca_trade(model.trade(symbol, ts), stamp))
        elif kind == "quotes":
            out.append(_alpaca_quote(model.quote(symbol, ts), stamp))
        else:
            tick = model.next_tick(ts, trades=ALPACA_SYMBOLS, quotes=ALPACA_SYMBOLS)
            if type(tick) is SimTrade:
                out.append(_alpaca_trade(tick, stamp))
            else:
                assert type(tick) is SimQuote
                out.append(_alpaca_quote(tick, stamp))
    return out


def _alpaca_wire(variant: str, batch: int, messages: int) -> list[bytes]:
    data = _alpaca_messages(variant, messages)
    binary = variant == "msgpack"
    return [
        ws_frame(_alpaca_encode(variant, data[i : i + batch]), binary=binary)
        for i in range(0, len(data) - batch + 1, batch)
    ]


def _alpaca_decode(frame: Frame) -> Any:
    if isinstance(frame, str) or frame[:1] in (b"[", b"{"):
        return orjson.loads(frame)
    return msgpack.unpackb(frame, timestamp=2)


async def _alpaca_serve(stream: trio.SocketStream, chunks: Mapping[str, Sequence[bytes]]) -> None:
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
        await blast(shared, chunks[variant])
        nursery.cancel_scope.cancel()


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
        symbols=ALPACA_SYMBOLS,
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
                baseline: Callable[[Frame], object] = _unpack_ts
                baseline_label = "msgpack.unpackb(timestamp=2)"
            else:
                baseline, baseline_label = orjson.loads, "orjson.loads"
            samples.append(
                DecodeSample(f"alpaca {kind[:-1]}, {variant}", frame, 20, baseline, baseline_label)
            )
    return samples


def _unpack_ts(frame: Frame) -> object:
    return msgpack.unpackb(frame, timestamp=2)


_ALPACA_TOPICS: Mapping[str, Sequence[str]] = {"trades": ALPACA_SYMBOLS, "quotes": ALPACA_SYMBOLS}
_ALPACA_WIRE_TOPICS = {"trades": list(ALPACA_SYMBOLS), "quotes": list(ALPACA_SYMBOLS)}

ALPACA = Case(
    name="alpaca",
    variants=("json", "msgpack"),
    topics=_ALPACA_TOPICS,
    provider=_alpaca_provider,
    wire=_alpaca_wire,
    serve=_alpaca_serve,
    bare=_alpaca_bare,
    sim=_alpaca_sim,
    decode_samples=_alpaca_decode_samples,
)

#: Every benchmarked provider, by name (``--serve NAME`` picks one in the child).
CASES: Mapping[str, Case] = {"alpaca": ALPACA}
