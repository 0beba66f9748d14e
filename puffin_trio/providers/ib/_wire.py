"""What an IB request says on the wire: contracts, request encoders, the version range.

This module owns :class:`IBContract` (the instrument block of a request), the
encoders of every message :class:`~puffin_trio.providers.ib.IBProtocol` sends
(``API\\0`` prologue, ``startApi``, market data requests and their cancels),
and the constants they depend on. Requests are encoded exactly as ib_async
2.1.0 encodes them at server version 176. It must not decode anything or do
I/O.
"""

from __future__ import annotations

import attrs

from puffin_trio.errors import ConfigurationError
from puffin_trio.providers.ib._framing import encode_frame

__all__ = [
    "BAR_SECONDS",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_DEPTH_ROWS",
    "MAX_CLIENT_VERSION",
    "MAX_INT",
    "MIN_SERVER_VERSION",
    "PROLOGUE",
    "PROVIDER",
    "REQ_CURRENT_TIME",
    "IBContract",
    "message",
    "req_mkt_data",
    "req_mkt_depth",
    "req_real_time_bars",
    "req_tick_by_tick",
]

PROVIDER = "ib"

#: ib_async's default; see :class:`IBProvider` on choosing another.
DEFAULT_CLIENT_ID = 1


#: The version range we advertise, as ib_async 2.1.0 does (``v157..178``):
#: 157 is TWS/Gateway 972, the oldest ib_async accepts; 178 is the newest
#: layout ib_async (and this protocol) knows. Every request and message used
#: here has the same layout throughout this range.
MIN_SERVER_VERSION = 157
MAX_CLIENT_VERSION = 178
#: Depth rows per side. SMART depth returns what the venues offer, usually
#: 5-10 rows a side for a US stock; 10 takes all of that (and matches the
#: simulator's books) at no extra cost in market data lines.
DEFAULT_DEPTH_ROWS = 10
#: The only bar size ``reqRealTimeBars`` supports.
BAR_SECONDS = 5

MAX_INT = 2**31 - 1  # TWS is Java: ids are 32-bit signed ints


# --------------------------------------------------------------------------- contracts


def _wire_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.isascii() or "\0" in value:
        raise ConfigurationError(f"{PROVIDER}: {name} must be an ASCII string, not {value!r}")
    return value


@attrs.frozen
class IBContract:
    """The instrument a request asks for (the TWS contract block).

    ``IBContract("AAPL")`` is a US stock routed SMART in USD, which is how
    every subscribed symbol is sent unless :class:`IBProvider` is given a
    contract for it. ``con_id`` (IB's contract id; 0 = let TWS resolve the
    rest) and ``primary_exchange`` (e.g. ``"NASDAQ"``: settles an ambiguous
    symbol) are the fields worth setting; ``symbol`` is IB's spelling, which
    may differ from the name you subscribe with (``IBContract("BRK B")`` for
    ``books=["BRK.B"]``). Raises :class:`ConfigurationError` for a field that
    cannot travel on the wire.
    """

    symbol: str
    sec_type: str = "STK"
    exchange: str = "SMART"
    currency: str = "USD"
    primary_exchange: str = ""
    con_id: int = 0
    local_symbol: str = ""
    trading_class: str = ""

    def __attrs_post_init__(self) -> None:
        for name in ("sec_type", "exchange", "currency", "primary_exchange", "local_symbol"):
            _wire_text(name, getattr(self, name))
        _wire_text("trading_class", self.trading_class)
        if not _wire_text("symbol", self.symbol) and not self.con_id:
            raise ConfigurationError(f"{PROVIDER}: a contract needs a symbol or a con_id")
        con_id = self.con_id
        if isinstance(con_id, bool) or not isinstance(con_id, int) or not 0 <= con_id <= MAX_INT:
            raise ConfigurationError(f"{PROVIDER}: con_id must be an int >= 0, not {con_id!r}")

    def wire(self) -> str:
        """The 12 NUL-joined contract fields, in TWS order (no trailing NUL)."""
        return "\0".join(
            (
                str(self.con_id),
                self.symbol,
                self.sec_type,
                "",  # lastTradeDateOrContractMonth
                "0.0",  # strike (ib_async sends str(0.0))
                "",  # right
                "",  # multiplier
                self.exchange,
                self.primary_exchange,
                self.currency,
                self.local_symbol,
                self.trading_class,
            )
        )


# --------------------------------------------------------------------------- encoding


def message(*fields: str) -> bytes:
    """One length-prefixed TWS message: every field NUL-terminated."""
    return encode_frame(("\0".join(fields) + "\0").encode())


#: ``API\\0`` then the length-prefixed version range: the only unframed bytes.
PROLOGUE = b"API\0" + encode_frame(f"v{MIN_SERVER_VERSION}..{MAX_CLIENT_VERSION}".encode())
REQ_CURRENT_TIME = message("49", "1")


def req_mkt_data(req_id: int, contract: str) -> bytes:
    # 1 v11: reqId, contract, deltaNeutral=0, genericTickList, snapshot, regulatorySnapshot, options
    return message("1", "11", str(req_id), contract, "0", "", "0", "0", "")


def req_tick_by_tick(req_id: int, contract: str, tick_type: str) -> bytes:
    # 97 (no version): reqId, contract, tickType, numberOfTicks=0 (stream), ignoreSize=0
    return message("97", str(req_id), contract, tick_type, "0", "0")


def req_mkt_depth(req_id: int, contract: str, rows: int) -> bytes:
    # 10 v5: reqId, contract, numRows, isSmartDepth=1, mktDepthOptions
    return message("10", "5", str(req_id), contract, str(rows), "1", "")


def req_real_time_bars(req_id: int, contract: str) -> bytes:
    # 50 v3: reqId, contract, barSize=5, whatToShow, useRTH=0 (all hours), options
    return message("50", "3", str(req_id), contract, str(BAR_SECONDS), "TRADES", "0", "")
