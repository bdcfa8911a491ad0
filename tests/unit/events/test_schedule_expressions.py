"""EventBridge schedule expressions: parsing, validation messages, and the ticks they give."""

from __future__ import annotations

import calendar
import re
import time

import pytest

from faas.events.schedule_expressions import (
    CronExpression,
    RateExpression,
    ScheduleExpressionError,
    iso_utc,
    parse_schedule_expression,
)


def at(text: str) -> float:
    """Epoch seconds of ``YYYY-MM-DDTHH:MM[:SS]`` (UTC)."""
    pattern = "%Y-%m-%dT%H:%M:%S" if text.count(":") == 2 else "%Y-%m-%dT%H:%M"
    return float(calendar.timegm(time.strptime(text, pattern)))


def ticks(expression: str, after: str, count: int, anchor: str | None = None) -> list[str]:
    """The next ``count`` ticks strictly after ``after``, as ISO strings."""
    parsed = parse_schedule_expression(expression)
    anchor_s = at(anchor or after)
    found: list[str] = []
    current = at(after)
    for _ in range(count):
        tick = parsed.next_fire_after(current, anchor_s)
        assert tick is not None, f"{expression} ran out of ticks after {found}"
        found.append(iso_utc(tick)[:-4])  # minute precision: YYYY-MM-DDTHH:MM
        current = tick
    return found


# -- rate() ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "period_s"),
    [
        ("rate(1 minute)", 60),
        ("rate(5 minutes)", 300),
        ("rate(1 hour)", 3600),
        ("rate(12 hours)", 43200),
        ("rate(1 day)", 86400),
        ("rate(7 days)", 604800),
        ("  rate(10 minutes)  ", 600),
    ],
)
def test_rate_periods(text: str, period_s: int) -> None:
    parsed = parse_schedule_expression(text)
    assert isinstance(parsed, RateExpression)
    assert parsed.period_s == period_s


def test_rate_ticks_count_from_the_anchor_minute() -> None:
    # Anchored at 10:02:40: the minute is 10:02, so the ticks are 10:07, 10:12, ...
    assert ticks("rate(5 minutes)", "2024-05-01T10:02:40", 3) == [
        "2024-05-01T10:07", "2024-05-01T10:12", "2024-05-01T10:17",
    ]  # fmt: skip
    # Asked later than the anchor, the grid stays where the anchor put it.
    assert ticks("rate(5 minutes)", "2024-05-01T11:00:30", 2, anchor="2024-05-01T10:02:40") == [
        "2024-05-01T11:02", "2024-05-01T11:07",
    ]  # fmt: skip
    assert ticks("rate(1 day)", "2024-02-28T23:59:59", 2, anchor="2024-02-28T09:30:00") == [
        "2024-02-29T09:30", "2024-03-01T09:30",
    ]  # fmt: skip


def test_a_rate_has_no_tick_after_2199_as_a_cron() -> None:
    parsed = parse_schedule_expression("rate(84005 days)")  # the longest rate accepted
    assert parsed.next_fire_after(at("2024-05-01T10:00"), at("2024-05-01T10:00")) is None
    assert parsed.next_fire_after(at("1970-01-01T00:00"), at("1970-01-01T00:00")) is not None


