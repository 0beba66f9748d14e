"""The fake TWS, spoken to with raw TWS API messages over loopback.

A minimal client here frames messages by hand from the layouts in
the TWS API (not through :mod:`puffin_trio.providers.ib`),
so the simulator is checked against the document, not against our own protocol.
All tests run on trio's autojump ``MockClock``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from trio.testing import MockClock

from puffin_trio.errors import ConfigurationError, ConnectionLost
from puffin_trio.sim import FaultPlan, MarketModel
from puffin_trio.sim.ib import DEFAULT_ACCOUNT, FIRST_CON_ID, IBSimRecorder, serve_ib
from puffin_trio.sim.ib._requests import row_operations
from puffin_trio.testing import mock_wall_clock
from puffin_trio.transports.tcp import TcpTransport, encode_frame, open_tcp_transport

from ._support import serving

WALL_NS = int(datetime(2026, 11, 24, 15, 0, tzinfo=UTC).timestamp() * 1e9)
STOCK = ["0", "AAPL", "STK", "", "0.0", "", "", "SMART", "", "USD", "", ""]
UNKNOWN = ["0", "NOPE", "STK", "", "0.0", "", "", "SMART", "", "USD", "", ""]


def contract(symbol: str) -> list[str]:
    return ["0", symbol, *STOCK[2:]]


class RawClient:
    """Framed TWS messages as lists of text fields."""

    def __init__(self, transport: TcpTransport) -> None:
        self.transport = transport

    async def send(self, *fields: str) -> None:
        await self.transport.send(encode_frame("".join(f + "\0" for f in fields).encode()))

    async def next(self) -> list[str]:
        return (await self.transport.receive()).decode().split("\0")[:-1]

    async def until(
        self, done: Callable[[list[list[str]]], bool], *, limit: int = 5000
    ) -> list[list[str]]:
        seen: list[list[str]] = []
        with trio.fail_after(120):
            while not seen or not done(seen):
                seen.append(await self.next())
                assert len(seen) < limit, "condition not reached within the message budget"
        return seen


@asynccontextmanager
async def ib_sim(**kwargs: Any) -> AsyncIterator[tuple[int, IBSimRecorder]]:
    recorder = IBSimRecorder()
    kwargs.setdefault("symbols", ["AAPL", "MSFT"])
    kwargs.setdefault("rate", 100.0)
    async with serving(
        serve_ib, recorder=recorder, wall_clock=mock_wall_clock(WALL_NS), **kwargs
    ) as port:
        yield port, recorder


@asynccontextmanager
async def connected(port: int, *, client_id: int = 7) -> AsyncIterator[RawClient]:
    """A client past the handshake and startApi (its startup replies consumed)."""
    async with open_tcp_transport("127.0.0.1", port) as transport:
        client = RawClient(transport)
        await transport.send(b"API\0" + encode_frame(b"v157..178"))
        version, when = await client.next()
        assert version == "176" and when.endswith(" UTC")
        await client.send("71", "2", str(client_id), "")
        assert await client.next() == ["15", "1", DEFAULT_ACCOUNT]
        assert await client.next() == ["9", "1", "1"]
        for code in ("2104", "2106", "2158"):
            message = await client.next()
            assert message[:4] == ["4", "2", "-1", code] and message[5] == ""
            assert len(message) == 6, "the trailing advancedOrderRejectJson field is present"
        yield client


def of(messages: list[list[str]], msg_id: str, req_id: str | None = None) -> list[list[str]]:
    """The messages with this id (and request id, for the market data layouts)."""
    out = []
    for m in messages:
        if m[0] != msg_id:
            continue
        rid = m[1] if msg_id in ("99", "81") else m[2]
        if req_id is None or rid == req_id:
            out.append(m)
    return out


# --------------------------------------------------------------------------- handshake


async def test_handshake_start_api_and_ib_async_startup_requests_are_answered(
    autojump_clock: MockClock,
) -> None:
    async with ib_sim() as (port, recorder), connected(port) as client:
        for request, reply in (
            (("61", "1"), ["62", "1"]),
            (("5", "1"), ["53", "1"]),
            (("99", "0"), ["102"]),
            (("6", "2", "1", DEFAULT_ACCOUNT), ["54", "1", DEFAULT_ACCOUNT]),
            (("76", "1", "1", DEFAULT_ACCOUNT, "", "0"), ["74", "1", "1"]),
            (("7", "3", "2", "0", "", "", "", "", "", ""), ["55", "1", "2"]),
            (("49", "1"), ["49", "1", str(WALL_NS // 10**9)]),
        ):
            await client.send(*request)
            assert await client.next() == reply
    record = recorder.connections[0]
    assert record.version_range == "v157..178"
    assert record.client_id == 7
    assert record.requests("71") == [["71", "2", "7", ""]]


@pytest.mark.parametrize(
    "prologue", [b"GET / HTTP/1.1\r\n\r\n", b"API\0" + encode_frame(b"v100..150")]
)
async def test_a_client_that_is_not_a_compatible_tws_client_is_disconnected(
    prologue: bytes, autojump_clock: MockClock
) -> None:
    async with ib_sim() as (port, _), open_tcp_transport("127.0.0.1", port) as transport:
        await transport.send(prologue)
        with pytest.raises(ConnectionLost):
            await transport.receive()


async def test_a_client_id_in_use_is_refused_with_326_and_the_socket_closed(
    autojump_clock: MockClock,
) -> None:
    async with ib_sim() as (port, recorder), connected(port, client_id=3):
        async with open_tcp_transport("127.0.0.1", port) as transport:
            client = RawClient(transport)
            await transport.send(b"API\0" + encode_frame(b"v157..178"))
            await client.next()
            await client.send("71", "2", "3", "")
            refused = await client.next()
            assert refused[:4] == ["4", "2", "-1", "326"]
            assert "client id is already in use" in refused[4]
            with pytest.raises(ConnectionLost):
                await client.next()
        await recorder.connections[1].ended.wait()
    async with ib_sim() as (port, recorder):
        async with connected(port, client_id=3):
            pass
        await recorder.connections[0].ended.wait()
        async with connected(port, client_id=3):
            pass  # free again once the first connection ended


async def test_reject_auth_fault_sends_its_code_then_closes(autojump_clock: MockClock) -> None:
    async with ib_sim(faults=FaultPlan.reject_auth(326)) as (port, recorder):
        async with open_tcp_transport("127.0.0.1", port) as transport:
            client = RawClient(transport)
            await transport.send(b"API\0" + encode_frame(b"v157..178"))
            await client.next()
            await client.send("71", "2", "1", "")
            assert (await client.next())[3] == "326"
            with pytest.raises(ConnectionLost):
                await client.next()
        async with connected(port, client_id=1):
            pass  # the fault was planned for connection 1 only
    assert recorder.connections[0].faults == ["reject_auth"]


# --------------------------------------------------------------------------- contracts


async def test_contract_details_answer_known_stocks_and_200_otherwise(
    autojump_clock: MockClock,
) -> None:
    async with ib_sim() as (port, _), connected(port) as client:
        await client.send("9", "8", "3", *STOCK, "0", "", "", "")
        details = await client.next()
        assert details[:4] == ["10", "3", "AAPL", "STK"]
        assert details[12] == str(FIRST_CON_ID)  # conId after 10 fields (no version at >=164)
        assert await client.next() == ["52", "1", "3"]
        await client.send("9", "8", "4", *UNKNOWN, "0", "", "", "")
        error = await client.next()
        assert error[:4] == ["4", "2", "4", "200"] and error[4].startswith("No security")
        by_con_id = [str(FIRST_CON_ID + 1), "", *STOCK[2:]]
        await client.send("9", "8", "5", *by_con_id, "0", "", "", "")
        assert (await client.next())[:3] == ["10", "5", "MSFT"]


# --------------------------------------------------------------------------- market data


async def test_market_data_starts_with_params_type_and_both_sides_then_streams(
    autojump_clock: MockClock,
) -> None:
    async with ib_sim() as (port, _), connected(port) as client:
        await client.send("1", "11", "4", *STOCK, "0", "", "0", "0", "")
        seen = await client.until(lambda s: len(of(s, "46", "4")) >= 3)
    assert seen[0][:2] == ["81", "4"]
    assert seen[1] == ["58", "1", "4", "1"]
    bid, ask = seen[2], seen[3]
    assert bid[:4] == ["1", "6", "4", "1"] and ask[:4] == ["1", "6", "4", "2"]
    assert float(bid[4]) < float(ask[4])
    for m in seen:
        if m[0] == "1":
            assert len(m) == 7 and m[3] in ("1", "2", "4")
        elif m[0] == "2":
            assert len(m) == 5 and m[3] in ("0", "3")
        else:
            assert m[0] in ("81", "58", "46")


async def test_tick_by_tick_layouts_follow_the_tick_type(autojump_clock: MockClock) -> None:
    async with ib_sim() as (port, _), connected(port) as client:
        for req_id, kind in (("1", "Last"), ("2", "AllLast"), ("3", "BidAsk"), ("4", "MidPoint")):
            await client.send("97", req_id, *STOCK, kind, "0", "0")
        seen = await client.until(lambda s: all(of(s, "99", r) for r in "1234"))
    counts = {"1": 9, "2": 9, "3": 9, "4": 5}
    for req_id, kind in (("1", "1"), ("2", "2"), ("3", "3"), ("4", "4")):
        for message in of(seen, "99", req_id):
            assert message[2] == kind and len(message) == counts[kind]
            assert 0 <= int(message[3]) - WALL_NS // 10**9 <= 120


async def test_cancel_stops_that_request_and_an_unknown_cancel_is_an_error(
    autojump_clock: MockClock,
) -> None:
    async with ib_sim() as (port, _), connected(port) as client:
        await client.send("97", "1", *STOCK, "AllLast", "0", "0")
        await client.send("97", "2", *contract("MSFT"), "AllLast", "0", "0")
        await client.until(lambda s: bool(of(s, "99", "1")) and bool(of(s, "99", "2")))
        await client.send("98", "1")
        await client.send("2", "2", "77")
        await client.until(lambda s: s[-1][0] == "4")
        after = await client.until(lambda s: len(of(s, "99", "2")) >= 30)
    assert not of(after, "99", "1")


async def test_an_unknown_symbol_gets_200_for_every_request_kind(
    autojump_clock: MockClock,
) -> None:
    async with ib_sim() as (port, _), connected(port) as client:
        await client.send("1", "11", "1", *UNKNOWN, "0", "", "0", "0", "")
        await client.send("97", "2", *UNKNOWN, "AllLast", "0", "0")
        await client.send("10", "5", "3", *UNKNOWN, "5", "1", "")
        await client.send("50", "3", "4", *UNKNOWN, "5", "TRADES", "0", "")
        errors = [await client.next() for _ in range(4)]
    assert [(e[2], e[3]) for e in errors] == [
        ("1", "200"),
        ("2", "200"),
        ("3", "200"),
        ("4", "200"),
    ]


async def test_depth_rows_follow_tws_position_semantics(autojump_clock: MockClock) -> None:
    async with ib_sim() as (port, _), connected(port) as client:
        await client.send("10", "5", "5", *STOCK, "5", "1", "")
        await client.send("10", "5", "6", *contract("MSFT"), "3", "0", "")
        seen = await client.until(lambda s: len(of(s, "13")) >= 300 and len(of(s, "12")) >= 100)
    for msg_id, req_id, rows_limit in (("13", "5", 5), ("12", "6", 3)):
        rows: dict[str, list[float]] = {"0": [], "1": []}
        operations = set()
        for m in of(seen, msg_id, req_id):
            if msg_id == "13":
                position, _, op, side, price = int(m[3]), m[4], m[5], m[6], float(m[7])
                assert len(m) == 10 and m[9] == "1"
            else:
                position, op, side, price = int(m[3]), m[4], m[5], float(m[6])
                assert len(m) == 8
            side_rows = rows[side]
            if op == "0":
                side_rows.insert(position, price)
            elif op == "1":
                operations.add("price change" if side_rows[position] != price else "size")
                side_rows[position] = price
            else:
                side_rows.pop(position)
            operations.add(op)
            assert len(side_rows) <= rows_limit
        assert rows["1"] == sorted(rows["1"], reverse=True) and len(set(rows["1"])) == 5 - (
            2 if msg_id == "12" else 0
        )
        assert rows["0"] == sorted(rows["0"])
        assert max(rows["1"]) < min(rows["0"]), "the book is never crossed"
        assert {"0", "1", "2", "size"} <= operations


@given(
    st.lists(st.integers(1, 40), max_size=12, unique=True),
    st.lists(st.integers(1, 40), max_size=12, unique=True),
    st.lists(st.integers(1, 9), min_size=24, max_size=24),
)
def test_row_operations_turn_the_old_rows_into_the_new_ones(
    old_prices: list[int], new_prices: list[int], sizes: list[int]
) -> None:
    """Applying the simulator's row operations with TWS semantics (insert shifts
    down, delete shifts up, update replaces) to the old rows gives the new rows
    exactly, for any two sorted row lists with unique prices, and no side ever
    holds more rows than the request's limit on the way."""
    old = [(float(p), float(s)) for p, s in zip(sorted(old_prices), sizes, strict=False)]
    new = [(float(p), float(s)) for p, s in zip(sorted(new_prices), sizes[12:], strict=False)]
    limit = max(len(old), len(new), 1)
    rows = list(old)
    for position, op, price, size in row_operations(old, new, limit):
        if op == 0:
            rows.insert(position, (price, size))
        elif op == 1:
            rows[position] = (price, size)
        else:
            rows.pop(position)
        assert len(rows) <= limit
    assert rows == new


