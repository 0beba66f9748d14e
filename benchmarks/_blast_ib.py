"""The Interactive Brokers benchmark case: a blast TWS, the bare client and the decode samples.

This module owns :data:`IB`, the :class:`~_blast.Case` of tick-by-tick trades
(``AllLast``) and ``reqMktData`` L1 quotes over the TWS API. Its messages are
built by the fake TWS's own builders (:func:`puffin_trio.sim.ib.trade_tick`,
:func:`~puffin_trio.sim.ib.quote_ticks`, :func:`~puffin_trio.sim.ib.encode_message`).
IB's request ids are only known once the client has asked, so its pool is
message templates, filled in per connection. It must not time anything or
print tables.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
from _blast import (
    HANDSHAKE_TIMEOUT,
    TOPICS,
    BareClient,
    Case,
    DecodeSample,
    blast_socket,
    data_events,
    tick_stream,
)

from puffin_trio.providers._base import Frame, ProviderProtocol
from puffin_trio.providers.ib import IBProvider
from puffin_trio.sim import SimQuote, SimTrade
from puffin_trio.sim.ib import (
    DEFAULT_ACCOUNT,
    SERVER_VERSION,
    connection_time,
    encode_message,
    quote_ticks,
    trade_tick,
)
from puffin_trio.transports.tcp import DEFAULT_RECEIVE_SIZE, FrameDecoder

__all__ = ["IB"]

#: Our key for an IB request: (channel, symbol).
_Key = tuple[str, str]
#: A data message whose request id is filled in per connection: its fields, with
#: :data:`_REQUEST_ID` where the id goes.
_Template = tuple[_Key, list[str]]
#: Stands for the request id while a template is built (never a field's value).
_REQUEST_ID = "<request id>"
#: The tick-by-tick type the provider asks trades with (``AllLast``).
_ALL_LAST = "2"


def _provider(port: int, variant: str) -> IBProvider:
    return IBProvider("127.0.0.1", port)


def _now_s() -> int:
    return time.time_ns() // 1_000_000_000


def _message(template: _Template, ids: Mapping[_Key, bytes]) -> bytes:
    """The template as a length-prefixed message, with the client's request id."""
    key, fields = template
    request_id = ids[key].decode()
    return encode_message([request_id if f == _REQUEST_ID else f for f in fields])


def _payloads(templates: Sequence[_Template], ids: Mapping[_Key, bytes]) -> list[bytes]:
    """The templates' messages as the protocol receives them (without the length prefix)."""
    return [_message(template, ids)[4:] for template in templates]


def _request(fields: list[bytes]) -> tuple[_Key, bytes] | None:
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


def _templates(count: int, kind: str = "mixed") -> list[_Template]:
    """``count`` data messages from model ticks, as the fake TWS sends them: a trade is one
    tick-by-tick ``AllLast`` (99); a quote is a tickPrice (1) for each side whose price
    moved, or a tickSize (2) for a side whose size alone did (none if neither did)."""
    sent: dict[str, tuple[tuple[float, float] | None, tuple[float, float] | None]] = {}
    out: list[_Template] = []
    for ts, tick in tick_stream(kind, seed=3):
        if len(out) >= count:
            break
        if type(tick) is SimTrade:
            fields = trade_tick(_REQUEST_ID, _ALL_LAST, tick, ts // 1_000_000_000)
            out.append((("trades", tick.symbol), fields))
            continue
        assert type(tick) is SimQuote
        bid, ask = sent.get(tick.symbol, (None, None))
        out += [(("quotes", tick.symbol), f) for f in quote_ticks(_REQUEST_ID, tick, bid, ask)]
        sent[tick.symbol] = ((tick.bid, tick.bid_size), (tick.ask, tick.ask_size))
    return out[:count]


@dataclass(frozen=True)
class _Ready:
    """IBProvider's protocol after the handshake and the subscription, and what it sent."""

    protocol: ProviderProtocol
    #: The request id of each (channel, symbol).
    ids: dict[_Key, bytes]
    #: ``API\0`` and the version range; ``startApi``; the market data requests.
    prologue: bytes
    start_api: bytes
    requests: bytes


def _ready() -> _Ready:
    """Drive IBProvider's own protocol, sans-IO, through the handshake and the subscription."""
    protocol = _provider(1, "tws").protocol()
    prologue = b"".join(map(bytes, protocol.data_to_send()))
    protocol.receive(encode_message([str(SERVER_VERSION), connection_time(_now_s())])[4:], 0)
    start_api = b"".join(map(bytes, protocol.data_to_send()))
    protocol.receive(encode_message(["9", "1", "1"])[4:], 0)  # nextValidId: the API is up
    protocol.subscribe(TOPICS)
    requests = [bytes(frame) for frame in protocol.data_to_send()]
    ids: dict[_Key, bytes] = {}
    for frame in requests:
        request = _request(frame[4:].split(b"\0"))
        if request is not None:
            ids[request[0]] = request[1]
    return _Ready(protocol, ids, prologue, start_api, b"".join(requests))


def _effective(templates: list[_Template]) -> list[_Template]:
    """``templates`` without the messages that give no event when the list is repeated.

    Sent round and round, a tickPrice/tickSize equal to the side's value from
    the lap before gives no Quote (IBProtocol combines L1 and emits on a
    change), nor does any quote message of a symbol whose other side never
    comes, so the pipeline would count fewer events than the ceiling counts
    messages. Those are dropped until, on a fresh connection's protocol, every
    message of the second lap gives exactly one event (empty if none can).
    """
    while templates:
        ready = _ready()
        receive = ready.protocol.receive
        payloads = _payloads(templates, ready.ids)
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
class _Pool:
    """An IB blast pool: templates, encoded per set of request ids into writes of ``batch``."""

    batch: int
    templates: list[_Template]
    _units: dict[tuple[tuple[_Key, bytes], ...], list[bytes]] = field(default_factory=dict)

    @property
    def keys(self) -> set[_Key]:
        """The requests the pool's messages answer."""
        return {key for key, _ in self.templates}

    def units(self, ids: Mapping[_Key, bytes]) -> list[bytes]:
        """The writes, with the client's request ids (made once per set of ids)."""
        cache = tuple(sorted((key, ids[key]) for key in self.keys))
        units = self._units.get(cache)
        if units is None:
            frames = [_message(template, ids) for template in self.templates]
            batch = self.batch
            units = self._units[cache] = [
                b"".join(frames[i : i + batch]) for i in range(0, len(frames) - batch + 1, batch)
            ]
        return units


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


def _current_time() -> bytes:
    """The reply to ``reqCurrentTime`` (49)."""
    return encode_message(["49", "1", str(_now_s())])


async def _serve(stream: trio.SocketStream, pool: _Pool) -> None:
    """One IB blast connection: API\\0 + versions -> server version; startApi ->
    managedAccounts + nextValidId; reqCurrentTime answered throughout; once every
    request the pool needs has arrived, its messages with the client's request ids."""
    reader = _TwsReader(stream)
    ids: dict[_Key, bytes] = {}
    with trio.fail_after(HANDSHAKE_TIMEOUT):
        if await reader.prologue() != b"API\0" or await reader.fields() is None:
            raise RuntimeError("blast server: expected API\\0 and a version range")
        await stream.send_all(encode_message([str(SERVER_VERSION), connection_time(_now_s())]))
        while not pool.keys <= ids.keys():
            fields = await reader.fields()
            if fields is None:
                return
            if fields[0] == b"71":  # startApi
                await stream.send_all(
                    encode_message(["15", "1", DEFAULT_ACCOUNT]) + encode_message(["9", "1", "1"])
                )
            elif fields[0] == b"49":
                await stream.send_all(_current_time())
            else:
                request = _request(fields)
                if request is not None:
                    ids[request[0]] = request[1]
    replies: list[bytes] = []

    async def answer() -> None:
        while (fields := await reader.fields()) is not None:
            if fields[0] == b"49":
                replies.append(_current_time())
        nursery.cancel_scope.cancel()  # the client has gone

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer)
        await blast_socket(stream, pool.units(ids), replies)
        nursery.cancel_scope.cancel()