def test_rate_last_tick_at_or_before() -> None:
    parsed = parse_schedule_expression("rate(1 hour)")
    anchor = at("2024-05-01T10:00:30")
    assert parsed.last_fire_at_or_before(at("2024-05-01T10:59:59"), anchor) is None
    assert parsed.last_fire_at_or_before(at("2024-05-01T11:00"), anchor) == at("2024-05-01T11:00")
    assert parsed.last_fire_at_or_before(at("2024-05-01T15:42"), anchor) == at("2024-05-01T15:00")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rate(1 minutes)", "with value 1 the unit is 'minute'"),
        ("rate(1 hours)", "with value 1 the unit is 'hour'"),
        ("rate(5 minute)", "with a value above 1 the unit is 'minutes'"),
        ("rate(2 day)", "with a value above 1 the unit is 'days'"),
        ("rate(0 minutes)", "must be a whole number of at least 1"),
        ("rate(-5 minutes)", "must be a whole number of at least 1"),
        ("rate(1.5 hours)", "must be a whole number of at least 1"),
        ("rate(5 seconds)", "must be minute(s), hour(s) or day(s)"),
        ("rate(5 weeks)", "must be minute(s), hour(s) or day(s)"),
        ("rate(5)", "is not rate(<value> <unit>)"),
        ("rate(5 minutes", "is not rate(<value> <unit>)"),
        ("rate()", "is not rate(<value> <unit>)"),
        ("rate(\uff15 minutes)", "must be a whole number of at least 1"),  # a full-width 5
        ("rate(99999999999999999999999 minutes)", "is too large: at most 120968639 minutes"),
        ("rate(9999999999 days)", "is too large: at most 84005 days"),
    ],
)
def test_invalid_rates(text: str, message: str) -> None:
    with pytest.raises(ScheduleExpressionError, match=re.escape(message)):
        parse_schedule_expression(text)


# -- cron(): fields and wildcards --------------------------------------------------------


def test_every_minute() -> None:
    assert ticks("cron(* * * * ? *)", "2024-12-31T23:58:30", 3) == [
        "2024-12-31T23:59", "2025-01-01T00:00", "2025-01-01T00:01",
    ]  # fmt: skip


def test_strictly_after_a_tick() -> None:
    # Asked exactly at a tick, the next one is the following match.
    assert ticks("cron(0 10 * * ? *)", "2024-05-01T10:00", 1) == ["2024-05-02T10:00"]


def test_lists_ranges_and_increments() -> None:
    assert ticks("cron(0/15 * * * ? *)", "2024-05-01T10:50", 3) == [
        "2024-05-01T11:00", "2024-05-01T11:15", "2024-05-01T11:30",
    ]  # fmt: skip
    # 1/10: every tenth minute from minute 1 (EventBridge's own example).
    assert ticks("cron(1/10 * * * ? *)", "2024-05-01T10:00", 3) == [
        "2024-05-01T10:01", "2024-05-01T10:11", "2024-05-01T10:21",
    ]  # fmt: skip
    assert ticks("cron(*/20 9-10 * * ? *)", "2024-05-01T10:30", 3) == [
        "2024-05-01T10:40", "2024-05-02T09:00", "2024-05-02T09:20",
    ]  # fmt: skip
    assert ticks("cron(5,35 8,20 * * ? *)", "2024-05-01T09:00", 3) == [
        "2024-05-01T20:05", "2024-05-01T20:35", "2024-05-02T08:05",
    ]  # fmt: skip
    assert ticks("cron(0 0-12/6 * * ? *)", "2024-05-01T00:00", 3) == [
        "2024-05-01T06:00", "2024-05-01T12:00", "2024-05-02T00:00",
    ]  # fmt: skip
    assert ticks("cron(0 0 1/10 * ? *)", "2024-05-01T00:00", 3) == [
        "2024-05-11T00:00", "2024-05-21T00:00", "2024-05-31T00:00",
    ]  # fmt: skip


def test_ranges_wrap_in_cyclic_fields() -> None:
    assert ticks("cron(0 22-1 * * ? *)", "2024-05-01T12:00", 4) == [
        "2024-05-01T22:00", "2024-05-01T23:00", "2024-05-02T00:00", "2024-05-02T01:00",
    ]  # fmt: skip
    # FRI-MON: Friday, Saturday, Sunday, Monday (2024-05-01 is a Wednesday).
    assert ticks("cron(0 9 ? * FRI-MON *)", "2024-05-01T12:00", 5) == [
        "2024-05-03T09:00", "2024-05-04T09:00", "2024-05-05T09:00", "2024-05-06T09:00",
        "2024-05-10T09:00",
    ]  # fmt: skip