def test_a_row_whose_price_is_replaced_in_place_is_one_update_with_the_new_price() -> None:
    old = [(10.0, 1.0), (9.0, 1.0), (8.0, 1.0)]
    new = [(10.0, 1.0), (8.5, 2.0), (8.0, 1.0)]
    assert row_operations(old, new, 3) == [(1, 1, 8.5, 2.0)]
    # A better level on a full side: the lowest row goes first, then the insert.
    assert row_operations(old, [(10.5, 1.0), *old[:2]], 3) == [
        (2, 2, 8.0, 0.0),
        (0, 0, 10.5, 1.0),
    ]


async def test_real_time_bars_arrive_every_five_seconds(autojump_clock: MockClock) -> None:
    async with ib_sim() as (port, _), connected(port) as client:
        await client.send("50", "3", "8", *STOCK, "5", "TRADES", "0", "")
        seen = await client.until(lambda s: len(of(s, "50")) >= 3)
    bars = of(seen, "50", "8")
    starts = [int(b[3]) for b in bars]
    assert all(s % 5 == 0 for s in starts) and starts == sorted(set(starts))
    for bar in bars:
        o, h, low, c, volume, wap = map(float, bar[4:10])
        assert low <= min(o, c) <= max(o, c) <= h and low <= wap <= h
        assert volume > 0 and int(bar[10]) > 0


