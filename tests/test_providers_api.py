"""The providers' public surface: the sans-IO protocols, driven with no socket at all.

``puffin_trio.providers`` exports each provider's protocol and every item a
protocol's ``receive`` returns, as h11 exports its ``Connection`` and events:
users drive them with their own I/O, fuzzers and outside tests with bytes.
"""

from __future__ import annotations

import orjson
import pytest

import puffin_trio.providers as providers
from puffin_trio.events import Trade
from puffin_trio.providers import (
    AlpacaProtocol,
    AlpacaProvider,
    Authenticated,
    Connected,
    IBProtocol,
    IBProvider,
    Malformed,
    PolygonProtocol,
    PolygonProvider,
    ProviderProtocol,
    StrictPolygonProtocol,
    SubscriptionAck,
    UnknownMessage,
)

TS_RECV = 1_700_000_000_000_000_000


def test_the_protocols_and_their_items_are_importable_from_the_package() -> None:
    for name in (
        "AlpacaProtocol",
        "PolygonProtocol",
        "IBProtocol",
        "Malformed",
        "UnknownMessage",
        "Connected",
        "Authenticated",
        "SubscriptionAck",
        "HeartbeatReply",
        "ProviderNotice",
        "ProviderFailure",
        "Control",
    ):
        assert name in providers.__all__
        assert getattr(providers, name) is not None


@pytest.mark.parametrize(
    ("provider", "protocol_class"),
    [
        (AlpacaProvider(key="k", secret="s"), AlpacaProtocol),
        (PolygonProvider(key="k"), PolygonProtocol),
        (PolygonProvider(key="k", sequence="strict"), StrictPolygonProtocol),
        (IBProvider(port=7497), IBProtocol),
    ],
    ids=["alpaca", "polygon", "polygon-strict", "ib"],
)
def test_each_provider_makes_a_fresh_protocol_of_its_own_kind(
    provider: AlpacaProvider | PolygonProvider | IBProvider, protocol_class: type
) -> None:
    first, second = provider.protocol(), provider.protocol()
    assert type(first) is protocol_class
    assert isinstance(first, ProviderProtocol)
    assert first is not second


def test_an_alpaca_connection_can_be_driven_with_plain_bytes() -> None:
    """The whole handshake, a subscription and data, with no socket and no trio."""
    proto = AlpacaProvider(key="k", secret="s", encoding="json").protocol()
    assert proto.data_to_send() == []
    hello = proto.receive('[{"T":"success","msg":"connected"}]', TS_RECV)
    assert hello == [Connected("connected")]
    assert orjson.loads(proto.data_to_send()[0]) == {"action": "auth", "key": "k", "secret": "s"}
    assert proto.receive('[{"T":"success","msg":"authenticated"}]', TS_RECV) == [
        Authenticated("authenticated")
    ]
    proto.subscribe({"trades": ["AAPL"]})
    assert orjson.loads(proto.data_to_send()[0]) == {"action": "subscribe", "trades": ["AAPL"]}
    ack, trade, junk, unknown = proto.receive(
        '[{"T":"subscription","trades":["AAPL"]},'
        '{"T":"t","S":"AAPL","p":1.5,"s":2,"t":"2023-11-14T22:13:20Z"},'
        '{"T":"t","S":"AAPL"},{"T":"zz"}]',
        TS_RECV,
    )
    assert ack == SubscriptionAck({"trades": frozenset({"AAPL"})}, complete=True)
    assert isinstance(trade, Trade) and (trade.price, trade.size) == (1.5, 2.0)
    assert isinstance(junk, Malformed)
    assert unknown == UnknownMessage("zz")


@pytest.mark.parametrize(
    "proto",
    [
        AlpacaProtocol(key="k", secret="s"),
        PolygonProtocol(key="k"),
        StrictPolygonProtocol(key="k"),
    ],
    ids=["alpaca", "polygon", "polygon-strict"],
)
def test_a_protocol_that_declares_slots_has_no_instance_dict(proto: ProviderProtocol) -> None:
    """``__slots__`` take effect: the base declares none of its own, so no ``__dict__``."""
    assert not hasattr(proto, "__dict__")
    with pytest.raises(AttributeError):
        proto.unexpected = 1  # type: ignore[attr-defined]
