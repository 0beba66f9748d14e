"""Prometheus metrics: every counter puffin_trio keeps, served on ``/metrics`` by a trio task.

This module owns :func:`serve_metrics`, a small HTTP/1.1 server (h11, the
sans-IO parser, over trio sockets: no threads) whose one page is the
Prometheus text exposition of a :class:`prometheus_client.CollectorRegistry`.
A collector reads, at scrape time, the statistics the components already
keep (``sup.statistics()``, ``publisher.statistics()``, ...), so the hot paths
carry no metrics code at all. The metric names are listed in the
documentation's distribution guide. It must not change what it reads or
block the event loop.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, NoReturn

import attrs
import h11
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from puffin_trio.errors import ConfigurationError
from puffin_trio.events import SessionState
from puffin_trio.histogram import HistogramSnapshot
from puffin_trio.supervisor import Supervisor

__all__ = ["DEFAULT_PORT", "StatisticsSource", "metrics_registry", "serve_metrics"]

logger = logging.getLogger("puffin_trio.metrics")

#: The port Prometheus's exporter registry lists for OpenTelemetry-style
#: exporters; ours is the same default so a scrape config can be copied.
DEFAULT_PORT: Final = 9464
#: Seconds a client may take to send a request, and may keep an idle
#: keep-alive connection open. Prometheus scrapes every 15-60 s and reuses
#: connections; 60 s keeps one open between scrapes without holding dead ones.
REQUEST_TIMEOUT: Final = 10.0
IDLE_TIMEOUT: Final = 60.0
#: Largest request head we accept (h11's own default is 16 KiB; a scrape is ~200 B).
MAX_REQUEST_BYTES: Final = 16 * 1024
_READ_SIZE: Final = 16 * 1024

_Family = CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily
#: A statistics source: a callable returning a frozen attrs statistics object.
StatisticsSource = Callable[[], Any]

_NAME_CLEAN = re.compile(r"[^a-zA-Z0-9_]")


def _source_name(statistics: object) -> str:
    """``RedisPublisherStatistics`` -> ``redis_publisher``."""
    name = type(statistics).__name__.removesuffix("Statistics") or "source"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _histogram(
    name: str, documentation: str, label_names: Sequence[str]
) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, labels=list(label_names))


def _add_histogram(
    family: HistogramMetricFamily, labels: Sequence[str], snapshot: HistogramSnapshot
) -> None:
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(snapshot.bounds, snapshot.counts, strict=False):
        running += count
        buckets.append((repr(float(bound)), float(running)))
    running += snapshot.counts[-1]
    buckets.append(("+Inf", float(running)))
    family.add_metric(list(labels), buckets, snapshot.sum)


_SESSION_COUNTERS: Final[Mapping[str, str]] = {
    "messages": "Events received and decoded",
    "frames": "Transport frames received",
    "bytes": "Bytes received",
    "connects": "Connections opened",
    "reconnects": "Connections opened after the first",
    "gaps": "Sequence gaps announced",
    "duplicates": "Duplicate messages dropped by the sequence guard",
    "late": "Messages that came too late to deliver in order",
    "malformed": "Malformed messages (counted, logged, skipped)",
    "unknown": "Messages of an unknown type (ignored)",
    "resubscribes": "Resubscriptions after silence or at the provider's request",
}
#: A session's backfill counters (``backfill="trades"``), as ``puffin_session_backfill_*``.
_BACKFILL_COUNTERS: Final[Mapping[str, str]] = {
    "backfills": "Reconnect windows backfilled",
    "recovered": "Trades recovered from the historical API and delivered",
    "duplicates": "Trades dropped at a backfill's seams (received both ways)",
    "incomplete": "Symbol windows a backfill could not recover entirely",
    "requests": "Historical requests sent (retries included)",
    "pages": "Historical pages received",
}
_CONSUMER_COUNTERS: Final[Mapping[str, str]] = {
    "published": "Events published while the consumer was registered",
    "delivered": "Events handed to the consumer",
    "dropped": "Events lost to the overflow policy (announced by a Gap)",
    "conflated": "Quotes/book updates merged into a pending one",
    "gaps": "Overflow Gap announcements delivered",
}
_CONSUMER_GAUGES: Final[Mapping[str, str]] = {
    "queued": "Entries queued now (queue depth)",
    "max_queued": "High-water mark of the queue",
    "capacity": "Most entries the queue holds",
}


class _Collector(Collector):
    """Reads the statistics at scrape time and turns them into metric families."""

    def __init__(self, sup: Supervisor | None, sources: Sequence[StatisticsSource]) -> None:
        self._sup = sup
        self._sources = sources

    def collect(self) -> Iterable[Metric]:
        if self._sup is not None:
            yield from self._supervisor(self._sup)
        families: dict[str, _Family] = {}
        for source in self._sources:
            statistics = source()
            name = _source_name(statistics)
            self._flatten(families, f"puffin_{name}", statistics, {})
        yield from families.values()

    # -- the supervisor: labelled per session and per consumer -------------------------

    def _supervisor(self, sup: Supervisor) -> Iterator[Metric]:
        statistics = sup.statistics()
        sessions = statistics.sessions
        labels = ["session", "provider"]
        for field, help_text in _SESSION_COUNTERS.items():
            family = CounterMetricFamily(f"puffin_session_{field}", help_text, labels=labels)
            for name, s in sessions.items():
                family.add_metric([name, s.provider], getattr(s, field))
            yield family
        rtt = GaugeMetricFamily(
            "puffin_session_heartbeat_rtt_seconds",
            "Round-trip time of the last heartbeat",
            labels=labels,
        )
        stale = GaugeMetricFamily(
            "puffin_session_stale", "1 while the provider says data is not flowing", labels=labels
        )
        state = GaugeMetricFamily(
            "puffin_session_state",
            "Session state: 1 for the current state, 0 for the others",
            labels=[*labels, "state"],
        )
        lag = _histogram(
            "puffin_session_lag_seconds",
            "Provider lag (ts_recv - ts_event) of each published batch",
            labels,
        )
        for name, s in sessions.items():
            if s.heartbeat_rtt is not None:
                rtt.add_metric([name, s.provider], s.heartbeat_rtt)
            stale.add_metric([name, s.provider], float(s.stale))
            for member in SessionState:
                state.add_metric([name, s.provider, member.value], float(s.state is member))
            _add_histogram(lag, [name, s.provider], s.lag_histogram)
        yield from (rtt, stale, state, lag)
        yield from self._backfills(sessions)
        yield from self._consumers(statistics.consumers)
        yield CounterMetricFamily(
            "puffin_unconsumed",
            "Events published while no consumer was registered",
            value=statistics.unconsumed,
        )

    def _backfills(self, sessions: Mapping[str, Any]) -> Iterator[Metric]:
        labels = ["session", "provider"]
        backfilling = {n: s for n, s in sessions.items() if s.backfill is not None}
        if not backfilling:
            return
        for field, help_text in _BACKFILL_COUNTERS.items():
            family = CounterMetricFamily(
                f"puffin_session_backfill_{field}", help_text, labels=labels
            )
            for name, s in backfilling.items():
                family.add_metric([name, s.provider], getattr(s.backfill, field))
            yield family
        held = GaugeMetricFamily(
            "puffin_session_backfill_held",
            "Live trades held back now while their backfill runs",
            labels=labels,
        )
        for name, s in backfilling.items():
            held.add_metric([name, s.provider], s.backfill.held)
        yield held

    def _consumers(self, consumers: Mapping[str, Any]) -> Iterator[Metric]:
        labels = ["consumer", "policy"]
        for field, help_text in _CONSUMER_COUNTERS.items():
            family = CounterMetricFamily(f"puffin_consumer_{field}", help_text, labels=labels)
            for name, c in consumers.items():
                family.add_metric([name, c.policy], getattr(c, field))
            yield family
        for field, help_text in _CONSUMER_GAUGES.items():
            gauge = GaugeMetricFamily(f"puffin_consumer_{field}", help_text, labels=labels)
            for name, c in consumers.items():
                gauge.add_metric([name, c.policy], getattr(c, field))
            yield gauge
        age = GaugeMetricFamily(
            "puffin_consumer_lag_seconds",
            "Age of the oldest queued event (now - its ts_recv)",
            labels=labels,
        )
        for name, c in consumers.items():
            age.add_metric([name, c.policy], c.lag_ns / 1e9)
        yield age

    # -- any other source: its attrs fields -------------------------------------------------

    def _flatten(
        self, families: dict[str, _Family], prefix: str, statistics: Any, labels: dict[str, str]
    ) -> None:
        if not attrs.has(type(statistics)):
            raise ConfigurationError(
                f"a metrics source must return an attrs statistics object, got "
                f"{type(statistics).__name__}"
            )
        fields = attrs.fields(type(statistics))
        labels = dict(labels)
        for field in fields:
            value = getattr(statistics, field.name)
            if isinstance(value, str) or (value is None and "str" in str(field.type)):
                labels[field.name] = value or ""
        names, values = list(labels), list(labels.values())
        for field in fields:
            value = getattr(statistics, field.name)
            metric = f"{prefix}_{_NAME_CLEAN.sub('_', field.name)}"
            doc = f"{type(statistics).__name__}.{field.name}"
            if isinstance(value, HistogramSnapshot):
                family = families.get(metric + "_seconds")
                if family is None:
                    family = families[metric + "_seconds"] = _histogram(
                        metric + "_seconds", doc + " (seconds)", names
                    )
                assert isinstance(family, HistogramMetricFamily)
                _add_histogram(family, values, value)
            elif attrs.has(type(value)):
                self._flatten(families, metric, value, labels)
            elif isinstance(value, bool | int | float):
                if isinstance(value, float) and math.isnan(value):
                    continue
                counter = field.metadata.get("metric") == "counter"
                scalar = families.get(metric)
                if scalar is None:
                    scalar = families[metric] = (
                        CounterMetricFamily(metric, doc, labels=names)
                        if counter
                        else GaugeMetricFamily(metric, doc, labels=names)
                    )
                assert not isinstance(scalar, HistogramMetricFamily)
                scalar.add_metric(values, float(value))


def metrics_registry(
    sup: Supervisor | None = None, sources: Iterable[StatisticsSource] = ()
) -> CollectorRegistry:
    """A registry whose collector reads ``sup`` and ``sources`` at each scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(sup, list(sources)))
    return registry


