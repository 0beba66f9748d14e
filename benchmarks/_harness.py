"""What the benchmark scripts share: cases, child processes, tables and the command line.

This module owns the parts of ``bench_throughput.py``, ``bench_decode.py``,
``bench_latency.py`` and ``bench_rss.py`` that are not a measurement: the
registry of provider cases (:data:`CASES`), the servers each script runs in
child processes (a blast server or a package simulator, on the other core),
the table printer, the run header, and the options every script takes. It must
not measure anything.

Speed is judged by ratios to baselines measured in the same run: on a noisy
2-core machine, only those travel. A child process is the running script
itself with an internal ``--serve``/``--serve-sim`` flag (every script calls
:func:`run_child` first); it exits when its stdin closes, and on its own after
``--max-seconds``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from typing import Any

import trio
from _blast import Case
from _blast_alpaca import ALPACA
from _blast_ib import IB
from _blast_polygon import POLYGON

from puffin_trio import Gap, Status, Supervisor

__all__ = [
    "CASES",
    "CONTROL_TYPES",
    "NOTE_WIDTH",
    "RUN_TIMEOUT",
    "SIM_RATE",
    "Durations",
    "add_session",
    "child",
    "fmt_rate",
    "print_skipped",
    "print_table",
    "read_line",
    "run_script",
    "selected_cases",
    "server",
    "verdict",
]

#: Every benchmarked provider, by name (``--case NAME``; ``--serve NAME`` in a child).
CASES: Mapping[str, Case] = {"alpaca": ALPACA, "ib": IB, "polygon": POLYGON}
#: Events that are not market data: counted apart from the data everywhere.
CONTROL_TYPES: frozenset[type] = frozenset({Status, Gap})
#: The package simulators' feed rate in the latency and memory runs (messages/s).
SIM_RATE = 5000.0

#: The running script: children are this script again, with an internal flag.
SCRIPT = os.path.abspath(sys.argv[0])
#: Seconds a child server has to print its port: imports and the pre-encoded
#: frame pool take ~2 s here; 30 s covers a heavily loaded machine.
CHILD_STARTUP_TIMEOUT = 30.0
#: Seconds a child gets to exit after its stdin closes, before it is killed:
#: a clean exit takes well under a second.
CHILD_EXIT_TIMEOUT = 5.0
#: A child server stops by itself after this long, whatever happens to us:
#: several times the longest full run (~2 min), so it never cuts a run short,
#: yet an orphan cannot outlive a session.
CHILD_MAX_SECONDS = 1800.0
#: One measurement (connect, stream, close) must end within this: each takes
#: seconds, so two minutes means something hangs.
RUN_TIMEOUT = 120.0
#: Notes under the tables are wrapped to this many columns.
NOTE_WIDTH = 90
#: A blast server's default pool (messages), when a child is started by hand.
_DEFAULT_POOL = 20_000


# --------------------------------------------------------------------------- command line


def parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every script takes (``--quick``, ``--case``) and the child roles."""
    result = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    result.add_argument("--quick", action="store_true", help="small runs: a smoke test")
    result.add_argument(
        "--case", choices=sorted(CASES), action="append", help="provider(s) to run (default: all)"
    )
    hidden = argparse.SUPPRESS
    result.add_argument("--serve", choices=sorted(CASES), help=hidden)
    result.add_argument("--serve-sim", choices=sorted(CASES), help=hidden)
    result.add_argument("--batch", type=int, default=20, help=hidden)
    result.add_argument("--pool", type=int, default=_DEFAULT_POOL, help=hidden)
    result.add_argument("--rate", type=float, default=SIM_RATE, help=hidden)
    result.add_argument("--precise", action="store_true", help=hidden)
    result.add_argument("--max-seconds", type=float, default=CHILD_MAX_SECONDS, help=hidden)
    return result


def selected_cases(args: argparse.Namespace) -> list[Case]:
    """The ``--case`` providers, or all of them."""
    return [CASES[name] for name in args.case or sorted(CASES)]


def run_child(args: argparse.Namespace) -> bool:
    """Run the server role ``args`` asks for, if any; True if this process was a child."""
    if args.serve:
        serve: Any = partial(_serve_blast, CASES[args.serve], args.batch, args.pool)
        trio.run(_run_until_stdin_closes, serve, args.max_seconds)
        return True
    if args.serve_sim:
        case = CASES[args.serve_sim]
        if not case.has_sim:
            raise SystemExit(f"{case.name} has no simulator run: {case.no_sim}")
        serve = partial(case.sim, args.rate, args.batch)
        trio.run(_run_until_stdin_closes, serve, args.max_seconds, args.precise)
        return True
    return False


