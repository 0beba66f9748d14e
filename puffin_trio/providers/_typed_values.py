"""The trust boundary's checks as msgspec constraints, for the typed fast paths.

This module owns the constrained types that Alpaca's and Polygon's typed
decoders (``alpaca/_typed``, ``polygon/_typed``) share, each the check of
:mod:`puffin_trio.providers._values` that the per-message decoders make, and
the errors by which a typed decoder declines a frame. Provider-specific
bounds (Polygon's codes, tapes and millisecond range) stay with their
decoder. It must not decode, build events or do I/O.
"""

from __future__ import annotations

import sys
from typing import Annotated, Final

import msgspec
from msgspec import Meta

__all__ = ["DECLINED", "Int64", "Price", "Symbol"]

#: :func:`~puffin_trio.providers._values.price` and ``size``: a finite number
#: >= 0. A float field also takes a JSON integer and gives float(value), as
#: those do; ``le`` the largest finite double refuses infinity (and JSON's
#: ``1e999``); JSON has no NaN.
Price = Annotated[float, Meta(ge=0.0, le=sys.float_info.max)]
#: An integer inside int64, inside the range in which orjson reads an integer
#: as an int (past 2**64 it reads a float, which the per-message path refuses).
Int64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
#: :func:`~puffin_trio.providers._values.symbol_of`: a non-empty string.
Symbol = Annotated[str, Meta(min_length=1)]

#: Errors by which a typed decoder declines a frame: a msgspec error, a str
#: frame that is not UTF-8 (UnicodeEncodeError) or a value a reader the
#: decoder calls refuses (ValueError), nesting deeper than msgspec recurses.
DECLINED: Final = (msgspec.MsgspecError, ValueError, RecursionError)
