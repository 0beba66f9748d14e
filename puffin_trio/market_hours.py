"""Market hours: which trading session an instant falls in, per asset class.

This module owns the answer to "should this feed be trading now?", which the
health-checker asks every quarter of ``stale_after`` per session so that a
quiet feed at night is not mistaken for a dead one: :class:`USEquityCalendar` (NYSE hours,
holidays and early closes, with pre- and post-market) and
:class:`AlwaysOpenCalendar` (crypto). It must not do I/O (the holiday tables
come from rules shipped inside ``exchange_calendars``), know about providers,
or be called per message. The hours, the calendar's range and the one-time
cost of loading it are in ``docs/guide/market-hours.rst``.
"""

from __future__ import annotations

import enum
import functools
import warnings
from datetime import date, datetime, time, timedelta
from typing import Final, Protocol
from zoneinfo import ZoneInfo

import attrs

from puffin_trio.errors import ConfigurationError

__all__ = [
    "CALENDAR_END",
    "CALENDAR_START",
    "AlwaysOpenCalendar",
    "DaySchedule",
    "MarketSession",
    "TradingCalendar",
    "USEquityCalendar",
    "calendar_for",
    "preload",
    "session_at",
]

NEW_YORK: Final = ZoneInfo("America/New_York")

#: First date of the holiday table: the Unix epoch. Market data carries ns
#: timestamps since the epoch, so earlier instants are not data this package sees.
CALENDAR_START: Final = date(1970, 1, 1)
#: Last date of the holiday table: pandas' holiday rules, on which
#: ``exchange_calendars`` builds, generate no holidays after 2200-12-31.
CALENDAR_END: Final = date(2200, 12, 31)

_PRE_OPEN: Final = time(4, 0)
_REGULAR_OPEN: Final = time(9, 30)
_REGULAR_CLOSE: Final = time(16, 0)
_POST_CLOSE: Final = time(20, 0)
#: Post-market close on an early-close day (NYSE Arca / Nasdaq practice).
_EARLY_POST_CLOSE: Final = time(17, 0)
_NS: Final = 1_000_000_000


class MarketSession(enum.StrEnum):
    """The trading session an instant falls in."""

    PRE = "pre"  #: pre-market (US equities: 04:00-09:30 New York time)
    REGULAR = "regular"  #: the regular session (09:30-16:00, or to the early close)
    POST = "post"  #: after-hours (16:00-20:00, or early close to 17:00)
    CLOSED = "closed"  #: no trading: night, weekend or holiday


class TradingCalendar(Protocol):
    """What the health-checker needs to know about a market's hours.

    All methods are pure, non-blocking once loaded, and take and return integer
    nanoseconds since the Unix epoch (UTC).
    """

    def session_at(self, ts_ns: int) -> MarketSession:
        """The session ``ts_ns`` falls in."""
        ...

    def is_open(self, ts_ns: int, *, extended: bool = True) -> bool:
        """Whether the market trades at ``ts_ns``; ``extended`` counts pre/post as open."""
        ...

    def next_open(self, ts_ns: int, *, extended: bool = True) -> int:
        """The earliest instant at or after ``ts_ns`` at which :meth:`is_open` is true."""
        ...


@attrs.frozen
class DaySchedule:
    """One trading day's session boundaries, in ns since the epoch (UTC)."""

    pre_open: int
    regular_open: int
    regular_close: int
    post_close: int


@attrs.frozen
class _Exceptions:
    """What departs from "weekdays, normal hours" inside the calendar's range."""

    closed_weekdays: frozenset[date]
    special_hours: dict[date, tuple[time, time]]


def _load_xnys() -> _Exceptions:
    """Build the XNYS tables (slow: imports pandas and exchange_calendars)."""
    import exchange_calendars

    with warnings.catch_warnings():
        # exchange_calendars still uses pandas APIs that pandas 3 deprecates; the
        # warnings are about the library's internals, not about anything we can fix.
        warnings.simplefilter("ignore", DeprecationWarning)
        calendar = exchange_calendars.get_calendar(
            "XNYS", start=CALENDAR_START.isoformat(), end=CALENDAR_END.isoformat()
        )
        schedule = calendar.schedule
        opens = schedule["open"].dt.tz_convert(NEW_YORK)
        closes = schedule["close"].dt.tz_convert(NEW_YORK)
        normal = (opens.dt.time == _REGULAR_OPEN) & (closes.dt.time == _REGULAR_CLOSE)
        special = {
            day.date(): (open_.time(), close.time())
            for day, open_, close in zip(
                schedule.index[~normal], opens[~normal], closes[~normal], strict=True
            )
        }
        sessions = set(schedule.index.date)
    weekdays = (
        CALENDAR_START + timedelta(days=offset)
        for offset in range((CALENDAR_END - CALENDAR_START).days + 1)
    )
    return _Exceptions(
        closed_weekdays=frozenset(
            day for day in weekdays if day.weekday() < 5 and day not in sessions
        ),
        special_hours=special,
    )


def _at(day: date, local: time) -> int:
    """``day`` at ``local`` New York time, in ns since the epoch."""
    return int(datetime.combine(day, local, tzinfo=NEW_YORK).timestamp()) * _NS


