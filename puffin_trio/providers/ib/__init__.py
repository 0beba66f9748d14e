"""Interactive Brokers TWS API: provider configuration and the sans-IO protocol.

This package owns :class:`IBProvider` (host, port, client id, channel mapping,
timing knobs) and :class:`IBProtocol` (one connection's wire protocol: the
``API\\0`` handshake and ``startApi``, market data requests and cancels, and
decoding TWS messages into normalised events and control items), plus the
pieces they are made of: :class:`IBContract` (what a request asks for) and
:class:`DepthRows` (IB's position-indexed depth rows -> price levels).
Requests are encoded exactly as ib_async 2.1.0 encodes them at server version
176. It must not do I/O, read a clock (``ts_recv`` is passed in) or log per
message; TWS is spoken natively, with no asyncio and no ib_async at run time.

Its modules are split by concern, as h11's are: ``_framing`` (the length
prefix), ``_wire`` (contracts and request encoders), ``_depth`` (depth rows),
``_errors`` (what TWS's error codes mean), ``_protocol`` (the state machine)
and ``_provider`` (configuration). The request behind each channel, the error
codes, the data-stale signal and the hot path are described in
``docs/guide/ib.rst``.
"""

from puffin_trio.providers.ib._depth import DepthRows
from puffin_trio.providers.ib._errors import NOTICES, REQUEST_FAILURES
from puffin_trio.providers.ib._protocol import IBProtocol
from puffin_trio.providers.ib._provider import (
    DEFAULT_HOST,
    DEFAULT_MAX_MESSAGES_PER_SECOND,
    DEFAULT_PORT,
    PORTS,
    IBProvider,
)
from puffin_trio.providers.ib._wire import (
    BAR_SECONDS,
    DEFAULT_DEPTH_ROWS,
    MAX_CLIENT_VERSION,
    MIN_SERVER_VERSION,
    PROLOGUE,
    IBContract,
)

__all__ = [
    "BAR_SECONDS",
    "DEFAULT_DEPTH_ROWS",
    "DEFAULT_HOST",
    "DEFAULT_MAX_MESSAGES_PER_SECOND",
    "DEFAULT_PORT",
    "MAX_CLIENT_VERSION",
    "MIN_SERVER_VERSION",
    "NOTICES",
    "PORTS",
    "PROLOGUE",
    "REQUEST_FAILURES",
    "DepthRows",
    "IBContract",
    "IBProtocol",
    "IBProvider",
]
