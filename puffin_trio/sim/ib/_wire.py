"""The fake TWS's side of the wire: framing, version, error texts, number formatting.

This module owns what :mod:`puffin_trio.sim.ib` writes and reads on the
socket below the level of a request: the length-prefixed framing (the
simulator's own, independent of the client's), the server version it answers
with, the text of each error code, how TWS prints a number and its connection
time. It must not
know the market or hold connection state.
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Sequence

import trio

__all__ = [
    "ERROR_TEXTS",
    "FIRST_CON_ID",
    "MAX_CLIENT_MESSAGE",
    "NEXT_VALID_ID",
    "SERVER_VERSION",
    "VERSIONS",
    "Reader",
    "connection_time",
    "encode_message",
    "num",
]

#: The server version we answer with: every ib_async >=164/>=166/>=176
#: branch applies, and it is inside ib_async's and our client's 157..178.
SERVER_VERSION = 176
#: Largest client message accepted. A client request is at most a few
#: hundred bytes; 1 MiB is generous and still bounds a garbage length prefix.
MAX_CLIENT_MESSAGE = 1 << 20
#: The contract id of the model's first symbol; the n-th symbol gets FIRST_CON_ID + n.
FIRST_CON_ID = 100_001
#: The ``nextValidId`` sent after ``startApi``.
NEXT_VALID_ID = 1

#: Text of each error code the simulator sends, as TWS words them.
ERROR_TEXTS: dict[int, str] = {
    200: "No security definition has been found for the request",
    300: "Can't find EId with tickerId:",
    310: "Can't find the subscribed market depth with tickerId:",
    326: "Unable to connect as the client id is already in use. Retry with a unique client id.",
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and Trader Workstation has been restored - data lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
    2103: "Market data farm connection is broken:usfarm",
    2104: "Market data farm connection is OK:usfarm",
    2105: "HMDS data farm connection is broken:ushmds",
    2106: "HMDS data farm connection is OK:ushmds",
    2107: "HMDS data farm connection is inactive but should be available upon demand.ushmds",
    2108: "Market data farm connection is inactive but should be available upon demand.usfarm",
    2157: "Sec-def data farm connection is broken:secdefil",
    2158: "Sec-def data farm connection is OK:secdefil",
}
PREFIX = struct.Struct(">I")
VERSIONS = re.compile(rb"v(\d+)\.\.(\d+)")


def num(value: float) -> str:
    """A number as TWS prints it: integers without a fraction, others as Python does."""
    return str(int(value)) if value == int(value) else repr(value)


def encode_message(fields: Sequence[str]) -> bytes:
    """One TWS message on the wire: the length prefix, then every field NUL-terminated."""
    payload = ("\0".join(fields) + "\0").encode()
    return PREFIX.pack(len(payload)) + payload


def connection_time(seconds: int) -> str:
    """The connection time TWS sends after the server version: ``20240102 15:04:05 UTC``."""
    return time.strftime("%Y%m%d %H:%M:%S", time.gmtime(seconds)) + " UTC"


class Reader:
    """Length-prefixed reads from the client (the sim's own, independent de-framing)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def exactly(self, count: int) -> bytes | None:
        """``count`` bytes, or None if the client closed first."""
        while len(self._buffer) < count:
            data = await self._stream.receive_some()
            if not data:
                return None
            self._buffer += data
        out = bytes(self._buffer[:count])
        del self._buffer[:count]
        return out

    async def payload(self) -> bytes | None:
        """One framed payload, or None if the client closed or sent an impossible length."""
        prefix = await self.exactly(4)
        if prefix is None:
            return None
        (length,) = PREFIX.unpack(prefix)
        if not 0 < length <= MAX_CLIENT_MESSAGE:
            return None
        return await self.exactly(length)
