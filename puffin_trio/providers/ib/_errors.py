"""What TWS's error codes mean to us: a refused request, a notice, or data going stale.

This module owns the tables :class:`~puffin_trio.providers.ib.IBProtocol`
reads when TWS sends an ``error`` (4) message. It must not act on them: the
protocol turns a code into a control item, the session acts.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["BARS_BUSTED", "NOTICES", "REQUEST_FAILURES"]

#: Errors that refuse one request: that subscription is dropped (the same
#: request would fail the same way after a reconnect). Any other code below
#: 2000 or from 10000 up that names an open request ends it too (IB's
#: convention: an error with a request id means the request failed); codes
#: 2000-2999 are warnings.
REQUEST_FAILURES: Mapping[int, str] = {
    101: "the account's market data lines are used up (100 by default); subscribe to fewer",
    102: "TWS says this request id is already in use",
    200: "no security definition: check the symbol, or give IBProvider a contract for it",
    309: "too many market depth subscriptions (TWS allows 3 by default)",
    322: "TWS refused the request (a request limit, e.g. tick-by-tick, was reached)",
    354: (
        "the account has no market data subscription for this instrument (retrying cannot "
        "help; market_data_type=3 asks for delayed data instead)"
    ),
    10089: "the instrument needs an additional market data subscription for API access",
    10168: "no market data subscription, and delayed data is not enabled",
    10189: "no permission for tick-by-tick data of this instrument",
    10190: "too many tick-by-tick subscriptions (IB allows only a few per account)",
}
#: Codes that are only reported (a ProviderNotice), even with a request id:
#:
#: * 100 pacing violation: we pace at 45/s below TWS's 50/s, so this means
#:   another client shares the budget; TWS may follow with a disconnect, which
#:   the supervisor handles.
#: * 300/310 cancel of a request TWS no longer knows (after 1101 it dropped
#:   them): harmless.
#: * 316 depth halted: the rows stay, and data resumes or the health check acts.
#: * 317 depth reset: the rows are emptied (an empty snapshot is emitted).
#: * 1300 TWS's API port was reset; the close that follows reconnects us.
#: * 10090 part of the requested market data is not subscribed; IB's text
#:   goes on "subscription-independent ticks are still active": the request
#:   stays open and delivers what the account is entitled to (it arrives, for
#:   example, on an option whose underlying index is not subscribed).
#: * 10167 delayed data is shown instead: data flows, just late.
#: * 10197 a competing live session (the same login on another device) takes
#:   the data; no data flows until it ends. The subscriptions are kept: the
#:   health check resubscribes and, if still silent, reconnects, which is
#:   what brings data back once the other session is closed.
NOTICES: Mapping[int, str] = {
    100: "TWS reports too many messages per second (is another client using this TWS?)",
    300: "TWS could not find the request to cancel",
    310: "TWS could not find the depth request to cancel",
    316: "market depth data halted",
    317: "market depth data reset: the book was emptied",
    1300: "TWS reset its API port; this connection is being dropped",
    10090: "part of the data needs a subscription the account lacks; the rest keeps flowing",
    10167: "market data is not subscribed; TWS shows delayed data",
    10197: "no market data while a competing live session is open (same login elsewhere)",
}
DUPLICATE_CLIENT_ID = 326
#: Connectivity between TWS and IB lost / restored (data lost / kept).
LOST = frozenset({1100, 2110})
RESTORED_DATA_LOST = 1101
RESTORED_DATA_KEPT = 1102
FARM_BROKEN = 2103
FARM_OK = 2104
DEPTH_RESET = 317
#: "Bust event occurred, current subscription is deactivated. Please resubscribe
#: real-time bars immediately": the request is over and must be made again.
BARS_BUSTED = 10225
