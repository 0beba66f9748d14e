"""Valid provider frames, the ways to damage them, and what must hold whatever arrives.

This module owns the fuzzing material shared by the Hypothesis tests and
:mod:`fuzz.fuzz_protocols`:

* **the corpus** (:func:`corpus`): frames exactly as the simulators send them,
  recorded off the wire (through the fault proxy for the WebSocket providers,
  by the simulator's recorder for TWS) while a supervised session streams
  every channel; plus a few message types the simulators never send
  (:data:`EXTRA_MESSAGES`: Alpaca corrections, cancels, statuses, LULDs,
  updated and daily bars; Polygon LULD), written from the protocol notes;
* **the mutations** (:data:`MUTATIONS`): truncation, bit flips, garbage,
  splices, and structure-aware damage: type confusion (strings for numbers,
  nulls, NaN/Infinity, huge numbers, deep nesting), unknown types, long
  symbols, missing and extra fields, reordered and duplicated messages;
* **the invariants** (:class:`Harness`, :func:`impossible`): ``receive()``
  never raises, no event carries an impossible value (prices finite; sizes
  finite and >= 0; timestamps that fit int64 ns and lie in :data:`SANE_TS_NS`;
  a non-empty symbol), and the counters add up (every message of a frame is
  accounted for exactly once as an event, ``Malformed``, ``UnknownMessage``
  or a control item).

It must not catch what it is meant to find: the harness records exceptions,
it never hides one.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import math
import random
import typing
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal

import attrs
import msgpack
import orjson
import trio
from trio.testing import MockClock

from puffin_trio import Gap, Status, Supervisor
from puffin_trio.events import EVENT_TYPES
from puffin_trio.providers import (
    SANE_TS_NS,
    AlpacaProvider,
    Authenticated,
    Connected,
    HeartbeatReply,
    IBProvider,
    Malformed,
    PolygonProvider,
    ProviderFailure,
    ProviderNotice,
    ProviderProtocol,
    SubscriptionAck,
    UnknownMessage,
)
from puffin_trio.sim import IBSimRecorder, serve_alpaca, serve_ib, serve_polygon
from puffin_trio.testing import ProxyControl, mock_wall_clock, serve_fault_proxy

__all__ = [
    "EXTRA_MESSAGES",
    "MUTATIONS",
    "SANE_TS_NS",
    "VARIANTS",
    "Harness",
    "Verdict",
    "corpus",
    "ill_typed",
    "impossible",
    "mutate",
]

Frame = str | bytes
Family = Literal["json", "msgpack", "tws"]

#: The protocols fuzzed, each in the state of one kind of live connection.
VARIANTS: tuple[str, ...] = (
    "alpaca-json",
    "alpaca-msgpack",
    "alpaca-crypto-json",
    "alpaca-crypto-msgpack",
    "polygon",
    "polygon-crypto",
    "ib",
)
_INT64 = (-(2**63), 2**63 - 1)
_MARKET = frozenset(EVENT_TYPES) - {Status, Gap}
_CONTROLS = (
    Connected,
    Authenticated,
    SubscriptionAck,
    HeartbeatReply,
    ProviderNotice,
    ProviderFailure,
    Malformed,
    UnknownMessage,
)
_PRICES = frozenset(
    {"price", "bid", "ask", "open", "high", "low", "close", "vwap", "limit_up", "limit_down",
     "original_price", "corrected_price"}
)  # fmt: skip
_SIZES = frozenset(
    {"size", "bid_size", "ask_size", "volume", "original_size", "corrected_size", "trade_count"}
)
#: Tuesday 2026-11-24 15:00 UTC: the market is open while the corpus is recorded.
_OPEN_NS = int(datetime(2026, 11, 24, 15, 0, tzinfo=UTC).timestamp() * 1e9)
#: Seconds of simulated streaming per variant: past a minute, so minute bars close.
_RECORD_SECONDS = 65.0
_KEY, _SECRET = "fuzz-key", "fuzz-secret"

#: Message types the simulators never send, in each provider's wire format
#: (JSON-compatible values; msgpack variants get a msgpack Timestamp).
EXTRA_MESSAGES: dict[str, list[dict[str, Any]]] = {
    "alpaca": [
        {"T": "c", "S": "AAPL", "x": "V", "oi": 7, "op": 189.5, "os": 100, "oc": ["@"],
         "ci": 8, "cp": 189.55, "cs": 100, "cc": ["@"], "t": "2026-11-24T15:00:01.5Z", "z": "C"},
        {"T": "x", "S": "AAPL", "i": 7, "x": "V", "p": 189.5, "s": 100, "a": "C",
         "t": "2026-11-24T15:00:01.5Z", "z": "C"},
        {"T": "s", "S": "AAPL", "sc": "H", "sm": "Trading Halt", "rc": "T12",
         "rm": "Trading Halted; For information requested by NASDAQ",
         "t": "2026-11-24T15:00:01.5Z", "z": "C"},
        {"T": "l", "S": "AAPL", "u": 199.0, "d": 180.0, "i": "B",
         "t": "2026-11-24T15:00:01.5Z", "z": "C"},
        {"T": "u", "S": "AAPL", "o": 189.5, "h": 190.0, "l": 189.0, "c": 189.7, "v": 1840,
         "n": 23, "vw": 189.6, "t": "2026-11-24T15:00:00Z"},
        {"T": "d", "S": "AAPL", "o": 185.0, "h": 190.0, "l": 184.0, "c": 189.7, "v": 51840,
         "n": 2300, "vw": 187.6, "t": "2026-11-24T05:00:00Z"},
        {"T": "error", "code": 406, "msg": "connection limit exceeded"},
    ],
    "polygon": [
        {"ev": "LULD", "T": "AAPL", "h": 199.0, "l": 180.0, "i": [17], "z": 3,
         "t": 1795532400000, "q": 12},
        {"ev": "status", "status": "max_connections", "message": "Maximum number of ..."},
    ],
}  # fmt: skip


# --------------------------------------------------------------------------- invariants


def impossible(item: object) -> str | None:
    """Why ``item`` is an impossible event, or ``None`` (always ``None`` for a non-event)."""
    if type(item) not in _MARKET:
        return None
    fields = attrs.asdict(item, recurse=False)  # type: ignore[arg-type]
    symbol = fields["symbol"]
    if type(symbol) is not str or not symbol:
        return f"symbol {symbol!r}"
    for name in ("ts_event", "ts_recv"):
        value = fields[name]
        if type(value) is not int or not _INT64[0] <= value <= _INT64[1]:
            return f"{name} {value!r} is not int64 ns"
    if not SANE_TS_NS[0] <= fields["ts_event"] < SANE_TS_NS[1]:
        return f"ts_event {fields['ts_event']} outside 1990..2200"
    for name, value in fields.items():
        if name in _PRICES and not _finite(value):
            return f"{name} {value!r} is not a finite number"
        if name in _SIZES and not (_finite(value) and value >= 0):
            return f"{name} {value!r} is not a finite number >= 0"
        if name in ("bids", "asks"):
            for level in value:
                price, size = level
                if not _finite(price) or not (_finite(size) and size >= 0):
                    return f"{name} level {level!r}"
    return None


def ill_typed(item: object) -> str | None:
    """Which field of an event does not hold its declared type, or ``None``.

    Text fields must be ``str``, tuples of text tuples of ``str``, numbers
    ``float``/``int`` as declared: a consumer (a recorder, ``codec``, a log
    line) relies on the event model's types.
    """
    if type(item) not in _MARKET:
        return None
    cls: type[Any] = type(item)
    for name, declared in _hints(cls).items():
        value = getattr(item, name)
        if declared in (str, float, int, bool):
            if type(value) is not declared:
                return f"{name} is {type(value).__name__}, not {declared.__name__}"
        elif declared == tuple[str, ...]:
            if type(value) is not tuple or any(type(v) is not str for v in value):
                return f"{name} is not a tuple of str"
        elif declared == (int | None) and not (value is None or type(value) is int):
            return f"{name} is {type(value).__name__}, not int | None"
    return None


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _finite(value: object) -> bool:
    """A number that is not NaN or infinite (an int always is, however large)."""
    if type(value) is int:
        return True
    return type(value) is float and math.isfinite(value)


@attrs.frozen
class Verdict:
    """What one frame did to a protocol: the exception it raised, or the problems it caused."""

    exception: BaseException | None
    impossible: tuple[tuple[object, str], ...]
    miscount: str | None
    items: tuple[object, ...]

    @property
    def ok(self) -> bool:
        return self.exception is None and not self.impossible and self.miscount is None


class Harness:
    """One variant's protocol in the state of a live connection; :meth:`feed` judges a frame.

    The protocol is renewed every ``renew`` frames and after an exception, so
    one bad frame's side effects (a dropped request, a corrupt book) do not
    hide the next.
    """

    def __init__(self, variant: str, *, renew: int = 1000) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
        self.variant = variant
        self.family: Family = _family(variant)
        self._renew = renew
        self._fed = 0
        self.protocol = self._fresh()

    def _fresh(self) -> ProviderProtocol:
        if self.variant.startswith("alpaca"):
            return AlpacaProvider(
                key=_KEY,
                secret=_SECRET,
                feed="crypto" if "crypto" in self.variant else "iex",
                encoding="msgpack" if self.variant.endswith("msgpack") else "json",
            ).protocol()
        if self.variant.startswith("polygon"):
            market = "crypto" if "crypto" in self.variant else "stocks"
            return PolygonProvider(key=_KEY, market=market).protocol()
        proto = IBProvider().protocol()  # a fresh provider: request ids from 1
        for reply in _IB_STARTUP:
            proto.receive(reply, 0)
        proto.subscribe(_IB_TOPICS)
        proto.data_to_send()
        return proto

    def feed(self, frame: Frame, ts_recv: int = _OPEN_NS) -> Verdict:
        """Judge one frame. Never raises (an exception is part of the verdict)."""
        self._fed += 1
        if self._fed % self._renew == 0:
            self.protocol = self._fresh()
        try:
            items = tuple(self.protocol.receive(frame, ts_recv))
        except Exception as exc:
            self.protocol = self._fresh()
            return Verdict(exc, (), None, ())
        bad = tuple((item, why) for item in items if (why := impossible(item)) is not None)
        return Verdict(None, bad, self._miscount(frame, items), items)

    def _miscount(self, frame: Frame, items: tuple[object, ...]) -> str | None:
        unknown = [i for i in items if type(i) not in _MARKET and not isinstance(i, _CONTROLS)]
        if unknown:
            return f"items of unknown kinds: {unknown[:3]!r}"
        if self.family == "tws":
            rejected = [i for i in items if isinstance(i, Malformed | UnknownMessage)]
            if len(rejected) > 1 or (rejected and len(items) > 1):
                return f"a message both decoded and rejected: {items[:4]!r}"
            return None
        expected = _message_count(frame, self.variant)
        if expected is None:
            if len(items) != 1 or not isinstance(items[0], Malformed):
                return f"an undecodable frame gave {items[:4]!r}, not one Malformed"
            return None
        if len(items) != expected:
            return f"{expected} messages gave {len(items)} items"
        return None


def _family(variant: str) -> Family:
    if variant == "ib":
        return "tws"
    return "msgpack" if variant.endswith("msgpack") else "json"


def _message_count(frame: Frame, variant: str) -> int | None:
    """Top-level messages of a frame as the protocol reads it; ``None`` if it is not an array.

    Alpaca reads a text frame, or a binary one whose first byte can start a
    JSON document, as JSON, and anything else as msgpack; Polygon reads JSON.
    """
    try:
        if variant.startswith("polygon") or isinstance(frame, str) or (
            frame and frame[0] in b"[{ \t\r\n"
        ):
            messages = orjson.loads(frame)
        else:
            messages = msgpack.unpackb(frame, timestamp=2)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError):
        return None
    return len(messages) if type(messages) is list else None


# --------------------------------------------------------------------------- corpus

_IB_STARTUP = (b"176\x0020261124 15:00:00 UTC\x00", b"15\x001\x00DU1234567\x00", b"9\x001\x001\x00")
_SYMBOLS = ("AAPL", "MSFT")
_IB_TOPICS = {c: list(_SYMBOLS) for c in ("trades", "quotes", "books", "bars")}


@functools.cache
def corpus(variant: str) -> tuple[Frame, ...]:
    """The valid frames of ``variant``, recorded once per process (a second or two)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return _all_corpora()[variant]


