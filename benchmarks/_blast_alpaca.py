"""The Alpaca benchmark case: a blast server, the bare client and the decode samples.

This module owns :data:`ALPACA`, the :class:`~_blast.Case` of the stock stream
(``/v2/iex``) in JSON and msgpack. Its data messages are built by the
simulator's own builders (:func:`puffin_trio.sim.alpaca.stock_trade` and
friends). It must not time anything or print tables.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

import msgpack
import orjson
import trio
import trio_websocket
from _blast import (
    FLOOR_QUOTE,
    FLOOR_TRADE,
    SYMBOLS,
    WS_CEILING,
    BareClient,
    Case,
    DecodeSample,
    expect_action,
    open_bare_ws,
    run_sim,
    serve_ws,
    ticks,
    ws_pool,
)

from puffin_trio.events import Quote, Trade
from puffin_trio.providers._base import Frame
from puffin_trio.providers.alpaca import AlpacaProvider, rfc3339_to_ns
from puffin_trio.sim import SimTrade, serve_alpaca
from puffin_trio.sim.alpaca import stock_quote, stock_trade, wire_time

__all__ = ["ALPACA"]

KEY = "bench-key"
SECRET = "bench-secret"
_WIRE_TOPICS = {"trades": list(SYMBOLS), "quotes": list(SYMBOLS)}


def _provider(port: int, variant: str) -> AlpacaProvider:
    return AlpacaProvider(
        feed="iex",
        key=KEY,
        secret=SECRET,
        url=f"ws://127.0.0.1:{port}/v2/iex",
        encoding="msgpack" if variant == "msgpack" else "json",
    )


def _encode(variant: str, value: object) -> bytes:
    if variant == "msgpack":
        packed: bytes = msgpack.packb(value)
        return packed
    return orjson.dumps(value)


def _messages(variant: str, count: int, kind: str = "mixed") -> list[dict[str, Any]]:
    """``count`` Alpaca stock ``t``/``q`` messages from model ticks (see :func:`~_blast.ticks`)."""
    binary = variant == "msgpack"
    return [
        stock_trade(tick, wire_time(ts, msgpack_encoding=binary))
        if type(tick) is SimTrade
        else stock_quote(tick, wire_time(ts, msgpack_encoding=binary))
        for ts, tick in ticks(count, kind, seed=1)
    ]


def _decode_client(frame: Frame) -> Any:
    if isinstance(frame, str) or frame[:1] in (b"[", b"{"):
        return orjson.loads(frame)
    return msgpack.unpackb(frame, timestamp=2)


async def _handshake(
    pools: Mapping[str, Any], request: trio_websocket.WebSocketRequest
) -> Sequence[bytes]:
    """A blast connection's way to streaming: connected -> auth -> subscribe; the pool of
    the encoding the upgrade request asked for."""
    headers = {k.decode().lower(): v.decode() for k, v in request.headers}
    binary = headers.get("content-type", "").startswith("application/msgpack")
    variant = "msgpack" if binary else "json"
    ws = await request.accept()

    async def reply(message: dict[str, Any]) -> None:
        payload = _encode(variant, [message])
        await ws.send_message(payload if binary else payload.decode())

    await reply({"T": "success", "msg": "connected"})
    expect_action(_decode_client(await ws.get_message()), "auth")
    await reply({"T": "success", "msg": "authenticated"})
    sub = expect_action(_decode_client(await ws.get_message()), "subscribe")
    trades, quotes = sub.get("trades", []), sub.get("quotes", [])
    await reply({"T": "subscription", "trades": trades, "quotes": quotes, "bars": []})
    chunks: Sequence[bytes] = pools[variant]
    return chunks


def _floor(messages: list[dict[str, Any]], binary: bool) -> list[Trade | Quote]:
    """One event per parsed Alpaca trade/quote message, built unchecked (the floor)."""
    ts: Callable[[Any], int] = _same if binary else rfc3339_to_ns
    return [
        FLOOR_TRADE("alpaca", m["S"], ts(m["t"]), 0, m["p"], m["s"], m.get("c"))
        if m["T"] == "t"
        else FLOOR_QUOTE("alpaca", m["S"], ts(m["t"]), 0, m["bp"], m["ap"], m["bs"], m["as"])
        for m in messages
    ]


def _same(value: int) -> int:
    return value


class _Bare:
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
        return len(_floor(self._parse(frame), self._binary))

    def stamps(self, frame: Frame) -> list[int]:
        if self._binary:
            return [m["t"] for m in self._parse(frame)]
        return [rfc3339_to_ns(m["t"]) for m in self._parse(frame)]


@asynccontextmanager
async def _bare(port: int, variant: str) -> AsyncIterator[BareClient]:
    binary = variant == "msgpack"

    def send(message: dict[str, Any]) -> Frame:
        payload = _encode(variant, message)
        return payload if binary else payload.decode()

    async def handshake(ws: trio_websocket.WebSocketConnection) -> None:
        await ws.get_message()  # connected
        await ws.send_message(send({"action": "auth", "key": KEY, "secret": SECRET}))
        await ws.get_message()  # authenticated
        await ws.send_message(send({"action": "subscribe", **_WIRE_TOPICS}))
        await ws.get_message()  # subscription

    async with open_bare_ws(
        f"ws://127.0.0.1:{port}/v2/iex",
        headers=[("Content-Type", f"application/{variant}")],
        handshake=handshake,
    ) as ws:
        yield _Bare(ws, variant)


def _decode_samples() -> list[DecodeSample]:
    samples = []
    for kind in ("trades", "quotes"):
        for variant in ("json", "msgpack"):
            payload = _encode(variant, _messages(variant, 20, kind))
            frame: Frame = payload if variant == "msgpack" else payload.decode()
            if variant == "msgpack":
                baseline: Callable[[], object] = partial(msgpack.unpackb, frame, timestamp=2)
                baseline_label = "msgpack.unpackb(timestamp=2)"
            else:
                baseline, baseline_label = partial(orjson.loads, frame), "orjson.loads"

            def floor(
                parse: Callable[[], Any] = baseline, binary: bool = variant == "msgpack"
            ) -> object:
                return _floor(parse(), binary)

            protocol = _provider(1, variant).protocol()
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


class Alpaca(Case):
    """Alpaca's stock stream, JSON and msgpack."""

    name = "alpaca"
    variants = ("json", "msgpack")
    ceiling = WS_CEILING.format(parse="orjson.loads / msgpack.unpackb(timestamp=2)")
    floor = True

    def provider(self, port: int, variant: str) -> AlpacaProvider:
        return _provider(port, variant)

    def wire(self, variant: str, batch: int, messages: int) -> list[bytes]:
        encode = partial(_encode, variant)
        return ws_pool(_messages(variant, messages), batch, encode, binary=variant == "msgpack")

    async def serve(self, stream: trio.SocketStream, pools: Mapping[str, Any]) -> None:
        await serve_ws(stream, partial(_handshake, pools))

    def bare(self, port: int, variant: str) -> AbstractAsyncContextManager[BareClient]:
        return _bare(port, variant)

    def decode_samples(self) -> list[DecodeSample]:
        return _decode_samples()

    async def sim(
        self, rate: float, batch: int, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await run_sim(serve_alpaca, rate, batch, task_status, key=KEY, secret=SECRET)


ALPACA = Alpaca()
