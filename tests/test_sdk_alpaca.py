"""The official alpaca-py SDK accepts the Alpaca simulator and parses exactly what it sent.

Each test starts :func:`serve_alpaca` in the test's trio loop (real clock: a
subprocess is involved), runs tests/sdk/alpaca_client.py with alpaca-py's
``StockDataStream``/``CryptoDataStream`` pointed at it, and compares every
item the SDK delivered with the frames the simulator's recorder kept.

The simulator's wall clock runs 120x fast so a minute bar arrives within a
second of real time.
"""

from __future__ import annotations

import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from puffin_trio.sim import AlpacaSimRecorder, serve_alpaca

pytest.importorskip("alpaca.data.live")

pytestmark = pytest.mark.sdk

SCRIPT = Path(__file__).parent / "sdk" / "alpaca_client.py"
#: Items of each kind the SDK must receive.
COUNT = 15
#: The script's own watchdog; the subprocess normally ends in about 2 s.
SCRIPT_TIMEOUT = 12.0
#: How much faster than real time the simulator's wall clock runs.
SPEEDUP = 120


def fast_wall_clock() -> Any:
    start = time.time_ns()
    return lambda: start + (time.time_ns() - start) * SPEEDUP


async def run_sdk(kind: str, symbol: str) -> tuple[list[dict[str, Any]], AlpacaSimRecorder]:
    """Serve ``symbol``, run the SDK script against it, return (items it printed, recorder)."""
    recorder = AlpacaSimRecorder()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(
                serve_alpaca,
                symbols=[symbol],
                rate=300.0,
                batch=5,
                recorder=recorder,
                wall_clock=fast_wall_clock(),
            )
        )
        with trio.fail_after(SCRIPT_TIMEOUT + 5):
            result = await trio.run_process(
                [
                    str(a)
                    for a in (sys.executable, SCRIPT, port, kind, symbol, COUNT, SCRIPT_TIMEOUT)
                ],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    items = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert recorder.accepted == 1, "alpaca-py had to reconnect"
    return items, recorder


def us(message: dict[str, Any]) -> int:
    """A sent message's msgpack Timestamp, truncated to microseconds like the SDK's datetime."""
    nanos: int = message["t"].to_unix_nano()
    return nanos // 1000


def received(items: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    got = [{k: v for k, v in item.items() if k != "kind"} for item in items if item["kind"] == kind]
    assert got, f"alpaca-py delivered no {kind}"
    return got


def sent(recorder: AlpacaSimRecorder, wire_type: str) -> list[dict[str, Any]]:
    return [m for m in recorder.connections[0].data_messages() if m["T"] == wire_type]


async def test_stock_stream_trades_quotes_and_bars_arrive_as_sent() -> None:
    items, recorder = await run_sdk("stock", "AAPL")
    record = recorder.connections[0]
    assert record.msgpack, "alpaca-py asks for msgpack"
    assert record.path == "/"
    assert [m["action"] for m in record.received[:2]] == ["auth", "subscribe"]
    assert record.received[1] == {
        "trades": ["AAPL"],
        "quotes": ["AAPL"],
        "bars": ["AAPL"],
        "action": "subscribe",
    }

    trades = received(items, "trade")
    assert trades == [
        {
            "symbol": "AAPL", "id": m["i"], "price": m["p"], "size": m["s"], "exchange": m["x"],
            "conditions": list(m["c"]), "tape": m["z"], "ts_us": us(m),
        }
        for m in sent(recorder, "t")[: len(trades)]
    ]  # fmt: skip
    quotes = received(items, "quote")
    assert quotes == [
        {
            "symbol": "AAPL", "bid": m["bp"], "bid_size": m["bs"], "ask": m["ap"],
            "ask_size": m["as"], "ts_us": us(m),
        }
        for m in sent(recorder, "q")[: len(quotes)]
    ]  # fmt: skip
    bars = received(items, "bar")
    assert bars == [
        {
            "symbol": "AAPL", "open": m["o"], "high": m["h"], "low": m["l"], "close": m["c"],
            "volume": m["v"], "trade_count": m["n"], "vwap": m["vw"], "ts_us": us(m),
        }
        for m in sent(recorder, "b")[: len(bars)]
    ]  # fmt: skip


async def test_crypto_stream_trades_quotes_bars_and_orderbooks_arrive_as_sent() -> None:
    items, recorder = await run_sdk("crypto", "BTC/USD")
    assert recorder.connections[0].received[1]["orderbooks"] == ["BTC/USD"]

    trades = received(items, "trade")
    assert trades == [
        {
            "symbol": "BTC/USD", "id": m["i"], "price": m["p"], "size": m["s"],
            "exchange": None, "conditions": None, "tape": None, "ts_us": us(m),
        }
        for m in sent(recorder, "t")[: len(trades)]
    ]  # fmt: skip
    quotes = received(items, "quote")
    assert quotes == [
        {
            "symbol": "BTC/USD", "bid": m["bp"], "bid_size": m["bs"], "ask": m["ap"],
            "ask_size": m["as"], "ts_us": us(m),
        }
        for m in sent(recorder, "q")[: len(quotes)]
    ]  # fmt: skip
    books = received(items, "orderbook")
    assert books[0]["reset"] is True
    assert books == [
        {
            "symbol": "BTC/USD", "reset": m.get("r", False),
            "bids": [[level["p"], level["s"]] for level in m["b"]],
            "asks": [[level["p"], level["s"]] for level in m["a"]], "ts_us": us(m),
        }
        for m in sent(recorder, "o")[: len(books)]
    ]  # fmt: skip
    assert received(items, "bar")[0]["volume"] == sent(recorder, "b")[0]["v"]