def test_month_and_day_names_in_any_case() -> None:
    assert ticks("cron(0 12 1 JAN,jul ? *)", "2024-02-01T00:00", 2) == [
        "2024-07-01T12:00", "2025-01-01T12:00",
    ]  # fmt: skip
    assert ticks("cron(0 12 ? NOV-DEC sun *)", "2024-11-01T00:00", 2) == [
        "2024-11-03T12:00", "2024-11-10T12:00",
    ]  # fmt: skip
    # 1 = Sunday ... 7 = Saturday.
    assert ticks("cron(0 0 ? * 1,7 *)", "2024-05-01T00:00", 2) == [
        "2024-05-04T00:00", "2024-05-05T00:00",
    ]  # fmt: skip
    assert ticks("cron(0 0 ? * MON-FRI *)", "2024-05-03T12:00", 2) == [
        "2024-05-06T00:00", "2024-05-07T00:00",
    ]  # fmt: skip


def test_day_of_month_last_day_across_leap_years() -> None:
    assert ticks("cron(0 0 L * ? *)", "2024-01-15T00:00", 3) == [
        "2024-01-31T00:00", "2024-02-29T00:00", "2024-03-31T00:00",
    ]  # fmt: skip
    assert ticks("cron(0 0 L 2 ? *)", "2024-03-01T00:00", 2) == [
        "2025-02-28T00:00", "2026-02-28T00:00",
    ]  # fmt: skip


def test_february_29_only_in_leap_years() -> None:
    # 2100 is not a leap year (divisible by 100, not by 400); 2000 was.
    assert ticks("cron(0 0 29 FEB ? *)", "2024-03-01T00:00", 2) == [
        "2028-02-29T00:00", "2032-02-29T00:00",
    ]  # fmt: skip
    assert ticks("cron(0 0 29 2 ? *)", "2096-03-01T00:00", 1) == ["2104-02-29T00:00"]
    assert ticks("cron(0 0 29 2 ? 1999-2001)", "1999-01-01T00:00", 1) == ["2000-02-29T00:00"]


def test_nearest_weekday() -> None:
    # 2024-06-01 is a Saturday: 1W never leaves the month, so Monday the 3rd.
    assert ticks("cron(0 0 1W * ? *)", "2024-05-31T00:00", 1) == ["2024-06-03T00:00"]
    # 2024-06-15 is a Saturday: Friday the 14th; 2024-06-16 (Sunday): Monday the 17th.
    assert ticks("cron(0 0 15W * ? *)", "2024-06-01T00:00", 1) == ["2024-06-14T00:00"]
    assert ticks("cron(0 0 16W * ? *)", "2024-06-01T00:00", 1) == ["2024-06-17T00:00"]
    # 2024-03-31 is a Sunday and the last day: Friday the 29th.
    assert ticks("cron(0 0 31W * ? *)", "2024-03-01T00:00", 1) == ["2024-03-29T00:00"]
    # A weekday stays itself (2024-06-12 is a Wednesday).
    assert ticks("cron(0 0 12W * ? *)", "2024-06-01T00:00", 1) == ["2024-06-12T00:00"]
    # 31W skips months without a 31st.
    assert ticks("cron(0 0 31W * ? *)", "2024-04-01T00:00", 1) == ["2024-05-31T00:00"]


def test_last_weekday_of_the_month() -> None:
    # 2024-08-31 is a Saturday, 2024-03-31 a Sunday.
    assert ticks("cron(0 0 LW * ? *)", "2024-08-01T00:00", 1) == ["2024-08-30T00:00"]
    assert ticks("cron(0 0 LW * ? *)", "2024-03-01T00:00", 1) == ["2024-03-29T00:00"]


