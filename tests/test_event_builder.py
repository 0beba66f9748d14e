"""The event builders (puffin_trio._event_builder): what the decoders build is what the
constructor builds, and a class the builder could not build faithfully is refused.

The builders under test are the ones the provider protocols use on their hot path.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any

import attrs
import pytest

from puffin_trio._event_builder import event_builder
from puffin_trio.events import OrderBookUpdate, Quote, Trade
from puffin_trio.providers.alpaca import _builders as alpaca_builders
from puffin_trio.providers.alpaca import _protocol as alpaca


@pytest.mark.parametrize(
    ("build", "cls", "values"),
    [
        (
            alpaca_builders.new_trade,
            Trade,
            {
                "provider": "alpaca",
                "symbol": "AAPL",
                "ts_event": 1,
                "ts_recv": 2,
                "price": 3.0,
                "size": 4.0,
                "exchange": "V",
                "trade_id": "5",
                "conditions": ("@",),
                "tape": "C",
            },
        ),
        (
            alpaca_builders.new_quote,
            Quote,
            {
                "provider": "alpaca",
                "symbol": "AAPL",
                "ts_event": 1,
                "ts_recv": 2,
                "bid": 3.0,
                "ask": 4.0,
                "bid_size": 5.0,
                "ask_size": 6.0,
                "bid_exchange": "V",
                "ask_exchange": "Q",
                "conditions": ("R",),
                "tape": "C",
            },
        ),
        (
            alpaca._new_book,
            OrderBookUpdate,
            {
                "provider": "alpaca",
                "symbol": "BTC/USD",
                "ts_event": 1,
                "ts_recv": 2,
                "bids": ((1.0, 2.0),),
                "asks": ((3.0, 4.0),),
                "snapshot": True,
            },
        ),
    ],
    ids=["trade", "quote", "book"],
)
def test_slot_builders_build_what_the_constructor_builds(
    build: Any, cls: type, values: dict[str, Any]
) -> None:
    built = build(*values.values())
    assert type(built) is cls
    assert built == cls(**values)
    assert attrs.asdict(built) == attrs.asdict(cls(**values))


def test_event_builder_refuses_classes_it_cannot_build_faithfully() -> None:
    @attrs.frozen(weakref_slot=False)
    class Validated:
        x: int = attrs.field(validator=attrs.validators.instance_of(int))

    @attrs.frozen(weakref_slot=False)
    class Factoried:
        x: int
        y: list[int] = attrs.Factory(list)

    @attrs.define(slots=False)
    class Unslotted:
        x: int

    @attrs.frozen
    class WeaklyReferable:
        x: int

    @attrs.frozen(weakref_slot=False, cache_hash=True)
    class HashCached:
        x: int

    with pytest.raises(TypeError, match="validator"):
        event_builder(Validated, "x")
    with pytest.raises(TypeError, match="not a slotted class"):
        event_builder(Unslotted, "x")
    with pytest.raises(TypeError, match="weakref_slot=False"):
        event_builder(WeaklyReferable, "x")
    with pytest.raises(TypeError, match="not fields"):
        event_builder(HashCached, "x")
    with pytest.raises(TypeError, match="plain default"):
        event_builder(Factoried, "x")
    with pytest.raises(TypeError, match="no field"):
        event_builder(Trade, "price", "colour")


def test_built_events_are_frozen_and_behave_like_constructed_ones() -> None:
    built = alpaca_builders.new_trade("alpaca", "AAPL", 1, 2, 3.0, 4.0, "V", "5", ("@",), "C")
    made = Trade(
        provider="alpaca",
        symbol="AAPL",
        ts_event=1,
        ts_recv=2,
        price=3.0,
        size=4.0,
        exchange="V",
        trade_id="5",
        conditions=("@",),
        tape="C",
    )
    assert type(built) is Trade
    assert built == made and hash(built) == hash(made) and repr(built) == repr(made)
    assert attrs.evolve(built, price=5.0) == attrs.evolve(made, price=5.0)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        built.price = 5.0  # type: ignore[misc]
    assert built.seq is None and built.notional == 12.0
    for copied in (pickle.loads(pickle.dumps(built)), copy.copy(built), copy.deepcopy(built)):
        assert type(copied) is Trade and copied == made
