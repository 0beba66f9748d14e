"""Where a backfill meets the live stream, sans-IO: edges, windows, held trades, accounting.

The property at the end is the seam property of the issue: whatever the
outage, the timing of the live trades and the page sizes, live trades and
recovered ones together are every trade, each once, in order.
"""

from __future__ import annotations

from collections.abc import Hashable

import attrs
from hypothesis import given
from hypothesis import strategies as st

from puffin_trio import Gap, GapReason, Trade
from puffin_trio.history import Reconciler, TradeEdges
from puffin_trio.providers._history import BY_TRADE_ID, SeamRule
from puffin_trio.providers.ib._history import SEAM as IB_SEAM
from puffin_trio.providers.polygon._history import PolygonHistory

NS = 1_000_000_000
T0 = 1_795_532_400 * NS
POLYGON_SEAM = PolygonHistory(key="k", contiguous=True).seam
SEAMS: dict[str, SeamRule] = {"alpaca": BY_TRADE_ID, "polygon": POLYGON_SEAM, "ib": IB_SEAM}


def trade(i: int, ts: int, *, symbol: str = "AAPL", price: float = 10.0, size: float = 100.0,
          backfilled: bool = False) -> Trade:  # fmt: skip
    return Trade(
        provider="sim", symbol=symbol, ts_event=ts, ts_recv=ts, price=price, size=size,
        trade_id=str(i), seq=i, backfilled=backfilled,
    )  # fmt: skip


def reconciler(
    edges: TradeEdges, symbols: tuple[str, ...] = ("AAPL",), opened: int = T0
) -> Reconciler:
    return Reconciler(
        symbols, edges=edges, fallback_start_ns=T0, opened_ns=opened, provider="sim", stream="s"
    )


# --------------------------------------------------------------------------- edges


def test_the_edge_is_the_latest_timestamp_and_every_trade_at_it() -> None:
    edges = TradeEdges(BY_TRADE_ID)
    for t in (trade(1, T0), trade(2, T0 + 5), trade(3, T0 + 5), trade(4, T0 + 1)):
        edges.observe(t)
    ts, trades, _ = edges.edge("AAPL")  # type: ignore[misc]
    assert ts == T0 + 5 and [t.trade_id for t in trades] == ["2", "3"]
    assert edges.latest_ns == T0 + 5
    assert edges.edge("MSFT") is None


def test_an_ordered_edge_keeps_the_largest_sequence_number_seen() -> None:
    edges = TradeEdges(POLYGON_SEAM)
    for t in (trade(5, T0), trade(9, T0 + 1), trade(7, T0 + 2)):
        edges.observe(t)
    assert edges.edge("AAPL")[2] == 9  # type: ignore[index]


# --------------------------------------------------------------------------- reconciler


def test_recovered_trades_already_received_at_the_window_start_are_dropped() -> None:
    edges = TradeEdges(BY_TRADE_ID)
    edges.observe(trade(1, T0))
    edges.observe(trade(2, T0 + 10))
    rec = reconciler(edges)
    page = [trade(1, T0), trade(2, T0 + 10), trade(3, T0 + 10), trade(4, T0 + 20)]
    assert [t.trade_id for t in rec.accept("AAPL", page)] == ["3", "4"]
    assert rec.duplicates == 1 and rec.outside == 1


def test_recovered_trades_after_the_first_held_one_are_left_to_the_live_stream() -> None:
    edges = TradeEdges(BY_TRADE_ID)
    edges.observe(trade(1, T0))
    rec = reconciler(edges)
    assert rec.holds("AAPL") and not rec.holds("MSFT")
    rec.hold(trade(6, T0 + 50))
    rec.hold(trade(7, T0 + 60))
    page = [trade(i, T0 + 10 * (i - 1)) for i in range(2, 8)]
    assert [t.trade_id for t in rec.accept("AAPL", page)] == ["2", "3", "4", "5", "6"]
    gap = rec.close("AAPL", complete=True, detail="", end_ns=T0 + 999, now_ns=T0 + 100)
    assert (gap.reason, gap.recovered, gap.complete, gap.window_start, gap.window_end) == (
        GapReason.BACKFILL, 5, True, T0, T0 + 50,
    )  # fmt: skip
    held = []
    while (t := rec.next_held("AAPL")) is not None:
        held.append(t.trade_id)
        rec.sent("AAPL")
    rec.release("AAPL")
    assert held == ["7"]  # 6 was recovered already, at the cutoff
    assert rec.held_total == 0 and not rec.holds("AAPL")


