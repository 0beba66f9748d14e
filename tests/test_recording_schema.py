"""The columnar form of events: one column per field, natural types, a versioned schema."""

from __future__ import annotations

from pathlib import Path

import attrs
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import trio

from puffin_trio import ReplayError, SchemaVersionError, open_recorder, open_replay
from puffin_trio.events import EVENT_TYPES, Bar, Gap, GapReason, OrderBookUpdate, Trade
from puffin_trio.recording import KINDS, SCHEMA_VERSION
from puffin_trio.recording._schema import REC_INDEX, SCHEMAS, EventSchema

TS = pa.timestamp("ns", tz="UTC")


def test_every_event_class_has_a_kind_and_a_schema() -> None:
    assert set(KINDS) == set(EVENT_TYPES) == set(SCHEMAS)
    assert len(set(KINDS.values())) == len(EVENT_TYPES)
    assert KINDS[OrderBookUpdate] == "book"
    assert {KINDS[c] for c in EVENT_TYPES} >= {"trade", "quote", "book", "bar", "status", "gap"}


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda c: c.__name__)
def test_every_field_has_a_column_in_field_order_plus_rec_index(cls: type) -> None:
    schema = SCHEMAS[cls].schema
    assert schema.names == [f.name for f in attrs.fields(cls)] + [REC_INDEX]
    assert schema.metadata[b"puffin_trio.schema_version"] == b"%d.%d" % SCHEMA_VERSION
    assert schema.metadata[b"puffin_trio.kind"] == KINDS[cls].encode()


def test_columns_have_their_natural_arrow_types() -> None:
    trade = SCHEMAS[Trade].schema
    assert trade.field("ts_event").type == TS and trade.field("ts_recv").type == TS
    assert trade.field("price").type == pa.float64() and trade.field("size").type == pa.float64()
    assert trade.field("symbol").type == pa.dictionary(pa.int32(), pa.string())
    assert trade.field("conditions").type.value_type == pa.string()
    assert trade.field("seq").type == pa.int64() and trade.field("seq").nullable
    assert not trade.field("price").nullable and not trade.field("ts_recv").nullable
    book = SCHEMAS[OrderBookUpdate].schema
    level = book.field("bids").type.value_type
    assert [(f.name, f.type) for f in level] == [("price", pa.float64()), ("size", pa.float64())]
    gap = SCHEMAS[Gap].schema
    assert gap.field("window_start").type == TS and gap.field("window_start").nullable
    assert gap.field("reason").type == pa.string()
    assert SCHEMAS[Bar].schema.field("updated").type == pa.bool_()


def test_a_field_without_a_column_rule_fails_naming_the_field() -> None:
    @attrs.frozen(kw_only=True, weakref_slot=False)
    class Odd:
        provider: str
        symbol: str
        ts_event: int
        ts_recv: int
        weights: dict[str, float]

    with pytest.raises(TypeError, match=r"Odd\.weights: no Arrow column rule"):
        EventSchema(Odd, "odd")


# --------------------------------------------------------------------------- versions


def _recording_with(tmp_path: Path) -> Path:
    """A one-file recording of two Bars; returns the file."""
    bars = [
        Bar(provider="sim", symbol="AAPL", ts_event=i, ts_recv=10**18 + i, open=1.0, high=2.0,
            low=0.5, close=1.5, volume=100.0, interval_s=60, updated=bool(i))
        for i in range(2)
    ]  # fmt: skip

    async def record() -> None:
        async with open_recorder(tmp_path) as recorder:
            for bar in bars:
                await recorder.write(bar)

    trio.run(record)
    (path,) = tmp_path.rglob("*.parquet")
    return path


def _rewrite(path: Path, table: pa.Table, version: bytes) -> None:
    metadata = dict(table.schema.metadata)
    metadata[b"puffin_trio.schema_version"] = version
    pq.write_table(table.replace_schema_metadata(metadata), path)


async def _replay_all(path: Path) -> list[object]:
    async with open_replay(path) as events:
        return [event async for event in events]


def test_a_newer_major_version_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = _recording_with(tmp_path)
    _rewrite(path, pq.read_table(path), b"%d.0" % (SCHEMA_VERSION[0] + 1))
    with pytest.raises(SchemaVersionError, match="newer than this puffin_trio reads") as info:
        trio.run(_replay_all, tmp_path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)