def _new_york_date(ts_ns: int) -> date:
    return datetime.fromtimestamp(ts_ns // _NS, NEW_YORK).date()


class USEquityCalendar:
    """US equity sessions (NYSE holidays and early closes; pre/post-market).

    See ``docs/guide/market-hours.rst`` for the hours and the calendar's range. Instances
    are cheap to create and load nothing until first asked about a date inside
    the calendar's range; the shared one is ``calendar_for("us_equity")``.

    ``cache_days`` bounds the per-date cache of session boundaries. The default,
    1024 dates (about four years of trading days, under 300 KB), keeps a replay
    spanning years cached while a live feed needs only one or two entries.

    Not thread-safe for the first load: two threads loading at once both build
    the tables and one result wins, which is harmless.
    """

    def __init__(self, *, cache_days: int = 1024) -> None:
        self._exceptions: _Exceptions | None = None
        self._schedule = functools.lru_cache(maxsize=cache_days)(self._compute_schedule)

    @property
    def loaded(self) -> bool:
        """Whether the holiday tables are built (so no question will block)."""
        return self._exceptions is not None

    def load(self) -> None:
        """Import ``exchange_calendars`` and build the holiday tables now (blocking, up to ~1 s).

        Optional: the first question about a date in range does it otherwise.
        A session calls it through :func:`preload` before anything streams, so
        a live session never stalls on it.
        """
        self._tables()

    def _tables(self) -> _Exceptions:
        if self._exceptions is None:
            self._exceptions = _load_xnys()
        return self._exceptions

    def schedule_for(self, day: date) -> DaySchedule | None:
        """The sessions of ``day`` (a New York date), or ``None`` if the market is closed."""
        return self._schedule(day)

    def session_at(self, ts_ns: int) -> MarketSession:
        """The session ``ts_ns`` (ns since the epoch) falls in."""
        schedule = self._schedule(_new_york_date(ts_ns))
        if schedule is None or ts_ns < schedule.pre_open:
            return MarketSession.CLOSED
        if ts_ns < schedule.regular_open:
            return MarketSession.PRE
        if ts_ns < schedule.regular_close:
            return MarketSession.REGULAR
        if ts_ns < schedule.post_close:
            return MarketSession.POST
        return MarketSession.CLOSED

    def is_open(self, ts_ns: int, *, extended: bool = True) -> bool:
        """Whether US equities trade at ``ts_ns``; ``extended`` counts pre/post-market."""
        session = self.session_at(ts_ns)
        if extended:
            return session is not MarketSession.CLOSED
        return session is MarketSession.REGULAR

    def next_open(self, ts_ns: int, *, extended: bool = True) -> int:
        """The earliest instant at or after ``ts_ns`` at which :meth:`is_open` is true.

        Returns ``ts_ns`` itself when the market is open then. Walks forward one
        date at a time; that ends within days, since no closure lasts long and
        every weekday outside the calendar's range is open.
        """
        day = _new_york_date(ts_ns)
        while True:
            schedule = self._schedule(day)
            if schedule is not None:
                start = schedule.pre_open if extended else schedule.regular_open
                end = schedule.post_close if extended else schedule.regular_close
                if ts_ns < end:
                    return max(ts_ns, start)
            day += timedelta(days=1)

    def _compute_schedule(self, day: date) -> DaySchedule | None:
        if CALENDAR_START <= day <= CALENDAR_END:
            tables = self._tables()
            hours = tables.special_hours.get(day)
            if hours is None and day in tables.closed_weekdays:
                return None
        else:
            hours = None
        if hours is None:
            if day.weekday() >= 5:
                return None
            hours = (_REGULAR_OPEN, _REGULAR_CLOSE)
        regular_open, regular_close = hours
        post_close = _POST_CLOSE if regular_close >= _REGULAR_CLOSE else _EARLY_POST_CLOSE
        return DaySchedule(
            pre_open=_at(day, _PRE_OPEN),
            regular_open=_at(day, regular_open),
            regular_close=_at(day, regular_close),
            post_close=_at(day, post_close),
        )


class AlwaysOpenCalendar:
    """A market that never closes (crypto): every instant is ``regular``."""

    def session_at(self, ts_ns: int) -> MarketSession:
        """Always :attr:`MarketSession.REGULAR`."""
        return MarketSession.REGULAR

    def is_open(self, ts_ns: int, *, extended: bool = True) -> bool:
        """Always ``True``."""
        return True

    def next_open(self, ts_ns: int, *, extended: bool = True) -> int:
        """``ts_ns``: it is open now."""
        return ts_ns


_US_EQUITY: Final = USEquityCalendar()
_ALWAYS_OPEN: Final = AlwaysOpenCalendar()
#: Asset-class names as Alpaca (``us_equity``, ``crypto``) and Polygon (``stocks``) spell them.
_CALENDARS: Final[dict[str, TradingCalendar]] = {
    "us_equity": _US_EQUITY,
    "stocks": _US_EQUITY,
    "crypto": _ALWAYS_OPEN,
}


def calendar_for(asset_class: str) -> TradingCalendar:
    """The shared calendar for ``asset_class``: ``"us_equity"``/``"stocks"`` or ``"crypto"``.

    Raises :class:`~puffin_trio.errors.ConfigurationError` for any other name.
    """
    try:
        return _CALENDARS[asset_class]
    except KeyError:
        known = ", ".join(repr(name) for name in _CALENDARS)
        raise ConfigurationError(
            f"no market-hours calendar for asset class {asset_class!r}; use one of {known}"
        ) from None


def preload(calendar: TradingCalendar) -> None:
    """Build whatever ``calendar`` would otherwise build on its first question, now.

    The US equity calendar imports ``exchange_calendars`` and pandas (~1 s,
    ~60 MB, once per process); the session calls this when it is made, before
    anything streams, rather than let its first market-hours check stall every
    task mid-stream. (Not in a worker thread: under a ``MockClock`` a thread
    wait lets the clock run to any deadline.) Other calendars need nothing.
    Blocking; not a checkpoint.
    """
    if isinstance(calendar, USEquityCalendar):
        calendar.load()


def session_at(ts_ns: int) -> MarketSession:
    """The US equity session ``ts_ns`` (ns since the epoch) falls in (shared calendar)."""
    return _US_EQUITY.session_at(ts_ns)
