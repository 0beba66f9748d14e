"""The fake TWS as a server: :func:`serve_ib`, its settings and its recorder.

This module owns what is shared by every connection of one
:func:`serve_ib` (the market model, the fault plan, the client ids in use,
contract resolution, the trade tape ``reqHistoricalTicks`` reads and the
market that goes on between connections) and the records tests inspect. It must not speak the
protocol itself: :class:`~puffin_trio.sim.ib._connection.Connection` does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import NoReturn

import attrs
import trio

from puffin_trio.errors import ConfigurationError
from puffin_trio.sim._offair import OffAirMarket
from puffin_trio.sim._server import SimRecorder, check_host, listen, market
from puffin_trio.sim._tape import TradeTape
from puffin_trio.sim.faults import Fault, FaultKind, FaultPlan, HistoryFaults, PausableStream
from puffin_trio.sim.ib._connection import Connection, logger
from puffin_trio.sim.ib._wire import FIRST_CON_ID
from puffin_trio.sim.market import MarketModel, SimTrade

__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_RATE",
    "IBConnectionRecord",
    "IBSimRecorder",
    "Server",
    "serve_ib",
]

#: The one account the fake TWS manages (a paper account id).
DEFAULT_ACCOUNT = "DU1234567"
#: Market model steps per second per connection. Each step becomes zero or
#: more messages for the requests that want it; 50 is a lively stock.
DEFAULT_RATE = 50.0
_UNSUPPORTED_FAULTS = frozenset(
    {FaultKind.CONNECTION_LIMIT, FaultKind.GAP, FaultKind.DUPLICATE, FaultKind.REORDER}
)
_DISCONNECTS = (trio.BrokenResourceError, trio.ClosedResourceError)


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


class IBSimRecorder(SimRecorder[IBConnectionRecord]):
    """Records every connection a :func:`serve_ib` server accepts.

    ``max_frames`` bounds the messages kept per connection (100 000: minutes
    of a test's traffic at the default rate; pass no recorder to benchmarks).
    """


@attrs.define(eq=False, kw_only=True)
class Server:
    """Shared state of one :func:`serve_ib` server."""

    model: MarketModel
    faults: FaultPlan
    #: Market steps per second per connection.
    rate: float | None
    #: ns since the epoch, for the timestamps TWS sends.
    wall_clock: Callable[[], int]
    recorder: IBSimRecorder | None
    account: str
    #: TCP connections accepted so far.
    accepted: int = attrs.field(default=0, init=False)
    #: Client ids of the API sessions open now (a second one is refused, error 326).
    client_ids: set[int] = attrs.field(init=False, factory=set)
    #: Every trade the market printed (what ``reqHistoricalTicks`` answers from).
    tape: TradeTape = attrs.field(init=False, factory=TradeTape)
    #: The faults of ``reqHistoricalTicks``, numbered across the server.
    history_faults: HistoryFaults = attrs.field(init=False)
    #: The market while no connection streams.
    off_air: OffAirMarket = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if self.recorder is not None:
            self.tape = self.recorder.tape
        self.history_faults = self.faults.for_history()
        self.off_air = OffAirMarket(
            self.model, rate=self.rate, wall_clock=self.wall_clock, print_trade=self.print_trade
        )

    def print_trade(self, trade: SimTrade) -> None:
        """Put a trade the market generated on the tape."""
        self.tape.record(trade)

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
            await Connection(self, transport, record).run()
        except* _DISCONNECTS as group:
            logger.debug("ib sim: connection %d lost: %r", record.number, group.exceptions[0])
        finally:
            await trio.aclose_forcefully(transport)


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

    ``reqHistoricalTicks`` (``TRADES``) is answered from every trade the
    market printed, including those printed while no client was connected
    (the market goes on at ``rate``), as ``historicalTicksLast``; the fault
    plan's historical faults apply to it (a 429 is a pacing violation and an
    error status is error 162; a slow answer; a truncated message).

    Raises ``ConfigurationError`` for a non-loopback ``host``, bad settings or
    a fault kind TWS has no equivalent for. Cancelling it stops the server and
    drops every connection.
    """
    _check_settings(host=host, rate=rate, account=account, faults=faults or FaultPlan())
    model = market(model, symbols, _DEFAULT_STOCKS, seed)
    server = Server(
        model=model,
        faults=faults if faults is not None else FaultPlan(),
        rate=rate,
        wall_clock=wall_clock,
        recorder=recorder,
        account=account,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.off_air.run)
        await listen(
            server.handle_stream,
            host=host,
            port=port,
            logger=logger,
            label="ib sim",
            task_status=task_status,
        )


def _check_settings(
    *, host: str, rate: float | None, account: str, faults: Iterable[Fault]
) -> None:
    check_host(host)
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
