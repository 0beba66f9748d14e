"""Protocol-faithful local servers for the providers, driven by a seeded market.

This package owns the simulators used by the tests, the benchmarks and
``puffin-trio demo``: a provider-neutral :class:`MarketModel` (what the market
does), a provider-neutral :class:`FaultPlan` (what goes wrong, and when) and
one ``serve_*`` function per provider that speaks its wire protocol on
loopback, and its historical trades API (plain HTTP on the same port for
Alpaca and Polygon, ``reqHistoricalTicks`` for IB) from every trade its market
printed. Each ``serve_*`` is started with ``nursery.start`` and reports the
bound port.

It must not import the client side (:mod:`puffin_trio.providers`): the
simulators encode the wire formats independently so the two cross-check each
other.
"""

from puffin_trio.sim._tape import Printed, TradeTape
from puffin_trio.sim.alpaca import AlpacaConnectionRecord, AlpacaSimRecorder, serve_alpaca
from puffin_trio.sim.faults import (
    Fault,
    FaultKind,
    FaultPlan,
    FaultSchedule,
    HistoryFaults,
    PausableStream,
)
from puffin_trio.sim.ib import IBConnectionRecord, IBSimRecorder, serve_ib
from puffin_trio.sim.market import MarketModel, SimBook, SimQuote, SimTick, SimTrade
from puffin_trio.sim.polygon import PolygonConnectionRecord, PolygonSimRecorder, serve_polygon

__all__ = [
    "AlpacaConnectionRecord",
    "AlpacaSimRecorder",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "FaultSchedule",
    "HistoryFaults",
    "IBConnectionRecord",
    "IBSimRecorder",
    "MarketModel",
    "PausableStream",
    "PolygonConnectionRecord",
    "PolygonSimRecorder",
    "Printed",
    "SimBook",
    "SimQuote",
    "SimTick",
    "SimTrade",
    "TradeTape",
    "serve_alpaca",
    "serve_ib",
    "serve_polygon",
]