def test_live_trades_the_backfill_delivered_are_dropped_after_the_release() -> None:
    edges = TradeEdges(BY_TRADE_ID)
    edges.observe(trade(1, T0))
    rec = reconciler(edges, opened=T0 + 10)
    out = rec.accept("AAPL", [trade(2, T0 + 10), trade(3, T0 + 20)])
    assert len(out) == 2
    rec.close("AAPL", complete=True, detail="", end_ns=T0 + 30, now_ns=T0 + 30)
    rec.release("AAPL")
    assert not rec.settled()
    assert rec.is_live_duplicate(trade(3, T0 + 20))
    assert not rec.is_live_duplicate(trade(4, T0 + 30))
    assert rec.settled()  # a live trade passed the recovered ones


def test_a_contiguous_numbering_counts_what_an_incomplete_backfill_missed() -> None:
    edges = TradeEdges(POLYGON_SEAM)
    edges.observe(trade(10, T0))
    rec = reconciler(edges)
    rec.hold(trade(31, T0 + 100))
    assert [t.seq for t in rec.accept("AAPL", [trade(i, T0 + i) for i in range(8, 16)])] == [
        11, 12, 13, 14, 15,
    ]  # fmt: skip
    gap = rec.close("AAPL", complete=False, detail="timed out", end_ns=0, now_ns=0)
    assert (gap.recovered, gap.missing, gap.complete, gap.detail) == (5, 15, False, "timed out")


def test_a_complete_fetch_with_holes_in_a_contiguous_numbering_is_not_complete() -> None:
    edges = TradeEdges(POLYGON_SEAM)
    edges.observe(trade(10, T0))
    rec = reconciler(edges)
    rec.hold(trade(14, T0 + 100))
    rec.accept("AAPL", [trade(11, T0 + 1), trade(13, T0 + 3)])
    gap = rec.close("AAPL", complete=True, detail="", end_ns=0, now_ns=0)
    assert (gap.missing, gap.complete) == (1, False)


def test_a_quiet_symbols_window_starts_near_the_sessions_last_trade() -> None:
    edges = TradeEdges(BY_TRADE_ID)
    edges.observe(trade(1, T0, symbol="QUIET"))
    edges.observe(trade(2, T0 + 3600 * NS, symbol="BUSY"))
    rec = reconciler(edges, symbols=("BUSY", "QUIET", "NEW"))
    starts = {w.symbol: w.start_ns for w in rec.windows_from()}
    assert starts == {"BUSY": T0 + 3600 * NS, "QUIET": T0 + 3540 * NS, "NEW": T0}


def test_abandoning_announces_open_symbols_and_hands_back_their_held_trades() -> None:
    edges = TradeEdges(BY_TRADE_ID)
    edges.observe(trade(1, T0))
    rec = reconciler(edges, symbols=("AAPL", "MSFT"))
    rec.hold(trade(9, T0 + 9))
    events = rec.abandon("connection lost", now_ns=T0 + 50, end_ns=T0 + 60)
    assert [type(e) for e in events] == [Gap, Trade, Gap]
    assert isinstance(events[0], Gap) and not events[0].complete
    assert events[0].detail == "connection lost"
    assert rec.settled()


def test_abandoning_before_the_backfill_started_announces_only_symbols_with_held_trades() -> None:
    edges = TradeEdges(BY_TRADE_ID)
    rec = reconciler(edges, symbols=("AAPL", "MSFT"))
    rec.hold(trade(9, T0 + 9))
    events = rec.abandon("connection lost", now_ns=T0, end_ns=T0, started=False)
    assert [(type(e), e.symbol) for e in events] == [(Gap, "AAPL"), (Trade, "AAPL")]


def test_undelivered_recovered_trades_are_forgotten_so_their_live_twins_go_out() -> None:
    edges = TradeEdges(BY_TRADE_ID)
    rec = reconciler(edges)
    out = rec.accept("AAPL", [trade(2, T0 + 1), trade(3, T0 + 2)])
    rec.unaccept("AAPL", out[1:])
    rec.hold(trade(3, T0 + 2))
    rec.close("AAPL", complete=False, detail="", end_ns=0, now_ns=0)
    assert rec.next_held("AAPL") == trade(3, T0 + 2)
    assert rec.windows["AAPL"].delivered == 1


# --------------------------------------------------------------------------- the seam property


@attrs.frozen
class SeamCase:
    """One symbol's trades; the first ``drop`` arrive live before the drop, live delivery
    resumes at ``resume``, the history is fetched when trade ``snapshot`` is the newest,
    in pages of ``page``; ``schedule`` interleaves live arrivals (True) and pages (False)."""

    kind: str
    trades: tuple[Trade, ...]
    drop: int
    resume: int
    snapshot: int
    page: int
    schedule: tuple[bool, ...]


