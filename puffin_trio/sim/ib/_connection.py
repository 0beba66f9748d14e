"""One client of the fake TWS: handshake, requests and replies, the data pump, faults.

This module owns :class:`Connection`, everything that happens on one socket
of :func:`~puffin_trio.sim.ib.serve_ib` (``docs/guide/simulators.rst`` describes
the protocol and the faults). It must not listen or hold server-wide state
beyond what :class:`~puffin_trio.sim.ib._server.Server` lends it (the model,
the client ids in use).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from puffin_trio.sim._common import MAX_PACING_LAG
from puffin_trio.sim.faults import Fault, FaultKind, PausableStream
from puffin_trio.sim.ib._history import historical_ticks_last, parse_request, ticks
from puffin_trio.sim.ib._requests import (
    BAR_SECONDS,
    NS,
    TICK_BY_TICK_TYPES,
    Bars,
    Depth,
    Quotes,
    Subscription,
    Ticks,
    quote_ticks,
    trade_tick,
)
from puffin_trio.sim.ib._wire import (
    ERROR_TEXTS,
    NEXT_VALID_ID,
    PREFIX,
    SERVER_VERSION,
    VERSIONS,
    Reader,
    connection_time,
    encode_message,
    num,
)
from puffin_trio.sim.market import SimBook, SimQuote, SimTrade

if TYPE_CHECKING:
    from puffin_trio.sim.ib._server import IBConnectionRecord, Server

__all__ = ["HANDSHAKE_TIMEOUT", "Connection"]

logger = logging.getLogger("puffin_trio.sim.ib")

#: Seconds a client has to send ``API\\0`` and its version range: a peer that
#: connects and says nothing must not hold a task forever (ib_async's own
#: connect timeout is 2-4 s).
HANDSHAKE_TIMEOUT = 10.0
#: The prefix of TWS's error 162 texts (the historical data service's errors).
_HMDS = "Historical Market Data Service error message:"
#: Error 162 text per historical fault that refuses a request (401/403 errors
#: are a missing permission instead).
_HISTORY_REFUSALS = {
    FaultKind.RATE_LIMITED: "Historical data request pacing violation",
    FaultKind.HTTP_ERROR: "HMDS server error",
}


class Connection:
    """One client: handshake, then a reader task and a data pump."""

    def __init__(self, server: Server, stream: PausableStream, record: IBConnectionRecord) -> None:
        self._server = server
        self._model = server.model
        self._stream = stream
        self._reader = Reader(stream)
        self._record = record
        self._recorded = server.recorder is not None
        self._max_frames = server.recorder.max_frames if server.recorder is not None else 0
        self._faults = server.faults.for_connection(record.number)
        self._lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._client_id: int | None = None
        self._started = trio.Event()
        self._changed = trio.Event()
        self._subs: dict[str, Subscription] = {}
        self._delay = 0.0
        self._slow_until = 0.0
        self._data_sent = 0
        self._quiet = False  # SILENT or CONNECTIVITY_LOSS in progress: no data at all
        # Derived from the subscriptions (see _recompute); read on the hot path.
        self._streaming = False
        self._trade_from: tuple[str, ...] = ()
        self._quote_from: tuple[str, ...] = ()
        self._book_from: tuple[str, ...] = ()
        self._by_symbol: dict[str, list[Subscription]] = {}

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
            self._server.off_air.air(self._record.number, False)
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
        match = VERSIONS.match(versions)
        if match is None or not int(match[1]) <= SERVER_VERSION <= int(match[2]):
            return False
        await self._send([[str(SERVER_VERSION), connection_time(self._server.wall_clock() // NS)]])
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
            await self._send([["49", "1", str(self._server.wall_clock() // NS)]])
        elif msg_id in ("1", "97", "10", "50"):
            await self._subscribe(msg_id, f)
        elif msg_id in ("2", "98", "11", "51"):
            await self._cancel(msg_id, f)
        elif msg_id == "96":
            await self._historical_ticks(f)
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

    async def _historical_ticks(self, f: list[str]) -> None:
        """Answer ``reqHistoricalTicks`` from the tape (faults numbered server-wide); a
        slow answer is sent from its own task, as TWS answers historical requests."""
        faults = self._server.history_faults.next_request()
        try:
            request = parse_request(f)
        except ValueError as exc:
            req_id = f[1] if len(f) > 1 else "-1"
            await self._send_error(req_id, 321, f"Error validating request:{exc}")
            return
        symbol = self._server.resolve(request.contract)
        if symbol is None:
            await self._send_error(request.req_id, 200)
            return
        if request.what != "TRADES":
            await self._send_error(request.req_id, 162, _HMDS + f"{request.what} is not simulated")
            return
        delay, truncated = 0.0, False
        for fault in faults:
            self._record.faults.append(fault.kind)
            refusal = _HISTORY_REFUSALS.get(fault.kind)
            if refusal is not None:
                if fault.kind is FaultKind.HTTP_ERROR and fault.code in (401, 403):
                    refusal = "No market data permissions for ISLAND STK"
                await self._send_error(request.req_id, 162, _HMDS + refusal)
                return
            if fault.kind is FaultKind.SLOW_PAGE:
                delay += fault.delay
            elif fault.kind is FaultKind.TRUNCATED_PAGE:
                truncated = True
        answer = historical_ticks_last(
            request.req_id, ticks(self._server.tape, symbol, request), truncated=truncated
        )
        assert self._nursery is not None
        self._nursery.start_soon(self._send_later, delay, answer)

    async def _send_later(self, delay: float, message: list[str]) -> None:
        await trio.sleep(delay)
        await self._send([message])

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
        sub: Subscription
        first: list[list[str]] = []
        if msg_id == "1":
            sub = Quotes(req_id, symbol)
            first = [["81", req_id, "0.01", "9c0001", "3"], ["58", "1", req_id, "1"]]
            first += self._quote_messages(sub, self._model.quote(symbol, now))
        elif msg_id == "97":
            kind = TICK_BY_TICK_TYPES.get(f[14])
            if kind is None:
                await self._send_error(req_id, 322, f"Error processing request: tickType {f[14]}")
                return
            sub = Ticks(req_id, symbol, kind)
        elif msg_id == "10":
            sub = Depth(req_id, symbol, rows=max(int(f[15]), 1), smart=f[16] == "1")
            sub.follow(self._model, self._model.book_snapshot(symbol, now))
            first = sub.messages()
        else:
            sub = Bars(req_id, symbol)
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
        by_symbol: dict[str, list[Subscription]] = {}
        trades: dict[str, None] = {}
        quotes: dict[str, None] = {}
        books: dict[str, None] = {}
        for sub in self._subs.values():
            by_symbol.setdefault(sub.symbol, []).append(sub)
            if isinstance(sub, Quotes):
                trades[sub.symbol] = quotes[sub.symbol] = None
            elif isinstance(sub, Ticks):
                (trades if sub.kind in ("1", "2") else quotes)[sub.symbol] = None
            elif isinstance(sub, Depth):
                books[sub.symbol] = None
            else:
                trades[sub.symbol] = None
        self._by_symbol = by_symbol
        self._trade_from, self._quote_from = tuple(trades), tuple(quotes)
        self._book_from = tuple(books)
        self._streaming = bool(self._subs)
        if self._streaming:
            self._server.off_air.draws = (self._trade_from, self._quote_from, self._book_from)
        self._changed.set()
        self._changed = trio.Event()

    # -- data ----------------------------------------------------------------

    async def _pump(self) -> None:
        await self._started.wait()
        rate = self._server.rate
        next_at = trio.current_time()
        while True:
            if not self._streaming:
                self._server.off_air.air(self._record.number, False)
            while not self._streaming:
                await self._changed.wait()
            self._server.off_air.air(self._record.number, True)
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
        seconds = now // NS
        if type(tick) is SimTrade:
            self._server.print_trade(tick)
            window = seconds - seconds % BAR_SECONDS
            for sub in subs:
                if type(sub) is Ticks and sub.kind in ("1", "2"):
                    out.append(trade_tick(sub.req_id, sub.kind, tick, seconds))
                elif type(sub) is Quotes:
                    out.append(["1", "6", sub.req_id, "4", repr(tick.price), num(tick.size), "0"])
                    out.append(["46", "6", sub.req_id, "45", str(seconds)])
                elif type(sub) is Bars:
                    bar = sub.add(tick, window)
                    if bar is not None:
                        out.append(bar)
        elif type(tick) is SimQuote:
            for sub in subs:
                if type(sub) is Quotes:
                    out.extend(self._quote_messages(sub, tick))
                elif type(sub) is Ticks and sub.kind == "3":
                    out.append(
                        [
                            "99", sub.req_id, "3", str(seconds), repr(tick.bid), repr(tick.ask),
                            num(tick.bid_size), num(tick.ask_size), "0",
                        ]
                    )  # fmt: skip
                elif type(sub) is Ticks and sub.kind == "4":
                    out.append(
                        ["99", sub.req_id, "4", str(seconds), repr((tick.bid + tick.ask) / 2)]
                    )
        else:
            assert type(tick) is SimBook
            for sub in subs:
                if type(sub) is Depth:
                    sub.follow(self._model, tick)
                    out.extend(sub.messages())
        return out

    def _quote_messages(self, sub: Quotes, quote: SimQuote) -> list[list[str]]:
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
                await self._stream.send_all(PREFIX.pack(len(raw)) + raw)
        elif kind is FaultKind.UNKNOWN_MESSAGE:
            await self._send([["999", "1", "simulated unknown message"]])
        elif kind is FaultKind.SLOW:
            self._delay = fault.delay
            self._slow_until = (
                float("inf") if fault.duration is None else trio.current_time() + fault.duration
            )
        elif kind is FaultKind.IGNORE_PINGS:
            assert self._nursery is not None
            self._stream.pause_for(fault.duration, self._nursery)
