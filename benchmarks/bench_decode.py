"""Decode: µs per message of each provider protocol, against the bare parse of the same bytes.

Run: ``python benchmarks/bench_decode.py [--quick] [--case NAME]``.

Each sample is a 20-message frame (IB: 20 messages) of real provider messages
built by the simulators' message builders. Columns: the bare parse
(``orjson.loads``, ``msgpack.unpackb``, a NUL split), the protocol's
``receive`` (parse, normalise, build events), the same plus the sequence guard,
and the floor (the bare parse plus one event per message, unchecked: the least a
decoder parsing into dicts pays; the typed msgspec decoders of Polygon's and
Alpaca's JSON stock frames, which check in C, can go below it). In-process,
no sockets. Target: <= 1.5 µs per Alpaca trade.
"""

from __future__ import annotations

import argparse
import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import attrs
from _blast import Case, data_events
from _harness import Durations, print_table, run_script, verdict

from puffin_trio import GuardStream, SequenceGuard, Trade
from puffin_trio._liveness import Liveness, Stream
from puffin_trio.providers._base import ProviderProtocol

#: µs per Alpaca trade in a 20-message frame.
TARGET_US = 1.5


#: Seconds per timed batch of calls, and batches per figure (the best one counts).
FULL = Durations(seconds=0.3, repeats=5)
QUICK = Durations(seconds=0.1, repeats=3)
#: Events in the guard-only reference figures, and events per frame in the session's.
_GUARD_EVENTS = 100_000
_FRAME = 20


def per_call_seconds(fn: Callable[[], object], s: Durations) -> float:
    """Best seconds per call of ``fn`` over ``s.repeats`` batches of about ``s.seconds`` each."""
    loops = 1
    while True:  # calibrate
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= s.seconds / 4:
            break
        loops *= 2
    loops = max(1, int(loops * s.seconds / max(elapsed, 1e-9)))
    best = math.inf
    for _ in range(s.repeats):
        gc.collect()
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, (time.perf_counter() - start) / loops)
    return best


@dataclass
class Row:
    label: str
    baseline_label: str
    baseline_us: float
    receive_us: float
    guarded_us: float
    floor_us: float
    events: int


def decode(cases: Sequence[Case], s: Durations) -> list[Row]:
    rows: list[Row] = []
    ts = time.time_ns()
    strict_us = math.nan
    monotonic: list[str] = []
    for case in cases:
        for sample in case.decode_samples():
            run, m = sample.decode, sample.messages
            events = data_events(run(ts))
            if len(events) != m:
                raise RuntimeError(f"{sample.label}: decoded {len(events)} events, expected {m}")
            guarded = decode_and_guard(run, ts, SequenceGuard("none"))
            rows.append(
                Row(
                    sample.label,
                    sample.baseline_label,
                    per_call_seconds(sample.baseline, s),
                    per_call_seconds(partial(run, ts), s),
                    per_call_seconds(guarded, s),
                    math.nan if sample.floor is None else per_call_seconds(sample.floor, s),
                    len(events),
                )
            )
            trades = [e for e in events if isinstance(e, Trade)]
            if trades and math.isnan(strict_us):
                strict_us = strict_guard_us(trades, s)
            protocol = sample.protocol
            if protocol.guard_mode == "monotonic":
                us = session_guard_us(protocol, events, s)
                monotonic.append(
                    f"reference: what the session adds per {sample.label} event, its "
                    f"Stream (liveness, guard handle) and SequenceGuard('monotonic').feed_streams "
                    f"per 20-event frame, in order: {us:.3f} µs."
                )
    print_table(
        "Decode + normalise (+ guard), 20-message frames (IB: 20 messages), best of "
        f"{s.repeats} (µs per message)",
        ["frame", "baseline", "base µs", "receive µs", "x base", "+guard(none) µs", "floor µs"],
        [
            [
                r.label, r.baseline_label, f"{r.baseline_us * 1e6 / r.events:.3f}",
                f"{r.receive_us * 1e6 / r.events:.3f}", f"{r.receive_us / r.baseline_us:.2f}x",
                f"{r.guarded_us * 1e6 / r.events:.3f}",
                "-" if math.isnan(r.floor_us) else f"{r.floor_us * 1e6 / r.events:.3f}",
            ]
            for r in rows
        ],
    )  # fmt: skip
    print(
        "receive = provider.protocol().receive(frame, ts_recv): parse, normalise, build events\n"
        "(IB: one call per message, 20 messages; the protocol is past its handshake with the\n"
        "requests open, and each message changes its quote side, so each gives one event).\n"
        "+guard(none): the same plus SequenceGuard('none').feed per event (a pass-through;\n"
        "the session skips the guard entirely for providers without sequence numbers).\n"
        "floor: the baseline plus one event per message built unchecked (event_builder;\n"
        "JSON: rfc3339_to_ns), no validation or conversion: the least a decoder parsing into\n"
        "dicts pays (the typed msgspec paths of Polygon and Alpaca JSON stocks can beat it).\n"
        f"reference: SequenceGuard('strict').feed on seq-numbered trades, in order: "
        f"{strict_us:.3f} µs per event (guard only)."
    )
    for line in monotonic:
        print(line)
    return rows