@functools.cache
def _all_corpora() -> dict[str, tuple[Frame, ...]]:
    recorded: dict[str, tuple[Frame, ...]] = trio.run(
        _record_all, clock=MockClock(autojump_threshold=0)
    )
    return recorded


async def _record_all() -> dict[str, tuple[Frame, ...]]:
    out: dict[str, tuple[Frame, ...]] = {}
    async with trio.open_nursery() as nursery:
        for variant in VARIANTS:
            nursery.start_soon(_record_into, variant, out)
    return out


async def _record_into(variant: str, out: dict[str, tuple[Frame, ...]]) -> None:
    frames = await (_record_ib() if variant == "ib" else _record_ws(variant))
    out[variant] = tuple(frames) + tuple(_extras(variant))


def _extras(variant: str) -> list[Frame]:
    if variant.startswith("polygon"):
        return [orjson.dumps(EXTRA_MESSAGES["polygon"]).decode()] if variant == "polygon" else []
    if not variant.startswith("alpaca") or "crypto" in variant:
        return []
    messages = EXTRA_MESSAGES["alpaca"]
    if variant.endswith("json"):
        return [orjson.dumps(messages).decode()]
    stamped = [
        {k: msgpack.Timestamp.from_unix_nano(_OPEN_NS) if k == "t" else v for k, v in m.items()}
        for m in messages
    ]
    packed: bytes = msgpack.packb(stamped)
    return [packed]


