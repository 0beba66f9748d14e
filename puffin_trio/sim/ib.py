"""A protocol-faithful local TWS: the IB socket API server side, for tests and demos.

This module owns a fake Trader Workstation, written independently of the
client protocol in :mod:`puffin_trio.providers.ib` (which it must not import)
so the two cross-check each other; the official ib_async client is tested
against it too. It must not listen on anything but loopback or log per
message. Each connection has a reader task (requests and replies) and a data
pump; timing uses trio's clock, message timestamps (Unix seconds, as TWS sends
them) come from ``wall_clock``. What it speaks, and how each fault of a
:class:`~puffin_trio.sim.faults.FaultPlan` looks on the TWS wire, is in
``docs/guide/simulators.rst``.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from typing import NoReturn

import attrs
import trio

from puffin_trio.errors import ConfigurationError
from puffin_trio.sim._common import MAX_PACING_LAG
from puffin_trio.sim.faults import Fault, FaultKind, FaultPlan, PausableStream
from puffin_trio.sim.market import MarketModel, SimBook, SimQuote, SimTrade

__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_RATE",
    "ERROR_TEXTS",
    "FIRST_CON_ID",
    "SERVER_VERSION",
    "IBConnectionRecord",
    "IBSimRecorder",
    "connection_time",
    "encode_message",
    "quote_ticks",
    "serve_ib",
    "trade_tick",
]

logger = logging.getLogger(__name__)

#: The server version we answer with: every ib_async >=164/>=166/>=176
#: branch applies, and it is inside ib_async's and our client's 157..178.
SERVER_VERSION = 176
#: The one account the fake TWS manages (a paper account id).
DEFAULT_ACCOUNT = "DU1234567"
#: Market model steps per second per connection. Each step becomes zero or
#: more messages for the requests that want it; 50 is a lively stock.
DEFAULT_RATE = 50.0
#: Seconds a client has to send ``API\\0`` and its version range: a peer that
#: connects and says nothing must not hold a task forever (ib_async's own
#: connect timeout is 2-4 s).
HANDSHAKE_TIMEOUT = 10.0
#: Largest client message accepted. A client request is at most a few
#: hundred bytes; 1 MiB is generous and still bounds a garbage length prefix.
MAX_CLIENT_MESSAGE = 1 << 20
#: The contract id of the model's first symbol; the n-th symbol gets FIRST_CON_ID + n.
FIRST_CON_ID = 100_001
#: The ``nextValidId`` sent after ``startApi``.
NEXT_VALID_ID = 1

#: Text of each error code the simulator sends, as TWS words them.
ERROR_TEXTS: dict[int, str] = {
    200: "No security definition has been found for the request",
    300: "Can't find EId with tickerId:",
    310: "Can't find the subscribed market depth with tickerId:",
    326: "Unable to connect as the client id is already in use. Retry with a unique client id.",
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and Trader Workstation has been restored - data lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
    2103: "Market data farm connection is broken:usfarm",
    2104: "Market data farm connection is OK:usfarm",
    2105: "HMDS data farm connection is broken:ushmds",
    2106: "HMDS data farm connection is OK:ushmds",
    2107: "HMDS data farm connection is inactive but should be available upon demand.ushmds",
    2108: "Market data farm connection is inactive but should be available upon demand.usfarm",
    2157: "Sec-def data farm connection is broken:secdefil",
    2158: "Sec-def data farm connection is OK:secdefil",
}
_UNSUPPORTED_FAULTS = frozenset(
    {FaultKind.CONNECTION_LIMIT, FaultKind.GAP, FaultKind.DUPLICATE, FaultKind.REORDER}
)
_DISCONNECTS = (trio.BrokenResourceError, trio.ClosedResourceError)
_PREFIX = struct.Struct(">I")
_VERSIONS = re.compile(rb"v(\d+)\.\.(\d+)")
_NS = 1_000_000_000
_BAR_SECONDS = 5
#: Simulated exchange code -> the venue name TWS prints on a trade.
_VENUES = {"V": "IEX", "Q": "NASDAQ", "N": "NYSE", "P": "ARCA", "K": "EDGX", "Z": "BATS"}
#: Market makers shown on SMART depth rows.
_DEPTH_VENUES = ("NSDQ", "ARCA", "NYSE", "BATS", "IEX")
_INSERT, _UPDATE, _DELETE = 0, 1, 2
_TICK_BY_TICK_TYPES = {"Last": "1", "AllLast": "2", "BidAsk": "3", "MidPoint": "4"}


@attrs.define(eq=False)
class IBConnectionRecord:
    """What happened on one connection, for tests to inspect.

    * ``received``: every client message as its list of text fields, in order
      (the handshake's version range is in ``version_range``).
    * ``sent``: every message sent, as its fields, up to the recorder's
      ``max_frames``; ``frames_not_kept`` counts the rest. ``faults`` lists
      every fault that fired, in order.
    * ``ended``: set once the server is done with the connection (its client
      id is free again).
    """

    number: int
    version_range: str = ""
    client_id: int | None = None
    received: list[list[str]] = attrs.Factory(list)
    sent: list[list[str]] = attrs.Factory(list)
    frames_not_kept: int = 0
    faults: list[FaultKind] = attrs.Factory(list)
    ended: trio.Event = attrs.Factory(trio.Event)

    def requests(self, msg_id: str) -> list[list[str]]:
        """The received client messages with this id (e.g. ``"97"``)."""
        return [m for m in self.received if m[0] == msg_id]

    def sent_messages(self, msg_id: str) -> list[list[str]]:
        """The kept messages sent with this id (e.g. ``"99"``)."""
        return [m for m in self.sent if m[0] == msg_id]

    def data_request_ids(self) -> list[int]:
        """Request ids of every market data request received (1, 97, 10, 50), in order."""
        out = []
        for message in self.received:
            if message[0] == "97":
                out.append(int(message[1]))
            elif message[0] in ("1", "10", "50"):
                out.append(int(message[2]))
        return out


class IBSimRecorder:
    """Records every connection a :func:`serve_ib` server accepts.

    ``max_frames`` bounds the messages kept per connection (100 000: minutes
    of a test's traffic at the default rate; pass no recorder to benchmarks).
    """

    def __init__(self, *, max_frames: int = 100_000) -> None:
        self.max_frames = max_frames
        self.connections: list[IBConnectionRecord] = []

    @property
    def accepted(self) -> int:
        """How many TCP connections were accepted so far."""
        return len(self.connections)


def _num(value: float) -> str:
    """A number as TWS prints it: integers without a fraction, others as Python does."""
    return str(int(value)) if value == int(value) else repr(value)


def encode_message(fields: Sequence[str]) -> bytes:
    """One TWS message on the wire: the length prefix, then every field NUL-terminated."""
    payload = ("\0".join(fields) + "\0").encode()
    return _PREFIX.pack(len(payload)) + payload


def connection_time(seconds: int) -> str:
    """The connection time TWS sends after the server version: ``20240102 15:04:05 UTC``."""
    return time.strftime("%Y%m%d %H:%M:%S", time.gmtime(seconds)) + " UTC"


# --------------------------------------------------------------------------- subscriptions


@attrs.define(eq=False)
class _Quotes:
    """A ``reqMktData`` request: the last bid/ask (price, size) sent."""

    req_id: str
    symbol: str
    bid: tuple[float, float] | None = None
    ask: tuple[float, float] | None = None


@attrs.define(eq=False)
class _Ticks:
    """A ``reqTickByTickData`` request; ``kind`` is the wire tick type ``"1"``..``"4"``."""

    req_id: str
    symbol: str
    kind: str


@attrs.define(eq=False)
class _Depth:
    """A ``reqMktDepth`` request: a mirror of the model's book and the rows last sent."""

    req_id: str
    symbol: str
    rows: int
    smart: bool
    seq: int = -1
    bids: dict[float, float] = attrs.Factory(dict)
    asks: dict[float, float] = attrs.Factory(dict)
    bid_rows: list[tuple[float, float]] = attrs.Factory(list)
    ask_rows: list[tuple[float, float]] = attrs.Factory(list)

    def follow(self, model: MarketModel, book: SimBook) -> None:
        """Fold a book message into the mirror (a snapshot whenever a delta was missed)."""
        if not book.snapshot and book.seq != self.seq + 1:
            book = model.book_snapshot(self.symbol, book.ts_ns)
        if book.snapshot:
            self.bids = dict(book.bids)
            self.asks = dict(book.asks)
        else:
            for side, levels in ((self.bids, book.bids), (self.asks, book.asks)):
                for price, size in levels:
                    if size:
                        side[price] = size
                    else:
                        side.pop(price, None)
        self.seq = book.seq

    def messages(self) -> list[list[str]]:
        """The row operations that turn the rows last sent into the mirror's top rows."""
        out: list[list[str]] = []
        new_bids = sorted(self.bids.items(), reverse=True)[: self.rows]
        new_asks = sorted(self.asks.items())[: self.rows]
        for side, old, new in (("1", self.bid_rows, new_bids), ("0", self.ask_rows, new_asks)):
            for position, operation, price, size in _row_operations(old, new, self.rows):
                out.append(self._message(position, operation, side, price, size))
        self.bid_rows, self.ask_rows = new_bids, new_asks
        return out

    def _message(self, position: int, op: int, side: str, price: float, size: float) -> list[str]:
        head = ["13", "1", self.req_id, str(position)] if self.smart else ["12", "1", self.req_id]
        if self.smart:
            venue = _DEPTH_VENUES[round(price * 100) % len(_DEPTH_VENUES)]
            return [*head, venue, str(op), side, repr(price), _num(size), "1"]
        return [*head, str(position), str(op), side, repr(price), _num(size)]


def _row_operations(
    old: list[tuple[float, float]], new: list[tuple[float, float]], limit: int
) -> list[tuple[int, int, float, float]]:
    """TWS row operations (position, op, price, size) that turn ``old`` rows into ``new``.

    Both lists are sorted best first with unique prices and hold at most
    ``limit`` rows. Walking down the rows: equal prices give an update if the
    size changed; a row whose price is gone, facing a price that is new,
    becomes an update *with a new price* (as TWS does); a gone price alone is
    deleted (the rows below move up); a new price alone is inserted (the rows
    below move down), after deleting the lowest gone row first if the side
    is full, so no side ever holds more than ``limit`` rows.
    """
    current = list(old)
    wanted = {price for price, _ in new}
    ops: list[tuple[int, int, float, float]] = []
    i = 0
    while i < len(new) or i < len(current):
        if i >= len(new):
            price, _ = current.pop(i)
            ops.append((i, _DELETE, price, 0.0))
            continue
        price, size = new[i]
        if i >= len(current):
            current.append(new[i])
            ops.append((i, _INSERT, price, size))
            i += 1
            continue
        here, here_size = current[i]
        if here == price:
            if here_size != size:
                current[i] = new[i]
                ops.append((i, _UPDATE, price, size))
            i += 1
        elif here not in wanted and all(p != price for p, _ in current[i:]):
            current[i] = new[i]
            ops.append((i, _UPDATE, price, size))
            i += 1
        elif here not in wanted:
            current.pop(i)
            ops.append((i, _DELETE, here, 0.0))
        else:
            if len(current) >= limit:
                # Some lower row's price must be gone (else new would exceed the limit).
                gone = max(j for j in range(i, len(current)) if current[j][0] not in wanted)
                ops.append((gone, _DELETE, current.pop(gone)[0], 0.0))
            current.insert(i, new[i])
            ops.append((i, _INSERT, price, size))
            i += 1
    return ops


@attrs.define(eq=False)
class _Bars:
    """A ``reqRealTimeBars`` request: the 5-second bar being built (``window`` in Unix s)."""

    req_id: str
    symbol: str
    window: int = -1
    ohlc: list[float] = attrs.Factory(list)
    volume: float = 0.0
    notional: float = 0.0
    count: int = 0

    def add(self, trade: SimTrade, window: int) -> list[str] | None:
        """Fold a trade in; return the finished bar's message when a new window starts."""
        done = self.roll(window)
        price = trade.price
        if self.count == 0:
            self.ohlc = [price, price, price, price]
        else:
            ohlc = self.ohlc
            ohlc[1] = max(ohlc[1], price)
            ohlc[2] = min(ohlc[2], price)
            ohlc[3] = price
        self.volume += trade.size
        self.notional += price * trade.size
        self.count += 1
        return done

    def roll(self, window: int) -> list[str] | None:
        if window == self.window:
            return None
        done = None
        if self.count:
            o, h, low, c = self.ohlc
            done = [
                "50", "3", self.req_id, str(self.window), repr(o), repr(h), repr(low), repr(c),
                _num(self.volume), repr(self.notional / self.volume), str(self.count),
            ]  # fmt: skip
        self.window, self.volume, self.notional, self.count = window, 0.0, 0.0, 0
        return done


_Subscription = _Quotes | _Ticks | _Depth | _Bars


# --------------------------------------------------------------------------- server


class _Server:
    """Shared state of one :func:`serve_ib` server."""

    def __init__(
        self,
        *,
        model: MarketModel,
        faults: FaultPlan,
        rate: float | None,
        wall_clock: Callable[[], int],
        recorder: IBSimRecorder | None,
        account: str,
    ) -> None:
        self.model = model
        self.faults = faults
        self.rate = rate
        self.wall_clock = wall_clock
        self.recorder = recorder
        self.account = account
        self.accepted = 0
        self.client_ids: set[int] = set()

    def con_id(self, symbol: str) -> int | None:
        symbols = self.model.symbols
        return FIRST_CON_ID + symbols.index(symbol) if symbol in symbols else None

    def resolve(self, contract: Sequence[str]) -> str | None:
        """The model symbol a 12-field contract block names, or None (error 200)."""
        con_id, symbol, sec_type, currency = contract[0], contract[1], contract[2], contract[9]
        if con_id not in ("", "0"):
            symbols = self.model.symbols
            index = int(con_id) - FIRST_CON_ID if con_id.isdigit() else -1
            if not 0 <= index < len(symbols) or symbol not in ("", symbols[index]):
                return None
            return symbols[index]
        if sec_type not in ("STK", "") or currency not in ("USD", ""):
            return None
        return symbol if symbol in self.model.symbols else None

    async def handle_stream(self, stream: trio.SocketStream) -> None:
        """Serve one TCP connection until either side ends it. Never raises on a disconnect."""
        transport = PausableStream(stream)
        self.accepted += 1
        record = IBConnectionRecord(self.accepted)
        if self.recorder is not None:
            self.recorder.connections.append(record)
        try:
            await _Connection(self, transport, record).run()
        except* _DISCONNECTS as group:
            logger.debug("ib sim: connection %d lost: %r", record.number, group.exceptions[0])
        finally:
            await trio.aclose_forcefully(transport)


class _Reader:
    """Length-prefixed reads from the client (the sim's own, independent de-framing)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def exactly(self, count: int) -> bytes | None:
        """``count`` bytes, or None if the client closed first."""
        while len(self._buffer) < count:
            data = await self._stream.receive_some()
            if not data:
                return None
            self._buffer += data
        out = bytes(self._buffer[:count])
        del self._buffer[:count]
        return out

    async def payload(self) -> bytes | None:
        """One framed payload, or None if the client closed or sent an impossible length."""
        prefix = await self.exactly(4)
        if prefix is None:
            return None
        (length,) = _PREFIX.unpack(prefix)
        if not 0 < length <= MAX_CLIENT_MESSAGE:
            return None
        return await self.exactly(length)


class _Connection:
    """One client: handshake, then a reader task and a data pump."""

    def __init__(self, server: _Server, stream: PausableStream, record: IBConnectionRecord) -> None:
        self._server = server
        self._model = server.model
        self._stream = stream
        self._reader = _Reader(stream)
        self._record = record
        self._recorded = server.recorder is not None
        self._max_frames = server.recorder.max_frames if server.recorder is not None else 0
        self._faults = server.faults.for_connection(record.number)
        self._lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._client_id: int | None = None
        self._started = trio.Event()
        self._changed = trio.Event()
        self._subs: dict[str, _Subscription] = {}
        self._delay = 0.0
        self._slow_until = 0.0
        self._data_sent = 0
        self._quiet = False  # SILENT or CONNECTIVITY_LOSS in progress: no data at all
        # Derived from the subscriptions (see _recompute); read on the hot path.
        self._streaming = False
        self._trade_from: tuple[str, ...] = ()
        self._quote_from: tuple[str, ...] = ()
        self._book_from: tuple[str, ...] = ()
        self._by_symbol: dict[str, list[_Subscription]] = {}

    # -- lifecycle ---------------------------------------------------------

    async def run(self) -> None:
        try:
            shook = False
            with trio.move_on_after(HANDSHAKE_TIMEOUT):
                shook = await self._handshake()
            if not shook:
                return
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._read_loop)
                nursery.start_soon(self._pump)
        finally:
            if self._client_id is not None:
                self._server.client_ids.discard(self._client_id)
            self._record.ended.set()

    def _end(self) -> None:
        """Stop the connection's tasks; the socket is then closed."""
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    async def _handshake(self) -> bool:
        if await self._reader.exactly(4) != b"API\0":
            return False
        versions = await self._reader.payload()
        if versions is None:
            return False
        self._record.version_range = versions.decode("latin-1")
        match = _VERSIONS.match(versions)
        if match is None or not int(match[1]) <= SERVER_VERSION <= int(match[2]):
            return False
        await self._send([[str(SERVER_VERSION), connection_time(self._server.wall_clock() // _NS)]])
        return True

    # -- sending -------------------------------------------------------------

    async def _send(self, messages: list[list[str]], *, data: bool = False) -> None:
        """Send messages in one write. A checkpoint."""
        async with self._lock:
            if self._delay and trio.current_time() < self._slow_until:
                await trio.sleep(self._delay)
            await self._stream.send_all(b"".join(encode_message(m) for m in messages))
            if data:
                self._data_sent += len(messages)
            if self._recorded:
                room = self._max_frames - len(self._record.sent)
                self._record.sent.extend(messages[: max(room, 0)])
                self._record.frames_not_kept += max(len(messages) - max(room, 0), 0)

    async def _send_error(self, req_id: str, code: int, text: str | None = None) -> None:
        message = text if text is not None else ERROR_TEXTS.get(code, "simulated error")
        await self._send([["4", "2", req_id, str(code), message, ""]])

    # -- requests --------------------------------------------------------------

    async def _read_loop(self) -> None:
        while True:
            payload = await self._reader.payload()
            if payload is None:
                self._end()
                return
            fields = payload.decode("utf-8", "backslashreplace").split("\0")[:-1]
            if not fields:
                continue
            self._record.received.append(fields)
            msg_id = fields[0]
            if not self._started.is_set():
                if msg_id == "71":
                    await self._start_api(fields)
                continue
            await self._request(msg_id, fields)

    async def _start_api(self, fields: list[str]) -> None:
        client_id = int(fields[2]) if len(fields) > 2 and fields[2].lstrip("-").isdigit() else 0
        fault = self._faults.take_auth_fault()
        if fault is not None or client_id in self._server.client_ids:
            code = 326 if fault is None or fault.code is None else fault.code
            if fault is not None:
                self._record.faults.append(fault.kind)
            await self._send_error("-1", code)
            self._end()
            return
        self._server.client_ids.add(client_id)
        self._client_id = self._record.client_id = client_id
        account = self._server.account
        await self._send(
            [
                ["15", "1", account],
                ["9", "1", str(NEXT_VALID_ID)],
                *(["4", "2", "-1", str(c), ERROR_TEXTS[c], ""] for c in (2104, 2106, 2158)),
            ]
        )
        self._started.set()

    async def _request(self, msg_id: str, f: list[str]) -> None:
        if msg_id == "49":
            await self._send([["49", "1", str(self._server.wall_clock() // _NS)]])
        elif msg_id in ("1", "97", "10", "50"):
            await self._subscribe(msg_id, f)
        elif msg_id in ("2", "98", "11", "51"):
            await self._cancel(msg_id, f)
        elif msg_id == "9":
            await self._contract_details(f)
        elif msg_id == "61":
            await self._send([["62", "1"]])
        elif msg_id == "5":
            await self._send([["53", "1"]])
        elif msg_id == "99":
            await self._send([["102"]])
        elif msg_id == "6" and f[2] == "1":
            await self._send([["54", "1", self._server.account]])
        elif msg_id == "76":
            await self._send([["74", "1", f[2]]])
        elif msg_id == "7":
            await self._send([["55", "1", f[2]]])
        # Anything else (59 market data type, 15 auto open orders, ...) needs no reply.

    async def _contract_details(self, f: list[str]) -> None:
        req_id = f[2]
        symbol = self._server.resolve(f[3:15])
        if symbol is None:
            await self._send_error(req_id, 200)
            return
        con_id = str(self._server.con_id(symbol))
        details = [
            "10", req_id, symbol, "STK", "", "0", "", "SMART", "USD", symbol, "NMS", "NMS",
            con_id, "0.01", "", "ACTIVETIM,LMT,MKT,STP", "SMART,NASDAQ,NYSE,ARCA,IEX", "1", "0",
            f"{symbol} SIMULATED INC", "NASDAQ", "", "Technology", "Computers", "Software",
            "US/Eastern", "", "", "", "", "0", "1", "", "", "26", "", "COMMON", "1", "1", "100",
        ]  # fmt: skip
        await self._send([details, ["52", "1", req_id]])

    async def _subscribe(self, msg_id: str, f: list[str]) -> None:
        req_id = f[1] if msg_id == "97" else f[2]
        block = f[2:14] if msg_id == "97" else f[3:15]
        symbol = self._server.resolve(block) if len(block) == 12 else None
        if symbol is None:
            await self._send_error(req_id, 200)
            return
        now = self._server.wall_clock()
        sub: _Subscription
        first: list[list[str]] = []
        if msg_id == "1":
            sub = _Quotes(req_id, symbol)
            first = [["81", req_id, "0.01", "9c0001", "3"], ["58", "1", req_id, "1"]]
            first += self._quote_messages(sub, self._model.quote(symbol, now))
        elif msg_id == "97":
            kind = _TICK_BY_TICK_TYPES.get(f[14])
            if kind is None:
                await self._send_error(req_id, 322, f"Error processing request: tickType {f[14]}")
                return
            sub = _Ticks(req_id, symbol, kind)
        elif msg_id == "10":
            sub = _Depth(req_id, symbol, rows=max(int(f[15]), 1), smart=f[16] == "1")
            sub.follow(self._model, self._model.book_snapshot(symbol, now))
            first = sub.messages()
        else:
            sub = _Bars(req_id, symbol)
        async with self._lock:
            self._subs[req_id] = sub
            self._recompute()
        if first and not self._quiet:
            await self._send(first, data=True)

    async def _cancel(self, msg_id: str, f: list[str]) -> None:
        req_id = f[1] if msg_id == "98" else f[2]
        async with self._lock:
            known = self._subs.pop(req_id, None)
            self._recompute()
        if known is None and msg_id in ("2", "11"):
            code = 300 if msg_id == "2" else 310
            await self._send_error(req_id, code, f"{ERROR_TEXTS[code]}{req_id}")

    def _recompute(self) -> None:
        """Derive the hot-path views of the subscriptions and wake the pump."""
        by_symbol: dict[str, list[_Subscription]] = {}
        trades: dict[str, None] = {}
        quotes: dict[str, None] = {}
        books: dict[str, None] = {}
        for sub in self._subs.values():
            by_symbol.setdefault(sub.symbol, []).append(sub)
            if isinstance(sub, _Quotes):
                trades[sub.symbol] = quotes[sub.symbol] = None
            elif isinstance(sub, _Ticks):
                (trades if sub.kind in ("1", "2") else quotes)[sub.symbol] = None
            elif isinstance(sub, _Depth):
                books[sub.symbol] = None
            else:
                trades[sub.symbol] = None
        self._by_symbol = by_symbol
        self._trade_from, self._quote_from = tuple(trades), tuple(quotes)
        self._book_from = tuple(books)
        self._streaming = bool(self._subs)
        self._changed.set()
        self._changed = trio.Event()

    # -- data ----------------------------------------------------------------

    async def _pump(self) -> None:
        await self._started.wait()
        rate = self._server.rate
        next_at = trio.current_time()
        while True:
            while not self._streaming:
                await self._changed.wait()
            for fault in self._faults.take_due(self._data_sent):
                await self._apply(fault)
            if rate:
                next_at = max(next_at + 1 / rate, trio.current_time() - MAX_PACING_LAG)
                await trio.sleep_until(next_at)
            else:
                await trio.lowlevel.checkpoint()
            async with self._lock:
                messages = self._step() if self._streaming else []
            if messages:
                await self._send(messages, data=True)

    def _step(self) -> list[list[str]]:
        """Step the market once; the messages every interested request gets. Hot path."""
        now = self._server.wall_clock()
        tick = self._model.next_tick(
            now, trades=self._trade_from, quotes=self._quote_from, books=self._book_from
        )
        out: list[list[str]] = []
        subs = self._by_symbol.get(tick.symbol, ())
        seconds = now // _NS
        if type(tick) is SimTrade:
            window = seconds - seconds % _BAR_SECONDS
            for sub in subs:
                if type(sub) is _Ticks and sub.kind in ("1", "2"):
                    out.append(trade_tick(sub.req_id, sub.kind, tick, seconds))
                elif type(sub) is _Quotes:
                    out.append(["1", "6", sub.req_id, "4", repr(tick.price), _num(tick.size), "0"])
                    out.append(["46", "6", sub.req_id, "45", str(seconds)])
                elif type(sub) is _Bars:
                    bar = sub.add(tick, window)
                    if bar is not None:
                        out.append(bar)
        elif type(tick) is SimQuote:
            for sub in subs:
                if type(sub) is _Quotes:
                    out.extend(self._quote_messages(sub, tick))
                elif type(sub) is _Ticks and sub.kind == "3":
                    out.append(
                        [
                            "99", sub.req_id, "3", str(seconds), repr(tick.bid), repr(tick.ask),
                            _num(tick.bid_size), _num(tick.ask_size), "0",
                        ]
                    )  # fmt: skip
                elif type(sub) is _Ticks and sub.kind == "4":
                    out.append(
                        ["99", sub.req_id, "4", str(seconds), repr((tick.bid + tick.ask) / 2)]
                    )
        else:
            assert type(tick) is SimBook
            for sub in subs:
                if type(sub) is _Depth:
                    sub.follow(self._model, tick)
                    out.extend(sub.messages())
        return out

    def _quote_messages(self, sub: _Quotes, quote: SimQuote) -> list[list[str]]:
        out = quote_ticks(sub.req_id, quote, sub.bid, sub.ask)
        sub.bid = (quote.bid, quote.bid_size)
        sub.ask = (quote.ask, quote.ask_size)
        return out

    async def _apply(self, fault: Fault) -> None:
        kind = fault.kind
        self._record.faults.append(kind)
        logger.debug("ib sim: connection %d: fault %s", self._record.number, kind)
        if kind in (FaultKind.DROP, FaultKind.CLOSE):
            self._end()
            await trio.lowlevel.checkpoint()
        elif kind is FaultKind.SILENT:
            self._quiet = True
            if fault.duration is None:
                await trio.sleep_forever()
            await trio.sleep(fault.duration)
            self._quiet = False
        elif kind is FaultKind.CONNECTIVITY_LOSS:
            await self._send_error("-1", 1100)
            self._quiet = True
            await trio.sleep(fault.duration if fault.duration is not None else 5.0)
            self._quiet = False
            restored = fault.code or 1102
            if restored == 1101:
                async with self._lock:
                    self._subs.clear()
                    self._recompute()
            await self._send_error("-1", restored)
        elif kind is FaultKind.FARM_STATUS:
            await self._send_error("-1", fault.code or 2104)
        elif kind is FaultKind.MALFORMED:
            payload = fault.payload if fault.payload is not None else b"1\x006\x00"
            raw = payload.encode() if isinstance(payload, str) else payload
            async with self._lock:
                await self._stream.send_all(_PREFIX.pack(len(raw)) + raw)
        elif kind is FaultKind.UNKNOWN_MESSAGE:
            await self._send([["999", "1", "simulated unknown message"]])
        elif kind is FaultKind.SLOW:
            self._delay = fault.delay
            self._slow_until = (
                float("inf") if fault.duration is None else trio.current_time() + fault.duration
            )
        elif kind is FaultKind.IGNORE_PINGS:
            self._stream.pause()
            if fault.duration is not None:
                assert self._nursery is not None
                self._nursery.start_soon(self._resume_reading, fault.duration)

    async def _resume_reading(self, after: float) -> None:
        await trio.sleep(after)
        self._stream.resume()


# --------------------------------------------------------------------------- data messages
# Messages as field lists (``encode_message`` puts them on the wire). The
# benchmarks' blast server builds its data with these.


def trade_tick(req_id: str, kind: str, trade: SimTrade, seconds: int) -> list[str]:
    """A ``tickByTick`` (99) trade of type ``kind`` (``"1"`` Last, ``"2"`` AllLast)."""
    conditions = " ".join(c for c in trade.conditions if c != "@")
    return [
        "99", req_id, kind, str(seconds), repr(trade.price), _num(trade.size), "0",
        _VENUES.get(trade.exchange, trade.exchange), conditions,
    ]  # fmt: skip


def quote_ticks(
    req_id: str,
    quote: SimQuote,
    bid: tuple[float, float] | None,
    ask: tuple[float, float] | None,
) -> list[list[str]]:
    """``reqMktData`` L1 for ``quote``, given the (price, size) last sent per side.

    A ``tickPrice`` (1) for a side whose price moved (or was never sent), a
    ``tickSize`` (2) for one whose size alone did, nothing for an unchanged side.
    """
    out = []
    for tick_type, size_type, price, size, last in (
        ("1", "0", quote.bid, quote.bid_size, bid),
        ("2", "3", quote.ask, quote.ask_size, ask),
    ):
        if last is None or last[0] != price:
            out.append(["1", "6", req_id, tick_type, repr(price), _num(size), "1"])
        elif last[1] != size:
            out.append(["2", "6", req_id, size_type, _num(size)])
    return out


_DEFAULT_STOCKS = ("AAPL", "MSFT", "NVDA")


async def serve_ib(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    symbols: Sequence[str] | None = None,
    model: MarketModel | None = None,
    faults: FaultPlan | None = None,
    rate: float | None = DEFAULT_RATE,
    seed: int = 0,
    wall_clock: Callable[[], int] = time.time_ns,
    recorder: IBSimRecorder | None = None,
    account: str = DEFAULT_ACCOUNT,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve the TWS API on ``host:port`` until cancelled.

    Start it with ``port = await nursery.start(partial(serve_ib, ...))``: the
    bound port (``port=0``: any free one) is reported through ``task_status``.

    * ``symbols`` / ``model``: the market. Without a model one is built from
      ``symbols`` (default AAPL, MSFT, NVDA) and ``seed``; with one,
      ``symbols`` are added to it. Only the model's symbols exist: any other
      gets error 200. The model is shared by all connections.
    * ``rate``: market steps per second per connection (``None`` or ``0``: as
      fast as possible, still a checkpoint per step).
    * ``faults``: what to break (``docs/guide/simulators.rst`` lists the kinds).
    * ``wall_clock``: ns since the epoch, for the timestamps TWS sends.
    * ``recorder``: an :class:`IBSimRecorder` to inspect from tests.
    * ``account``: the managed account reported after ``startApi``.

    Raises ``ConfigurationError`` for a non-loopback ``host``, bad settings or
    a fault kind TWS has no equivalent for. Cancelling it stops the server and
    drops every connection.
    """
    _check_settings(host=host, rate=rate, account=account, faults=faults or FaultPlan())
    if model is None:
        model = MarketModel(_DEFAULT_STOCKS if symbols is None else symbols, seed=seed)
    elif symbols is not None:
        model.add_symbols(symbols)
    server = _Server(
        model=model,
        faults=faults if faults is not None else FaultPlan(),
        rate=rate,
        wall_clock=wall_clock,
        recorder=recorder,
        account=account,
    )
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, server.handle_stream, port, host=host)
        )
        bound_port: int = listeners[0].socket.getsockname()[1]
        logger.debug("ib sim: listening on %s:%d", host, bound_port)
        task_status.started(bound_port)
        await trio.sleep_forever()


def _check_settings(
    *, host: str, rate: float | None, account: str, faults: Iterable[Fault]
) -> None:
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigurationError(
            f"the simulator only listens on loopback (127.0.0.1, ::1, localhost), not {host!r}"
        )
    if rate is not None and rate < 0:
        raise ConfigurationError(f"rate must be >= 0 steps/s (0 or None: unlimited), got {rate}")
    if not account or "\0" in account or "," in account:
        raise ConfigurationError(f"account must be a non-empty id without commas, got {account!r}")
    for fault in faults:
        if fault.kind in _UNSUPPORTED_FAULTS:
            raise ConfigurationError(
                f"the IB simulator cannot inject {fault.kind}: TWS has no such error and its "
                "data carries no sequence numbers"
            )
