"""The official ib_async client accepts the fake TWS and parses exactly what it sent.

The test starts :func:`serve_ib` in the test's trio loop (real clock: a
subprocess is involved), runs tests/sdk/ib_client.py with ``ib_async.IB``
pointed at it, and compares every item ib_async delivered (market data ticks,
tick-by-tick trades and quotes, depth rows) with the messages the simulator's
recorder kept for the matching request.

ib_async stamps tick-by-tick items (``TickByTickAllLast``, ``TickByTickBidAsk``)
with its own receive time (``datetime.now()`` when the message was read), not
the time field of the message, which it parses and then drops. So the test
compares every other field with what was sent, and holds that stamp to the
wall-clock span the client ran in: comparing it with the message's second
would fail whenever sending and reading straddle a second boundary.
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

from puffin_trio.sim.ib import (
    DEFAULT_ACCOUNT,
    FIRST_CON_ID,
    IBConnectionRecord,
    IBSimRecorder,
    serve_ib,
)

pytest.importorskip("ib_async")

pytestmark = pytest.mark.sdk

SCRIPT = Path(__file__).parent / "sdk" / "ib_client.py"
#: Items of each kind ib_async must receive.
COUNT = 15
#: The script's own timeout; the subprocess normally ends in about a second.
SCRIPT_TIMEOUT = 10.0


def sent(record: IBConnectionRecord, msg_ids: tuple[str, ...], req_id: str) -> list[list[str]]:
    """Messages with one of these ids sent for request ``req_id``, in order."""
    out = []
    for m in record.sent:
        if m[0] in msg_ids and (m[1] if m[0] == "99" else m[2]) == req_id:
            out.append(m)
    return out


async def test_ib_async_connects_qualifies_and_receives_every_stream_as_sent() -> None:
    recorder = IBSimRecorder()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(serve_ib, symbols=["AAPL"], rate=300.0, recorder=recorder)
        )
        started = int(time.time())  # whole seconds, as the client prints its stamps
        with trio.fail_after(SCRIPT_TIMEOUT + 10):
            result = await trio.run_process(
                [str(a) for a in (sys.executable, SCRIPT, port, "AAPL", COUNT, SCRIPT_TIMEOUT)],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        ended = int(time.time())
        nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    # ib_async logs every message it fails to decode (and then drops) at ERROR.
    assert not result.stderr, result.stderr.decode()[-3000:]
    items: list[dict[str, Any]] = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert recorder.accepted == 1, "ib_async had to reconnect"
    record = recorder.connections[0]

    # Handshake and startup: every request ib_async makes while connecting was answered.
    assert record.version_range == "v157..178" and record.client_id == 7
    for startup in ("61", "5", "99", "6", "76", "7", "9", "49"):
        assert record.requests(startup), f"ib_async never sent {startup}"
    contract = next(i for i in items if i["kind"] == "contract")
    assert contract == {
        "kind": "contract", "conId": FIRST_CON_ID, "symbol": "AAPL",
        "primaryExchange": "NASDAQ", "accounts": [DEFAULT_ACCOUNT],
    }  # fmt: skip
    [server_time] = [i for i in items if i["kind"] == "time"]
    assert [server_time["epoch"]] == [int(m[2]) for m in record.sent_messages("49")]

    [mktdata] = record.requests("1")
    assert mktdata[3] == str(FIRST_CON_ID)
    all_last, bid_ask = record.requests("97")
    assert (all_last[14], bid_ask[14]) == ("AllLast", "BidAsk")
    [depth] = record.requests("10")
    assert (depth[15], depth[16]) == ("5", "1")

    for kind in ("tick", "last", "bidask", "depth"):
        assert sum(i["kind"] == kind for i in items) >= COUNT, f"too few {kind} items"
    ticks = [i for i in items if i["kind"] == "tick"]
    expected_ticks = []
    for m in sent(record, ("1", "2"), mktdata[2]):
        if m[0] == "1":
            expected_ticks.append((int(m[3]), float(m[4]), float(m[5])))
        else:
            expected_ticks.append((int(m[3]), None, float(m[4])))
    assert [
        (t["type"], None if t["type"] in (0, 3) else t["price"], t["size"]) for t in ticks
    ] == expected_ticks[: len(ticks)]

    lasts = [i for i in items if i["kind"] == "last"]
    quotes = [i for i in items if i["kind"] == "bidask"]
    stamps = [item.pop("time") for item in lasts + quotes]  # ib_async's receive time
    assert all(started <= stamp <= ended for stamp in stamps), (started, stamps, ended)
    assert lasts == [
        {
            "kind": "last", "type": 2, "price": float(m[4]), "size": float(m[5]),
            "exchange": m[7], "conditions": m[8],
        }
        for m in sent(record, ("99",), all_last[1])[: len(lasts)]
    ]  # fmt: skip
    assert quotes == [
        {
            "kind": "bidask", "bid": float(m[4]), "ask": float(m[5]), "bid_size": float(m[6]),
            "ask_size": float(m[7]),
        }
        for m in sent(record, ("99",), bid_ask[1])[: len(quotes)]
    ]  # fmt: skip

    rows = [i for i in items if i["kind"] == "depth"]
    expected_rows = [
        {
            "position": int(m[3]), "market_maker": m[4], "operation": int(m[5]),
            "side": int(m[6]), "price": float(m[7]), "size": float(m[8]),
        }
        for m in sent(record, ("13",), depth[2])
    ][: len(rows)]  # fmt: skip
    for got, want in zip(rows, expected_rows, strict=True):
        if want["operation"] == 2:
            # ib_async keeps depth rows in a dict by position and reports the
            # price of the row it popped (not the message's) on a delete.
            got = {**got, "price": want["price"]}
        assert {k: v for k, v in got.items() if k != "kind"} == want
