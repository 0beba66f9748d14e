"""Checks every provider's configuration shares: timing knobs, sizes, names, URLs, credentials.

This module owns the validators the provider classes call in their
``__init__`` (:func:`seconds`, :func:`byte_size`, :func:`integer`,
:func:`flag`, :func:`session_name`, :func:`websocket_url`, :func:`rest_url`,
:func:`backfill`), the credential reader (:func:`credential`) and the symbol
check their ``normalize`` applies (:class:`SymbolRule`, :func:`check_symbols`),
so that every provider words the same mistake the same way. It also owns
:func:`check_ws_url`, the URL rule both sides of a WebSocket connection apply
(the provider when it is made, the transport before it connects). Each raises
:class:`~puffin_trio.errors.ConfigurationError` with the provider's name first.

It must not do I/O (environment variables are read, nothing else), and it
must never put a credential's value in a message: a secret passed in the
wrong place would end up in a log.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Literal, TypedDict
from urllib.parse import urlsplit

import attrs

from puffin_trio._loopback import is_loopback
from puffin_trio.errors import ConfigurationError

__all__ = [
    "BACKFILL_KINDS",
    "BackfillOptions",
    "SymbolRule",
    "TimingKnobs",
    "backfill",
    "byte_size",
    "check_symbols",
    "check_ws_url",
    "credential",
    "flag",
    "integer",
    "rest_url",
    "seconds",
    "session_name",
    "timing",
    "websocket_url",
]


def seconds(provider: str, name: str, value: object, *, allow_inf: bool = False) -> float:
    """A timing knob: a positive number of seconds (``math.inf`` only with ``allow_inf``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{provider}: {name} must be a number of seconds, not {value!r}")
    if not value > 0 or (math.isinf(value) and not allow_inf):
        limit = "a positive number" if allow_inf else "a positive, finite number"
        raise ConfigurationError(f"{provider}: {name} must be {limit} of seconds, not {value!r}")
    return float(value)


class TimingKnobs(TypedDict):
    """The timing knobs every provider takes (seconds; see ``Provider``), checked."""

    ping_interval: float
    ping_timeout: float
    stale_after: float
    limit_cooldown: float


def timing(
    provider: str,
    *,
    ping_interval: object,
    ping_timeout: object,
    stale_after: object,
    limit_cooldown: object,
) -> TimingKnobs:
    """Check the common timing knobs: positive and finite (``stale_after`` may be ``math.inf``)."""
    return TimingKnobs(
        ping_interval=seconds(provider, "ping_interval", ping_interval),
        ping_timeout=seconds(provider, "ping_timeout", ping_timeout),
        stale_after=seconds(provider, "stale_after", stale_after, allow_inf=True),
        limit_cooldown=seconds(provider, "limit_cooldown", limit_cooldown),
    )


def byte_size(provider: str, name: str, value: object, minimum: int) -> int:
    """A size limit: an integer number of bytes, at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(
            f"{provider}: {name} must be an integer number of bytes >= {minimum}, not {value!r}"
        )
    return value


def integer(provider: str, name: str, value: object, low: int, high: int) -> int:
    """An integer from ``low`` to ``high``; a string of digits (an environment variable) too."""
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ConfigurationError(
                f"{provider}: {name} must be an integer, not {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(
            f"{provider}: {name} must be an integer from {low} to {high}, not {value!r}"
        )
    return value


def flag(provider: str, name: str, value: object) -> bool:
    """A yes/no option: ``True`` or ``False``, nothing merely truthy."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{provider}: {name} must be True or False, not {value!r}")
    return value


def session_name(provider: str, value: object) -> str:
    """The ``name=`` of a provider's session: a non-empty string."""
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{provider}: name must be a non-empty string")
    return value


def credential(provider: str, value: object, envs: Sequence[str], argument: str) -> str | None:
    """A credential passed as ``argument=``, else from the first of ``envs`` that is set.

    ``None`` when there is none (the provider's ``check`` reports it, naming
    both the argument and the variables). Raises for a value that is not a
    non-empty string, without echoing it.
    """
    if value is None:
        for env in envs:
            value = os.environ.get(env) or None
            if value is not None:
                break
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigurationError(f"{provider}: {argument}= must be a non-empty string")
    return value


