"""Interactive Brokers TWS API: provider configuration and the sans-IO protocol.

This package owns :class:`IBProvider` (host, port, client id, channel mapping,
timing knobs) and :class:`IBProtocol` (one connection's wire protocol: the
``API\\0`` handshake and ``startApi``, market data requests and cancels, and
decoding TWS messages into normalised events and control items), plus the
pieces they are made of: :class:`IBContract` (what a request asks for) and
:class:`DepthRows` (IB's position-indexed depth rows -> price levels). The
wire protocol is the TWS API's (https://interactivebrokers.github.io/tws-api/);
requests are encoded exactly as ib_async 2.1.0 encodes them at server version
176, and the server versions 157..178 we advertise use the same layouts for
everything sent and decoded here.

Its modules are split by concern, as h11's are: ``_framing`` (the length
prefix), ``_wire`` (contracts and request encoders), ``_depth`` (depth rows),
``_errors`` (what TWS's error codes mean), ``_protocol`` (the state machine)
and ``_provider`` (configuration).

It must not do I/O, read a clock (``ts_recv`` is passed in) or log per
message. TWS is spoken natively: no asyncio, no ib_async at run time.

Channels, and the TWS request behind each (one request id per channel and
symbol, fresh on every (re)subscription):

* ``trades``: ``reqTickByTickData`` ``AllLast`` (every trade, odd lots and
  off-exchange prints included; ``trade_ticks="Last"`` for the trades that set
  the last price) -> :class:`~puffin_trio.events.Trade`, ``ts_event`` to the
  second (IB's resolution).
* ``quotes``: ``reqMktData`` by default. TWS sends the bid and the ask as
  separate ``tickPrice``/``tickSize`` messages; :class:`IBProtocol` keeps the
  latest of each side per request and emits one consistent
  :class:`~puffin_trio.events.Quote` (both sides' latest values) whenever
  either changes, from the moment both sides have been seen once. It uses a
  market data line (100 by default per account) per symbol, where
  tick-by-tick requests are limited to a handful per account (5 observed), so
  it scales to many symbols. ``quotes_via="tick_by_tick"`` uses
  ``reqTickByTickData BidAsk`` instead (every quote change, exchange second
  timestamps, but few symbols). ``reqMktData`` ticks carry no timestamp:
  ``ts_event`` is the receive time.
* ``books``: ``reqMktDepth`` with SMART depth (``depth_rows`` rows per side,
  aggregated across exchanges) -> :class:`~puffin_trio.events.OrderBookUpdate`
  price levels, see :class:`DepthRows`. The first update of every request is
  a ``snapshot=True`` holding the whole book, so a consumer's
  :class:`~puffin_trio.book.OrderBook` goes live and a resubscription replaces
  whatever it held; the following ones are deltas. Error 317 (depth reset)
  empties the rows and emits an empty snapshot at once.
* ``bars``: ``reqRealTimeBars`` (5-second ``TRADES`` bars, all hours, the only
  real-time bar size TWS offers) -> :class:`~puffin_trio.events.Bar` with
  ``interval_s=5``.

TWS confirms nothing: a request either streams or gets an ``error`` (4) with
its request id, so ``confirms_subscriptions`` is False. Error codes are mapped
in :meth:`IBProtocol._error` (see the tables :data:`REQUEST_FAILURES` and
:data:`NOTICES`). The data-stale signal is one flag computed from connectivity
(1100/2110 lost; 1101/1102 restored) and market data farms (2103 broken,
2104 OK, tracked per farm); a :class:`ProviderNotice` carries ``stale=`` only
when that flag changes, so the many "farm OK" notices at connect are quiet.
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
