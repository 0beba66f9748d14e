"""A protocol-faithful local TWS: the IB socket API server side, for tests and demos.

This package owns a fake Trader Workstation (the TWS API as
https://interactivebrokers.github.io/tws-api/ and ib_async describe it),
written independently of the client protocol in
:mod:`puffin_trio.providers.ib` (which it must not import) so the two
cross-check each other; the official ib_async client is tested against it
too. It must not listen on anything but loopback or log per message. Each
connection has a reader task (requests and replies) and a data pump; timing
uses trio's clock, message timestamps (Unix seconds, as TWS sends them) come
from ``wall_clock``. What it speaks, and how each fault of a
:class:`~puffin_trio.sim.faults.FaultPlan` looks on the TWS wire, is in
``docs/guide/simulators.rst``.

Its modules: ``_wire`` (framing, versions, error texts), ``_requests``
(per-request state and messages), ``_connection`` (one client) and
``_server`` (:func:`serve_ib`, the recorder). The data-message builders
(:func:`encode_message`, :func:`connection_time`, :func:`trade_tick`,
:func:`quote_ticks`) are public so that the benchmarks' blast server sends
exactly what the simulator sends.
"""

from puffin_trio.sim.ib._requests import quote_ticks, trade_tick
from puffin_trio.sim.ib._server import (
    DEFAULT_ACCOUNT,
    DEFAULT_RATE,
    IBConnectionRecord,
    IBSimRecorder,
    serve_ib,
)
from puffin_trio.sim.ib._wire import (
    ERROR_TEXTS,
    FIRST_CON_ID,
    SERVER_VERSION,
    connection_time,
    encode_message,
)

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
