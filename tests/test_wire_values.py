"""Values from the wire are checked at the boundary, and no wire input raises out of receive().

Reproductions of issue 9, defects 2 (impossible values passed the codecs as
events), 3 (a deeply nested frame crashed the decoder) and 11's first bullet
(``IBProtocol.receive(b"")`` raised), against the sans-IO protocols, plus
defect 3 in a live session. They failed before the fixes and pass since.

What an impossible value is (prices finite; sizes finite and >= 0;
timestamps that fit int64 ns and lie in a sane range; non-empty symbols) is
stated once, in :func:`fuzz.frames.impossible`, which the fuzz suite uses too.
"""

from __future__ import annotations

import itertools

import msgpack
import orjson
import pytest
from trio.testing import MockClock

from fuzz.frames import impossible
from fuzz.matrix import Row, run_row
from puffin_trio import Trade
from puffin_trio.providers import (
    AlpacaProtocol,
    IBProtocol,
    Malformed,
    PolygonProtocol,
    ProviderNotice,
    UnknownMessage,
)
from puffin_trio.testing import ProxyFault, ProxyFaultKind

POLYGON_TRADE = {"ev": "T", "sym": "AAPL", "p": 189.5, "s": 100, "t": 1704205800000, "q": 1}
ALPACA_TRADE = {"T": "t", "S": "AAPL", "p": 189.5, "s": 100, "t": "2024-01-02T14:30:00.123Z",
                "i": 7, "x": "V", "z": "C"}  # fmt: skip


def polygon(*messages: dict[str, object]) -> list[object]:
    return PolygonProtocol(key="k").receive(orjson.dumps(list(messages)).decode(), 0)  # type: ignore[return-value]


def alpaca_json(*messages: dict[str, object]) -> list[object]:
    proto = AlpacaProtocol(key="k", secret="s", encoding="json")
    return proto.receive(orjson.dumps(list(messages)).decode(), 0)  # type: ignore[return-value]


def alpaca_msgpack(*messages: dict[str, object]) -> list[object]:
    proto = AlpacaProtocol(key="k", secret="s")
    return proto.receive(msgpack.packb(list(messages)), 0)  # type: ignore[return-value]


def refused_and_rest_kept(out: list[object]) -> None:
    """The bad message (first) is Malformed; the good one after it is still a Trade."""
    assert not [e for e in out if impossible(e)], out
    assert [type(item) for item in out] == [Malformed, Trade], out


# --------------------------------------------------------------------------- defect 2


def test_polygon_the_issue_example_nan_price_and_negative_size_is_malformed() -> None:
    out = PolygonProtocol(key="k").receive(
        '[{"ev":"T","sym":"AAPL","p":"NaN","s":-100,"t":1704205800000,"q":1}]', 0
    )
    assert [type(item) for item in out] == [Malformed], out


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("p", "NaN"),
        ("p", "1e999"),  # float() reads it as inf
        ("p", "1_0"),  # float() reads it as 10.0: text is not a price
        ("p", "Infinity"),
        ("s", -100),
        ("s", "inf"),
        ("t", 10**17),  # ms: 10**23 ns does not fit int64
        ("t", 0),  # 1970: outside a sane range
        ("sym", ""),
    ],
)
def test_polygon_impossible_values_are_malformed_and_the_frame_survives(
    field: str, value: object
) -> None:
    refused_and_rest_kept(polygon({**POLYGON_TRADE, field: value}, POLYGON_TRADE))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("p", "NaN"),
        ("p", "1e999"),
        ("s", -100),
        ("t", "9999-12-31T23:59:59Z"),  # does not fit int64 ns
        ("S", ""),
    ],
)
def test_alpaca_json_impossible_values_are_malformed_and_the_frame_survives(
    field: str, value: object
) -> None:
    refused_and_rest_kept(alpaca_json({**ALPACA_TRADE, field: value}, ALPACA_TRADE))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("p", float("nan")),
        ("p", float("inf")),
        ("s", float("-inf")),
        ("s", -1.0),
        ("t", msgpack.Timestamp(2**40, 0)),  # the issue's example: ts_event ~ 1.1e21
    ],
)
def test_alpaca_msgpack_impossible_values_are_malformed_and_the_frame_survives(
    field: str, value: object
) -> None:
    good = {**ALPACA_TRADE, "t": msgpack.Timestamp(1_704_205_800, 123_000_000)}
    refused_and_rest_kept(alpaca_msgpack({**good, field: value}, good))


def ib_started() -> IBProtocol:
    proto = IBProtocol(request_ids=itertools.count(1))
    proto.receive(ib("176", "20240724 10:31:00 EST"), 0)
    proto.receive(ib("9", "1", "1"), 0)
    proto.data_to_send()
    return proto


def ib(*fields: str) -> bytes:
    """A de-framed TWS payload: NUL-terminated fields."""
    return "".join(f + "\0" for f in fields).encode()


def test_ib_a_tick_by_tick_trade_with_a_nan_price_is_malformed() -> None:
    proto = ib_started()
    proto.subscribe({"trades": ["AAPL"]})
    out = proto.receive(ib("99", "1", "2", "1721831460", "nan", "100", "0", "ISLAND", ""), 0)
    assert [type(item) for item in out] == [Malformed], out


