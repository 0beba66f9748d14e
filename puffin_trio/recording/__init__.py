"""Recording and replay: events kept in Parquet files, and read back through the same API.

* :func:`open_recorder` writes events (``await recorder.record(events)`` or
  ``await recorder.write(event)``) into a hive-style Parquet directory that
  DuckDB, polars and ``pyarrow.dataset`` read as it is.
* :func:`open_replay` reads a recording back as a channel of the same event
  objects, in ``ts_recv`` order, optionally paced and filtered.

The layout, the column types, the schema version, the crash bound and the
numbers are in ``docs/guide/recording.rst``.
"""

from puffin_trio.recording._recorder import (
    CLOSE_TIMEOUT,
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_ROTATE_BYTES,
    DEFAULT_ROTATE_INTERVAL,
    Recorder,
    RecorderStatistics,
    open_recorder,
)
from puffin_trio.recording._replay import open_replay
from puffin_trio.recording._schema import KINDS, SCHEMA_VERSION

__all__ = [
    "CLOSE_TIMEOUT",
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_ROTATE_BYTES",
    "DEFAULT_ROTATE_INTERVAL",
    "KINDS",
    "SCHEMA_VERSION",
    "Recorder",
    "RecorderStatistics",
    "open_recorder",
    "open_replay",
]