def test_day_of_week_last() -> None:
    # nL: the last Friday (6) of each month.
    assert ticks("cron(0 0 ? * 6L *)", "2024-01-01T00:00", 3) == [
        "2024-01-26T00:00", "2024-02-23T00:00", "2024-03-29T00:00",
    ]  # fmt: skip
    assert ticks("cron(0 0 ? * FRIL *)", "2024-01-01T00:00", 1) == ["2024-01-26T00:00"]
    # L alone: the last day of the week, Saturday.
    assert ticks("cron(0 0 ? * L *)", "2024-05-01T00:00", 2) == [
        "2024-05-04T00:00", "2024-05-11T00:00",
    ]  # fmt: skip


def test_nth_day_of_week() -> None:
    # 3#2: the second Tuesday; TUE#2 the same.
    assert ticks("cron(0 0 ? * 3#2 *)", "2024-01-01T00:00", 3) == [
        "2024-01-09T00:00", "2024-02-13T00:00", "2024-03-12T00:00",
    ]  # fmt: skip
    assert ticks("cron(0 0 ? * TUE#2 *)", "2024-01-01T00:00", 1) == ["2024-01-09T00:00"]
    # A fifth Friday exists only in some months: 2024-03-29, then 2024-05-31.
    assert ticks("cron(0 0 ? * 6#5 *)", "2024-03-01T00:00", 2) == [
        "2024-03-29T00:00", "2024-05-31T00:00",
    ]  # fmt: skip


def test_year_field_and_its_bounds() -> None:
    assert ticks("cron(0 0 1 1 ? 2030,2032)", "2024-01-01T00:00", 2) == [
        "2030-01-01T00:00", "2032-01-01T00:00",
    ]  # fmt: skip
    parsed = parse_schedule_expression("cron(0 0 1 1 ? 2030)")
    assert parsed.next_fire_after(at("2030-01-01T00:00"), 0.0) is None
    # The last possible tick is in 2199.
    last = parse_schedule_expression("cron(59 23 31 12 ? *)")
    assert last.next_fire_after(at("2199-12-31T23:58"), 0.0) == at("2199-12-31T23:59")
    assert last.next_fire_after(at("2199-12-31T23:59"), 0.0) is None
    first = parse_schedule_expression("cron(0 0 1 1 ? 1970)")
    assert first.last_fire_at_or_before(at("2024-01-01T00:00"), 0.0) == 0.0


def test_an_impossible_date_has_no_tick() -> None:
    parsed = parse_schedule_expression("cron(0 0 30 2 ? *)")
    assert parsed.next_fire_after(at("2024-01-01T00:00"), 0.0) is None


def test_last_tick_at_or_before() -> None:
    parsed = parse_schedule_expression("cron(0/15 * ? * MON-FRI *)")
    # 2024-05-04 is a Saturday: the latest tick is Friday 23:45.
    assert parsed.last_fire_at_or_before(at("2024-05-04T12:00"), 0.0) == at("2024-05-03T23:45")
    assert parsed.last_fire_at_or_before(at("2024-05-03T10:15"), 0.0) == at("2024-05-03T10:15")
    assert parsed.last_fire_at_or_before(at("2024-05-03T10:14:59"), 0.0) == at("2024-05-03T10:00")


def test_cron_keeps_the_anchor_out_of_it() -> None:
    parsed = parse_schedule_expression("cron(0 10 * * ? *)")
    assert isinstance(parsed, CronExpression)
    assert parsed.next_fire_after(at("2024-05-01T09:00"), at("2020-01-01T00:00")) == at(
        "2024-05-01T10:00"
    )


