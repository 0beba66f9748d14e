"""README.rst's Python examples run, for real, so they cannot rot.

Every ``.. code-block:: python`` block of README.rst is a complete program; each
runs in a fresh interpreter (``python -c``, as a user would run it), bounded in
time, and must exit 0 and print. A block may be preceded by one RST comment the
test reads, ``.. readme-test: key=value ...`` (shell quoting):

* ``simulator=alpaca`` / ``simulator=alpaca-crypto``: the example is written
  for the real provider. The test starts ``serve_alpaca`` (stocks or crypto) on
  loopback, puts the simulator's credentials in ``APCA_API_KEY_ID`` /
  ``APCA_API_SECRET_KEY`` (where the README says keys come from), and applies
  ``replace=... with=...`` to the source: the text to replace must occur
  exactly once, and ``{url}`` in the replacement becomes the simulator's URL.
  That substitution, visible in the README source, is the only change made.
* ``expect=TEXT``: the output must contain TEXT (otherwise it must not be empty).
* ``skip=REASON``: the block is not run. Skips are counted and asserted below,
  so none can happen silently.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import textwrap
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio

from puffin_trio.sim import serve_alpaca

README = Path(__file__).resolve().parent.parent / "README.rst"
#: What README.rst holds today; a block added or marked skip must update these.
EXPECTED_RUN = 5
EXPECTED_SKIPPED = 0
#: Seconds one example may take: the slowest streams for 2 s; the rest is the
#: interpreter's start-up and imports (~0.5 s), with room for a loaded machine.
EXAMPLE_TIMEOUT = 60.0
#: Simulator pace (messages/s): every example's count-based loop ends in well
#: under a second at this rate.
SIM_RATE = 500.0
SIM_KEY = "readme-key"
SIM_SECRET = "readme-secret"
#: ``simulator=`` name -> (symbols, request path of the provider's URL).
SIMULATORS: Mapping[str, tuple[tuple[str, ...], str]] = {
    "alpaca": (("AAPL", "MSFT"), "/v2/iex"),
    "alpaca-crypto": (("BTC/USD",), "/v1beta3/crypto/us"),
}
_OPTIONS = frozenset({"simulator", "replace", "with", "expect", "skip"})
_DIRECTIVE = re.compile(r"\.\. code-block:: python\s*$")
_MARK = ".. readme-test:"


@attrs.frozen
class Example:
    """One ``code-block:: python`` of the README, with the test's options for it."""

    line: int
    source: str
    options: Mapping[str, str]

    @property
    def name(self) -> str:
        return f"README.rst:{self.line}"


def examples(text: str) -> Iterator[Example]:
    """Every python code block of ``text`` (RST), with the ``readme-test`` comment before it."""
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if not _DIRECTIVE.match(line):
            continue
        indent = len(line) - len(line.lstrip())
        body: list[str] = []
        for following in lines[number + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            body.append(following)
        source = textwrap.dedent("\n".join(body)).strip("\n")
        previous = [ln for ln in lines[:number] if ln.strip()][-1:]
        options: dict[str, str] = {}
        if previous and previous[0].startswith(_MARK):
            for item in shlex.split(previous[0][len(_MARK) :]):
                key, sep, value = item.partition("=")
                if not sep or key not in _OPTIONS:
                    raise ValueError(f"README.rst:{number}: bad readme-test option {item!r}")
                options[key] = value
        yield Example(number + 1, source + "\n", options)


EXAMPLES = list(examples(README.read_text(encoding="utf-8")))


def test_the_readme_has_the_expected_examples_and_skips_none_silently() -> None:
    """Every python block is run or explicitly skipped, and the counts are the known ones."""
    skipped = [e for e in EXAMPLES if "skip" in e.options]
    assert len(EXAMPLES) - len(skipped) == EXPECTED_RUN
    assert len(skipped) == EXPECTED_SKIPPED
    for example in EXAMPLES:
        compile(example.source, example.name, "exec")  # syntax, even for a skipped block


def test_the_block_parser_reads_options_and_dedents() -> None:
    """The parser takes the block's body up to the first less-indented line, and the options."""
    text = (
        "Intro\n\n.. readme-test: simulator=alpaca expect='a b'\n\n"
        ".. code-block:: python\n\n   x = 1\n\n   if x:\n       print(x)\n\nAfter\n"
    )
    (example,) = examples(text)
    assert example.source == "x = 1\n\nif x:\n    print(x)\n"
    assert example.options == {"simulator": "alpaca", "expect": "a b"}
    with pytest.raises(ValueError, match="bad readme-test option"):
        list(examples(".. readme-test: nonsense\n\n.. code-block:: python\n\n   pass\n"))


def _substituted(example: Example, url: str) -> str:
    old, new = example.options["replace"], example.options["with"]
    count = example.source.count(old)
    assert count == 1, f"{example.name}: {old!r} occurs {count} times, expected once"
    return example.source.replace(old, new.format(url=url))


async def _run(source: str, env: Mapping[str, str], cwd: Path) -> str:
    with trio.fail_after(EXAMPLE_TIMEOUT):
        done = await trio.run_process(
            [sys.executable, "-c", source],
            cwd=cwd,
            env=dict(env),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, f"exit {done.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"
    return out


@pytest.mark.parametrize(
    "example", [e for e in EXAMPLES if "skip" not in e.options], ids=lambda e: e.name
)
async def test_readme_example_runs(example: Example, tmp_path: Path) -> None:
    """The example exits 0 and prints what it should, against a simulator if it names one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APCA_", "POLYGON_"))}
    source = example.source
    async with trio.open_nursery() as nursery:
        simulator = example.options.get("simulator")
        if simulator is not None:
            symbols, path = SIMULATORS[simulator]
            port = await nursery.start(
                partial(
                    serve_alpaca,
                    symbols=symbols,
                    rate=SIM_RATE,
                    key=SIM_KEY,
                    secret=SIM_SECRET,
                    crypto=simulator == "alpaca-crypto",
                )
            )
            env["APCA_API_KEY_ID"], env["APCA_API_SECRET_KEY"] = SIM_KEY, SIM_SECRET
            source = _substituted(example, f"ws://127.0.0.1:{port}{path}")
        else:
            assert "replace" not in example.options, f"{example.name}: replace= needs simulator="
        out = await _run(source, env, tmp_path)
        nursery.cancel_scope.cancel()
    expect = example.options.get("expect")
    if expect is not None:
        assert expect in out, f"{example.name}: {expect!r} not in the output:\n{out}"
    else:
        assert out.strip(), f"{example.name}: printed nothing"
