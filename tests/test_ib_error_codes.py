"""IB error codes that do not end a subscription are mapped as IB documents them.

Reproductions of issue 9, defect 11 (its second and third bullets; the first,
``receive(b"")``, is in ``test_wire_values``):

* 10090, "Part of requested market data is not subscribed. Subscription-
  independent ticks are still active": a warning; the request stays open and
  its data keeps flowing.
* 10225, "Bust event occurred, current subscription is deactivated. Please
  resubscribe real-time bars immediately": the bars must be requested again.

Both failed before the fix and pass since.
"""

from __future__ import annotations

import itertools

from puffin_trio import Bar, Quote
from puffin_trio.providers import IBProtocol, ProviderFailure, ProviderNotice

TS = 1_795_532_400_000_000_000


def msg(*fields: str) -> bytes:
    """A de-framed TWS payload: NUL-terminated fields."""
    return "".join(f + "\0" for f in fields).encode()


def started() -> IBProtocol:
    proto = IBProtocol(request_ids=itertools.count(1))
    proto.receive(msg("176", "20261124 15:00:00 UTC"), TS)
    proto.receive(msg("9", "1", "1"), TS)
    proto.data_to_send()
    return proto


def error(req_id: int, code: int, text: str) -> bytes:
    return msg("4", "2", str(req_id), str(code), text, "")


def test_10090_part_of_the_market_data_not_subscribed_keeps_the_request_streaming() -> None:
    proto = started()
    proto.subscribe({"quotes": ["AAPL"]})  # reqMktData, request 1
    proto.data_to_send()
    out = proto.receive(
        error(1, 10090, "Part of requested market data is not subscribed. "
              "Subscription-independent ticks are still active."), TS
    )  # fmt: skip
    assert not [item for item in out if isinstance(item, ProviderFailure)], out
    proto.receive(msg("1", "6", "1", "1", "218.45", "300", "1"), TS)  # bid
    quotes = proto.receive(msg("1", "6", "1", "2", "218.47", "200", "1"), TS)  # ask
    assert [type(q) for q in quotes] == [Quote], quotes


def test_10225_bust_event_requests_the_real_time_bars_again() -> None:
    proto = started()
    proto.subscribe({"bars": ["AAPL"]})  # reqRealTimeBars, request 1
    proto.data_to_send()
    out = proto.receive(
        error(1, 10225, "Bust event occurred, current subscription is deactivated. "
              "Please resubscribe real-time bars immediately."), TS
    )  # fmt: skip
    assert not [item for item in out if isinstance(item, ProviderFailure)], out
    requested = [frame for frame in proto.data_to_send() if frame[4:7] == b"50\0"]
    asked = [n for n in out if isinstance(n, ProviderNotice) and n.resubscribe]
    assert requested or asked, "the bars were neither requested again nor a resubscribe asked"
    if requested:  # the new request's bars decode
        req_id = requested[-1][4:].split(b"\0")[2].decode()
        bars = proto.receive(
            msg("50", "3", req_id, "1795532400", "218.4", "218.6", "218.3", "218.5", "1200",
                "218.47", "9"), TS
        )  # fmt: skip
        assert [type(b) for b in bars] == [Bar], bars
