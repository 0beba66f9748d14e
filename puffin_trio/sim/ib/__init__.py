"""A protocol-faithful local TWS: the IB socket API server side, for tests and demos.

This package owns a fake Trader Workstation (the TWS API as
https://interactivebrokers.github.io/tws-api/ and ib_async describe it),
written independently of the client protocol in
:mod:`puffin_trio.providers.ib` (which it must not import) so the two
cross-check each other; the official ib_async client is tested against it
too. It speaks:

* the handshake: ``API\\0``, the client's ``v<min>..<max>`` range (server
  version 176 is chosen when the range holds it, else the connection is
  closed), the ``[version, connection time]`` reply, then ``startApi`` (71)
  answered by ``managedAccounts`` (15), ``nextValidId`` (9) and the usual
  "farm connection is OK" notices (2104, 2106, 2158). A client id already in
  use on this server gets error 326 and the socket is closed, as TWS does;
* ib_async's startup requests, each with its end message (positions 61 ->
  62, open orders 5 -> 53, completed orders 99 -> 102, account updates 6 ->
  54, account updates multi 76 -> 74, executions 7 -> 55), and
  ``reqCurrentTime`` (49 -> 49);
* ``reqContractDetails`` (9) for the model's stocks (one ``contractDetails``
  (10) plus ``contractDetailsEnd`` (52)); every symbol the model does not
  know, in any request, gets error 200;
* market data from a :class:`~puffin_trio.sim.market.MarketModel`:
  ``reqMktData`` (1: ``tickReqParams`` 81, ``marketDataType`` 58, then
  ``tickPrice`` 1 / ``tickSize`` 2 for bid, ask and last, and the last trade
  time as ``tickString`` 46), ``reqTickByTickData`` (97: ``tickByTick`` 99 of
  type Last, AllLast, BidAsk or MidPoint), ``reqMktDepth`` (10: the top
  ``numRows`` levels as depth *rows*, ``updateMktDepthL2`` 13 for SMART depth
  else ``updateMktDepth`` 12, with TWS's position semantics: the book's
  changes are turned into row inserts, updates (including price changes at a
  row) and deletes), ``reqRealTimeBars`` (50: 5-second bars of the simulated
  trades) and their cancels (2, 98, 11, 51).

and injects the faults of a :class:`~puffin_trio.sim.faults.FaultPlan`. On the
TWS wire they look like this:

* ``REJECT_AUTH``: error ``code`` (default 326) answering ``startApi``, then
  the socket is closed (what TWS does for 326);
* ``DROP`` / ``CLOSE``: the socket is closed (TCP has no close code);
* ``SILENT``: no market data for ``duration`` seconds (not even the first
  rows or ticks of a request made meanwhile) while requests,
  ``reqCurrentTime`` included, are still answered;
* ``IGNORE_PINGS``: the server stops reading the socket, so ``reqCurrentTime``
  goes unanswered while data keeps flowing;
* ``CONNECTIVITY_LOSS``: error 1100, no data for ``duration`` seconds, then
  1102 (data maintained) or 1101 (data lost: every market data request of
  the connection is dropped and must be made again);
* ``FARM_STATUS``: one farm notice with ``code`` (2103 broken, 2104 OK, ...);
  data keeps flowing (combine with ``SILENT`` for an outage);
* ``MALFORMED``: one message of the payload (default: a ``tickPrice`` cut
  short); ``UNKNOWN_MESSAGE``: a message with id 999; ``SLOW``: a delay before
  every message.

``CONNECTION_LIMIT``, ``GAP``, ``DUPLICATE`` and ``REORDER`` have no TWS
equivalent (no such error, no sequence numbers) and are refused.

Its modules: ``_wire`` (framing, versions, error texts), ``_requests``
(per-request state and messages), ``_connection`` (one client) and
``_server`` (:func:`serve_ib`, the recorder).

It must not listen on anything but loopback or log per message. Each
connection has a reader task (requests and replies) and a data pump; timing
uses trio's clock, so tests under ``MockClock(autojump_threshold=0)`` run
instantly; message timestamps (Unix seconds, as TWS sends them) come from
``wall_clock``.
"""


from puffin_trio.sim.ib._server import (
    DEFAULT_ACCOUNT,
    DEFAULT_RATE,
    IBConnectionRecord,
    IBSimRecorder,
    serve_ib,
)
from puffin_trio.sim.ib._wire import ERROR_TEXTS, FIRST_CON_ID, SERVER_VERSION

__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_RATE",
    "ERROR_TEXTS",
    "FIRST_CON_ID",
    "SERVER_VERSION",
    "IBConnectionRecord",
    "IBSimRecorder",
    "serve_ib",
]