async def _record_ws(variant: str) -> list[Frame]:
    wall = mock_wall_clock(_OPEN_NS)
    control = ProxyControl()
    crypto = "crypto" in variant
    provider: AlpacaProvider | PolygonProvider
    async with trio.open_nursery() as nursery:
        if variant.startswith("alpaca"):
            symbols = ["BTC/USD", "ETH/USD"] if crypto else list(_SYMBOLS)
            port = await nursery.start(
                partial(serve_alpaca, key=_KEY, secret=_SECRET, crypto=crypto, symbols=symbols,
                        rate=40.0, batch=4, wall_clock=wall, seed=1)
            )  # fmt: skip
            path = "/v2/crypto/us" if crypto else "/v2/iex"
            channels = ("trades", "quotes", "bars") + (("books",) if crypto else ())
        else:
            symbols = ["BTC-USD", "ETH-USD"] if crypto else list(_SYMBOLS)
            port = await nursery.start(
                partial(serve_polygon, key=_KEY, symbols=symbols, rate=40.0, batch=4,
                        wall_clock=wall, seed=1, sequence="polygon")
            )  # fmt: skip
            path = "/crypto" if crypto else "/stocks"
            channels = ("trades", "quotes", "bars", "second_bars") + (("books",) if crypto else ())
        proxy = await nursery.start(
            partial(serve_fault_proxy, "127.0.0.1", port, control=control)
        )
        url = f"ws://127.0.0.1:{proxy}{path}"
        if variant.startswith("alpaca"):
            encoding: Literal["json", "msgpack"] = "json" if variant.endswith("json") else "msgpack"
            provider = AlpacaProvider(key=_KEY, secret=_SECRET, url=url, encoding=encoding,
                                      feed="crypto" if crypto else "iex")  # fmt: skip
        else:
            provider = PolygonProvider(key=_KEY, url=url, market="crypto" if crypto else "stocks")
        await _stream(provider, {c: symbols for c in channels}, wall)
        nursery.cancel_scope.cancel()
    return list(control.connection(1).messages())