# --------------------------------------------------------------------------- faults


async def test_connectivity_loss_with_data_kept_goes_silent_then_streams_on(
    autojump_clock: MockClock,
) -> None:
    faults = FaultPlan.connectivity_loss_after(20, duration=30.0, code=1102)
    async with ib_sim(faults=faults) as (port, _), connected(port) as client:
        await client.send("97", "1", *STOCK, "AllLast", "0", "0")
        seen = await client.until(lambda s: s[-1][:4] == ["4", "2", "-1", "1100"])
        lost_at = trio.current_time()
        await client.send("49", "1")
        assert (await client.next())[0] == "49", "requests are still answered"
        restored = await client.next()
        assert restored[3] == "1102" and "data maintained" in restored[4]
        assert trio.current_time() - lost_at == pytest.approx(30.0, abs=0.1)
        after = await client.until(lambda s: len(s) >= 5)
    assert len(of(seen, "99")) >= 20
    assert all(m[0] == "99" for m in after)


async def test_connectivity_loss_with_data_lost_drops_every_request(
    autojump_clock: MockClock,
) -> None:
    faults = FaultPlan.connectivity_loss_after(20, duration=5.0, code=1101)
    async with ib_sim(faults=faults) as (port, _), connected(port) as client:
        await client.send("97", "1", *STOCK, "AllLast", "0", "0")
        await client.until(lambda s: s[-1][3:4] == ["1101"])
        with trio.move_on_after(30):
            extra = await client.next()
            raise AssertionError(f"data after 1101 without a new request: {extra}")
        await client.send("97", "2", *STOCK, "AllLast", "0", "0")
        assert (await client.next())[:2] == ["99", "2"]


