"""The columnar form of every event class: Arrow schemas, schema version, conversion both ways.

This module owns how an event becomes a row and back. Each class in
:data:`~puffin_trio.events.EVENT_TYPES` has a *kind* (its partition name,
``trade``, ``quote``, ``book``, ...) and an Arrow schema with one column per
attrs field, in field order, plus ``rec_index`` (the event's position in its
recording run, which orders ties in ``ts_recv`` across files). The columns
are derived from the field annotations by the rules in :func:`_arrow_type`,
so a new field gets its column, and a field whose type has no rule fails the
import, naming the field. It must not do I/O or know the directory layout.

Types: ``ts_event``, ``ts_recv``, ``window_start``, ``window_end`` are
``timestamp[ns, tz=UTC]``; other integers ``int64``; floats ``float64``;
``symbol`` a dictionary-encoded string; other strings and enums strings;
string tuples ``list<string>``; book levels ``list<struct<price: double,
size: double>>``; ``X | None`` is the nullable column of ``X``; every other
column is not nullable.

Versions: a file carries ``puffin_trio.schema_version`` (``"major.minor"``)
and ``puffin_trio.kind`` in its key-value metadata. A minor version only adds
columns for fields that have a default; a major version is any other change.
A reader accepts any file of its own major version: columns the file lacks
are filled with the field's default (so older files stay readable), and
columns it does not know are refused (ignoring them would drop data). A newer
major version is refused with :exc:`~puffin_trio.errors.SchemaVersionError`.
"""

from __future__ import annotations

import enum
import itertools
import operator
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from typing import Any, Final

import attrs
import pyarrow as pa
import pyarrow.compute as pc

from puffin_trio._event_builder import event_builder
from puffin_trio.codec import TYPE_TAGS
from puffin_trio.errors import ReplayError, SchemaVersionError
from puffin_trio.events import EVENT_TYPES, Event, OrderBookUpdate

__all__ = [
    "KINDS",
    "REC_INDEX",
    "SCHEMAS",
    "SCHEMA_VERSION",
    "EventSchema",
    "check_version",
    "schema_for_kind",
]

#: The schema version this code writes, ``(major, minor)``. 1.1 added the backfill
#: columns (``Trade.backfilled``; ``Gap.recovered``, ``complete``, ``detail``).
SCHEMA_VERSION: Final = (1, 1)
#: Key-value metadata keys of every recording file.
VERSION_KEY: Final = b"puffin_trio.schema_version"
KIND_KEY: Final = b"puffin_trio.kind"
#: The extra column: the event's index in its recording run (0, 1, 2, ... across all its files).
REC_INDEX: Final = "rec_index"

_TIMESTAMP: Final = pa.timestamp("ns", tz="UTC")
#: Integer fields that hold nanoseconds since the epoch.
_TIMESTAMP_FIELDS: Final = frozenset({"ts_event", "ts_recv", "window_start", "window_end"})
#: String fields with few distinct values per file that users filter and group on.
_DICTIONARY_FIELDS: Final = frozenset({"symbol"})
_LEVEL: Final = pa.struct(
    [
        pa.field("price", pa.float64(), nullable=False),
        pa.field("size", pa.float64(), nullable=False),
    ]
)
#: Partition names that differ from the codec's type tag (the issue's layout says ``kind=book``).
_KIND_NAMES: Final[Mapping[type, str]] = {OrderBookUpdate: "book"}
#: A separator for grouping equal string lists in one vectorised pass; a batch whose
#: strings contain it takes the slow path, so it only has to be rare, not impossible.
_JOIN: Final = "\x1f"

_STRING_LIST: Final = pa.list_(pa.string())

_Reader = Callable[[pa.Array], list[Any]]


# --------------------------------------------------------------------------- readers


def _read_plain(array: pa.Array) -> list[Any]:
    if pa.types.is_dictionary(array.type):
        return _read_dictionary(array)
    return array.to_pylist()  # type: ignore[no-any-return]


def _read_dictionary(array: pa.Array, convert: Callable[[Any], Any] | None = None) -> list[Any]:
    """A dictionary array's values, each distinct value converted (and allocated) once."""
    if len(array.dictionary) > len(array) and convert is None:
        # Mostly distinct values (ids): the dictionary holds the whole page's values,
        # so converting it would cost more than converting the rows themselves.
        return array.dictionary.take(array.indices).to_pylist()  # type: ignore[no-any-return]
    values = array.dictionary.to_pylist()
    if convert is not None:
        values = [convert(v) for v in values]
    return list(map(values.__getitem__, array.indices.to_pylist()))


