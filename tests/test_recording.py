"""Recording and replay through the public API: round trips, filters, pacing, rotation, errors."""

from __future__ import annotations

import itertools
import math
import shutil
import tempfile
from functools import partial
from pathlib import Path

import attrs
import duckdb
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from trio.testing import MockClock

from puffin_trio import (
    CodecError,
    Event,
    FanOut,
    RecordingError,
    SessionState,
    Status,
    Trade,
    open_recorder,
    open_replay,
)
from puffin_trio.cli import open_demo_supervisor
from puffin_trio.events import Gap, GapReason, Quote
from puffin_trio.recording import KINDS
from puffin_trio.recording import _recorder as recorder_module
from puffin_trio.testing import events as any_event
from puffin_trio.testing import mock_wall_clock

NS = 1_000_000_000
NS_PER_DAY = 86_400 * NS
#: A UTC midnight (2022-01-08), so that offsets around 0 and NS_PER_DAY cross days.
MIDNIGHT = 19_000 * NS_PER_DAY


def trade(seq: int, ts_recv: int, *, provider: str = "sim", symbol: str = "AAPL") -> Trade:
    return Trade(provider=provider, symbol=symbol, ts_event=ts_recv - 1000, ts_recv=ts_recv,
                 price=100.0 + seq % 100 / 100, size=float(seq % 9 + 1), trade_id=str(seq),
                 conditions=("@",) if seq % 3 else (), seq=seq)  # fmt: skip


async def replay_all(path: Path, **filters: object) -> list[Event]:
    async with open_replay(path, **filters) as events:  # type: ignore[arg-type]
        return [event async for event in events]


def replay_order(recorded: list[Event]) -> list[Event]:
    """What replay gives back for one recorder run's events (``recorded``: in the order
    written): each (provider, kind) chain in recorded order, the chains merged by each
    one's running maximum of ``ts_recv``, ties in recorded order."""
    highest: dict[tuple[str, str], int] = {}
    keys = []
    for position, event in enumerate(recorded):
        chain = (event.provider, KINDS[type(event)])
        highest[chain] = max(highest.get(chain, event.ts_recv), event.ts_recv)
        keys.append((highest[chain], position))
    return [event for _, event in sorted(zip(keys, recorded, strict=True), key=lambda p: p[0])]


def data_files(path: Path) -> list[Path]:
    return sorted(path.rglob("*.parquet"))


def temporary_files(path: Path) -> list[Path]:
    return sorted(path.rglob("*.tmp"))


# --------------------------------------------------------------------------- round trips


@st.composite
def recordings(draw: st.DrawFn) -> tuple[list[Event], list[int], bool]:
    """Events of every kind, ``ts_recv`` non-decreasing around two day boundaries
    (ties included), the positions after which to flush, and whether each flush rotates."""
    events = draw(st.lists(any_event(finite=True), min_size=1, max_size=40))
    offset = st.integers(-NS_PER_DAY // 24, 2 * NS_PER_DAY) | st.sampled_from(
        [-1, 0, NS_PER_DAY - 1, NS_PER_DAY, NS_PER_DAY + 1]
    )
    offsets = sorted(draw(st.lists(offset, min_size=len(events), max_size=len(events))))
    events = [attrs.evolve(e, ts_recv=MIDNIGHT + o) for e, o in zip(events, offsets, strict=True)]
    cuts = draw(st.sets(st.integers(1, max(1, len(events) - 1)), max_size=4))
    return events, sorted(cuts), draw(st.booleans())


@given(recordings())
def test_recorded_events_replay_equal_and_in_order_across_rotation_and_days(
    recording: tuple[list[Event], list[int], bool],
) -> None:
    """Property: any events of every kind, recorded in ``ts_recv`` order with flushes
    at arbitrary points (each rotating its files, or all finished at close from
    several segments), come back from replay equal (``==``) and in the same order,
    whatever their providers (any text), symbols and days."""
    events, cuts, rotate_each_flush = recording

    async def round_trip(path: Path) -> list[Event]:
        async with open_recorder(
            path, rotate_bytes=1 if rotate_each_flush else 2**40, fsync=False
        ) as recorder:
            for i, event in enumerate(events):
                if i in cuts:
                    await recorder.flush()
                await recorder.write(event)
        return await replay_all(path)

    with tempfile.TemporaryDirectory() as tmp:
        assert trio.run(round_trip, Path(tmp)) == events