async def test_farm_status_fault_sends_the_notice(autojump_clock: MockClock) -> None:
    async with ib_sim(faults=FaultPlan.farm_status_after(5, code=2103)) as (port, _):
        async with connected(port) as client:
            await client.send("97", "1", *STOCK, "AllLast", "0", "0")
            seen = await client.until(lambda s: s[-1][0] == "4")
    assert seen[-1] == ["4", "2", "-1", "2103", "Market data farm connection is broken:usfarm", ""]


async def test_ignore_pings_leaves_current_time_unanswered_while_data_flows(
    autojump_clock: MockClock,
) -> None:
    async with ib_sim(faults=FaultPlan.ignore_pings_after(5)) as (port, _):
        async with connected(port) as client:
            await client.send("97", "1", *STOCK, "AllLast", "0", "0")
            await client.until(lambda s: len(s) >= 10)
            await client.send("49", "1")
            seen = await client.until(lambda s: len(s) >= 300)
    assert not of(seen, "49") and len(of(seen, "99")) == 300


async def test_silent_fault_stops_data_but_answers_requests(autojump_clock: MockClock) -> None:
    async with ib_sim(faults=FaultPlan.silent_after(5)) as (port, _):
        async with connected(port) as client:
            await client.send("97", "1", *STOCK, "AllLast", "0", "0")
            await client.until(lambda s: len(s) >= 5)
            await client.send("10", "5", "2", *STOCK, "5", "1", "")
            with trio.move_on_after(60):
                await client.next()
                raise AssertionError("data while silent, even a new request's first rows")
            await client.send("49", "1")
            assert (await client.next())[0] == "49"


