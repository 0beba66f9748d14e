"""The typed fast path of Alpaca's JSON stock stream: trades and quotes parsed and checked in C.

This module owns :func:`typed_json_stock_frame`, which decodes a JSON frame
made only of stock trades (``t``) and quotes (``q``) with a msgspec decoder of
typed structs, whose constraints are the trust checks of
``AlpacaProtocol._trade``/``_quote``, reads the timestamps with the protocol's
own reader (:func:`~puffin_trio.providers.alpaca._timestamps.json_event_ns`:
msgspec's datetime would drop the nanoseconds), and builds the same events.
It only *declines*: any frame it is not sure of (another message type, a
control message, a missing or extra field, a value out of range or of
another type, JSON ``orjson`` would refuse) gives ``None`` and goes to the
per-message decoder, which keeps its exact behaviour. So it may be stricter
than that decoder, never looser, and what it returns equals what that decoder
returns (the differential property in ``tests/test_alpaca_typed.py``). It
must not do I/O, log, or decide what a bad message becomes.
"""

from __future__ import annotations

from typing import Final

import msgspec
from msgspec import Struct

from puffin_trio.events import Event
from puffin_trio.providers._base import Control, Frame
from puffin_trio.providers._typed_values import DECLINED, Int64, Price, Symbol
from puffin_trio.providers.alpaca._builders import new_quote, new_trade
from puffin_trio.providers.alpaca._timestamps import json_event_ns
from puffin_trio.providers.alpaca._wire import PROVIDER

__all__ = ["typed_json_stock_frame"]

# forbid_unknown_fields: msgspec skips an unknown field without the checks
# orjson makes (UTF-8, infinite numbers), so the fields Alpaca sends for a
# stock trade or quote are declared and any other declines (a crypto trade's
# ``tks`` among them: crypto stays on the per-message path).
class _T(Struct, tag_field="T", tag="t", forbid_unknown_fields=True, gc=False):
    S: Symbol
    t: str
    p: Price
    s: Price
    x: str = ""
    #: An integer id past int64 declines: orjson reads it as a float past 2**64,
    #: which ident() refuses.
    i: Int64 | str | None = None
    c: list[str] | str | None = None
    z: str = ""


class _Q(Struct, tag_field="T", tag="q", forbid_unknown_fields=True, gc=False):
    S: Symbol
    t: str
    bp: Price
    ap: Price
    bs: Price
    as_: Price = msgspec.field(name="as")
    bx: str = ""
    ax: str = ""
    c: list[str] | str | None = None
    z: str = ""


_DECODER: Final = msgspec.json.Decoder(list[_T | _Q])


def _texts(value: list[str] | str | None) -> tuple[str, ...]:
    """What :func:`~puffin_trio.providers._values.texts` gives for an already typed value."""
    if type(value) is list:
        return tuple(value)
    return () if value is None else (value,)  # type: ignore[return-value]


def typed_json_stock_frame(frame: Frame, ts_recv: int) -> list[Event | Control] | None:
    """The events of a JSON frame of stock trades and quotes; ``None`` if declined."""
    try:
        messages = _DECODER.decode(frame)
        out: list[Event | Control] = []
        append = out.append
        for m in messages:
            if isinstance(m, _T):
                trade_id = m.i
                if type(trade_id) is int:
                    trade_id = str(trade_id)
                append(
                    new_trade(
                        PROVIDER,
                        m.S,
                        json_event_ns(m.t),
                        ts_recv,
                        m.p,
                        m.s,
                        m.x,
                        "" if trade_id is None else trade_id,
                        _texts(m.c),
                        m.z,
                    )
                )
            else:
                append(
                    new_quote(
                        PROVIDER,
                        m.S,
                        json_event_ns(m.t),
                        ts_recv,
                        m.bp,
                        m.ap,
                        m.bs,
                        m.as_,
                        m.bx,
                        m.ax,
                        _texts(m.c),
                        m.z,
                    )
                )
    except DECLINED:  # json_event_ns refuses a timestamp with ValueError
        return None
    return out
