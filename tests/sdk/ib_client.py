"""Run the official ib_async client against the fake TWS; print what it receives.

Usage::

    python ib_client.py PORT SYMBOL COUNT TIMEOUT

Connects ``ib_async.IB`` with client id 7 (so it answers every startup request
ib_async makes), qualifies ``Stock(SYMBOL, "SMART", "USD")`` through
``reqContractDetails``, then asks for ``reqMktData``, ``reqTickByTickData``
(``AllLast`` and ``BidAsk``), SMART ``reqMktDepth`` and ``reqCurrentTime``.
Every item ib_async hands over through ``pendingTickersEvent`` is printed as
one JSON object per line, taken from ib_async's own parsed objects (``ticks``,
``tickByTicks``, ``domTicks``), so a field it cannot parse fails here.

Stops once it has ``COUNT`` items of each kind (or after ``TIMEOUT`` seconds)
and disconnects. Exit status 0 when everything arrived, 1 otherwise. It is run
by tests/test_sdk_ib.py in a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable
from typing import Any

from ib_async import IB, Stock, Ticker
from ib_async.objects import TickByTickAllLast, TickByTickBidAsk

CLIENT_ID = 7


def emit(item: dict[str, Any], seen: dict[str, int]) -> None:
    print(json.dumps(item), flush=True)
    seen[item["kind"]] = seen.get(item["kind"], 0) + 1


async def main() -> int:
    port, symbol, count, timeout = sys.argv[1:5]
    wanted = int(count)
    ib = IB()
    await ib.connectAsync("127.0.0.1", int(port), clientId=CLIENT_ID, timeout=float(timeout))
    [contract] = await ib.qualifyContractsAsync(Stock(symbol, "SMART", "USD"))
    print(
        json.dumps(
            {
                "kind": "contract", "conId": contract.conId, "symbol": contract.symbol,
                "primaryExchange": contract.primaryExchange, "accounts": ib.managedAccounts(),
            }
        ),
        flush=True,
    )  # fmt: skip
    server_time = await ib.reqCurrentTimeAsync()
    print(json.dumps({"kind": "time", "epoch": int(server_time.timestamp())}), flush=True)
    seen: dict[str, int] = {}
    done = asyncio.Event()

    def on_pending(tickers: Iterable[Ticker]) -> None:
        for ticker in tickers:
            for tick in ticker.ticks:
                emit(
                    {"kind": "tick", "type": tick.tickType, "price": tick.price,
                     "size": tick.size},
                    seen,
                )  # fmt: skip
            for tbt in ticker.tickByTicks:
                if isinstance(tbt, TickByTickAllLast):
                    emit(
                        {
                            "kind": "last", "type": tbt.tickType,
                            "time": int(tbt.time.timestamp()), "price": tbt.price,
                            "size": tbt.size, "exchange": tbt.exchange,
                            "conditions": tbt.specialConditions,
                        },
                        seen,
                    )  # fmt: skip
                elif isinstance(tbt, TickByTickBidAsk):
                    emit(
                        {
                            "kind": "bidask", "time": int(tbt.time.timestamp()),
                            "bid": tbt.bidPrice, "ask": tbt.askPrice, "bid_size": tbt.bidSize,
                            "ask_size": tbt.askSize,
                        },
                        seen,
                    )  # fmt: skip
            for row in ticker.domTicks:
                emit(
                    {
                        "kind": "depth", "position": row.position, "market_maker": row.marketMaker,
                        "operation": row.operation, "side": row.side, "price": row.price,
                        "size": row.size,
                    },
                    seen,
                )  # fmt: skip
        if all(seen.get(k, 0) >= wanted for k in ("tick", "last", "bidask", "depth")):
            done.set()

    ib.pendingTickersEvent += on_pending
    ib.reqMktData(contract)
    ib.reqTickByTickData(contract, "AllLast")
    ib.reqTickByTickData(contract, "BidAsk")
    ib.reqMktDepth(contract, numRows=5, isSmartDepth=True)
    try:
        await asyncio.wait_for(done.wait(), float(timeout))
    except TimeoutError:
        print(f"incomplete after {timeout} s: {seen}", file=sys.stderr)
        return 1
    finally:
        ib.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