@dataclass(frozen=True)
class Durations:
    """How long one figure is measured: ``seconds`` timed after ``warmup`` seconds, the
    best of ``repeats``."""

    seconds: float
    warmup: float = 0.0
    repeats: int = 1


def run_script(
    doc: str | None,
    title: str,
    benchmark: Callable[[argparse.Namespace, list[Case]], None],
    argv: Sequence[str] | None,
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    roles: Callable[[argparse.Namespace], bool] | None = None,
) -> None:
    """A script's entry point: parse the command line (the common options, then the
    script's ``options``: flag -> ``add_argument`` keywords); run the child role it
    names (a server, else one of the script's ``roles``), or else print the header,
    ``benchmark(args, cases)`` (its tables and targets) and the time it took."""
    command = parser(doc)
    for flag, settings in (options or {}).items():
        command.add_argument(flag, **settings)
    args = command.parse_args(argv)
    if run_child(args) or (roles is not None and roles(args)):
        return
    print_header(title, args)
    started = time.perf_counter()
    benchmark(args, selected_cases(args))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


# --------------------------------------------------------------------------- output


def print_header(title: str, args: argparse.Namespace) -> None:
    """The run's title, machine, load and library versions."""
    load = os.getloadavg()
    names = ("trio", "trio-websocket", "wsproto", "orjson", "msgpack", "attrs")
    versions = ", ".join(f"{n} {version(n)}" for n in names)
    print(f"# puffin_trio benchmark: {title}" + (" (--quick)" if args.quick else ""))
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"python {platform.python_version()} ({platform.python_implementation()}); {versions}")
    sys.stdout.flush()


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain fixed-width table: first column left-aligned, the rest right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [f"{cells[0]:<{widths[0]}}"]
        parts += [f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(parts)

    print(f"\n## {title}\n")
    print(line(header))
    print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for row in rows:
        print(line(row))
    sys.stdout.flush()


def print_skipped(cases: Sequence[Case], what: str) -> None:
    """Say which cases have no rows in a simulator run, and why."""
    for case in cases:
        if not case.has_sim:
            print(textwrap.fill(f"no {what} rows for {case.name}: {case.no_sim}.", NOTE_WIDTH))


def fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}"


def verdict(ok: bool) -> str:
    """The first column of a target line."""
    return "met    " if ok else "NOT MET"


def add_session(sup: Supervisor, case: Case, port: int, variant: str) -> None:
    """``sup.add`` the case's provider with its subscription, as a user would."""
    sup.add(case.provider(port, variant), **case.topics)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- child processes


@contextlib.contextmanager
def child(arguments: Sequence[str]) -> Iterator[subprocess.Popen[str]]:
    """Run this script with ``arguments`` for the block; stop it (bounded) on leaving."""
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, *arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        _stop_child(proc)


def _stop_child(proc: subprocess.Popen[str]) -> None:
    """Close the child's stdin (it exits on EOF); kill it if it does not within a few seconds."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(timeout=CHILD_EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=CHILD_EXIT_TIMEOUT)
    if proc.stdout is not None:
        proc.stdout.close()


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The child's next stdout line, waiting at most ``timeout`` seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        raise RuntimeError(f"child {proc.args!r} printed nothing within {timeout} s")
    return line.strip()


@contextlib.contextmanager
def server(arguments: Sequence[str]) -> Iterator[int]:
    """A child server; yields the loopback port it printed."""
    with child(arguments) as proc:
        yield int(read_line(proc, CHILD_STARTUP_TIMEOUT))


async def _run_until_stdin_closes(
    serve: Callable[[trio.TaskStatus[int]], Any], max_seconds: float, precise: bool = False
) -> None:
    """Child side: start ``serve``, print its port, run until stdin closes or time is up.

    ``precise``: keep the event loop spinning so trio's timers fire on time
    (epoll rounds every timeout up to a whole millisecond, so a server pacing
    frames 0.2 ms apart otherwise falls behind). It costs this process a core.
    """
    with trio.move_on_after(max_seconds):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve)
            print(port, flush=True)
            if precise:
                nursery.start_soon(_spin)
            stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
            while await stdin.receive_some():
                pass
            nursery.cancel_scope.cancel()


async def _spin() -> None:
    while True:
        await trio.lowlevel.checkpoint()


async def _serve_blast(
    case: Case,
    batch: int,
    pool: int,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Child side: the case's blast server on a free loopback port."""
    pools = {v: case.wire(v, batch, pool) for v in case.variants}

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await case.serve(stream, pools)
        except Exception as exc:  # one bad connection must not end the server
            print(f"blast server: connection failed: {exc!r}", file=sys.stderr)
        finally:
            await trio.aclose_forcefully(stream)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port: int = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, listeners)
        task_status.started(port)
