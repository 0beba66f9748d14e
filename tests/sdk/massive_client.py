"""Run the official massive SDK WebSocket client against a local simulator; print what it gets.

Usage::

    python massive_client.py PORT SYMBOL COUNT TIMEOUT

Connects ``massive.WebSocketClient(feed="127.0.0.1:PORT", market="stocks",
secure=False)`` (so ``ws://127.0.0.1:PORT/stocks``), subscribes ``T.SYMBOL``
and ``Q.SYMBOL``, and prints one JSON object per line for every trade and
quote the SDK hands to the processor, parsed into its models
(``raw=False``), with every field the model carries.

Stops with ``close()`` once it has ``COUNT`` trades and quotes; gives up after
``TIMEOUT`` seconds. Exit status 0 when everything arrived, 1 otherwise. It
only uses the SDK's public API and is run by tests/test_sdk_massive.py in a
subprocess.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from massive import WebSocketClient  # type: ignore[import-untyped]
from massive.websocket.models import (  # type: ignore[import-untyped]
    EquityQuote,
    EquityTrade,
    WebSocketMessage,
)

KEY = "sim-key"


def main() -> int:
    port, symbol, count, timeout = sys.argv[1:5]
    wanted = int(count)
    client = WebSocketClient(
        api_key=KEY,
        feed=f"127.0.0.1:{port}",
        market="stocks",
        secure=False,
        subscriptions=[f"T.{symbol}", f"Q.{symbol}"],
        max_reconnects=0,
    )
    seen = {"trade": 0, "quote": 0}

    def emit(item: dict[str, Any]) -> None:
        print(json.dumps(item), flush=True)
        seen[item["kind"]] += 1

    async def processor(messages: list[WebSocketMessage]) -> None:
        for m in messages:
            if isinstance(m, EquityTrade):
                emit(
                    {
                        "kind": "trade", "ev": m.event_type, "sym": m.symbol, "x": m.exchange,
                        "i": m.id, "z": m.tape, "p": m.price, "s": m.size, "c": m.conditions,
                        "t": m.timestamp, "q": m.sequence_number,
                    }
                )  # fmt: skip
            elif isinstance(m, EquityQuote):
                emit(
                    {
                        "kind": "quote", "ev": m.event_type, "sym": m.symbol,
                        "bx": m.bid_exchange_id, "bp": m.bid_price, "bs": m.bid_size,
                        "ax": m.ask_exchange_id, "ap": m.ask_price, "as": m.ask_size,
                        "c": m.condition, "t": m.timestamp, "z": m.tape, "q": m.sequence_number,
                    }
                )  # fmt: skip
            else:
                raise AssertionError(f"unexpected model {type(m).__name__}")
        if all(n >= wanted for n in seen.values()):
            await client.close()

    async def run() -> None:
        try:
            await asyncio.wait_for(client.connect(processor), float(timeout))
        except TimeoutError:
            print(f"incomplete after {timeout} s: {seen}", file=sys.stderr)

    asyncio.run(run())
    return 0 if all(n >= wanted for n in seen.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
