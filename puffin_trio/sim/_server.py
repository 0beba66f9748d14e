"""What every simulator shares: the loopback rule, the connection recorder, the listener.

This module owns the pieces :func:`~puffin_trio.sim.serve_alpaca`,
:func:`~puffin_trio.sim.serve_polygon` and :func:`~puffin_trio.sim.serve_ib`
have in common: :func:`check_host` (a simulator listens on loopback only),
:func:`market` (the model a call asked for), :class:`SimRecorder` (the
per-connection records tests inspect) and :func:`listen` (bind, report the
port to ``nursery.start``, serve until cancelled). It must not know any provider's protocol.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, NoReturn, TypeVar

import trio

from puffin_trio._loopback import is_loopback
from puffin_trio.errors import ConfigurationError
from puffin_trio.sim._tape import TradeTape
from puffin_trio.sim.market import MarketModel

__all__ = ["DEFAULT_MAX_FRAMES", "SimRecorder", "check_host", "listen", "market"]

#: Frames (or TWS messages) a recorder keeps per connection: minutes of a
#: test's traffic at the simulators' default rates, and a bound on the memory
#: of a long run (pass no recorder to benchmarks).
DEFAULT_MAX_FRAMES = 100_000

RecordT = TypeVar("RecordT")


def check_host(host: str) -> None:
    """Raise :class:`ConfigurationError` unless ``host`` is a loopback address or ``localhost``."""
    if not is_loopback(host):
        raise ConfigurationError(
            f"the simulator only listens on loopback (127.0.0.1, ::1, localhost), not {host!r}"
        )


def market(
    model: MarketModel | None, symbols: Sequence[str] | None, default: Sequence[str], seed: int
) -> MarketModel:
    """The market a ``serve_*`` call asked for.

    Without a model, one is built from ``symbols`` (``default`` if none) and
    ``seed``; with one, ``symbols`` are added to it.
    """
    if model is None:
        return MarketModel(default if symbols is None else symbols, seed=seed)
    if symbols is not None:
        model.add_symbols(symbols)
    return model


class SimRecorder(Generic[RecordT]):
    """Records every connection a simulator accepts, in order (``connections``),
    every historical request it answers (``history``), and every trade its market
    printed (``tape``: what a backfill should find).

    ``max_frames`` bounds what each connection's record keeps (see
    :data:`DEFAULT_MAX_FRAMES`); the provider's record class says what a
    record holds.
    """

    def __init__(self, *, max_frames: int = DEFAULT_MAX_FRAMES) -> None:
        self.max_frames = max_frames
        self.connections: list[RecordT] = []
        #: Every historical request answered, as (target, status); an ``apiKey``
        #: in the target is redacted.
        self.history: list[tuple[str, int]] = []
        #: The server's trade tape: every trade its market printed (set by the server).
        self.tape = TradeTape()

    @property
    def accepted(self) -> int:
        """How many connections were accepted so far."""
        return len(self.connections)


async def listen(
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    *,
    host: str,
    port: int,
    logger: logging.Logger,
    label: str,
    task_status: trio.TaskStatus[int],
) -> NoReturn:
    """Serve TCP connections on ``host:port`` with ``handler`` until cancelled.

    Reports the bound port (``port=0``: any free one) through ``task_status``
    once listening, and logs it (at debug level, as ``label``). Cancelling it
    closes the listener and every connection.
    """
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, port, host=host))
        bound_port: int = listeners[0].socket.getsockname()[1]
        logger.debug("%s: listening on %s:%d", label, host, bound_port)
        task_status.started(bound_port)
        await trio.sleep_forever()
