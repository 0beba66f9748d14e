"""Run the official alpaca-py data stream against a local simulator; print what it receives.

Usage::

    python alpaca_client.py PORT {stock|crypto} SYMBOL COUNT TIMEOUT

Connects ``StockDataStream`` or ``CryptoDataStream`` with
``url_override="ws://127.0.0.1:PORT"``, subscribes ``SYMBOL`` to trades,
quotes and bars (and order books on crypto), and prints one JSON object per
line for every item alpaca-py hands to a handler, parsed into its pydantic
models (``raw_data=False``), so a field the SDK cannot parse fails here.
Timestamps are printed as integer microseconds since the epoch (what the
SDK's datetimes keep).

Stops with ``stop_ws()`` once it has ``COUNT`` trades, quotes and order books
(crypto) and one bar; a watchdog calls ``stop()`` after ``TIMEOUT`` seconds.
Exit status 0 when everything arrived, 1 otherwise. It only uses the public
stream API and is run by tests/test_sdk_alpaca.py in a subprocess.
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from alpaca.data.live import CryptoDataStream, StockDataStream
from alpaca.data.models import Bar, Orderbook, Quote, Trade

KEY = "sim-key"
SECRET = "sim-secret"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(microseconds=1)


def plain(value: Any) -> Any:
    """An SDK enum (e.g. ``Exchange``) as its wire value."""
    return getattr(value, "value", value)


def main() -> int:
    port, kind, symbol, count, timeout = sys.argv[1:6]
    wanted = int(count)
    crypto = kind == "crypto"
    url = f"ws://127.0.0.1:{port}"
    stream: StockDataStream | CryptoDataStream
    if crypto:
        stream = CryptoDataStream(api_key=KEY, secret_key=SECRET, url_override=url)
    else:
        stream = StockDataStream(api_key=KEY, secret_key=SECRET, url_override=url)
    seen = {"trade": 0, "quote": 0, "orderbook": 0 if crypto else wanted, "bar": 0}
    goal = {"trade": wanted, "quote": wanted, "orderbook": wanted, "bar": 1}

    async def emit(item: dict[str, Any]) -> None:
        print(json.dumps(item), flush=True)
        seen[item["kind"]] += 1
        if all(seen[k] >= goal[k] for k in seen):
            await stream.stop_ws()

    async def on_trade(t: Trade | dict[Any, Any]) -> None:
        assert isinstance(t, Trade), "raw_data=False must give parsed models"
        await emit(
            {
                "kind": "trade", "symbol": t.symbol, "id": t.id, "price": t.price,
                "size": t.size, "exchange": plain(t.exchange), "conditions": t.conditions,
                "tape": t.tape, "ts_us": micros(t.timestamp),
            }
        )  # fmt: skip

    async def on_quote(q: Quote | dict[Any, Any]) -> None:
        assert isinstance(q, Quote), "raw_data=False must give parsed models"
        await emit(
            {
                "kind": "quote", "symbol": q.symbol, "bid": q.bid_price, "bid_size": q.bid_size,
                "ask": q.ask_price, "ask_size": q.ask_size, "ts_us": micros(q.timestamp),
            }
        )  # fmt: skip

    async def on_bar(b: Bar | dict[Any, Any]) -> None:
        assert isinstance(b, Bar), "raw_data=False must give parsed models"
        await emit(
            {
                "kind": "bar", "symbol": b.symbol, "open": b.open, "high": b.high, "low": b.low,
                "close": b.close, "volume": b.volume, "trade_count": b.trade_count,
                "vwap": b.vwap, "ts_us": micros(b.timestamp),
            }
        )  # fmt: skip

    async def on_orderbook(o: Orderbook | dict[Any, Any]) -> None:
        assert isinstance(o, Orderbook), "raw_data=False must give parsed models"
        await emit(
            {
                "kind": "orderbook", "symbol": o.symbol, "reset": o.reset,
                "bids": [[q.price, q.size] for q in o.bids],
                "asks": [[q.price, q.size] for q in o.asks], "ts_us": micros(o.timestamp),
            }
        )  # fmt: skip

    stream.subscribe_trades(on_trade, symbol)
    stream.subscribe_quotes(on_quote, symbol)
    stream.subscribe_bars(on_bar, symbol)
    if isinstance(stream, CryptoDataStream):
        stream.subscribe_orderbooks(on_orderbook, symbol)
    watchdog = threading.Timer(float(timeout), stream.stop)
    watchdog.start()
    try:
        stream.run()
    finally:
        watchdog.cancel()
    complete = all(seen[k] >= goal[k] for k in seen)
    if not complete:
        print(f"incomplete after {timeout} s: {seen}", file=sys.stderr)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