def _read_timestamp(array: pa.Array) -> list[Any]:
    # to_pylist() of a timestamp builds pandas Timestamps (5 µs each); the int64 view is 20 ns.
    return array.view(pa.int64()).to_pylist()  # type: ignore[no-any-return]


def _enum_reader(enum_type: type[enum.Enum]) -> _Reader:
    def read(array: pa.Array) -> list[Any]:
        if not pa.types.is_dictionary(array.type):
            array = array.dictionary_encode()
        return _read_dictionary(array, enum_type)

    return read


def _read_strings(array: pa.Array) -> list[Any]:
    """``list<string>`` -> tuples of str; equal lists become one shared tuple."""
    values = array.values
    if len(values) == 0:
        return [()] * len(array)
    if not pc.any(pc.match_substring(values, _JOIN)).as_py():
        plain = array.cast(_STRING_LIST)  # binary_join wants a nullable element field
        joined = pc.binary_join(plain, _JOIN).dictionary_encode()
        tuples = [tuple(key.split(_JOIN)) for key in joined.dictionary.to_pylist()]
        indices = joined.indices.to_pylist()
        lengths = pc.list_value_length(array)
        if pc.any(pc.equal(lengths, 0)).as_py():
            # The empty list and [""] both join to "": tell them apart by length.
            return [
                tuples[i] if n else () for i, n in zip(indices, lengths.to_pylist(), strict=True)
            ]
        return list(map(tuples.__getitem__, indices))
    flat = iter(values.to_pylist())
    return [tuple(islice(flat, n)) for n in pc.list_value_length(array).to_pylist()]


def _read_levels(array: pa.Array) -> list[Any]:
    """``list<struct<price, size>>`` -> tuples of ``(price, size)`` pairs."""
    levels = array.values
    pairs = list(zip(levels.field(0).to_pylist(), levels.field(1).to_pylist(), strict=True))
    offsets = array.offsets.to_pylist()
    return [tuple(pairs[a:b]) for a, b in itertools.pairwise(offsets)]


# --------------------------------------------------------------------------- columns


@attrs.frozen
class Column:
    """One event field's column: its Arrow type and both conversions."""

    name: str
    type: pa.DataType
    nullable: bool
    #: The field's default, for files written before the field existed (NOTHING if required).
    default: Any
    #: Python values (one per event) -> an Arrow array of ``type``.
    to_arrow: Callable[[list[Any]], pa.Array]
    #: An Arrow array as read back -> Python values equal to the originals.
    from_arrow: _Reader


def _arrow_type(owner: type, name: str, annotation: Any) -> tuple[pa.DataType, bool, _Reader]:
    """``(arrow type, nullable, reader)`` for one field; TypeError if there is no rule."""
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = args[0] if args[1] is type(None) else args[1]
        arrow, _, reader = _arrow_type(owner, name, inner)
        return arrow, True, reader
    if annotation is int:
        if name in _TIMESTAMP_FIELDS:
            return _TIMESTAMP, False, _read_timestamp
        return pa.int64(), False, _read_plain
    if annotation is float:
        return pa.float64(), False, _read_plain
    if annotation is bool:
        return pa.bool_(), False, _read_plain
    if annotation is str:
        if name in _DICTIONARY_FIELDS:
            return pa.dictionary(pa.int32(), pa.string()), False, _read_plain
        return pa.string(), False, _read_plain
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        if not issubclass(annotation, str):
            raise TypeError(f"{owner.__name__}.{name}: only string enums have a column rule")
        return pa.string(), False, _enum_reader(annotation)
    if annotation == tuple[str, ...]:
        return pa.list_(pa.field("element", pa.string(), nullable=False)), False, _read_strings
    if annotation == tuple[tuple[float, float], ...]:
        return pa.list_(pa.field("element", _LEVEL, nullable=False)), False, _read_levels
    raise TypeError(
        f"{owner.__name__}.{name}: no Arrow column rule for {annotation!r}; "
        f"add one to puffin_trio/recording/_schema.py"
    )


