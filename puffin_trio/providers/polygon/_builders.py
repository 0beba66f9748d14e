"""Building Polygon's trades and quotes: the positional builders both decoders share.

This module owns ``new_trade`` and ``new_quote``, made once with
:func:`~puffin_trio._event_builder.event_builder`. The per-message decoder
(``_protocol``) and the typed one (``_typed``) build with them, so that both
make the same events. It must not decode or check wire values.
"""

from __future__ import annotations

from puffin_trio._event_builder import event_builder
from puffin_trio.events import Quote, Trade

__all__ = ["new_quote", "new_trade"]

#: Trade(provider, symbol, ts_event, ts_recv, price, size, exchange, trade_id,
#: conditions, tape, seq)
new_trade = event_builder(
    Trade,
    "provider",
    "symbol",
    "ts_event",
    "ts_recv",
    "price",
    "size",
    "exchange",
    "trade_id",
    "conditions",
    "tape",
    "seq",
)
#: Quote(provider, symbol, ts_event, ts_recv, bid, ask, bid_size, ask_size,
#: bid_exchange, ask_exchange, conditions, tape, seq)
new_quote = event_builder(
    Quote,
    "provider",
    "symbol",
    "ts_event",
    "ts_recv",
    "bid",
    "ask",
    "bid_size",
    "ask_size",
    "bid_exchange",
    "ask_exchange",
    "conditions",
    "tape",
    "seq",
)