async def _record_ib() -> list[Frame]:
    wall = mock_wall_clock(_OPEN_NS)
    recorder = IBSimRecorder()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(serve_ib, symbols=list(_SYMBOLS), rate=40.0, wall_clock=wall,
                    recorder=recorder, seed=1)
        )  # fmt: skip
        await _stream(IBProvider(port=port, client_id=3), _IB_TOPICS, wall)
        nursery.cancel_scope.cancel()
    record = recorder.connections[0]
    # The harness subscribes the same topics with request ids counted from 1, in
    # the order the session did: the recorded messages then address open requests.
    assert record.data_request_ids() == list(range(1, 1 + 4 * len(_SYMBOLS)))
    return [("\0".join(fields) + "\0").encode() for fields in record.sent[1:]]


async def _stream(
    provider: AlpacaProvider | PolygonProvider | IBProvider,
    topics: Mapping[str, Sequence[str]],
    wall: Callable[[], int],
) -> None:
    async with Supervisor.open(wall_clock=wall) as sup:
        sup.add(provider, **topics)  # type: ignore[arg-type]
        async with sup.events(capacity=100_000, overflow="drop_oldest") as events:
            with trio.move_on_after(_RECORD_SECONDS):
                async for _ in events:
                    pass


# --------------------------------------------------------------------------- mutations