def _converter(arrow: pa.DataType) -> Callable[[list[Any]], pa.Array]:
    if arrow == _TIMESTAMP:
        # Python ints become int64 a third faster than timestamps; the view is free.
        def convert_timestamps(values: list[Any]) -> pa.Array:
            return pa.array(values, type=pa.int64()).view(_TIMESTAMP)

        return convert_timestamps

    def convert(values: list[Any]) -> pa.Array:
        return pa.array(values, type=arrow)

    return convert


def _columns(cls: type) -> tuple[Column, ...]:
    hints = typing.get_type_hints(cls)
    columns = []
    for field in attrs.fields(cls):
        arrow, nullable, reader = _arrow_type(cls, field.name, hints[field.name])
        columns.append(
            Column(
                name=field.name,
                type=arrow,
                nullable=nullable,
                default=field.default,
                to_arrow=_converter(arrow),
                from_arrow=reader,
            )
        )
    return tuple(columns)


# --------------------------------------------------------------------------- schemas


class EventSchema:
    """The columnar form of one event class (see the module docstring)."""

    def __init__(self, cls: type, kind: str) -> None:
        self.cls = cls
        self.kind = kind
        self.columns = _columns(cls)
        self.schema = pa.schema(
            [pa.field(c.name, c.type, nullable=c.nullable) for c in self.columns]
            + [pa.field(REC_INDEX, pa.int64(), nullable=False)],
            metadata={
                VERSION_KEY: f"{SCHEMA_VERSION[0]}.{SCHEMA_VERSION[1]}".encode(),
                KIND_KEY: kind.encode(),
            },
        )
        self._getters = [operator.attrgetter(c.name) for c in self.columns]
        #: ``build(*values)``: an event from one value per column, in column order.
        self.build: Callable[..., Event] = event_builder(cls, *(c.name for c in self.columns))
        #: The position of ``ts_recv`` among the columns.
        self.ts_recv_index = next(i for i, c in enumerate(self.columns) if c.name == "ts_recv")

    #: Columns whose values are strings in files (read back dictionary-encoded, which
    #: allocates each distinct string once per batch instead of once per row).
    @property
    def string_columns(self) -> list[str]:
        return [
            c.name for c in self.columns if c.type == pa.string() or pa.types.is_dictionary(c.type)
        ]

    def to_batch(
        self, events: Sequence[Event], rec_index: Sequence[int], *, provider: str | None = None
    ) -> pa.RecordBatch:
        """One record batch of ``events`` (all of this class), with their run indices.

        ``provider``: the provider of every event, when the caller knows they
        share one (the column is then built without looking at the events).
        Raises what pyarrow raises for a value of the wrong type
        (:exc:`pyarrow.ArrowInvalid`, :exc:`pyarrow.ArrowTypeError`,
        :exc:`OverflowError`); :meth:`bad_field` names the culprit.
        """
        arrays = [
            pa.repeat(pa.scalar(provider, pa.string()), len(events))
            if provider is not None and column.name == "provider"
            else column.to_arrow(list(map(getter, events)))
            for column, getter in zip(self.columns, self._getters, strict=True)
        ]
        arrays.append(pa.array(rec_index, type=pa.int64()))
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def bad_field(self, event: Event) -> str | None:
        """The first field of ``event`` that has no value of its column's type, or None."""
        for column, getter in zip(self.columns, self._getters, strict=True):
            value = getter(event)
            if value is None and not column.nullable:
                return column.name
            try:
                column.to_arrow([value])
            except (pa.ArrowException, TypeError, ValueError, OverflowError):
                return column.name
        return None

    def from_batch(self, batch: pa.RecordBatch, path: str) -> tuple[list[Event], list[int]]:
        """The events of a batch read from ``path``, and their ``ts_recv`` values.

        Raises as :meth:`read_columns` does.
        """
        values = self.read_columns(batch, path)
        return list(map(self.build, *values)), values[self.ts_recv_index]

    def read_columns(self, batch: pa.RecordBatch, path: str) -> list[list[Any]]:
        """The Python values of a batch read from ``path``: one list per column, in column order.

        ``map(self.build, *values)`` makes the events (lazily: replay builds
        them a slice at a time). Columns the file lacks get the field's
        default (see the module docstring); a null in a column that cannot
        hold one, or a value an enum does not know, raises
        :exc:`ReplayError` naming ``path``.
        """
        rows = batch.num_rows
        names = batch.schema.names
        values: list[list[Any]] = []
        for column in self.columns:
            if column.name not in names:
                values.append([column.default] * rows)
                continue
            array = batch.column(column.name)
            if not column.nullable and array.null_count:
                raise ReplayError(f"{path}: column {column.name!r} has nulls", path=path)
            try:
                values.append(column.from_arrow(array))
            except ValueError as exc:
                raise ReplayError(f"{path}: column {column.name!r}: {exc}", path=path) from exc
        return values

    def check_file_schema(self, file_schema: pa.Schema, path: str) -> None:
        """Refuse a file whose columns this version cannot read without losing data."""
        ours = {c.name: c for c in self.columns}
        for field in file_schema:
            if field.name == REC_INDEX:
                continue
            column = ours.get(field.name)
            if column is None:
                raise ReplayError(
                    f"{path}: unknown column {field.name!r} in a {self.kind} file "
                    f"(written by a newer version? ignoring it would drop data)",
                    path=path,
                )
            if _value_type(field.type) != _value_type(column.type):
                raise ReplayError(
                    f"{path}: column {field.name!r} is {field.type}, expected {column.type}",
                    path=path,
                )
        names = set(file_schema.names)
        if REC_INDEX not in names:
            raise ReplayError(f"{path}: no {REC_INDEX!r} column", path=path)
        for column in self.columns:
            if column.name not in names and column.default is attrs.NOTHING:
                raise ReplayError(f"{path}: required column {column.name!r} is missing", path=path)


