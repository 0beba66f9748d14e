"""permessage-deflate: what it saves on the wire and what it costs the client, per message.

Run: ``python benchmarks/bench_deflate.py [--quick] [--case alpaca|polygon]``.

The feeds' own messages (``_blast_alpaca.py``, ``_blast_polygon.py``: real
Alpaca JSON and msgpack, Polygon JSON trades and quotes, 1 and 20 per frame)
go through the websockets library's permessage-deflate extension as a server
would compress them and our client decompress them (context takeover, the
server defaults websockets offers: 12-bit windows, ``memLevel`` 5), frame by
frame, in this process:

* bytes on the wire per message, with and without compression (frame headers
  included);
* the client's CPU per message: inflating (the extension's ``decode``) and,
  as a yardstick, parsing the same frame (``orjson.loads`` /
  ``msgpack.unpackb``).

This is the choice behind ``puffin_trio.transports.ws.DEFAULT_COMPRESSION``
(offered by default) and the providers' ``compression=`` option: see the notes under the
table and ``docs/guide/providers.rst``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import orjson
from _blast import Case, ws_frame
from _blast_alpaca import ALPACA
from _blast_alpaca import _encode as alpaca_encode
from _blast_alpaca import _messages as alpaca_messages
from _blast_polygon import POLYGON
from _blast_polygon import _messages as polygon_messages
from _harness import print_table, run_script
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

#: Messages per feed: enough frames for the compressor's window to be warm.
FULL = 40_000
QUICK = 8_000
#: websockets' server defaults (enable_server_permessage_deflate).
WINDOW_BITS = 12
COMPRESS_SETTINGS = {"memLevel": 5}


def frames(case: Case, variant: str, batch: int, count: int) -> tuple[list[bytes], bool]:
    """The feed's payloads, ``batch`` messages each, and whether they are binary."""
    if case is POLYGON:
        messages: list[Any] = polygon_messages(count)
        encode: Callable[[Any], bytes] = orjson.dumps
    else:
        messages = alpaca_messages(variant, count)

        def encode(value: Any) -> bytes:
            return alpaca_encode(variant, value)

    payloads = [encode(messages[i : i + batch]) for i in range(0, count - batch + 1, batch)]
    return payloads, variant == "msgpack"


def measure(case: Case, variant: str, batch: int, count: int) -> list[str]:
    payloads, binary = frames(case, variant, batch, count)
    opcode = Opcode.BINARY if binary else Opcode.TEXT
    server = PerMessageDeflate(False, False, WINDOW_BITS, WINDOW_BITS, COMPRESS_SETTINGS)
    client = PerMessageDeflate(False, False, WINDOW_BITS, WINDOW_BITS)
    compressed = [server.encode(Frame(opcode, payload)) for payload in payloads]
    messages = len(payloads) * batch
    plain_bytes = sum(len(ws_frame(p, binary=binary)) for p in payloads)
    deflated_bytes = sum(len(ws_frame(f.data, binary=binary)) for f in compressed)
    start = time.process_time()
    inflated = [client.decode(f) for f in compressed]
    inflate_us = (time.process_time() - start) * 1e6 / messages
    assert [bytes(f.data) for f in inflated] == payloads
    parse: Callable[[bytes], object] = (
        (lambda p: msgpack.unpackb(p, timestamp=2)) if binary else orjson.loads
    )
    start = time.process_time()
    for payload in payloads:
        parse(payload)
    parse_us = (time.process_time() - start) * 1e6 / messages
    return [
        f"{case.name} {variant}",
        str(batch),
        f"{plain_bytes / messages:.0f}",
        f"{deflated_bytes / messages:.0f}",
        f"{plain_bytes / deflated_bytes:.1f}x",
        f"{inflate_us:.2f}",
        f"{parse_us:.2f}",
    ]


def benchmark(args: argparse.Namespace, cases: list[Case]) -> None:
    count = QUICK if args.quick else FULL
    rows = []
    for case, variant in ((ALPACA, "json"), (ALPACA, "msgpack"), (POLYGON, "json")):
        if case not in cases:
            continue
        for batch in (1, 20):
            rows.append(measure(case, variant, batch, count))
    print_table(
        f"permessage-deflate, {count:,} messages per feed (context takeover, "
        f"{WINDOW_BITS}-bit windows, memLevel 5)",
        ["feed", "B", "bytes/msg", "deflated", "saved", "inflate µs/msg", "parse µs/msg"],
        rows,
    )
    print(
        "bytes/msg: on the wire per message, WebSocket frame header included (the server's\n"
        "frames are unmasked). inflate: the client's CPU to decompress, per message\n"
        "(websockets' PerMessageDeflate.decode, frame by frame); parse: orjson.loads /\n"
        "msgpack.unpackb of the same frames, for scale. The session adds roughly 2-4 µs per\n"
        "message on top of the parse (bench_clients.py, bench_decode.py)."
    )


def main(argv: Sequence[str] | None = None) -> None:
    run_script(__doc__, "permessage-deflate", benchmark, argv)


if __name__ == "__main__":
    main()