def test_an_older_minor_version_without_a_defaulted_column_reads_with_the_default(
    tmp_path: Path,
) -> None:
    """A file written before ``Bar.updated`` existed (a column a minor version added)."""
    path = _recording_with(tmp_path)
    _rewrite(path, pq.read_table(path).drop_columns(["updated"]), b"%d.0" % SCHEMA_VERSION[0])
    bars = trio.run(_replay_all, tmp_path)
    assert [b.updated for b in bars] == [False, False]  # type: ignore[attr-defined]
    assert [b.volume for b in bars] == [100.0, 100.0]  # type: ignore[attr-defined]


def test_an_unknown_column_is_refused_rather_than_dropped(tmp_path: Path) -> None:
    path = _recording_with(tmp_path)
    table = pq.read_table(path)
    table = table.append_column("spread_bps", pa.array([1.0, 2.0]))
    _rewrite(path, table, b"%d.9" % SCHEMA_VERSION[0])
    with pytest.raises(ReplayError, match="unknown column 'spread_bps'"):
        trio.run(_replay_all, tmp_path)


def test_a_missing_required_column_is_refused(tmp_path: Path) -> None:
    path = _recording_with(tmp_path)
    _rewrite(path, pq.read_table(path).drop_columns(["close"]), b"%d.0" % SCHEMA_VERSION[0])
    with pytest.raises(ReplayError, match="required column 'close' is missing"):
        trio.run(_replay_all, tmp_path)


def test_a_parquet_file_that_is_not_a_recording_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "provider=sim" / "kind=trade" / "date=2024-01-02"
    directory.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1, 2]}), directory / "theirs.parquet")
    with pytest.raises(ReplayError, match="not a puffin_trio recording file"):
        trio.run(_replay_all, tmp_path)


def test_a_damaged_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = _recording_with(tmp_path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ReplayError, match="not a readable Parquet file") as info:
        trio.run(_replay_all, tmp_path)
    assert info.value.path == str(path)


def test_a_directory_that_is_not_a_recording_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="no recording at"):
        trio.run(_replay_all, tmp_path / "missing")


def test_enum_columns_round_trip_and_refuse_unknown_values(tmp_path: Path) -> None:
    gap = Gap(provider="sim", symbol="", ts_event=1, ts_recv=10**18, stream="sim",
              reason=GapReason.RECONNECT, window_start=5, window_end=None)  # fmt: skip

    async def record() -> None:
        async with open_recorder(tmp_path) as recorder:
            await recorder.write(gap)

    trio.run(record)
    assert trio.run(_replay_all, tmp_path) == [gap]
    (path,) = tmp_path.rglob("*.parquet")
    table = pq.read_table(path)
    reasons = pa.array(["teleport"])
    index = table.schema.get_field_index("reason")
    _rewrite(path, table.set_column(index, "reason", reasons), b"%d.0" % SCHEMA_VERSION[0])
    with pytest.raises(ReplayError, match="column 'reason'"):
        trio.run(_replay_all, tmp_path)


@pytest.mark.parametrize("reason", list(GapReason), ids=str)
def test_every_gap_reason_round_trips_through_a_recording(
    tmp_path: Path, reason: GapReason
) -> None:
    gap = Gap(provider="sim", symbol="", ts_event=10**18, ts_recv=10**18, stream="sim",
              reason=reason, window_start=10**18, window_end=10**18)  # fmt: skip

    async def record() -> None:
        async with open_recorder(tmp_path) as recorder:
            await recorder.write(gap)

    trio.run(record)
    assert trio.run(_replay_all, tmp_path) == [gap]


def test_a_file_damaged_inside_its_data_fails_the_replay_naming_it(tmp_path: Path) -> None:
    """The footer is intact (so the file is planned), a data page is not: the
    replay's block is cancelled and ReplayError raised from ``open_replay``."""
    path = _recording_with(tmp_path)
    data = bytearray(path.read_bytes())
    page = pq.read_metadata(path).row_group(0).column(0).data_page_offset
    data[page : page + 64] = bytes(64)
    path.write_bytes(bytes(data))
    received: list[object] = []

    async def replay() -> None:
        async with open_replay(tmp_path) as events:
            async for event in events:
                received.append(event)

    with pytest.raises(ReplayError, match="damaged file") as info:
        trio.run(replay)
    assert info.value.path == str(path)
    assert received == []