#: Values a number or a string field may turn into. ``_Raw`` tokens are written
#: into the JSON text as they are (orjson refuses NaN and 1e999; the protocol must
#: then report the whole frame as malformed).
_NEST = 1000


@attrs.frozen
class _Raw:
    text: str


_JSON_VALUES: tuple[object, ...] = (
    "NaN", "Infinity", "-Infinity", "nan", "inf", "1e999", "-1e999", "1_0", "0x10", " 12 ",
    "", "1.5", "-1", "١٢٣", "1e-400", "9" * 400, None, True, False, 0, -1, -1.5, 1e308,
    -1e308, 5e-324, 2**63 - 1, -(2**63), 2**64 - 1, [], {}, [1, 2], {"p": 1},
    _Raw("NaN"), _Raw("Infinity"), _Raw("1e999"), _Raw("-0"), _Raw("1" * 30),
    _Raw("[" * _NEST + "]" * _NEST), _Raw("[" * 50 + "]" * 50), "x" * 10_000,
)  # fmt: skip
_MSGPACK_VALUES: tuple[object, ...] = (
    float("nan"), float("inf"), float("-inf"), -0.0, -1.0, 1e308, 5e-324, 2**64 - 1,
    -(2**63), 2**63 - 1, None, True, b"\x00\xff", "", "NaN", "1e999", "1_0", "x" * 10_000,
    msgpack.Timestamp(2**40, 0), msgpack.Timestamp(-(2**40), 0), msgpack.Timestamp(0, 0),
    msgpack.Timestamp(2**33, 999_999_999), msgpack.ExtType(42, b"x"), [], {}, [[[[1]]]],
)  # fmt: skip
_TWS_VALUES: tuple[bytes, ...] = (
    b"nan", b"NaN", b"inf", b"-inf", b"Infinity", b"1e999", b"-1e999", b"-1", b"", b"1_0",
    b"0x1", b" 1", b"9" * 400, b"-9223372036854775809", b"18446744073709551616", b"1e-400",
    b"\xff\xfe", b"x" * 10_000, b"-0", b"1.5", b"\xd9\xa1",
)  # fmt: skip
_TYPE_KEYS = ("T", "ev")
_SYMBOL_KEYS = ("S", "sym", "pair")