# -- cron(): validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cron(0 10 * * ?)", "six fields .* got 5"),
        ("cron(0 10 * * ? * *)", "six fields .* got 7"),
        ("cron(0 10 * * * *)", "exactly one of day-of-month and day-of-week must be '\\?'"),
        ("cron(0 10 ? * ? *)", "exactly one of day-of-month and day-of-week must be '\\?'"),
        ("cron(0 10 1 * MON *)", "exactly one of day-of-month and day-of-week must be '\\?'"),
        ("cron(60 * * * ? *)", "minutes: '60': 60 is outside 0-59"),
        ("cron(0 24 * * ? *)", "hours: '24': 24 is outside 0-23"),
        ("cron(0 0 0 * ? *)", "day-of-month: '0': 0 is outside 1-31"),
        ("cron(0 0 32 * ? *)", "day-of-month: '32': 32 is outside 1-31"),
        ("cron(0 0 1 13 ? *)", "month: '13': 13 is outside 1-12"),
        ("cron(0 0 1 FOO ? *)", "month: 'FOO': 'FOO' is not 1-12 or JAN-DEC"),
        ("cron(0 0 ? * 8 *)", "day-of-week: '8': 8 is outside 1-7"),
        ("cron(0 0 ? * 0 *)", "day-of-week: '0': 0 is outside 1-7"),
        ("cron(0 0 ? * FUNDAY *)", "'FUNDAY' is not 1-7 or SUN-SAT"),
        ("cron(0 0 1 1 ? 1969)", "year: '1969': 1969 is outside 1970-2199"),
        ("cron(0 0 1 1 ? 2200)", "year: '2200': 2200 is outside 1970-2199"),
        ("cron(0 0 1 1 ? 2030-2020)", "year: '2030-2020': the range starts after it ends"),
        ("cron(\u0663 * * * ? *)", "minutes: '\u0663': '\u0663' is not 0-59"),  # Arabic-Indic 3
        ("cron(0/0 * * * ? *)", "the increment after '/' must be a number of at least 1"),
        ("cron(0/x * * * ? *)", "the increment after '/' must be a number of at least 1"),
        ("cron(0 0 ? * MON/2 *)", "day-of-week: '/' is not allowed"),
        ("cron(? 0 1 * ? *)", "minutes: '\\?' is allowed only in the day fields"),
        ("cron(0 0 1,? * ? *)", "day-of-month: '\\?' must stand alone"),
        ("cron(0 0 1,,2 * ? *)", "day-of-month: '1,,2' has an empty list item"),
        ("cron(L 0 1 * ? *)", "minutes: 'L': L, W and # are allowed only in the day fields"),
        ("cron(0 0 1 L ? *)", "month: 'L': L, W and # are allowed only in the day fields"),
        ("cron(0 0 1 1#2 ? *)", "month: '1#2': L, W and # are allowed only in the day fields"),
        ("cron(0 0 L-3 * ? *)", "day-of-month: 'L-3' is not a day"),
        ("cron(0 0 32W * ? *)", "day-of-month: '32W': 32 is outside 1-31"),
        ("cron(0 0 1#2 * ? *)", "'#' is allowed only in day-of-week"),
        ("cron(0 0 ? * 3#6 *)", "day-of-week: '3#6': the number after '#' must be 1-5"),
        ("cron(0 0 ? * 3#0 *)", "day-of-week: '3#0': the number after '#' must be 1-5"),
        ("cron(0 0 ? * 9#1 *)", "day-of-week: '9#1': 9 is outside 1-7"),
        ("cron(0 0 ? * 8L *)", "day-of-week: '8L': 8 is outside 1-7"),
        ("cron(0 0 ? * LW *)", "day-of-week: 'LW'"),
        ("cron(0 0 1 * ? *", "is not cron"),
        ("at(2024-01-01T00:00:00)", "is neither rate"),
        ("", "the expression is empty"),
        ("cron(" + "0," * 200 + "0 * * * ? *)", "longer than 256 characters"),
    ],
)
def test_invalid_crons(text: str, message: str) -> None:
    with pytest.raises(ScheduleExpressionError, match=message):
        parse_schedule_expression(text)


def test_error_is_a_value_error() -> None:
    assert issubclass(ScheduleExpressionError, ValueError)
