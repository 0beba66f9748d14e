"""Hypothesis strategies for sequence-numbered streams with drops, duplicates and reordering.

This module owns strategies that describe what a network does to a stream of
sequence numbers, together with a record of what it did, so that a test can
compute what a gap detector (ours, :class:`puffin_trio.guard.SequenceGuard`,
or a user's) ought to report. It must not know about providers or events:
it deals in plain integers; a test maps them to events.

* :func:`bounded_reorderings`: permutations of a list in which no element
  moves more than a given number of places.
* :func:`sequence_streams`: a run of consecutive sequence numbers after
  random drops, duplicates and bounded reordering, as a
  :class:`SequenceStream`.

Both shrink towards the unharmed stream (nothing dropped, duplicated or
moved), so a failing example shows the smallest damage that breaks a test.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import attrs
from hypothesis import strategies as st

__all__ = ["SequenceStream", "bounded_reorderings", "sequence_streams"]

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class SequenceStream:
    """A stream of sequence numbers as sent, and as it arrived.

    * ``sent``: what the sender numbered, consecutive integers.
    * ``arrivals``: what arrived, in arrival order.
    * ``dropped``: numbers in ``sent`` that never arrive.
    * ``duplicated``: numbers that arrive twice (never a dropped one).
    * ``displacement``: the largest distance, in places, between where a
      message is in ``arrivals`` and where it would be had nothing been
      reordered (same drops and duplicates). ``0`` means in order.
    """

    sent: range
    arrivals: tuple[int, ...]
    dropped: frozenset[int]
    duplicated: frozenset[int]
    displacement: int

    @property
    def received(self) -> frozenset[int]:
        """The distinct numbers that arrive."""
        return frozenset(self.arrivals)

    def dropped_runs(self) -> tuple[range, ...]:
        """The dropped numbers as maximal runs of consecutive numbers, ascending."""
        runs: list[range] = []
        for seq in sorted(self.dropped):
            if runs and runs[-1].stop == seq:
                runs[-1] = range(runs[-1].start, seq + 1)
            else:
                runs.append(range(seq, seq + 1))
        return tuple(runs)


@st.composite
def _bounded_reordering_with_moves(
    draw: st.DrawFn, items: Sequence[T], max_displacement: int
) -> tuple[list[T], int]:
    """A reordering of ``items`` and the largest distance an element moved."""
    # Element i sorts by i + delay_i with 0 <= delay_i <= d: an element can only be
    # passed by the d elements after it and can only pass the d elements before it,
    # so none moves more than d places.
    delays = draw(
        st.lists(
            st.integers(min_value=0, max_value=max_displacement),
            min_size=len(items),
            max_size=len(items),
        )
    )
    order = sorted(range(len(items)), key=lambda index: (index + delays[index], index))
    moved = max((abs(place - index) for place, index in enumerate(order)), default=0)
    return [items[index] for index in order], moved


def bounded_reorderings(items: Sequence[T], max_displacement: int) -> st.SearchStrategy[list[T]]:
    """Permutations of ``items`` where no element ends more than ``max_displacement`` places
    from where it started (``0`` yields ``items`` in order). Shrinks towards no reordering.

    Raises ``ValueError`` if ``max_displacement`` is negative.
    """
    if max_displacement < 0:
        raise ValueError(f"max_displacement must be >= 0, got {max_displacement}")
    return _bounded_reordering_with_moves(items, max_displacement).map(lambda pair: pair[0])


@st.composite
def _sequence_streams(
    draw: st.DrawFn,
    min_len: int,
    max_len: int,
    start: int,
    max_displacement: int,
    drop: bool,
    duplicate: bool,
) -> SequenceStream:
    length = draw(st.integers(min_value=min_len, max_value=max_len))
    sent = range(start, start + length)
    dropped: frozenset[int] = frozenset()
    if drop and length:
        dropped = draw(st.frozensets(st.sampled_from(sent), max_size=length))
    kept = [seq for seq in sent if seq not in dropped]
    duplicated: frozenset[int] = frozenset()
    if duplicate and kept:
        duplicated = draw(st.frozensets(st.sampled_from(kept), max_size=len(kept)))
    with_copies = [copy for seq in kept for copy in ((seq, seq) if seq in duplicated else (seq,))]
    arrivals, moved = draw(_bounded_reordering_with_moves(with_copies, max_displacement))
    return SequenceStream(
        sent=sent,
        arrivals=tuple(arrivals),
        dropped=dropped,
        duplicated=duplicated,
        displacement=moved,
    )


def sequence_streams(
    *,
    min_len: int = 0,
    max_len: int = 50,
    start: int = 0,
    max_displacement: int = 3,
    drop: bool = True,
    duplicate: bool = True,
) -> st.SearchStrategy[SequenceStream]:
    """Streams of ``min_len`` to ``max_len`` consecutive numbers from ``start``, damaged.

    The damage is applied in this order: drop any subset of the numbers (if
    ``drop``); send any subset of the rest twice, the copy right after the
    original (if ``duplicate``); then reorder the result with
    :func:`bounded_reorderings` so that nothing moves more than
    ``max_displacement`` places. The returned :class:`SequenceStream` records
    the drops, the duplicates and the displacement actually drawn.

    Raises ``ValueError`` for a negative length or displacement, or
    ``min_len > max_len``.
    """
    if min_len < 0 or max_len < min_len:
        raise ValueError(f"need 0 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    if max_displacement < 0:
        raise ValueError(f"max_displacement must be >= 0, got {max_displacement}")
    return _sequence_streams(min_len, max_len, start, max_displacement, drop, duplicate)
