"""Fuzzing the provider protocols in CI: damaged frames never break the decoders' promises.

Every protocol (Alpaca JSON and msgpack, stocks and crypto; Polygon stocks
and crypto; IB) is fed frames recorded from the simulators and then damaged
(:mod:`fuzz.frames`: truncation, bit flips, garbage, splices, type confusion,
unknown types, long symbols, missing and extra fields, reordering, deep
nesting), in the state of a live connection. Sized to seconds by the
Hypothesis profile; ``python -m fuzz.fuzz_protocols`` runs millions.

The frames issue 9 reported (defects 2, 3 and 11, and the ill-typed Alpaca
fields found here) are always among the inputs, so a regression fails every
time, not only when the damage happens to be drawn.
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Iterator

import msgpack
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from fuzz import fuzz_protocols
from fuzz.frames import VARIANTS, Harness, Verdict, corpus, ill_typed, impossible, mutate
from puffin_trio.providers import Malformed, UnknownMessage

#: CPython's default ``sys.getrecursionlimit()``.
DEFAULT_RECURSION_LIMIT = 1000
NESTED_JSON = "[" * 1000 + "]" * 1000
NESTED_MSGPACK = b"\x91" * 999 + b"\x90"
#: Frames that made receive() raise, per variant (issue 9 defects 3 and 11).
KILLERS: dict[str, tuple[str | bytes, ...]] = {
    "alpaca-json": (NESTED_JSON, NESTED_MSGPACK),
    "alpaca-msgpack": (NESTED_JSON, NESTED_MSGPACK),
    "alpaca-crypto-json": (NESTED_JSON, NESTED_MSGPACK),
    "alpaca-crypto-msgpack": (NESTED_JSON, NESTED_MSGPACK),
    "polygon": (NESTED_JSON,),
    "polygon-crypto": (NESTED_JSON,),
    "ib": (b"",),
}
_NAN_MSGPACK: bytes = msgpack.packb(
    [{"T": "t", "S": "AAPL", "p": float("nan"), "s": float("inf"),
      "t": msgpack.Timestamp(2**40, 0)}]
)  # fmt: skip
_NAN_CRYPTO_MSGPACK: bytes = msgpack.packb(
    [{"T": "q", "S": "BTC/USD", "bp": float("nan"), "bs": -1.0, "ap": 1.0, "as": 1.0,
      "t": msgpack.Timestamp(1_795_532_400, 0)}]
)  # fmt: skip
#: Frames carrying impossible values that became events, per variant (defect 2).
IMPOSSIBLE: dict[str, tuple[str | bytes, ...]] = {
    "alpaca-json": ('[{"T":"t","S":"AAPL","p":"NaN","s":-100,"t":"2026-11-24T15:00:00Z"}]',),
    "alpaca-msgpack": (_NAN_MSGPACK,),
    "alpaca-crypto-json": (
        '[{"T":"q","S":"BTC/USD","bp":"NaN","bs":1,"ap":1,"as":-1,"t":"2026-11-24T15:00:00Z"}]',
    ),
    "alpaca-crypto-msgpack": (_NAN_CRYPTO_MSGPACK,),
    "polygon": ('[{"ev":"T","sym":"AAPL","p":"NaN","s":-100,"t":1704205800000,"q":1}]',),
    "polygon-crypto": ('[{"ev":"XT","pair":"BTC-USD","p":"NaN","s":-1,"t":1795532400000}]',),
    # request 7 is the harness's tick-by-tick trades request for AAPL
    "ib": (b"99\x007\x002\x001795532400\x00nan\x00100\x000\x00ISLAND\x00\x00",),
}
#: An Alpaca trade whose text fields are a map, numbers and a null.
ILL_TYPED = (
    '[{"T":"t","S":"AAPL","i":1,"x":{"a":1},"p":1.5,"s":100,"c":[1,null],'
    '"t":"2026-11-24T15:00:00Z","z":7}]'
)


def damaged(harness: Harness) -> st.SearchStrategy[str | bytes]:
    """A frame of the harness's corpus, damaged by one mutation of :mod:`fuzz.frames`."""
    frames = corpus(harness.variant)  # recorded here, not while Hypothesis draws

    def build(index: int, rng: random.Random) -> str | bytes:
        return mutate(frames[index], harness.family, rng, frames)

    return st.builds(build, st.integers(0, len(frames) - 1), st.randoms(use_true_random=False))