async def serve_metrics(
    sup: Supervisor | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    sources: Iterable[StatisticsSource] = (),
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve Prometheus text format on ``http://host:port/metrics`` until cancelled.

    Start it with ``port = await nursery.start(serve_metrics, sup)``; the bound
    port (``port=0``: any free one) is reported through ``task_status``.
    ``sources`` adds statistics to export (callables such as
    ``publisher.statistics`` or ``feed.feed_statistics``; see the module
    docstring). Loopback by default: expose it wider by passing ``host``.
    Other paths get 404, other methods 405; a malformed request gets 400.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
        raise ConfigurationError(f"port must be 0-65535, got {port!r}")
    sources = list(sources)
    for source in sources:
        if not callable(source) or not attrs.has(type(source())):
            raise ConfigurationError(
                f"a metrics source is a callable returning an attrs statistics object "
                f"(e.g. publisher.statistics), got {source!r}"
            )
    registry = metrics_registry(sup, sources)
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    task_status.started(bound)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await _serve_connection(stream, registry)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away; nothing to clean up beyond the stream
        finally:
            await stream.aclose()

    await trio.serve_listeners(handle, listeners)
    raise AssertionError("serve_listeners returned")  # pragma: no cover


async def _serve_connection(stream: trio.SocketStream, registry: CollectorRegistry) -> None:
    """Answer requests on one connection until it closes or idles out."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
    while True:
        timeout = IDLE_TIMEOUT if connection.their_state is h11.IDLE else REQUEST_TIMEOUT
        with trio.move_on_after(timeout):
            try:
                request = await _next_request(stream, connection)
            except h11.RemoteProtocolError as exc:
                await _respond(stream, connection, exc.error_status_hint, b"bad request\n")
                return
            if request is None:
                return
            if request.method not in (b"GET", b"HEAD"):
                await _respond(stream, connection, 405, b"method not allowed\n", allow=True)
            elif request.target.split(b"?", 1)[0] != b"/metrics":
                await _respond(stream, connection, 404, b"not found: try /metrics\n")
            else:
                try:
                    body = generate_latest(registry)
                except Exception:
                    logger.exception("collecting metrics failed")
                    await _respond(stream, connection, 500, b"collecting metrics failed\n")
                    return
                await _respond(
                    stream,
                    connection,
                    200,
                    b"" if request.method == b"HEAD" else body,
                    content_type=CONTENT_TYPE_LATEST.encode(),
                    length=len(body),
                )
            if connection.our_state is h11.MUST_CLOSE:
                return
            try:
                connection.start_next_cycle()
            except h11.LocalProtocolError:
                return
            continue
        return  # timed out


async def _next_request(
    stream: trio.SocketStream, connection: h11.Connection
) -> h11.Request | None:
    """The next request, its body drained; None when the client closed the connection."""
    request: h11.Request | None = None
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(_READ_SIZE)
            connection.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


async def _respond(
    stream: trio.SocketStream,
    connection: h11.Connection,
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"text/plain; charset=utf-8",
    length: int | None = None,
    allow: bool = False,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", b"%d" % (len(body) if length is None else length)),
    ]
    if allow:
        headers.append((b"allow", b"GET, HEAD"))
    if connection.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    data = connection.send(h11.Response(status_code=status, headers=headers))
    if body:
        data = (data or b"") + (connection.send(h11.Data(data=body)) or b"")
    data = (data or b"") + (connection.send(h11.EndOfMessage()) or b"")
    await stream.send_all(data)