def test_ib_a_depth_row_with_an_infinite_size_is_malformed() -> None:
    proto = ib_started()
    proto.subscribe({"books": ["AAPL"]})
    out = proto.receive(ib("13", "1", "1", "0", "NSDQ", "0", "1", "218.45", "inf", "1"), 0)
    assert [type(item) for item in out] == [Malformed], out


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("x", {"a": 1}),  # a map where the exchange's text goes
        ("z", 7),
        ("c", [1, None]),
        ("c", {"c": "@"}),
        ("i", [1]),
        ("i", 1.5),
        ("S", 42),
    ],
)
def test_alpaca_a_text_field_that_is_not_text_is_malformed(field: str, value: object) -> None:
    """The finding beside issue 9: an ill-typed field made an event that codec.dumps
    encoded and codec.loads refused (and a deeply nested one made repr raise)."""
    refused_and_rest_kept(alpaca_json({**ALPACA_TRADE, field: value}, ALPACA_TRADE))


# --------------------------------------------------------------------------- defect 3


def nested_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_msgpack(depth: int) -> bytes:
    return b"\x91" * (depth - 1) + b"\x90"


DEPTHS = [1000, 1020]  # inside 994..1024 (JSON) / 993..1023 (msgpack), at any stack depth


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize(
    "decode",
    [
        pytest.param(lambda d: AlpacaProtocol(key="k", secret="s").receive(nested_json(d), 0),
                     id="alpaca-json"),
        pytest.param(lambda d: AlpacaProtocol(key="k", secret="s").receive(nested_msgpack(d), 0),
                     id="alpaca-msgpack"),
        pytest.param(lambda d: PolygonProtocol(key="k").receive(nested_json(d), 0),
                     id="polygon"),
    ],
)  # fmt: skip
def test_a_deeply_nested_frame_is_malformed_not_an_exception(decode: object, depth: int) -> None:
    out = decode(depth)  # type: ignore[operator]
    assert [type(item) for item in out] == [Malformed], out


DEEP = "deep nesting goes here"  # replaced in the encoded frame: the encoders refuse depth


def with_deep_value(frame: str | bytes, depth: int = 1000) -> str | bytes:
    """``frame`` with the encoded string :data:`DEEP` replaced by a value nested ``depth`` deep."""
    if isinstance(frame, str):
        return frame.replace(orjson.dumps(DEEP).decode(), nested_json(depth))
    return frame.replace(msgpack.packb(DEEP), nested_msgpack(depth))


@pytest.mark.parametrize("field", ["S", "x", "c", "i", "t", "p"])
@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_alpaca_a_deeply_nested_field_value_is_malformed_not_an_exception(
    field: str, encoding: str
) -> None:
    proto = AlpacaProtocol(key="k", secret="s")
    if encoding == "json":
        frame: str | bytes = orjson.dumps([{**ALPACA_TRADE, field: DEEP}, ALPACA_TRADE]).decode()
    else:
        good = {**ALPACA_TRADE, "t": msgpack.Timestamp(1_704_205_800, 123_000_000)}
        frame = msgpack.packb([{**good, field: DEEP}, good])
    bad, trade = proto.receive(with_deep_value(frame), 0)
    assert isinstance(bad, Malformed) and len(bad.sample) < 300, bad
    assert isinstance(trade, Trade)


@pytest.mark.parametrize("field", ["sym", "x", "c", "p", "t", "q"])
def test_polygon_a_deeply_nested_field_value_is_malformed_not_an_exception(field: str) -> None:
    frame = orjson.dumps([{**POLYGON_TRADE, field: DEEP}, POLYGON_TRADE]).decode()
    bad, trade = PolygonProtocol(key="k").receive(with_deep_value(frame), 0)
    assert isinstance(bad, Malformed) and isinstance(trade, Trade), bad


def test_a_deeply_nested_status_text_is_a_bounded_notice() -> None:
    """Control messages show wire text in notices: bounded, whatever its shape."""
    frame = with_deep_value(orjson.dumps([{"T": "success", "msg": DEEP}]).decode())
    [notice] = AlpacaProtocol(key="k", secret="s").receive(frame, 0)
    assert isinstance(notice, ProviderNotice) and len(notice.message) < 300
    [notice] = polygon({"ev": "status", "status": "info", "message": "x" * 100_000})
    assert isinstance(notice, ProviderNotice) and len(notice.message) < 300


async def test_a_deeply_nested_frame_does_not_kill_a_live_session(
    autojump_clock: MockClock,
) -> None:
    row = Row(
        "deep",
        "a frame nested 1000 deep",
        lambda c: ProxyFault(ProxyFaultKind.INJECT_FRAME, payload=nested_json(1000)),
        observe=30.0,
    )
    outcome = await run_row("alpaca", row)
    assert not outcome.reconnected, outcome.reasons
    assert outcome.malformed == 1


# --------------------------------------------------------------------------- defect 11 (first)


def test_ib_an_empty_message_is_malformed_not_an_exception() -> None:
    out = ib_started().receive(b"", 0)
    assert len(out) == 1 and isinstance(out[0], Malformed | UnknownMessage), out
