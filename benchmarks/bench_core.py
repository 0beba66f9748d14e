"""Core (sans-IO) throughput: SequenceGuard, OrderBook, codec, BarAggregator.

Run: ``python benchmarks/bench_core.py [--quick]``. Prints one table. Each row
is the best of several repeats (the least disturbed by a noisy machine), and
each group has a baseline measured in the same run, so the ratio column is
what to compare across machines, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

import orjson

from puffin_trio import codec
from puffin_trio.bars import BarAggregator
from puffin_trio.book import OrderBook
from puffin_trio.events import Event, Gap, OrderBookUpdate, Trade
from puffin_trio.guard import SequenceGuard

T0 = 1_732_000_000_000_000_000


def best_rate(fn: Callable[[], int], repeats: int) -> float:
    """Operations per second of ``fn`` (which returns how many operations it did)."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        n = fn()
        elapsed = time.perf_counter() - start
        best = max(best, n / elapsed)
    return best


#: A table row: what was measured, operations per second, ratio to its group's baseline.
Row = tuple[str, float, float]


def against(
    repeats: int, baseline: tuple[str, Callable[[], int]], *measured: tuple[str, Callable[[], int]]
) -> list[Row]:
    """The baseline's row, then each measured call's, with its ratio to the baseline."""
    label, fn = baseline
    base = best_rate(fn, repeats)
    rows = [(label, base, 1.0)]
    for label, fn in measured:
        rate = best_rate(fn, repeats)
        rows.append((label, rate, rate / base))
    return rows


def trade(seq: int, symbol: str = "AAPL") -> Trade:
    return Trade(
        provider="sim",
        symbol=symbol,
        ts_event=T0 + seq * 1000,
        ts_recv=T0 + seq * 1000 + 500,
        price=100.0 + (seq % 100) * 0.01,
        size=float(1 + seq % 7),
        exchange="V",
        trade_id=str(seq),
        conditions=("@",),
        tape="C",
        seq=seq,
    )


def reorder(items: list[Trade], displacement: int, rng: random.Random) -> list[Trade]:
    """Shuffle within consecutive blocks, so nothing moves more than ``displacement`` places."""
    out: list[Trade] = []
    for i in range(0, len(items), displacement + 1):
        block = items[i : i + displacement + 1]
        rng.shuffle(block)
        out.extend(block)
    return out


def bench_guard(n: int, repeats: int) -> list[Row]:
    in_order = [trade(i) for i in range(n)]
    shuffled = reorder(list(in_order), 8, random.Random(1))

    def baseline() -> int:
        out: list[Event] = []
        for ev in in_order:
            out.append(ev)
            out.clear()
        return n

    def run(events: list[Trade], mode: str) -> Callable[[], int]:
        def go() -> int:
            guard: SequenceGuard[Trade] = SequenceGuard(mode)  # type: ignore[arg-type]
            out: list[Trade | Gap] = []
            for i, ev in enumerate(events):
                guard.feed("sim:T:AAPL", ev, i, out)
                out.clear()
            return n

        return go

    return against(
        repeats,
        ("guard: baseline (list append)", baseline),
        ("guard: strict, in order", run(in_order, "strict")),
        ("guard: strict, reordered (d=8)", run(shuffled, "strict")),
        ("guard: monotonic, in order", run(in_order, "monotonic")),
    )


def bench_book(levels: int, n: int, repeats: int) -> list[Row]:
    rng = random.Random(levels)
    bids = tuple((100.0 - i * 0.01, 100.0) for i in range(levels))
    asks = tuple((100.01 + i * 0.01, 100.0) for i in range(levels))
    snapshot = OrderBookUpdate(
        provider="sim", symbol="X", ts_event=T0, ts_recv=T0, bids=bids, asks=asks, snapshot=True
    )
    deltas = []
    for i in range(n):
        b = bids[rng.randrange(levels)][0]
        a = asks[rng.randrange(levels)][0]
        size = float(rng.randrange(0, 500))
        deltas.append(
            OrderBookUpdate(
                provider="sim",
                symbol="X",
                ts_event=T0 + i,
                ts_recv=T0 + i,
                bids=((b, size),),
                asks=((a, size),),
            )
        )
    pairs = [(d.bids[0], d.asks[0]) for d in deltas]

    def baseline() -> int:
        book_b = dict(bids)
        book_a = dict(asks)
        for (bp, bs), (ap, as_) in pairs:
            book_b[bp] = bs
            book_a[ap] = as_
        return n

    def run() -> int:
        book = OrderBook("X")
        book.apply(snapshot)
        for d in deltas:
            book.apply(d)
        return n

    return against(
        repeats,
        (f"book {levels} levels: baseline (2 dict sets)", baseline),
        (f"book {levels} levels: OrderBook.apply", run),
    )