async def test_drop_fault_closes_the_socket(autojump_clock: MockClock) -> None:
    async with ib_sim(faults=FaultPlan.drop_after(10)) as (port, recorder):
        async with connected(port) as client:
            await client.send("97", "1", *STOCK, "AllLast", "0", "0")
            with pytest.raises(ConnectionLost):
                await client.until(lambda s: False)
    assert recorder.connections[0].faults == ["drop"]


async def test_malformed_and_unknown_message_faults(autojump_clock: MockClock) -> None:
    faults = FaultPlan.malformed_after(3) + FaultPlan.unknown_message_after(6)
    async with ib_sim(faults=faults) as (port, _), connected(port) as client:
        await client.send("97", "1", *STOCK, "AllLast", "0", "0")
        seen = await client.until(lambda s: s[-1][0] == "999")
    assert ["1", "6"] in seen


@pytest.mark.parametrize(
    "plan",
    [
        FaultPlan.connection_limit(),
        FaultPlan.gap_after(1),
        FaultPlan.duplicate_after(1),
        FaultPlan.reorder_after(1),
    ],
)
async def test_faults_tws_cannot_produce_are_refused(plan: FaultPlan) -> None:
    with pytest.raises(ConfigurationError, match="cannot inject"):
        await serve_ib(faults=plan)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"host": "0.0.0.0"}, "loopback"), ({"rate": -1}, "rate"), ({"account": ""}, "account")],
)
async def test_bad_simulator_settings_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        await serve_ib(**kwargs)


async def test_a_shared_model_carries_on_across_connections(autojump_clock: MockClock) -> None:
    model = MarketModel(["AAPL"], seed=3)
    async with ib_sim(model=model, symbols=["MSFT"]) as (port, _):
        assert model.symbols == ("AAPL", "MSFT")
        async with connected(port) as client:
            await client.send("97", "1", *contract("MSFT"), "AllLast", "0", "0")
            assert (await client.next())[:2] == ["99", "1"]
