"""The Polygon benchmark case: a blast server, the bare client and the decode samples.

This module owns :data:`POLYGON`, the :class:`~_blast.Case` of the stocks cluster:
``T`` and ``Q`` in JSON. Its data messages are built by the simulator's own
builders (:func:`puffin_trio.sim.polygon.stock_trade` and ``stock_quote``),
with ``q`` counting up per event type and symbol. It must not time anything or
print tables.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

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

from puffin_trio.providers._base import Frame
from puffin_trio.providers.polygon import PolygonProvider
from puffin_trio.sim import SimTrade, serve_polygon
from puffin_trio.sim.polygon import stock_quote, stock_trade

__all__ = ["POLYGON"]

KEY = "bench-key"
_WIRE_TOPICS = ",".join(f"{ev}.{s}" for ev in ("T", "Q") for s in SYMBOLS)


def _provider(port: int, variant: str) -> PolygonProvider:
    return PolygonProvider(key=KEY, url=f"ws://127.0.0.1:{port}/stocks")


def _messages(count: int, kind: str = "mixed") -> list[dict[str, Any]]:
    """``count`` Polygon stocks ``T``/``Q`` messages (see :func:`~_blast.ticks`), as the real
    feed spells them: millisecond ``t``, and a ``q`` counting up per event type and symbol."""
    seqs: dict[tuple[str, str], int] = {}
    out: list[dict[str, Any]] = []
    for ts, tick in ticks(count, kind, seed=2):
        ev = "T" if type(tick) is SimTrade else "Q"
        q = seqs[(ev, tick.symbol)] = seqs.get((ev, tick.symbol), 0) + 1
        ms = ts // 1_000_000
        out.append(stock_trade(tick, ms, q) if type(tick) is SimTrade else stock_quote(tick, ms, q))
    return out


def _status(status: str, message: str) -> str:
    return orjson.dumps([{"ev": "status", "status": status, "message": message}]).decode()


async def _handshake(
    pools: Mapping[str, Any], request: trio_websocket.WebSocketRequest
) -> Sequence[bytes]:
    """A blast connection's way to streaming: connected -> auth -> subscribe (a status per
    topic); the pool."""
    ws = await request.accept()
    await ws.send_message(_status("connected", "Connected Successfully"))
    expect_action(orjson.loads(await ws.get_message()), "auth")
    await ws.send_message(_status("auth_success", "authenticated"))
    sub = expect_action(orjson.loads(await ws.get_message()), "subscribe")
    for topic in sub["params"].split(","):
        await ws.send_message(_status("success", f"subscribed to: {topic}"))
    chunks: Sequence[bytes] = pools["json"]
    return chunks


class _Bare:
    """The bare Polygon client: orjson.loads of each frame."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.receive = ws.get_message

    def count(self, frame: Frame) -> int:
        return len(orjson.loads(frame))

    def build(self, frame: Frame) -> int:
        events = [
            FLOOR_TRADE("polygon", m["sym"], m["t"] * 1_000_000, 0, m["p"], m["s"], m.get("c"))
            if m["ev"] == "T"
            else FLOOR_QUOTE(
                "polygon", m["sym"], m["t"] * 1_000_000, 0, m["bp"], m["ap"], m["bs"], m["as"]
            )
            for m in orjson.loads(frame)
        ]
        return len(events)

    def stamps(self, frame: Frame) -> list[int]:
        return [m["t"] * 1_000_000 for m in orjson.loads(frame)]


@asynccontextmanager
async def _bare(port: int) -> AsyncIterator[BareClient]:
    topics = _WIRE_TOPICS.split(",")

    async def handshake(ws: trio_websocket.WebSocketConnection) -> None:
        await ws.get_message()  # connected
        await ws.send_message(orjson.dumps({"action": "auth", "params": KEY}).decode())
        await ws.get_message()  # auth_success
        subscribe = {"action": "subscribe", "params": _WIRE_TOPICS}
        await ws.send_message(orjson.dumps(subscribe).decode())
        for _ in topics:  # one "subscribed to" status per topic
            await ws.get_message()

    async with open_bare_ws(f"ws://127.0.0.1:{port}/stocks", headers=[], handshake=handshake) as ws:
        yield _Bare(ws)


def _decode_samples() -> list[DecodeSample]:
    samples = []
    for kind in ("trades", "quotes"):
        frame = orjson.dumps(_messages(20, kind)).decode()
        protocol = _provider(1, "json").protocol()
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


class Polygon(Case):
    """Polygon's stocks cluster: ``T`` and ``Q``, JSON, with per-symbol ``q``."""

    name = "polygon"
    variants = ("json",)
    ceiling = WS_CEILING.format(parse="orjson.loads")
    cycles = False
    stamp_resolution_ns = 1_000_000
    floor = True

    def provider(self, port: int, variant: str) -> PolygonProvider:
        return _provider(port, variant)

    def wire(self, variant: str, batch: int, messages: int) -> list[bytes]:
        return ws_pool(_messages(messages), batch, orjson.dumps, binary=False)

    async def serve(self, stream: trio.SocketStream, pools: Mapping[str, Any]) -> None:
        await serve_ws(stream, partial(_handshake, pools))

    def bare(self, port: int, variant: str) -> AbstractAsyncContextManager[BareClient]:
        return _bare(port)

    def decode_samples(self) -> list[DecodeSample]:
        return _decode_samples()

    async def sim(
        self, rate: float, batch: int, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await run_sim(serve_polygon, rate, batch, task_status, key=KEY)


POLYGON = Polygon()
