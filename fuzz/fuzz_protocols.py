"""Fuzz the provider protocols for a long run and print what broke.

Usage (from the repository root)::

    python -m fuzz.fuzz_protocols                         # 100 000 inputs per variant
    python -m fuzz.fuzz_protocols --inputs 1000000 --seed 7 --variants polygon,ib
    python -m fuzz.fuzz_protocols --examples 5            # more examples per finding

Each input is a frame recorded from the simulators (:func:`fuzz.frames.corpus`)
damaged by one mutation (:data:`fuzz.frames.MUTATIONS`), fed to the variant's
protocol in the state of a live connection (:class:`fuzz.frames.Harness`). The
run is seeded: the same seed gives the same inputs. The table shows, per
variant: inputs per second, exceptions out of ``receive()`` by type, events
with an impossible value by field, frames whose counters do not add up, and
events whose fields do not hold their declared types; then examples of each.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence

import attrs

from fuzz.frames import MUTATIONS, VARIANTS, Harness, corpus, ill_typed, mutate


@attrs.define
class Tally:
    """What one variant's run found."""

    variant: str
    inputs: int = 0
    seconds: float = 0.0
    exceptions: Counter[str] = attrs.Factory(Counter)
    impossible: Counter[str] = attrs.Factory(Counter)
    miscounts: int = 0
    ill_typed: Counter[str] = attrs.Factory(Counter)
    examples: dict[str, list[str]] = attrs.Factory(dict)

    def keep(self, kind: str, frame: str | bytes, detail: str, limit: int) -> None:
        kept = self.examples.setdefault(kind, [])
        if len(kept) < limit:
            shown = frame if len(frame) <= 160 else frame[:160]
            kept.append(f"{detail[:120]}  <-  {shown!r}{' ...' if len(frame) > 160 else ''}")


def run(variant: str, inputs: int, seed: int, examples: int) -> Tally:
    """Feed ``inputs`` damaged frames to one variant."""
    frames = corpus(variant)
    harness = Harness(variant)
    rng = random.Random(f"{seed}:{variant}")
    tally = Tally(variant)
    start = time.perf_counter()
    for _ in range(inputs):
        frame = mutate(rng.choice(frames), harness.family, rng, frames)
        verdict = harness.feed(frame)
        if verdict.exception is not None:
            kind = type(verdict.exception).__name__
            tally.exceptions[kind] += 1
            tally.keep(f"exception {kind}", frame, repr(verdict.exception), examples)
            continue
        for _item, why in verdict.impossible:
            field = why.split(" ", 1)[0]
            tally.impossible[field] += 1
            tally.keep(f"impossible {field}", frame, why, examples)
        if verdict.miscount is not None:
            tally.miscounts += 1
            tally.keep("miscount", frame, verdict.miscount, examples)
        for item in verdict.items:
            wrong = ill_typed(item)
            if wrong is not None:
                field = f"{type(item).__name__}.{wrong.split(' ', 1)[0]}"
                tally.ill_typed[field] += 1
                tally.keep(f"ill-typed {field}", frame, wrong, examples)
    tally.inputs = inputs
    tally.seconds = time.perf_counter() - start
    return tally


def _top(counter: Counter[str], limit: int = 3) -> str:
    if not counter:
        return "0"
    total = sum(counter.values())
    shown = ", ".join(f"{k} {v}" for k, v in counter.most_common(limit))
    more = f", +{len(counter) - limit} kinds" if len(counter) > limit else ""
    return f"{total} ({shown}{more})"


def table(tallies: Sequence[Tally]) -> str:
    header = ("variant", "inputs", "inputs/s", "exceptions", "impossible events", "miscounts",
              "ill-typed events")  # fmt: skip
    rows = [
        (
            t.variant,
            f"{t.inputs:,}",
            f"{t.inputs / t.seconds:,.0f}" if t.seconds else "-",
            _top(t.exceptions),
            _top(t.impossible),
            str(t.miscounts),
            _top(t.ill_typed),
        )
        for t in tallies
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    rule = "  ".join("=" * w for w in widths)
    lines = [rule, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), rule]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([*lines, rule])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs per variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--examples", type=int, default=2, help="examples kept per finding")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; expected some of {VARIANTS}")
    print(f"mutations: {', '.join(MUTATIONS)}; seed {args.seed}", file=sys.stderr)
    tallies = []
    for variant in variants:
        print(f"{variant}: recording the corpus and fuzzing ...", file=sys.stderr, flush=True)
        tallies.append(run(variant, args.inputs, args.seed, args.examples))
    print(table(tallies))
    for tally in tallies:
        for kind, kept in sorted(tally.examples.items()):
            print(f"\n{tally.variant} / {kind}:")
            for line in kept:
                print(f"  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