def mutate(frame: Frame, family: Family, rng: random.Random, others: Sequence[Frame]) -> Frame:
    """One randomly chosen mutation of ``frame`` (see :data:`MUTATIONS`)."""
    name = rng.choice(_NAMES)
    return MUTATIONS[name](frame, family, rng, others)


def _as_bytes(frame: Frame) -> bytes:
    return frame.encode() if isinstance(frame, str) else frame


def _truncate(frame: Frame, family: Family, rng: random.Random, others: Sequence[Frame]) -> Frame:
    return frame[: rng.randrange(len(frame))] if frame else frame


def _bit_flips(frame: Frame, family: Family, rng: random.Random, others: Sequence[Frame]) -> Frame:
    data = bytearray(_as_bytes(frame))
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    if isinstance(frame, str):
        return bytes(data).decode("utf-8", "replace")
    return bytes(data)


def _garbage(frame: Frame, family: Family, rng: random.Random, others: Sequence[Frame]) -> Frame:
    data = bytes(rng.getrandbits(8) for _ in range(rng.choice((0, 1, 2, 7, 64, 300))))
    return data.decode("latin-1") if isinstance(frame, str) else data


def _splice(frame: Frame, family: Family, rng: random.Random, others: Sequence[Frame]) -> Frame:
    other = _as_bytes(rng.choice(others))
    data = _as_bytes(frame)
    joined = data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1) :]
    return joined.decode("utf-8", "replace") if isinstance(frame, str) else joined


def _decode(frame: Frame, family: Family) -> Any:
    if family == "tws":
        return _as_bytes(frame).split(b"\0")[:-1]
    if family == "json" or isinstance(frame, str) or frame[:1] in (b"[", b"{"):
        return orjson.loads(frame)
    return msgpack.unpackb(frame, timestamp=0)


def _encode(value: Any, frame: Frame, family: Family) -> Frame:
    if family == "tws":
        return b"".join(f + b"\0" for f in value)
    if family == "json" or isinstance(frame, str):
        raws: dict[str, str] = {}

        def default(obj: object) -> object:
            if isinstance(obj, _Raw):
                key = f"\x00raw{len(raws)}\x00"
                raws[key] = obj.text
                return key
            raise TypeError(type(obj).__name__)

        text = json.dumps(value, separators=(",", ":"), default=default, allow_nan=True)
        for key, raw in raws.items():
            text = text.replace(json.dumps(key), raw)
        return text if isinstance(frame, str) else text.encode()
    packed: bytes = msgpack.packb(value, datetime=False)
    return packed


def _structured(
    change: Callable[[Any, Family, random.Random], Any],
) -> Callable[[Frame, Family, random.Random, Sequence[Frame]], Frame]:
    """A mutation of the decoded frame (falls back to a bit flip if it does not decode)."""

    def mutation(
        frame: Frame, family: Family, rng: random.Random, others: Sequence[Frame]
    ) -> Frame:
        try:
            value = _decode(frame, family)
        except (ValueError, TypeError, msgpack.UnpackException):
            return _bit_flips(frame, family, rng, others)
        try:
            return _encode(change(copy.deepcopy(value), family, rng), frame, family)
        except (ValueError, TypeError, OverflowError):
            return _bit_flips(frame, family, rng, others)

    return mutation


def _messages(value: Any) -> list[dict[Any, Any]]:
    if type(value) is list:
        return [m for m in value if type(m) is dict]
    return []


def _confuse(value: Any, family: Family, rng: random.Random) -> Any:
    """Replace one field of one message (or a TWS field) with a confusing value."""
    if family == "tws":
        if len(value) > 1:
            value[rng.randrange(1, len(value))] = rng.choice(_TWS_VALUES)
        return value
    messages = _messages(value)
    if messages:
        message = rng.choice(messages)
        keys = [k for k in message if k not in _TYPE_KEYS] or ["p"]
        pool = _JSON_VALUES if family == "json" else _MSGPACK_VALUES
        message[rng.choice(keys)] = rng.choice(pool)
    return value


