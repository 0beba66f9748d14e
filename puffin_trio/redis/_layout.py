"""Where events live in Redis: stream keys, shards, entry ids and resumable positions.

This module owns the naming scheme that the publisher writes and every
consumer reads, so both sides agree on it by construction:

* ``{prefix}:{family}:{shard}``: one stream per event family (``trades``,
  ``quotes``, ``books``, ``bars``, ``statuses``) and symbol shard
  (``crc32(symbol) % SHARDS``), holding that family's events for the symbols
  that hash to the shard. A consumer of 5 symbols reads at most 5 shards per
  family.
* ``{prefix}:control``: ``Status`` and ``Gap`` events (every consumer reads it).
* ``{prefix}:clock``: one small entry per publish transaction, naming the
  streams it wrote. Consumers block on this one key, learn which streams
  changed, and use it as the horizon up to which every stream is complete.
* ``{prefix}:layout``: a hash with the layout version, the shard count and the
  epoch (below), written by the publisher.

Entry ids are chosen by the publisher, not by Redis: ``{epoch}-{g}``, where
``epoch`` is fixed for the life of the stream (the first publisher's start
time in ms) and ``g`` is the global index (0, 1, 2, ... across all streams) of
the entry's first event. So ids order entries across streams in publish
order, ``MINID`` trims by event count, and a retried write is refused as a
duplicate instead of being stored twice.

It must not do I/O or encode events (that is :mod:`._encoding`).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Collection, Iterable, Mapping
from typing import Final

import attrs

from puffin_trio.errors import ConfigurationError, RedisError
from puffin_trio.events import (
    Bar,
    Gap,
    LimitBands,
    OrderBookUpdate,
    Quote,
    Status,
    Trade,
    TradeCancel,
    TradeCorrection,
    TradingStatus,
)

__all__ = [
    "CONTROL",
    "FAMILIES",
    "FAMILY_OF",
    "LAYOUT_VERSION",
    "SHARDS",
    "Layout",
    "Position",
    "check_layout",
    "entry_id",
    "id_before",
    "parse_id",
    "shard_of",
]

#: Bumped when the key scheme or the entry encoding changes incompatibly.
LAYOUT_VERSION: Final = 1
#: Symbol shards per family. 64 keeps a consumer of a handful of symbols at a
#: few percent of a family's volume (5 symbols hit at most 5/64 = 8 % of it,
#: where one stream per family would cost 100 %), while a publish transaction
#: still writes few enough entries (at most 64 per family, each a batch) that
#: batching pays: one stream per symbol would write one entry per event once
#: thousands of symbols are active (see the measurements in the docs).
SHARDS: Final = 64
#: Family name (what ``kinds=`` takes) -> the letter used in key names.
FAMILIES: Final[Mapping[str, str]] = {
    "trades": "t",
    "quotes": "q",
    "books": "b",
    "bars": "a",
    "statuses": "s",
}
#: Event class -> family. ``Status`` and ``Gap`` go to the control stream.
FAMILY_OF: Final[Mapping[type, str]] = {
    Trade: "trades",
    TradeCorrection: "trades",
    TradeCancel: "trades",
    Quote: "quotes",
    OrderBookUpdate: "books",
    Bar: "bars",
    TradingStatus: "statuses",
    LimitBands: "statuses",
}
CONTROL_TYPES: Final = (Status, Gap)
#: The control stream's short name (in clock entries and positions).
CONTROL: Final = "c"

_PREFIX = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_MAX_SEQ: Final = 2**64 - 1


def shard_of(symbol: str) -> int:
    """The shard of ``symbol``: CRC-32 of its UTF-8 bytes, modulo :data:`SHARDS`.

    CRC-32 rather than ``hash()``: it is the same in every process, on every
    machine and in every language, which ``hash()`` of a string is not.
    """
    return zlib.crc32(symbol.encode("utf-8", "surrogatepass")) % SHARDS


def entry_id(epoch: int, g: int) -> bytes:
    """The stream id ``{epoch}-{g}``."""
    return b"%d-%d" % (epoch, g)


def parse_id(identifier: bytes | str) -> tuple[int, int]:
    """``b"1700000000000-42"`` -> ``(1700000000000, 42)``; ValueError if malformed."""
    text = identifier.decode("ascii") if isinstance(identifier, bytes) else identifier
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)


def id_before(epoch: int, g: int) -> bytes:
    """The largest id below ``{epoch}-{g}``: reading after it includes ``{epoch}-{g}``."""
    if g > 0:
        return entry_id(epoch, g - 1)
    if epoch > 0:
        return b"%d-%d" % (epoch - 1, _MAX_SEQ)
    return b"0-0"


@attrs.frozen
class Layout:
    """The key names under one prefix."""

    prefix: str

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not _PREFIX.fullmatch(self.prefix):
            raise ConfigurationError(
                f"prefix must be 1-64 letters, digits, '_', '.' or '-', got {self.prefix!r}"
            )

    @property
    def clock(self) -> str:
        return f"{self.prefix}:clock"

    @property
    def meta(self) -> str:
        """The layout hash (version, shards, epoch)."""
        return f"{self.prefix}:layout"

    def key(self, suffix: str) -> str:
        """Full key of a stream from its short name (``"q07"``, ``"c"``)."""
        if suffix == CONTROL:
            return f"{self.prefix}:control"
        family = _FAMILY_BY_LETTER[suffix[0]]
        return f"{self.prefix}:{family}:{suffix[1:]}"

    def group(self, name: str) -> str:
        """The hash where consumer group ``name`` keeps each stream's next event number."""
        return f"{self.prefix}:group:{name}"