@st.composite
def seam_cases(draw: st.DrawFn) -> SeamCase:
    kind = draw(st.sampled_from(sorted(SEAMS)))
    n = draw(st.integers(1, 60))
    # Timestamps with ties (several trades in one ns, or in one IB second) and gaps.
    steps = draw(st.lists(st.sampled_from([0, 0, 1, 2, 7]), min_size=n, max_size=n))
    unit = NS if kind == "ib" else 1_000
    seq = draw(st.integers(1, 10**6))
    trades = []
    ts = T0
    for i, step in enumerate(steps):
        ts += step * unit
        seq += 1 if kind != "polygon" else draw(st.integers(1, 3))
        # IB trades are only their time, price and size: draw few values so twins occur.
        price = draw(st.sampled_from([10.0, 10.01])) if kind == "ib" else 10.0 + i
        trades.append(trade(seq, ts, price=price, size=100.0))
    drop = draw(st.integers(0, n))
    resume = draw(st.integers(drop, n))
    snapshot = draw(st.integers(resume, n))
    page = draw(st.integers(1, 25))
    schedule = tuple(draw(st.lists(st.booleans(), min_size=0, max_size=2 * n)))
    return SeamCase(kind, tuple(trades), drop, resume, snapshot, page, schedule)


def run_case(case: SeamCase) -> list[Trade]:
    """Feed one case through TradeEdges and a Reconciler as the session does; the
    trades a consumer receives, in order.

    Live trades are stamped with an arrival time (``ts_recv``). The history is
    asked for at the first page step: for IB (keys that are not unique) it then
    holds exactly the trades printed so far, the live ones that arrived
    included, as a real answer does; for the others it holds the drawn
    ``snapshot``, which may run ahead of the live stream.
    """
    seam = SEAMS[case.kind]
    trades = case.trades
    received = list(trades[: case.drop])
    edges = TradeEdges(seam)
    for t in received:
        edges.observe(t)
    opened = trades[case.resume].ts_event if case.resume < len(trades) else trades[-1].ts_event
    rec = Reconciler(
        ["AAPL"], edges=edges, fallback_start_ns=T0, opened_ns=opened, provider="sim", stream="s"
    )
    (window,) = rec.windows_from()
    live = list(trades[case.resume :])
    arrived = 0
    pages: list[list[Trade]] | None = None
    asked = 0
    closed = False

    def arrive() -> None:
        nonlocal arrived
        arrived += 1
        t = attrs.evolve(live.pop(0), ts_recv=2 * arrived)
        edges.observe(t)
        if rec.holds("AAPL"):
            rec.hold(t)
        elif not rec.is_live_duplicate(t):
            received.append(t)

    def next_page() -> None:
        nonlocal pages, asked
        if pages is None:
            asked = 2 * arrived + 1
            snapshot = case.resume + arrived if not seam.unique else case.snapshot
            history = [attrs.evolve(t, backfilled=True) for t in trades[:snapshot]
                       if t.ts_event >= window.start_ns]  # fmt: skip
            pages = [history[i : i + case.page] for i in range(0, len(history), case.page)]
        if pages:
            received.extend(rec.accept("AAPL", pages.pop(0), sent_ns=asked, answered_ns=asked))

    def close() -> None:
        rec.close("AAPL", complete=True, detail="", end_ns=trades[-1].ts_event, now_ns=0)
        while (t := rec.next_held("AAPL")) is not None:
            received.append(t)
            rec.sent("AAPL")
        rec.release("AAPL")

    for is_live in case.schedule:
        if is_live and live:
            arrive()
        elif pages is None or pages:
            next_page()
        elif not closed:
            close()
            closed = True
    while pages is None or pages:
        next_page()
    if not closed:
        close()
    while live:
        arrive()
    return received


def identity(kind: str, t: Trade) -> Hashable:
    return SEAMS[kind].key(t)


@given(case=seam_cases())
def test_live_and_backfill_together_are_every_trade_once_in_order(case: SeamCase) -> None:
    """Property: for any outage (trades received before the drop, live delivery resuming
    later), any timing of the live trades against the pages and any page size, the
    trades a consumer receives are exactly the trades sent, each once, in order (trades
    that only differ in their identity, such as IB's same-second twins, are one kind)."""
    received = run_case(case)
    assert [identity(case.kind, t) for t in received] == [
        identity(case.kind, t) for t in case.trades
    ]
    assert all(t.backfilled for t in received[case.drop : case.resume]) or case.drop == case.resume