@contextlib.contextmanager
def production_recursion_limit() -> Iterator[None]:
    """The interpreter's default recursion limit, which a session runs with.

    Hypothesis raises the limit while it runs a test (to leave itself stack), so a
    decoder that recurses too deep would pass here and fail in production.
    """
    raised = sys.getrecursionlimit()
    sys.setrecursionlimit(DEFAULT_RECURSION_LIMIT)
    try:
        yield
    finally:
        sys.setrecursionlimit(raised)


def judge(harness: Harness, frames: tuple[str | bytes, ...], data: st.DataObject) -> list[Verdict]:
    """The verdicts on the reported frames and on one damaged frame."""
    frame = data.draw(damaged(harness), label="frame")
    with production_recursion_limit():
        return [harness.feed(f) for f in (*frames, frame)]


@pytest.mark.parametrize("variant", VARIANTS)
@given(data=st.data())
def test_receive_never_raises(variant: str, data: st.DataObject) -> None:
    """Property: no frame, however damaged, raises out of receive()."""
    for verdict in judge(Harness(variant), KILLERS[variant], data):
        assert verdict.exception is None, repr(verdict.exception)


@pytest.mark.parametrize("variant", VARIANTS)
@given(data=st.data())
def test_no_event_carries_an_impossible_value(variant: str, data: st.DataObject) -> None:
    """Property: every event has a finite price, a finite size >= 0, an int64 ns timestamp
    in 1990..2200 and a symbol; a message that would not is Malformed instead."""
    verdicts = judge(Harness(variant), IMPOSSIBLE[variant], data)
    assume(verdicts[-1].exception is None)  # raising is test_receive_never_raises's business
    for verdict in verdicts:
        assert not verdict.impossible, verdict.impossible[0][1]


@pytest.mark.parametrize("variant", VARIANTS)
@given(data=st.data())
def test_every_message_is_accounted_for_exactly_once(variant: str, data: st.DataObject) -> None:
    """Property: a frame of n messages gives n items (events, Malformed, UnknownMessage or
    control items); an undecodable frame gives one Malformed; a TWS message is decoded or
    rejected, never both."""
    verdicts = judge(Harness(variant), (), data)
    assume(verdicts[-1].exception is None)
    assert verdicts[-1].miscount is None, verdicts[-1].miscount


@pytest.mark.parametrize("variant", VARIANTS)
@given(data=st.data())
def test_events_hold_the_types_the_event_model_declares(
    variant: str, data: st.DataObject
) -> None:
    """Property: text fields hold str, tuples of text hold str, numbers are float/int, so a
    recorder or the codec can take any event (an Alpaca trade with ``"x":{"a":1}`` is
    encoded by ``codec.dumps`` and then refused by ``codec.loads``)."""
    verdicts = judge(Harness(variant), (ILL_TYPED,), data)
    assume(verdicts[-1].exception is None)
    for verdict in verdicts:
        wrong = [why for item in verdict.items if (why := ill_typed(item)) is not None]
        assert not wrong, wrong[0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_recorded_frames_decode_cleanly(variant: str) -> None:
    """The corpus is valid: every frame decodes with no Malformed, no unknown type, no problem
    (TWS's ``tickReqParams`` (81) and ``marketDataType`` (58), which answer every
    ``reqMktData``, included)."""
    harness = Harness(variant, renew=10**9)
    frames = corpus(variant)
    assert len(frames) > 100
    events = 0
    for frame in frames:
        verdict = harness.feed(frame)
        assert verdict.ok, (frame, verdict)
        rejected = [i for i in verdict.items if isinstance(i, Malformed | UnknownMessage)]
        assert not rejected, (frame, rejected)
        events += sum(1 for i in verdict.items if impossible(i) is None and hasattr(i, "symbol"))
    assert events > 100


def test_the_long_run_script_prints_a_table_row_per_variant(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--inputs", "300", "--variants", "polygon,ib", "--examples", "1"]
    assert fuzz_protocols.main(args) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()]
    assert [r[:2] for r in rows if r[:1] in (["polygon"], ["ib"]) and r[1] != "/"] == [
        ["polygon", "300"],
        ["ib", "300"],
    ], out
    assert "inputs/s" in out and "impossible events" in out