_FAMILY_BY_LETTER: Final = {letter: family for family, letter in FAMILIES.items()}


def check_layout(meta: Mapping[bytes, bytes], layout: Layout, server: str) -> int:
    """The epoch recorded in a layout hash (0: none yet); RedisError if it is not ours.

    A prefix written by another layout version or shard count cannot be read or
    continued by this one: the keys or the entries would mean something else.
    """
    if not meta:
        return 0
    try:
        version, shards = int(meta[b"version"]), int(meta[b"shards"])
        epoch = int(meta[b"epoch"])
    except (KeyError, ValueError):
        raise RedisError(
            f"{layout.meta} on {server} is not a puffin_trio layout; use another prefix"
        ) from None
    if version != LAYOUT_VERSION or shards != SHARDS:
        raise RedisError(
            f"prefix {layout.prefix!r} on {server} holds layout version {version} "
            f"({shards} shards); this puffin_trio uses version {LAYOUT_VERSION} "
            f"({SHARDS} shards): use another prefix"
        )
    return epoch


def suffix(family: str, shard: int) -> str:
    """Short name of a data stream: ``("quotes", 7)`` -> ``"q07"``."""
    return f"{FAMILIES[family]}{shard:02d}"


def subscribed_suffixes(symbols: Collection[str] | None, kinds: Iterable[str]) -> list[str]:
    """The streams a consumer of ``symbols`` (``None``: all) and ``kinds`` reads, control first."""
    shards = range(SHARDS) if symbols is None else sorted({shard_of(s) for s in symbols})
    return [CONTROL, *(suffix(family, shard) for family in kinds for shard in shards)]


@attrs.frozen
class Position:
    """Where a consumer stands: resumable, exact, and independent of its filters.

    * ``epoch``: the stream's epoch (``0``: nothing was published yet).
    * ``tx``: global index of the first event of the oldest publish
      transaction not wholly consumed; a resume re-reads from it.
    * ``counts``: per stream (short name), how many of its events come before
      the consumer's place. A resume skips what it already delivered, and a
      stream whose next entry starts later than its count lost events (to
      trimming or a Redis restart): that is announced with the exact count.
      A stream not listed is read from wherever the resume finds it.
    """

    epoch: int
    tx: int
    counts: Mapping[str, int]

    _VERSION = "p1"

    def encode(self) -> str:
        """The opaque text form: ``p1:{epoch}:{tx}:{name}={count},...``."""
        counts = ",".join(f"{name}={count}" for name, count in sorted(self.counts.items()))
        return f"{self._VERSION}:{self.epoch}:{self.tx}:{counts}"

    @classmethod
    def decode(cls, text: str) -> Position:
        """Parse :meth:`encode`'s form; ConfigurationError for anything else."""
        try:
            version, epoch, tx, counts = text.split(":", 3)
            if version != cls._VERSION:
                raise ValueError(f"unknown version {version!r}")
            parsed: dict[str, int] = {}
            for item in filter(None, counts.split(",")):
                name, _, count = item.partition("=")
                if not _valid_suffix(name):
                    raise ValueError(f"unknown stream {name!r}")
                parsed[name] = int(count)
            position = cls(int(epoch), int(tx), parsed)
        except (ValueError, AttributeError) as exc:
            shown = text if len(text) <= 60 else text[:57] + "..."
            raise ConfigurationError(
                f"start= must be 'latest', 'earliest' or a value from position(); "
                f"got {shown!r} ({exc})"
            ) from None
        if position.epoch < 0 or position.tx < 0 or min(parsed.values(), default=0) < 0:
            raise ConfigurationError(f"start= position has a negative number: {text[:60]!r}")
        return position


def _valid_suffix(name: str) -> bool:
    if name == CONTROL:
        return True
    if len(name) != 3 or name[0] not in _FAMILY_BY_LETTER or not name[1:].isdigit():
        return False
    return int(name[1:]) < SHARDS
