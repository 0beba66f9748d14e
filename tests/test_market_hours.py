"""Specification of puffin_trio.market_hours: US equity sessions and always-open markets."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from puffin_trio.errors import ConfigurationError
from puffin_trio.market_hours import (
    CALENDAR_END,
    CALENDAR_START,
    AlwaysOpenCalendar,
    DaySchedule,
    MarketSession,
    USEquityCalendar,
    calendar_for,
    session_at,
)

NY = ZoneInfo("America/New_York")
NS = 1_000_000_000
INT64 = st.integers(-(2**63), 2**63 - 1)

PRE, REGULAR, POST, CLOSED = (
    MarketSession.PRE,
    MarketSession.REGULAR,
    MarketSession.POST,
    MarketSession.CLOSED,
)


def ny(day: str, hhmm: str, *, minus_ns: int = 0) -> int:
    """``day`` at ``hhmm`` New York time, in ns since the epoch, less ``minus_ns``."""
    local = datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=NY)
    return int(local.timestamp()) * NS - minus_ns


def utc(day: str, hhmm: str, *, minus_ns: int = 0) -> int:
    """``day`` at ``hhmm`` UTC, in ns since the epoch, less ``minus_ns``."""
    return int(datetime.fromisoformat(f"{day}T{hhmm}+00:00").timestamp()) * NS - minus_ns


@pytest.mark.parametrize(
    ("ts_ns", "expected"),
    [
        (ny("2024-03-13", "00:00"), CLOSED),
        (ny("2024-03-13", "04:00", minus_ns=1), CLOSED),
        (ny("2024-03-13", "04:00"), PRE),
        (ny("2024-03-13", "09:30", minus_ns=1), PRE),
        (ny("2024-03-13", "09:30"), REGULAR),
        (ny("2024-03-13", "16:00", minus_ns=1), REGULAR),
        (ny("2024-03-13", "16:00"), POST),
        (ny("2024-03-13", "20:00", minus_ns=1), POST),
        (ny("2024-03-13", "20:00"), CLOSED),
        (ny("2024-03-13", "23:59"), CLOSED),
    ],
)
def test_sessions_are_half_open_intervals_in_new_york_time(
    ts_ns: int, expected: MarketSession
) -> None:
    assert session_at(ts_ns) is expected


@pytest.mark.parametrize("day", ["2024-03-16", "2024-03-17"])
@pytest.mark.parametrize("hhmm", ["05:00", "10:00", "17:00"])
def test_weekends_are_closed_even_for_extended_hours(day: str, hhmm: str) -> None:
    assert session_at(ny(day, hhmm)) is CLOSED
    assert not calendar_for("us_equity").is_open(ny(day, hhmm), extended=True)


@pytest.mark.parametrize(
    "day",
    [
        "2024-01-01",
        "2024-01-15",
        "2024-02-19",
        "2024-03-29",
        "2024-05-27",
        "2024-06-19",
        "2024-07-04",
        "2024-09-02",
        "2024-11-28",
        "2024-12-25",
    ],
)
@pytest.mark.parametrize("hhmm", ["05:00", "10:00", "17:00"])
def test_nyse_holidays_of_2024_are_closed_all_day(day: str, hhmm: str) -> None:
    assert session_at(ny(day, hhmm)) is CLOSED


def test_the_national_day_of_mourning_for_president_carter_is_closed() -> None:
    assert session_at(ny("2025-01-09", "10:00")) is CLOSED
    assert session_at(ny("2025-01-08", "10:00")) is REGULAR
    assert session_at(ny("2025-01-10", "10:00")) is REGULAR


@pytest.mark.parametrize(
    ("ts_ns", "expected"),
    [
        (ny("2024-11-29", "04:00"), PRE),
        (ny("2024-11-29", "09:30"), REGULAR),
        (ny("2024-11-29", "12:59"), REGULAR),
        (ny("2024-11-29", "13:00", minus_ns=1), REGULAR),
        (ny("2024-11-29", "13:00"), POST),
        (ny("2024-11-29", "13:01"), POST),
        (ny("2024-11-29", "17:00", minus_ns=1), POST),
        (ny("2024-11-29", "17:00"), CLOSED),
        (ny("2024-11-29", "19:00"), CLOSED),
    ],
)
def test_an_early_close_ends_regular_at_13_and_post_market_at_17(
    ts_ns: int, expected: MarketSession
) -> None:
    assert session_at(ts_ns) is expected


@pytest.mark.parametrize(
    ("ts_ns", "expected"),
    [
        # 2024-03-11, first Monday after the spring-forward: New York is UTC-4.
        (utc("2024-03-11", "08:00", minus_ns=1), CLOSED),
        (utc("2024-03-11", "08:00"), PRE),
        (utc("2024-03-11", "13:30", minus_ns=1), PRE),
        (utc("2024-03-11", "13:30"), REGULAR),
        (utc("2024-03-11", "20:00", minus_ns=1), REGULAR),
        (utc("2024-03-11", "20:00"), POST),
        (utc("2024-03-12", "00:00", minus_ns=1), POST),
        (utc("2024-03-12", "00:00"), CLOSED),
        # 2024-11-04, first Monday after the fall-back: New York is UTC-5.
        (utc("2024-11-04", "09:00", minus_ns=1), CLOSED),
        (utc("2024-11-04", "09:00"), PRE),
        (utc("2024-11-04", "14:30", minus_ns=1), PRE),
        (utc("2024-11-04", "14:30"), REGULAR),
        (utc("2024-11-04", "21:00", minus_ns=1), REGULAR),
        (utc("2024-11-04", "21:00"), POST),
        (utc("2024-11-05", "01:00", minus_ns=1), POST),
        (utc("2024-11-05", "01:00"), CLOSED),
    ],
)
def test_session_boundaries_follow_daylight_saving_time_in_utc(
    ts_ns: int, expected: MarketSession
) -> None:
    assert session_at(ts_ns) is expected


@pytest.mark.parametrize(
    ("ts_ns", "extended_open", "regular_open"),
    [
        (ny("2024-03-13", "05:00"), True, False),
        (ny("2024-03-13", "10:00"), True, True),
        (ny("2024-03-13", "17:00"), True, False),
        (ny("2024-03-13", "21:00"), False, False),
    ],
)
def test_is_open_counts_pre_and_post_market_only_when_extended(
    ts_ns: int, extended_open: bool, regular_open: bool
) -> None:
    calendar = calendar_for("us_equity")
    assert calendar.is_open(ts_ns) is extended_open
    assert calendar.is_open(ts_ns, extended=True) is extended_open
    assert calendar.is_open(ts_ns, extended=False) is regular_open


@pytest.mark.parametrize(
    ("ts_ns", "extended", "expected"),
    [
        # Open now: the answer is the instant itself.
        (ny("2024-03-13", "10:00"), True, ny("2024-03-13", "10:00")),
        (ny("2024-03-13", "17:00"), True, ny("2024-03-13", "17:00")),
        # Pre-market is open for extended, not for regular.
        (ny("2024-03-13", "05:00"), False, ny("2024-03-13", "09:30")),
        # Friday night -> Monday morning.
        (ny("2024-03-15", "20:00"), True, ny("2024-03-18", "04:00")),
        (ny("2024-03-15", "16:00"), False, ny("2024-03-18", "09:30")),
        # After the early close of 2024-07-03, across the 4th of July holiday.
        (ny("2024-07-03", "17:00"), True, ny("2024-07-05", "04:00")),
        (ny("2024-07-03", "13:00"), False, ny("2024-07-05", "09:30")),
        # Before dawn on a trading day.
        (ny("2024-03-13", "01:00"), True, ny("2024-03-13", "04:00")),
    ],
)
def test_next_open_is_the_first_open_instant_at_or_after(
    ts_ns: int, extended: bool, expected: int
) -> None:
    assert calendar_for("us_equity").next_open(ts_ns, extended=extended) == expected


def test_schedule_for_gives_a_days_boundaries_or_none_when_closed() -> None:
    calendar = USEquityCalendar()
    assert calendar.schedule_for(date(2024, 7, 4)) is None
    assert calendar.schedule_for(date(2024, 3, 16)) is None
    assert calendar.schedule_for(date(2024, 11, 29)) == DaySchedule(
        pre_open=ny("2024-11-29", "04:00"),
        regular_open=ny("2024-11-29", "09:30"),
        regular_close=ny("2024-11-29", "13:00"),
        post_close=ny("2024-11-29", "17:00"),
    )


def test_a_days_boundaries_are_computed_once_and_reused() -> None:
    calendar = USEquityCalendar()
    first = calendar.schedule_for(date(2024, 3, 13))
    calendar.session_at(ny("2024-03-13", "10:00"))
    assert calendar.schedule_for(date(2024, 3, 13)) is first


@pytest.mark.parametrize(
    ("ts_ns", "expected"),
    [
        # 1969-07-21 (a Monday) the NYSE closed for the Moon landing; the fallback
        # knows no holidays, only weekdays and the normal hours.
        (ny("1969-07-21", "10:00"), REGULAR),
        (ny("1969-07-21", "16:30"), POST),
        (ny("1969-07-19", "10:00"), CLOSED),
        # 2201-07-04 is a Saturday; Monday 2201-07-06 would be a holiday under
        # today's rules, but the fallback does not know it.
        (ny("2201-07-04", "10:00"), CLOSED),
        (ny("2201-07-06", "10:00"), REGULAR),
    ],
)
def test_outside_the_calendar_range_every_weekday_has_normal_hours(
    ts_ns: int, expected: MarketSession
) -> None:
    day = datetime.fromtimestamp(ts_ns // NS, NY).date()
    assert not CALENDAR_START <= day <= CALENDAR_END
    assert session_at(ts_ns) is expected


@given(ts_ns=INT64)
def test_any_int64_instant_has_a_session_and_a_next_open(ts_ns: int) -> None:
    """For every int64 ns instant (years 1677-2262), the calendar answers without
    crashing, and ``next_open`` is at or after the instant, open, and no later
    than needed: the market is closed just before it unless it is the instant itself."""
    calendar = calendar_for("us_equity")
    assert isinstance(calendar.session_at(ts_ns), MarketSession)
    for extended in (True, False):
        opens = calendar.next_open(ts_ns, extended=extended)
        assert opens >= ts_ns
        assert calendar.is_open(opens, extended=extended)
        if opens > ts_ns:
            assert not calendar.is_open(opens - 1, extended=extended)


@given(ts_ns=INT64)
def test_crypto_is_always_in_its_regular_session(ts_ns: int) -> None:
    """For every instant, the crypto calendar is regular, open, and opens now."""
    calendar = calendar_for("crypto")
    assert isinstance(calendar, AlwaysOpenCalendar)
    assert calendar.session_at(ts_ns) is REGULAR
    assert calendar.is_open(ts_ns, extended=False)
    assert calendar.next_open(ts_ns) == ts_ns


def test_calendar_for_shares_one_us_equity_calendar_under_alpaca_and_polygon_names() -> None:
    assert calendar_for("us_equity") is calendar_for("stocks")
    assert isinstance(calendar_for("us_equity"), USEquityCalendar)


def test_calendar_for_an_unknown_asset_class_says_which_names_exist() -> None:
    with pytest.raises(ConfigurationError, match=r"'forex'.*'us_equity', 'stocks', 'crypto'"):
        calendar_for("forex")


def test_importing_and_asking_outside_the_range_do_not_load_exchange_calendars() -> None:
    """The slow import happens on the first question about a date inside the range."""
    script = f"""
import sys
from puffin_trio.market_hours import session_at
assert "exchange_calendars" not in sys.modules
session_at({ny("2201-07-06", "10:00")})
assert "exchange_calendars" not in sys.modules
session_at({ny("2024-07-04", "10:00")})
assert "exchange_calendars" in sys.modules
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


@pytest.mark.parametrize(
    "ts_ns",
    [
        ny("1970-01-01", "10:00"),  # New Year's Day, the first date in range
        ny("2200-12-25", "10:00"),  # Christmas, a Thursday, in the last year in range
    ],
)
def test_holidays_are_known_from_the_epoch_to_2200(ts_ns: int) -> None:
    assert CALENDAR_START.year == 1970
    assert CALENDAR_END.year == 2200
    assert session_at(ts_ns) is CLOSED