def _value_type(arrow: pa.DataType) -> object:
    """A type with dictionary encoding and list item names stripped, for comparison."""
    if pa.types.is_dictionary(arrow):
        return _value_type(arrow.value_type)
    if pa.types.is_list(arrow) or pa.types.is_large_list(arrow):
        return ("list", _value_type(arrow.value_type))
    if pa.types.is_struct(arrow):
        return ("struct", tuple((f.name, _value_type(f.type)) for f in arrow))
    return arrow


def check_version(metadata: Mapping[bytes, bytes] | None, path: str) -> str:
    """The kind named in a file's metadata, after checking its schema version.

    Raises :exc:`SchemaVersionError` for a newer major version and
    :exc:`ReplayError` for a file that is not a recording file.
    """
    metadata = metadata or {}
    raw_version, raw_kind = metadata.get(VERSION_KEY), metadata.get(KIND_KEY)
    if raw_version is None or raw_kind is None:
        raise ReplayError(
            f"{path}: not a puffin_trio recording file (no schema version)", path=path
        )
    text = raw_version.decode("utf-8", "replace")
    major_text, _, minor_text = text.partition(".")
    if not (major_text.isdigit() and minor_text.isdigit()):
        raise ReplayError(f"{path}: malformed schema version {text!r}", path=path)
    major = int(major_text)
    if major > SCHEMA_VERSION[0]:
        raise SchemaVersionError(
            f"{path}: schema version {text} is newer than this puffin_trio reads "
            f"({SCHEMA_VERSION[0]}.x); upgrade puffin_trio to replay it",
            path=path,
        )
    if major < SCHEMA_VERSION[0]:
        raise SchemaVersionError(
            f"{path}: schema version {text} predates {SCHEMA_VERSION[0]}.0, the first one "
            f"puffin_trio wrote",
            path=path,
        )
    kind = raw_kind.decode("utf-8", "replace")
    if kind not in _BY_KIND:
        raise ReplayError(f"{path}: unknown event kind {kind!r}", path=path)
    return kind


#: Event class -> its kind (partition name).
KINDS: Final[Mapping[type, str]] = types.MappingProxyType(
    {cls: _KIND_NAMES.get(cls, TYPE_TAGS[cls]) for cls in EVENT_TYPES}
)
#: Event class -> its schema, for every class in ``EVENT_TYPES``.
SCHEMAS: Final[Mapping[type, EventSchema]] = types.MappingProxyType(
    {cls: EventSchema(cls, kind) for cls, kind in KINDS.items()}
)
_BY_KIND: Final[Mapping[str, EventSchema]] = {s.kind: s for s in SCHEMAS.values()}


def schema_for_kind(kind: str) -> EventSchema:
    """The schema of a kind name (``"trade"``); KeyError if unknown."""
    return _BY_KIND[kind]