async def test_record_consumes_a_channel_until_it_ends_and_counts(tmp_path: Path) -> None:
    fanout = FanOut()
    events = [
        trade(i, MIDNIGHT + i * 1000, symbol="AAPL" if i % 2 else "MSFT") for i in range(9000)
    ]

    async def publish() -> None:
        await fanout.publish_batch(events[:5000])
        await fanout.publish_batch(events[5000:])
        fanout.close()

    async with fanout.consumer(name="recorder") as channel, open_recorder(tmp_path) as recorder:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish)
            count = await recorder.record(channel)
    assert count == len(events)
    assert await replay_all(tmp_path) == events


async def test_leaving_the_block_finishes_every_file_from_its_segments(tmp_path: Path) -> None:
    events = [trade(i, MIDNIGHT + i * NS // 10) for i in range(3000)]
    async with open_recorder(tmp_path) as recorder:
        for i, event in enumerate(events):
            await recorder.write(event)
            if i % 500 == 499:
                await recorder.flush()
        segments = [p.name for p in data_files(tmp_path)]
        assert len(segments) == 6 and all(".seg" in name for name in segments)
    (finished,) = data_files(tmp_path)
    assert ".seg" not in finished.name
    assert pq.read_metadata(finished).num_rows == 3000
    assert await replay_all(tmp_path) == events


async def test_cancelling_the_block_still_seals_and_finishes_what_was_written(
    tmp_path: Path,
) -> None:
    events = [trade(i, MIDNIGHT + i) for i in range(100)]
    with trio.CancelScope() as scope:
        async with open_recorder(tmp_path) as recorder:
            for event in events:
                await recorder.write(event)
            scope.cancel()
            await trio.sleep(1)
    assert scope.cancelled_caught
    assert [".seg" in p.name for p in data_files(tmp_path)] == [False]
    assert await replay_all(tmp_path) == events


async def test_statistics_count_what_is_on_disk_and_what_is_still_at_risk(tmp_path: Path) -> None:
    async with open_recorder(tmp_path, flush_interval=3600) as recorder:
        for i in range(10):
            await recorder.write(trade(i, MIDNIGHT + i))
        before = recorder.statistics()
        await recorder.flush()
        after = recorder.statistics()
    assert (before.events, before.queued, before.files, before.bytes) == (0, 10, 0, 0)
    assert (after.events, after.queued, after.files, after.errors) == (10, 0, 1, 0)
    assert after.bytes == sum(p.stat().st_size for p in data_files(tmp_path))
    assert 0 <= after.last_flush_age < before.last_flush_age + 1
    final = recorder.statistics()
    assert final.bytes == sum(p.stat().st_size for p in data_files(tmp_path))
    assert final.files == 1


async def test_rows_encoded_before_their_seal_are_counted_once_and_replay_equal(
    tmp_path: Path,
) -> None:
    """A partition given more than _ENCODE_ROWS rows between two seals has them encoded
    into its open segment early, as row groups; the seal adds the rest and closes it."""
    encode_rows = recorder_module._ENCODE_ROWS
    first = [trade(i, MIDNIGHT + i) for i in range(2 * encode_rows + 100)]
    second = [trade(i, MIDNIGHT + i) for i in range(len(first), len(first) + encode_rows + 7)]
    async with open_recorder(tmp_path, flush_interval=3600) as recorder:
        for event in first:
            await recorder.write(event)
        assert data_files(tmp_path) == []  # not sealed yet
        await recorder.flush()
        assert recorder.statistics().events == len(first)
        (segment,) = data_files(tmp_path)
        # Two row groups encoded before the seal, and the last 100 rows by the seal.
        assert pq.ParquetFile(segment).metadata.num_row_groups == 3
        for event in second:
            await recorder.write(event)
    assert recorder.statistics().events == len(first) + len(second)
    assert temporary_files(tmp_path) == []
    assert await replay_all(tmp_path) == first + second


async def test_two_runs_in_one_directory_replay_merged_by_receive_time(tmp_path: Path) -> None:
    first = [trade(i, MIDNIGHT + 2 * i * 1000) for i in range(3000)]
    second = [trade(i, MIDNIGHT + (2 * i + 1) * 1000, symbol="MSFT") for i in range(3000)]
    for events in (first, second):
        async with open_recorder(tmp_path) as recorder:
            for event in events:
                await recorder.write(event)
    assert len({p.name.split("-")[1] for p in data_files(tmp_path)}) == 2  # two run names
    assert await replay_all(tmp_path) == sorted(first + second, key=lambda e: e.ts_recv)


async def test_a_segment_left_behind_by_a_crash_after_finishing_is_not_read_twice(
    tmp_path: Path,
) -> None:
    """A crash between renaming a finished file into place and removing its segments
    leaves both; the finished file supersedes its segments."""
    events = [trade(i, MIDNIGHT + i) for i in range(100)]
    async with open_recorder(tmp_path) as recorder:
        for event in events:
            await recorder.write(event)
    (finished,) = data_files(tmp_path)
    leftover = finished.with_name(finished.name.replace(".parquet", ".seg000000.parquet"))
    await trio.to_thread.run_sync(shutil.copyfile, finished, leftover)
    assert await replay_all(tmp_path) == events


async def test_leaving_a_replay_early_stops_it(tmp_path: Path) -> None:
    events = [trade(i, MIDNIGHT + i, symbol=("AAPL", "MSFT")[i % 2]) for i in range(20_000)]
    async with open_recorder(tmp_path) as recorder:
        for event in events:
            await recorder.write(event)
    async with open_replay(tmp_path) as channel:
        first = [await channel.receive() for _ in range(10)]
    assert first == events[:10]
    with pytest.raises(trio.ClosedResourceError):
        await channel.receive()


async def test_an_empty_recording_replays_nothing(tmp_path: Path) -> None:
    async with open_recorder(tmp_path):
        pass
    assert await replay_all(tmp_path) == []


async def test_writing_after_the_block_is_refused(tmp_path: Path) -> None:
    async with open_recorder(tmp_path) as recorder:
        await recorder.write(trade(0, MIDNIGHT))
    with pytest.raises(trio.ClosedResourceError):
        await recorder.write(trade(1, MIDNIGHT + 1))
    assert await replay_all(tmp_path) == [trade(0, MIDNIGHT)]


# --------------------------------------------------------------------------- rotation


async def test_files_rotate_by_time(tmp_path: Path, autojump_clock: MockClock) -> None:
    """One event every 0.5 s for 35 s, each flushed, files rotated every 10 s.

    (Each write is flushed because under ``MockClock`` the clock jumps while a
    worker thread writes, as if the disk took that long; waiting for the seal
    keeps the test's timeline the recorder's.)
    """
    clock = mock_wall_clock(MIDNIGHT + 3600 * NS)
    events = []
    async with open_recorder(tmp_path, flush_interval=1.0, rotate_interval=10.0) as recorder:
        for i in range(70):
            event = trade(i, clock())
            events.append(event)
            await recorder.write(event)
            await recorder.flush()
            await trio.sleep(0.5)
    files = data_files(tmp_path)
    assert all(".seg" not in p.name for p in files)
    assert 3 <= len(files) <= 4
    for path in files:
        ts = pq.read_table(path, columns=["ts_recv"]).column(0).cast("int64").to_pylist()
        assert ts[-1] - ts[0] <= 10.0 * NS
    assert await replay_all(tmp_path) == events


async def test_files_rotate_by_size(tmp_path: Path) -> None:
    events = [trade(i, MIDNIGHT + i * 1000) for i in range(20_000)]
    rotate_bytes = 20_000
    async with open_recorder(tmp_path, rotate_bytes=rotate_bytes) as recorder:
        for i, event in enumerate(events):
            await recorder.write(event)
            if i % 500 == 499:
                await recorder.flush()
    files = data_files(tmp_path)
    assert len(files) >= 3
    assert all(".seg" not in p.name for p in files)
    assert all(p.stat().st_size < 2 * rotate_bytes for p in files)
    assert await replay_all(tmp_path) == events


# --------------------------------------------------------------------------- errors


async def test_an_object_that_is_not_an_event_is_refused_at_once(tmp_path: Path) -> None:
    send, receive = trio.open_memory_channel[object](1)
    async with open_recorder(tmp_path) as recorder:
        with pytest.raises(TypeError, match="cannot record a dict"):
            await recorder.write({"price": 1.0})  # type: ignore[arg-type]
        await send.send("not an event")
        with pytest.raises(TypeError, match="cannot record a str"):
            await recorder.record(receive)  # type: ignore[arg-type]


async def test_a_field_of_the_wrong_type_is_rejected_naming_it_and_the_rest_is_kept(
    tmp_path: Path,
) -> None:
    good = [trade(i, MIDNIGHT + i) for i in range(9)]
    bad = attrs.evolve(good[0], price="1.5")  # type: ignore[arg-type]
    async with open_recorder(tmp_path) as recorder:
        for event in [*good[:4], bad, *good[4:]]:
            await recorder.write(event)
        with pytest.raises(CodecError, match=r"Trade\.price = '1\.5'"):
            await recorder.flush()
        assert recorder.statistics().errors == 1
    assert await replay_all(tmp_path) == good


async def test_a_vanished_directory_raises_naming_it(tmp_path: Path) -> None:
    root = tmp_path / "recording"
    with pytest.raises(RecordingError, match="vanished") as info:
        async with open_recorder(root) as recorder:
            await recorder.write(trade(0, MIDNIGHT))
            await recorder.flush()
            await trio.to_thread.run_sync(shutil.rmtree, root)
            await recorder.write(trade(1, MIDNIGHT + 1))
            await recorder.flush()
    assert str(root) in info.value.path
    assert info.value.path in str(info.value)
    assert info.value.errno == 2


async def test_a_path_that_is_a_file_is_refused_on_entry(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(RecordingError) as info:
        async with open_recorder(tmp_path / "file"):
            pass
    assert info.value.path == str(tmp_path / "file")


@pytest.mark.parametrize(
    "kwargs",
    [{"flush_interval": 0}, {"flush_interval": math.nan}, {"rotate_interval": -1},
     {"rotate_bytes": 0}, {"rotate_bytes": 1.5}],
)  # fmt: skip
async def test_bad_arguments_are_configuration_errors(
    tmp_path: Path, kwargs: dict[str, object]
) -> None:
    from puffin_trio import ConfigurationError

    with pytest.raises(ConfigurationError):
        async with open_recorder(tmp_path, **kwargs):  # type: ignore[arg-type]
            pass


# --------------------------------------------------------------------------- filters


FILTER_PROVIDERS = ("alpaca", "polygon")
FILTER_SYMBOLS = ("AAPL", "MSFT", "BTC/USD")


@pytest.fixture(scope="module")
def filter_recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Event]]:
    """A recording of 600 events of six kinds over two days (with session-level events)."""
    path = tmp_path_factory.mktemp("filters")
    kinds = itertools.cycle(["trade", "quote", "status", "gap", "trade", "quote"])
    events: list[Event] = []
    for i, kind in zip(range(600), kinds, strict=False):
        provider = FILTER_PROVIDERS[i % 2]
        symbol = FILTER_SYMBOLS[i % 3]
        ts = MIDNIGHT + (i - 300) * 400 * NS  # from a day before midnight to a day after
        if kind == "trade":
            events.append(trade(i, ts, provider=provider, symbol=symbol))
        elif kind == "quote":
            events.append(Quote(provider=provider, symbol=symbol, ts_event=ts, ts_recv=ts,
                                bid=1.0, ask=1.1, bid_size=1.0, ask_size=2.0))  # fmt: skip
        elif kind == "status":
            events.append(Status(provider=provider, ts_event=ts, ts_recv=ts,
                                 state=SessionState.STREAMING, session=provider))  # fmt: skip
        else:
            events.append(Gap(provider=provider, symbol=symbol if i % 4 else "", ts_event=ts,
                              ts_recv=ts, stream=provider, reason="sequence"))  # type: ignore[arg-type]  # fmt: skip

    async def record() -> None:
        async with open_recorder(path, fsync=False) as recorder:
            for event in events:
                await recorder.write(event)

    trio.run(record)
    return path, events


_times = st.none() | st.integers(MIDNIGHT - 150 * 400 * NS, MIDNIGHT + 350 * 400 * NS)


@given(
    start=_times,
    end=_times,
    providers=st.none() | st.sets(st.sampled_from(FILTER_PROVIDERS)),
    symbols=st.none() | st.sets(st.sampled_from(FILTER_SYMBOLS)),
    kinds=st.none() | st.sets(st.sampled_from(["trade", "quote", "status", "gap", "bar"])),
)
def test_filters_return_exactly_the_matching_events(
    filter_recording: tuple[Path, list[Event]],
    start: int | None,
    end: int | None,
    providers: set[str] | None,
    symbols: set[str] | None,
    kinds: set[str] | None,
) -> None:
    """Property: replay with any combination of start/end/providers/symbols/kinds
    yields exactly the recorded events that match (``start <= ts_recv < end``; a
    session-level event, ``symbol == ""``, passes any symbols filter), in order."""
    path, events = filter_recording

    def matches(event: Event) -> bool:
        return (
            (start is None or event.ts_recv >= start)
            and (end is None or event.ts_recv < end)
            and (providers is None or event.provider in providers)
            and (symbols is None or event.symbol in symbols or event.symbol == "")
            and (kinds is None or KINDS[type(event)] in kinds)
        )

    replayed = trio.run(
        partial(
            replay_all,
            path,
            start=start,
            end=end,
            providers=providers,
            symbols=symbols,
            kinds=kinds,
        )
    )
    assert replayed == [e for e in events if matches(e)]


async def test_kinds_take_event_classes_and_datetimes_bound_time(
    filter_recording: tuple[Path, list[Event]],
) -> None:
    from datetime import UTC, datetime

    path, events = filter_recording
    midnight = datetime.fromtimestamp(MIDNIGHT / NS, UTC)
    replayed = await replay_all(path, kinds=[Trade, Status], start=midnight)
    assert replayed == [
        e for e in events if isinstance(e, Trade | Status) and e.ts_recv >= MIDNIGHT
    ]


# --------------------------------------------------------------------------- pacing


@pytest.mark.parametrize("speed", [1.0, 10.0])
async def test_paced_replay_reproduces_the_recorded_inter_arrival_times(
    tmp_path: Path, autojump_clock: MockClock, speed: float
) -> None:
    gaps_ns = [0, 1_000, 250_000_000, 0, 3 * NS, 17, 999_999_999, 60 * NS, 0, 5]
    stamps = list(itertools.accumulate(gaps_ns, initial=MIDNIGHT))
    events = [
        trade(i, ts, provider="alpaca" if i % 3 else "polygon") for i, ts in enumerate(stamps)
    ]
    async with open_recorder(tmp_path) as recorder:
        for event in events:
            await recorder.write(event)
    arrivals: list[tuple[float, Event]] = []
    async with open_replay(tmp_path, speed=speed) as channel:
        async for event in channel:
            arrivals.append((trio.current_time(), event))
    assert [e for _, e in arrivals] == events
    first = arrivals[0][0]
    for (when, _), ts in zip(arrivals, stamps, strict=True):
        assert when - first == pytest.approx((ts - MIDNIGHT) / NS / speed, abs=1e-9)


# --------------------------------------------------------------------------- other readers


async def test_duckdb_counts_and_vwap_per_symbol_equal_the_recorded_events(
    tmp_path: Path,
) -> None:
    """A recording of the embedded simulators, read by DuckDB: until the Alpaca
    simulator's dropped connection has been announced and 500 events more have
    come, with trades from all three providers."""
    seen: list[Event] = []
    reconnected_at: int | None = None
    providers: set[str] = set()
    async with open_demo_supervisor(symbols=["AAPL", "MSFT"], rate=400.0, chaos=True) as sup:
        async with (
            sup.events(capacity=4096, overflow="block", name="recorder") as events,
            open_recorder(tmp_path, flush_interval=0.25) as recorder,
        ):
            with trio.fail_after(60):
                async for event in events:
                    await recorder.write(event)
                    seen.append(event)
                    if isinstance(event, Trade):
                        providers.add(event.provider)
                    elif isinstance(event, Gap) and event.reason is GapReason.RECONNECT:
                        reconnected_at = len(seen)
                    if reconnected_at and len(seen) > reconnected_at + 500 and len(providers) == 3:
                        break
    trades = [e for e in seen if isinstance(e, Trade)]
    expected: dict[tuple[str, str], tuple[int, float]] = {}
    for key, group in itertools.groupby(
        sorted(trades, key=lambda t: (t.provider, t.symbol)), key=lambda t: (t.provider, t.symbol)
    ):
        items = list(group)
        vwap = math.fsum(t.price * t.size for t in items) / math.fsum(t.size for t in items)
        expected[key] = (len(items), vwap)
    assert {p for p, _ in expected} == {"alpaca", "polygon", "ib"}

    files = f"{tmp_path}/*/kind=trade/*/*.parquet"
    rows = duckdb.sql(
        f"select provider, symbol, count(*), sum(price * size) / sum(size) "
        f"from read_parquet('{files}', hive_partitioning = true) group by all"
    ).fetchall()
    assert {(p, s): n for p, s, n, _ in rows} == {k: n for k, (n, _) in expected.items()}
    for provider, symbol, _, vwap in rows:
        assert vwap == pytest.approx(expected[(provider, symbol)][1], rel=1e-12)

    everything = f"{tmp_path}/*/*/*/*.parquet"
    [(total,)] = duckdb.sql(
        f"select count(*) from read_parquet('{everything}', union_by_name = true)"
    ).fetchall()
    assert total == len(seen)
    [(reconnects,)] = duckdb.sql(
        f"select count(*) from read_parquet('{tmp_path}/*/kind=gap/*/*.parquet', "
        f"hive_partitioning = true) where reason = 'reconnect' and provider = 'alpaca'"
    ).fetchall()
    assert reconnects >= 1
    assert await replay_all(tmp_path) == replay_order(seen)  # a backfill reorders ts_recv


async def test_pyarrow_dataset_reads_one_kind_with_its_partition_columns(
    filter_recording: tuple[Path, list[Event]],
) -> None:
    path, events = filter_recording
    dataset = pds.dataset(path / "provider=alpaca" / "kind=trade", partitioning="hive")
    table = dataset.to_table()
    assert table.num_rows == sum(
        1 for e in events if isinstance(e, Trade) and e.provider == "alpaca"
    )
    assert "date" in table.schema.names
    assert set(table.column("provider").to_pylist()) == {"alpaca"}


async def test_a_backfills_reordering_replays_as_recorded_and_filters_keep_the_order(
    tmp_path: Path,
) -> None:
    """A backfill delivers the recovered trades (received late) before the live
    trades it held (received earlier): the trades' chain is not in ``ts_recv``
    order. Replay keeps every chain in recorded order, merges the chains by each
    one's running maximum of ``ts_recv``, and a symbol filter keeps that order."""

    def at(ts: int) -> int:
        return MIDNIGHT + ts * 1000

    def quote(ts: int, symbol: str) -> Quote:
        return Quote(provider="sim", symbol=symbol, ts_event=at(ts) - 1000, ts_recv=at(ts),
                     bid=1.0, bid_size=1.0, ask=2.0, ask_size=1.0)  # fmt: skip

    written: list[Event] = [
        trade(1, at(10)), trade(2, at(20), symbol="MSFT"), quote(25, "AAPL"),
        trade(5, at(50)), trade(6, at(51), symbol="MSFT"),  # recovered by the backfill
        trade(3, at(30)), trade(4, at(31), symbol="MSFT"),  # held live trades, released
        quote(40, "MSFT"), quote(55, "AAPL"), trade(7, at(60)), quote(70, "MSFT"),
    ]  # fmt: skip
    async with open_recorder(tmp_path) as recorder:
        for event in written:
            await recorder.write(event)
    expected = replay_order(written)
    order = (10, 20, 25, 40, 50, 51, 30, 31, 55, 60, 70)
    assert [e.ts_recv for e in expected] == [at(t) for t in order]
    assert await replay_all(tmp_path) == expected
    for symbol in ("AAPL", "MSFT"):
        kept = [e for e in expected if e.symbol == symbol]
        assert await replay_all(tmp_path, symbols=[symbol]) == kept
