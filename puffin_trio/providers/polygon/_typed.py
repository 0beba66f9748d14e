"""The typed fast path of Polygon's stock firehose: trades and quotes parsed and checked in C.

This module owns :func:`typed_stock_frame`, which decodes a frame made only of
stock trades (``T``) and quotes (``Q``) with a msgspec decoder of typed
structs, whose constraints are the trust checks of the common message (the
inline tests of ``PolygonProtocol._trade``/``_quote``), and builds the same
events the per-message decoder builds. It only *declines*: any frame it is not
sure of (another event type, a status, a missing or extra field, a value out
of range, JSON that ``orjson`` would refuse) gives ``None`` and goes to the
per-message decoder, which keeps its exact behaviour. So it may be stricter
than that decoder, never looser, and what it returns equals what that decoder
returns (the differential property in ``tests/test_polygon_typed.py``). It
must not do I/O, log, or decide what a bad message becomes.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
from msgspec import Meta, Struct

from puffin_trio.events import Event
from puffin_trio.providers._base import Control, Frame
from puffin_trio.providers._typed_values import DECLINED, Int64, Price, Symbol
from puffin_trio.providers.polygon._builders import new_quote, new_trade
from puffin_trio.providers.polygon._fields import (
    CODE_TEXT,
    CODE_TUPLES,
    SANE_TS_MS,
    TAPE_LETTERS,
)
from puffin_trio.providers.polygon._wire import NS_PER_MS, PROVIDER

__all__ = ["typed_stock_frame"]

# Polygon's own constraints, each the check the per-message decoder makes (the
# shared ones, prices, int64 and symbols, are in ``providers._typed_values``).
_Code = Annotated[int, Meta(ge=0, lt=len(CODE_TEXT))]
_Ms = Annotated[int, Meta(ge=SANE_TS_MS[0], lt=SANE_TS_MS[1])]
_Tape = Annotated[int, Meta(ge=1, lt=len(TAPE_LETTERS))]


# forbid_unknown_fields: msgspec skips an unknown field without the checks
# orjson makes (UTF-8, infinite numbers), so every field Polygon sends is
# declared, and any other declines. The fields the events do not use (``trfi``,
# ``trft``, a quote's ``i``) are typed all the same, for that reason.
class _T(Struct, tag_field="ev", tag="T", forbid_unknown_fields=True, gc=False):
    sym: Symbol
    x: _Code
    i: str
    z: _Tape
    p: Price
    s: Price
    t: _Ms
    q: Int64
    c: list[_Code] | None = None
    #: Decimal size text (fractional shares): only its absence or null is typed here.
    ds: None = None
    trfi: Int64 | None = None
    trft: Int64 | None = None


class _Q(Struct, tag_field="ev", tag="Q", forbid_unknown_fields=True, gc=False):
    sym: Symbol
    bx: _Code
    bp: Price
    bs: Price
    ax: _Code
    ap: Price
    as_: Price = msgspec.field(name="as")
    t: _Ms
    z: _Tape
    q: Int64
    c: _Code | None = None
    i: list[Int64] | None = None


_DECODER: Final = msgspec.json.Decoder(list[_T | _Q])


def typed_stock_frame(frame: Frame, ts_recv: int) -> list[Event | Control] | None:
    """The events of a frame of stock trades and quotes; ``None`` if declined (see the module)."""
    try:
        messages = _DECODER.decode(frame)
    except DECLINED:
        return None
    out: list[Event | Control] = []
    append = out.append
    for m in messages:
        if isinstance(m, _T):
            conditions = m.c
            append(
                new_trade(
                    PROVIDER,
                    m.sym,
                    m.t * NS_PER_MS,
                    ts_recv,
                    m.p,
                    m.s,
                    CODE_TEXT[m.x],
                    m.i,
                    () if conditions is None else tuple([CODE_TEXT[v] for v in conditions]),
                    TAPE_LETTERS[m.z],
                    m.q,
                )
            )
        else:
            condition = m.c
            append(
                new_quote(
                    PROVIDER,
                    m.sym,
                    m.t * NS_PER_MS,
                    ts_recv,
                    m.bp,
                    m.ap,
                    m.bs,
                    m.as_,
                    CODE_TEXT[m.bx],
                    CODE_TEXT[m.ax],
                    () if condition is None else CODE_TUPLES[condition],
                    TAPE_LETTERS[m.z],
                    m.q,
                )
            )
    return out
