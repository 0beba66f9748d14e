"""Run the fault matrix in real time and print it as a table (the README's fault matrix).

Usage (from the repository root)::

    python -m fuzz.fault_matrix                     # every row, both providers, default knobs
    python -m fuzz.fault_matrix --rows reset,stall --providers alpaca
    python -m fuzz.fault_matrix --json matrix.json  # keep the measurements too

Each row is :func:`fuzz.matrix.run_row` on trio's real clock: a simulator, the
fault proxy and a supervised session on loopback, with the providers' default
timing knobs, so the times are what a user would see. A full run takes a few
minutes (a half-open stall is found only by the heartbeat, and Alpaca's
connection limit adds its 90 s cool-down).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from functools import partial
from pathlib import Path

import trio

from fuzz.matrix import PROVIDERS, ROWS, Outcome, dumps, run_row, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", default=",".join(r.name for r in ROWS))
    parser.add_argument("--providers", default=",".join(PROVIDERS))
    parser.add_argument("--budget", type=float, default=400.0, help="seconds per row at most")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    names = args.rows.split(",")
    unknown = set(names) - {r.name for r in ROWS}
    if unknown:
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")
    rows = [r for r in ROWS if r.name in names]
    outcomes: list[Outcome] = []
    for provider in args.providers.split(","):
        if provider not in PROVIDERS:
            parser.error(f"unknown provider {provider!r}")
        for row in rows:
            start = time.monotonic()
            outcome = trio.run(
                partial(run_row, provider, row, mock_clock=False, budget=args.budget)
            )
            print(
                f"{provider:8} {row.name:9} {time.monotonic() - start:6.1f} s  {outcome.summary()}",
                file=sys.stderr,
                flush=True,
            )
            outcomes.append(outcome)
    print(table(outcomes))
    if args.json is not None:
        args.json.write_bytes(dumps(outcomes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
