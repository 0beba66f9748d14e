"""Shared test configuration: Hypothesis profiles, and the WebSocket transport fixture.

``ci`` (the default) is sized so the whole suite runs in a few minutes on a
2-core machine; ``deep`` (``HYPOTHESIS_PROFILE=deep``) runs 10x the examples
for long runs. ``ws_transport`` runs a test once per WebSocket transport.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from puffin_trio.transports.ws import WS_TRANSPORTS, WsTransportName

from ._support import using_transport

settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=False,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "deep",
    max_examples=1000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(params=WS_TRANSPORTS)
def ws_transport(request: pytest.FixtureRequest) -> Iterator[WsTransportName]:
    """Each WebSocket transport in turn: the test runs once on websockets, once on
    trio-websocket. Providers built with ``tests._support`` helpers use it."""
    name: WsTransportName = request.param
    with using_transport(name):
        yield name
