"""The official massive SDK accepts the Polygon simulator and parses exactly what it sent.

Starts :func:`serve_polygon` in the test's trio loop (real clock: a subprocess
is involved), runs tests/sdk/massive_client.py with the SDK's
``WebSocketClient(feed="127.0.0.1:PORT", secure=False)`` pointed at it, and
compares every trade and quote the SDK delivered with the frames the
simulator's recorder kept.
"""

from __future__ import annotations

import json
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from puffin_trio.sim.polygon import PolygonSimRecorder, serve_polygon

pytest.importorskip("massive")

pytestmark = pytest.mark.sdk

SCRIPT = Path(__file__).parent / "sdk" / "massive_client.py"
#: Trades and quotes the SDK must receive.
COUNT = 15
#: The script's own deadline; the subprocess normally ends in about 1 s.
SCRIPT_TIMEOUT = 10.0


async def run_sdk(symbol: str) -> tuple[list[dict[str, Any]], PolygonSimRecorder]:
    """Serve ``symbol``, run the SDK script against it; return (items it printed, recorder)."""
    recorder = PolygonSimRecorder()
    # websockets honours proxy variables; loopback must never go through one.
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(serve_polygon, symbols=[symbol], rate=300.0, batch=5, recorder=recorder)
        )
        with trio.fail_after(SCRIPT_TIMEOUT + 5):
            result = await trio.run_process(
                [str(a) for a in (sys.executable, SCRIPT, port, symbol, COUNT, SCRIPT_TIMEOUT)],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=env,
            )
        nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    items = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert recorder.accepted == 1, "the massive client had to reconnect"
    return items, recorder


async def test_massive_client_streams_trades_and_quotes_exactly_as_sent() -> None:
    items, recorder = await run_sdk("AAPL")
    record = recorder.connections[0]
    assert record.path == "/stocks"
    assert record.received[0] == {"action": "auth", "params": "sim-key"}
    assert record.received[1]["action"] == "subscribe"
    assert sorted(record.received[1]["params"].split(",")) == ["Q.AAPL", "T.AAPL"]
    assert record.statuses()[:2] == [
        {"ev": "status", "status": "connected", "message": "Connected Successfully"},
        {"ev": "status", "status": "auth_success", "message": "authenticated"},
    ]

    delivered = [{k: v for k, v in item.items() if k != "kind"} for item in items]
    sent = record.data_messages()[: len(delivered)]
    # The SDK's models keep every field we send; odd-lot trades carry conditions.
    expected = [{**m, "c": m.get("c")} if m["ev"] == "T" else m for m in sent]
    assert delivered == expected
    assert sum(item["kind"] == "trade" for item in items) >= COUNT
    assert sum(item["kind"] == "quote" for item in items) >= COUNT