def _unknown_type(value: Any, family: Family, rng: random.Random) -> Any:
    if family == "tws":
        if value:
            value[0] = rng.choice((b"999", b"0", b"-1", b"", b"4", b"99", b"12", b"1", b"50"))
        return value
    for message in _messages(value)[:1]:
        key = next((k for k in _TYPE_KEYS if k in message), "T")
        message[key] = rng.choice(("zz", "", "t ", 1, None, ["t"], "status", "XL2", "T" * 500))
    return value


def _long_symbol(value: Any, family: Family, rng: random.Random) -> Any:
    length = rng.choice((0, 100, 5000, 100_000))
    if family == "tws":
        return value  # symbols never travel in TWS data messages (request ids do)
    for message in _messages(value):
        for key in _SYMBOL_KEYS:
            if key in message:
                message[key] = "A" * length
    return value


def _drop_field(value: Any, family: Family, rng: random.Random) -> Any:
    if family == "tws":
        if len(value) > 1:
            del value[rng.randrange(1, len(value))]
        return value
    messages = [m for m in _messages(value) if m]
    if messages:
        message = rng.choice(messages)
        del message[rng.choice(list(message))]
    return value


def _extra_field(value: Any, family: Family, rng: random.Random) -> Any:
    if family == "tws":
        value.insert(rng.randrange(1, len(value) + 1) if value else 0, rng.choice(_TWS_VALUES))
        return value
    for message in _messages(value)[:1]:
        message[rng.choice(("zz", "extra", "p2", "T2"))] = rng.choice((1, "x", None, [1]))
    return value


def _shuffle(value: Any, family: Family, rng: random.Random) -> Any:
    """Messages duplicated, dropped, reordered; a non-map put in; the frame wrapped."""
    if family == "tws":
        rng.shuffle(value)
        return value
    if type(value) is not list:
        return [value]
    choice = rng.randrange(6)
    if choice == 0 and value:
        value.append(copy.deepcopy(rng.choice(value)))
    elif choice == 1:
        rng.shuffle(value)
    elif choice == 2:
        value.insert(rng.randrange(len(value) + 1), rng.choice((1, "x", None, [], [[]], 1.5)))
    elif choice == 3:
        return {"T": "t", "frame": value}
    elif choice == 4:
        return []
    else:
        return [value]
    return value


def _deep(frame: Frame, family: Family, rng: random.Random, others: Sequence[Frame]) -> Frame:
    """A frame nested 900 to 1100 deep (lists, or maps for variety)."""
    depth = rng.randrange(900, 1100)
    if family == "msgpack" and isinstance(frame, bytes):
        opener = rng.choice((b"\x91", b"\x81\xa1T"))
        return opener * (depth - 1) + b"\x90"
    if family == "tws":
        return b"1\x00" * depth
    lists = rng.random() < 0.5
    text = "[" * depth + "]" * depth if lists else '{"T":' * depth + "1" + "}" * depth
    return text if isinstance(frame, str) else text.encode()


#: Every mutation by name.
MUTATIONS: dict[str, Callable[[Frame, Family, random.Random, Sequence[Frame]], Frame]] = {
    "truncate": _truncate,
    "bit_flips": _bit_flips,
    "garbage": _garbage,
    "splice": _splice,
    "type_confusion": _structured(_confuse),
    "unknown_type": _structured(_unknown_type),
    "long_symbol": _structured(_long_symbol),
    "drop_field": _structured(_drop_field),
    "extra_field": _structured(_extra_field),
    "shuffle": _structured(_shuffle),
    "deep_nesting": _deep,
}
#: Draw weights: type confusion is where values go wrong, so it is drawn most.
_WEIGHTED = {"type_confusion": 6, "bit_flips": 3, "truncate": 2}
_NAMES = tuple(
    itertools.chain.from_iterable([name] * _WEIGHTED.get(name, 1) for name in MUTATIONS)
)