def bench_codec(n: int, repeats: int) -> list[Row]:
    events = [trade(i) for i in range(n)]
    plain = [
        {"T": "t", "S": e.symbol, "p": e.price, "s": e.size, "t": e.ts_event, "i": e.trade_id}
        for e in events
    ]
    blobs = {f: [codec.dumps(e, format=f) for e in events] for f in ("json", "msgpack")}
    plain_blobs = [orjson.dumps(p) for p in plain]

    def base_dumps() -> int:
        for p in plain:
            orjson.dumps(p)
        return n

    def base_loads() -> int:
        for b in plain_blobs:
            orjson.loads(b)
        return n

    rows = []
    bd = best_rate(base_dumps, repeats)
    bl = best_rate(base_loads, repeats)
    rows.append(("codec: baseline orjson.dumps(dict)", bd, 1.0))
    for fmt in ("json", "msgpack"):

        def dumps(fmt: str = fmt) -> int:
            for e in events:
                codec.dumps(e, format=fmt)  # type: ignore[arg-type]
            return n

        r = best_rate(dumps, repeats)
        rows.append((f"codec: dumps Trade ({fmt})", r, r / bd))
    rows.append(("codec: baseline orjson.loads(dict)", bl, 1.0))
    for fmt in ("json", "msgpack"):

        def loads(fmt: str = fmt) -> int:
            for b in blobs[fmt]:
                codec.loads(b, format=fmt)  # type: ignore[arg-type]
            return n

        r = best_rate(loads, repeats)
        rows.append((f"codec: loads Trade ({fmt})", r, r / bl))
    return rows


def bench_bars(n: int, repeats: int) -> list[Row]:
    symbols = ["AAPL", "MSFT", "NVDA", "AMZN"]
    trades = [
        Trade(
            provider="sim",
            symbol=symbols[i % 4],
            ts_event=T0 + i * 10_000_000,  # 100 trades/s per symbol-ish: a bar every ~60k trades
            ts_recv=T0,
            price=100.0 + (i % 50) * 0.01,
            size=1.0 + i % 3,
        )
        for i in range(n)
    ]

    def baseline() -> int:
        vol: dict[str, float] = {}
        for t in trades:
            vol[t.symbol] = vol.get(t.symbol, 0.0) + t.size
        return n

    def run() -> int:
        agg = BarAggregator(60)
        for t in trades:
            agg.add(t)
        return n

    return against(
        repeats,
        ("bars: baseline (dict volume sum)", baseline),
        ("bars: BarAggregator.add (60 s)", run),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    args = parser.parse_args()
    n = 20_000 if args.quick else 200_000
    repeats = 3 if args.quick else 5
    rows: list[Row] = []
    rows += bench_guard(n, repeats)
    rows += bench_book(10, n, repeats)
    rows += bench_book(1000, n, repeats)
    rows += bench_codec(n // 4, repeats)
    rows += bench_bars(n, repeats)
    width = max(len(r[0]) for r in rows)
    print(f"{'operation':<{width}}  {'ops/s':>12}  {'µs/op':>8}  {'vs baseline':>11}")
    print("-" * (width + 38))
    for name, rate, ratio in rows:
        print(f"{name:<{width}}  {rate:>12,.0f}  {1e6 / rate:>8.3f}  {ratio:>10.2f}x")


if __name__ == "__main__":
    main()