def decode_and_guard(
    run: Callable[[int], list[Any]], ts: int, guard: SequenceGuard[Any]
) -> Callable[[], None]:
    """A call that decodes the sample and feeds each item to ``guard``, as a reader would."""
    feed = guard.feed
    out: list[Any] = []

    def call() -> None:
        for item in run(ts):
            feed("k", item, 0, out)
        out.clear()

    return call


def session_guard_us(protocol: ProviderProtocol, template: Sequence[Any], s: Durations) -> float:
    """µs per event of the session reader's per-event step for ``protocol``'s mode, on
    seq-numbered copies of ``template`` whose numbers only go up, in 20-event frames: the
    symbol's :class:`~puffin_trio._liveness.Stream` (one lookup: the liveness stamp and the
    guard handle), then ``SequenceGuard.feed_streams`` once per frame."""
    events = [attrs.evolve(template[i % len(template)], seq=i + 1) for i in range(_GUARD_EVENTS)]
    frames = [events[i : i + _FRAME] for i in range(0, len(events), _FRAME)]

    def call() -> None:
        guard: SequenceGuard[Any] = SequenceGuard(protocol.guard_mode)
        streams = Liveness().streams
        out: list[Any] = []
        handles: list[GuardStream] = []
        feed_streams, stream_key = guard.feed_streams, protocol.stream_key
        for frame in frames:
            for event in frame:
                table = streams[type(event)]
                try:
                    stream = table[event.symbol]
                except KeyError:
                    stream = table[event.symbol] = Stream(0.0, guard.stream(stream_key(event)))
                stream.at = 1.0
                handles.append(stream.sequence)  # type: ignore[arg-type]
            feed_streams(handles, frame, 0, out)
            handles.clear()
            out.clear()

    return per_call_seconds(call, s) * 1e6 / _GUARD_EVENTS


def strict_guard_us(template: Sequence[Trade], s: Durations) -> float:
    """µs per event of a strict guard fed in-order, seq-numbered trades of several streams."""
    events = [
        attrs.evolve(template[i % len(template)], seq=i // len(template) + 1)
        for i in range(_GUARD_EVENTS)
    ]
    keys = [f"Trade:{e.symbol}:{i % len(template)}" for i, e in enumerate(events)]
    pairs = list(zip(keys, events, strict=True))

    def call() -> None:
        guard: SequenceGuard[Trade] = SequenceGuard("strict")
        out: list[Any] = []
        feed = guard.feed
        for key, event in pairs:
            feed(key, event, 0, out)
            out.clear()

    return per_call_seconds(call, s) * 1e6 / _GUARD_EVENTS


def targets(rows: Sequence[Row]) -> None:
    print("\n## Targets\n")
    for row in rows:
        if row.label.startswith("alpaca trade"):
            us = row.receive_us * 1e6 / row.events
            floor_us = row.floor_us * 1e6 / row.events
            floor = "" if math.isnan(floor_us) else f"; floor {floor_us:.2f} µs"
            print(
                f"{verdict(us <= TARGET_US)}  decode {row.label} in a 20-message frame: "
                f"{us:.2f} µs (target <= {TARGET_US} µs{floor})"
            )


def benchmark(args: argparse.Namespace, cases: list[Case]) -> None:
    targets(decode(cases, QUICK if args.quick else FULL))


def main(argv: Sequence[str] | None = None) -> None:
    run_script(__doc__, "decode", benchmark, argv)


if __name__ == "__main__":
    main()