class _Bare:
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
async def _bare(port: int) -> AsyncIterator[BareClient]:
    """Connected as IBProvider connects (its own protocol's prologue and requests), then bare."""
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

        sent = _ready()  # what IBProvider sends, in order
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            await stream.send_all(sent.prologue)
            await message_id()  # server version, connection time
            await stream.send_all(sent.start_api)
            while await message_id() != b"9":  # nextValidId
                pass
            await stream.send_all(sent.requests)
        yield _Bare(stream, decoder)


def _decode_samples() -> list[DecodeSample]:
    trades = _effective(_templates(20, "trades"))
    # The shortest run of quote messages that repeats with one event per message keeps
    # 20 of them (or, if no prefix keeps exactly 20, the first that keeps more).
    candidates = _templates(100, "quotes")
    laps = [_effective(candidates[:k]) for k in range(20, len(candidates) + 1)]
    quotes = next((kept for kept in laps if len(kept) == 20), None) or next(
        kept for kept in laps if len(kept) > 20
    )
    samples = []
    for label, templates in (
        ("ib trade (99 AllLast), tws", trades),
        ("ib quote (1/2 L1), tws", quotes),
    ):
        ready = _ready()
        payloads = _payloads(templates, ready.ids)
        decode = partial(_decode, ready.protocol.receive, payloads)
        decode(0)  # both sides of every symbol seen: from now on, one event per message
        samples.append(
            DecodeSample(
                label, len(payloads), decode, ready.protocol, partial(_nul_split, payloads),
                "bytes.split(b'\\0')",
            )
        )  # fmt: skip
    return samples


def _decode(
    receive: Callable[[Frame, int], list[Any]], payloads: Sequence[bytes], ts_recv: int
) -> list[Any]:
    out: list[Any] = []
    for payload in payloads:
        out += receive(payload, ts_recv)
    return out


def _nul_split(payloads: Sequence[bytes]) -> list[list[bytes]]:
    return [payload.split(b"\0") for payload in payloads]


class InteractiveBrokers(Case):
    """The TWS API: tick-by-tick trades and L1 quotes over length-prefixed TCP."""

    name = "ib"
    variants = ("tws",)
    ceiling = (
        "a trio TCP stream (receive_some 64 KiB) + puffin_trio.transports.tcp.FrameDecoder + "
        "bytes.split(b'\\0') per message, counting messages"
    )
    no_sim = (
        "IB's event times are whole seconds (tick-by-tick) or absent (reqMktData quotes take "
        "ts_recv), so there is no feed latency to measure; and serve_ib sends one market step "
        "per timer wake-up, too slow for the 5,000 msg/s memory run"
    )

    def provider(self, port: int, variant: str) -> IBProvider:
        return _provider(port, variant)

    def wire(self, variant: str, batch: int, messages: int) -> _Pool:
        return _Pool(batch, _effective(_templates(messages)))

    async def serve(self, stream: trio.SocketStream, pools: Mapping[str, Any]) -> None:
        await _serve(stream, pools["tws"])

    def bare(self, port: int, variant: str) -> AbstractAsyncContextManager[BareClient]:
        return _bare(port)

    def decode_samples(self) -> list[DecodeSample]:
        return _decode_samples()


IB = InteractiveBrokers()