def check_ws_url(url: str, *, allow_insecure: bool = False) -> None:
    """Raise :class:`ConfigurationError` unless ``url`` is a usable WebSocket URL.

    ``wss://`` anywhere; ``ws://`` only to a loopback host unless
    ``allow_insecure``: a plain-text connection to a real provider would send
    the API key in clear.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigurationError(
            f"bad WebSocket URL {url!r}: expected wss://host/path (or ws://127.0.0.1:PORT)"
        )
    try:
        port = parts.port
    except ValueError:  # not a number, or above 65535
        port = 0
    if port == 0:
        raise ConfigurationError(
            f"bad WebSocket URL {url!r}: the port must be a number from 1 to 65535 "
            "(or leave it out: 443 for wss://, 80 for ws://)"
        )
    if parts.scheme == "ws" and not allow_insecure and not is_loopback(parts.hostname):
        raise ConfigurationError(
            f"refusing plain ws:// to non-loopback host {parts.hostname!r}: credentials would "
            "travel in clear; use wss:// or pass allow_insecure=True"
        )


def websocket_url(provider: str, url: object, *, allow_insecure: bool = False) -> str:
    """A ``url=`` override: a string that passes :func:`check_ws_url`."""
    if not isinstance(url, str):
        raise ConfigurationError(f"{provider}: url must be a string, not {url!r}")
    check_ws_url(url, allow_insecure=allow_insecure)
    return url


def rest_url(provider: str, url: object, *, allow_insecure: bool = False) -> str:
    """A ``rest_url=`` override: ``https://host[:port]`` (``http://`` only to a loopback
    host, unless ``allow_insecure``: the key travels in a header). A trailing ``/``
    is dropped."""
    if not isinstance(url, str):
        raise ConfigurationError(f"{provider}: rest_url must be a string, not {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ConfigurationError(
            f"{provider}: bad rest_url {url!r}: expected https://host (or http://127.0.0.1:PORT)"
        )
    if parts.scheme == "http" and not allow_insecure and not is_loopback(parts.hostname):
        raise ConfigurationError(
            f"{provider}: refusing a plain http:// rest_url to non-loopback host "
            f"{parts.hostname!r}: the API key would travel in clear; use https:// or pass "
            "allow_insecure=True"
        )
    return url.rstrip("/")


#: What ``backfill=`` may ask for: the trades of a reconnect window (quotes may follow).
BACKFILL_KINDS: tuple[str, ...] = ("trades",)


class BackfillOptions(TypedDict):
    """``backfill=`` and ``backfill_timeout=`` (see ``docs/guide/backfill.rst``), checked."""

    backfill: Literal["trades"] | None
    backfill_timeout: float


def backfill(provider: str, *, backfill: object, backfill_timeout: object) -> BackfillOptions:
    """Check the backfill options: ``None`` or ``"trades"``, and a positive, finite timeout."""
    if backfill is not None and backfill not in BACKFILL_KINDS:
        raise ConfigurationError(
            f"{provider}: backfill must be None (no backfill) or 'trades', not {backfill!r}"
        )
    return BackfillOptions(
        backfill="trades" if backfill is not None else None,
        backfill_timeout=seconds(provider, "backfill_timeout", backfill_timeout),
    )


@attrs.frozen
class SymbolRule:
    """What one provider (feed, cluster) accepts as a symbol.

    A symbol is upper-cased first if ``upper`` (the provider's symbols are
    all upper case, so ``"aapl"`` is a typo for ``"AAPL"``, not another
    instrument), then must match ``pattern`` in full; ``"*"`` (every symbol)
    passes only with ``wildcard``. ``spelled`` says in words what the pattern
    accepts. ``hints`` pair a pattern a refused symbol may match with advice
    for it (``{upper}`` in the advice becomes the symbol in upper case).
    """

    pattern: re.Pattern[str]
    spelled: str
    upper: bool = False
    wildcard: bool = True
    hints: tuple[tuple[re.Pattern[str], str], ...] = ()

    def check(self, provider: str, channel: str, symbol: str) -> str:
        """The symbol as it will be subscribed (normalised), or ConfigurationError."""
        if symbol == "*":
            if self.wildcard:
                return symbol
            raise ConfigurationError(
                f"{provider}: {channel}=['*'] is not supported: there is no wildcard "
                "subscription; name each symbol"
            )
        clean = symbol.upper() if self.upper else symbol
        if self.pattern.fullmatch(clean):
            return clean
        shown = repr(symbol)
        if len(symbol) > 40:
            shown = f"{symbol[:20]!r}... ({len(symbol)} characters)"
        advice = "".join(
            "; " + text.format(upper=symbol.upper())
            for hint, text in self.hints
            if hint.search(symbol)
        )
        raise ConfigurationError(
            f"{provider}: bad symbol {shown} in {channel}=: {self.spelled}{advice}"
        )


def check_symbols(
    provider: str, topics: Mapping[str, frozenset[str]], rule: SymbolRule
) -> dict[str, frozenset[str]]:
    """``topics`` (already checked by ``normalize_topics``) with every symbol passed through
    ``rule``: normalised, or the first bad one refused with ConfigurationError."""
    return {
        channel: frozenset(rule.check(provider, channel, symbol) for symbol in sorted(symbols))
        for channel, symbols in topics.items()
    }
