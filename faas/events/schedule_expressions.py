"""EventBridge schedule expressions: parse ``rate(...)`` and ``cron(...)``, find their ticks.

Design notes: pure functions over epoch seconds (UTC), no clock and no I/O, so the
scheduler and the tests can ask "when after t?" about any instant. A tick is always
a whole minute: nothing fires more often than once a minute, as on EventBridge.

- ``rate(<n> <unit>)`` ticks count from an *anchor*: the instant the rule's schedule
  started (created, its expression changed, or re-enabled), rounded down to the
  minute. The ticks are ``anchor + k * period`` for k >= 1, so ``rate(5 minutes)``
  set at 10:02:40 fires at 10:07, 10:12, ... (EventBridge: "a rate expression starts
  when you create the rule").
- ``cron(<min> <hour> <day-of-month> <month> <day-of-week> <year>)`` ticks are the
  minutes the six fields match; the anchor plays no part. Each field is a list of
  terms: ``*``, ``n``, ``a-b``, ``a/n``, ``*/n``, ``a-b/n``; day-of-month adds ``L``
  (last day), ``LW`` (last weekday) and ``nW`` (weekday nearest day n, never leaving
  the month); day-of-week adds ``L`` (Saturday, the last day of the week), ``nL``
  (last day n of the month) and ``n#k`` (k-th day n of the month). Exactly one of
  day-of-month and day-of-week is ``?``. Ranges wrap in cyclic fields (``FRI-MON``,
  ``22-2``), never in the year.

``parse_schedule_expression`` raises ``ScheduleExpressionError`` whose message names
the field and the term that is wrong.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

MAX_EXPRESSION_LENGTH = 256  # EventBridge's ScheduleExpression limit
YEAR_MIN = 1970
YEAR_MAX = 2199
_MINUTE_S = 60
_RATE_UNITS_S = {"minute": 60, "hour": 3600, "day": 86400}
# Ticks never go past the last year a cron can name; a longer rate could never fire.
_END_S = calendar.timegm((YEAR_MAX + 1, 1, 1, 0, 0, 0))
_RATE = re.compile(r"rate\(\s*(\S+)\s+(\S+)\s*\)")
_CRON = re.compile(r"cron\((.*)\)", re.DOTALL)
_NUMBER = re.compile(r"[0-9]+")  # ASCII only: \d would take other scripts' digits
_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV",
                "DEC")  # fmt: skip
_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")  # 1 = Sunday, as EventBridge
_SATURDAY = 7


class ScheduleExpressionError(ValueError):
    """A schedule expression that EventBridge would refuse; the message says why."""


@dataclass(frozen=True, slots=True)
class _FieldSpec:
    """One cron field: its position, name, bounds and which extras it allows."""

    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names for low, low+1, ... (JAN.., SUN..)
    allows_step: bool = True
    is_cyclic: bool = True


_MINUTES = _FieldSpec("minutes", 0, 59)
_HOURS = _FieldSpec("hours", 0, 23)
_DAY_OF_MONTH = _FieldSpec("day-of-month", 1, 31)
_MONTH = _FieldSpec("month", 1, 12, _MONTH_NAMES)
_DAY_OF_WEEK = _FieldSpec("day-of-week", 1, 7, _DAY_NAMES, allows_step=False)
_YEAR = _FieldSpec("year", YEAR_MIN, YEAR_MAX, is_cyclic=False)


def floor_minute(epoch_s: float) -> int:
    """``epoch_s`` rounded down to a whole minute."""
    return int(epoch_s // _MINUTE_S) * _MINUTE_S


def iso_utc(epoch_s: float) -> str:
    """``2019-10-08T16:53:06Z``: the Scheduled Event's ``time`` format."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


@dataclass(frozen=True, slots=True)
class RateExpression:
    """``rate(<value> <unit>)``: every ``period_s`` seconds from the anchor's minute."""

    text: str
    period_s: int

    def next_fire_after(self, after_s: float, anchor_s: float) -> float | None:
        """The first tick strictly after ``after_s`` (None: none before 2200, as for cron)."""
        start = floor_minute(anchor_s)
        ticks = max(int((after_s - start) // self.period_s) + 1, 1)
        tick = start + ticks * self.period_s
        return float(tick) if tick < _END_S else None

    def last_fire_at_or_before(self, at_s: float, anchor_s: float) -> float | None:
        """The latest tick at or before ``at_s`` (None before the first tick)."""
        start = floor_minute(anchor_s)
        ticks = int((at_s - start) // self.period_s)
        return float(start + ticks * self.period_s) if ticks >= 1 else None


@dataclass(frozen=True, slots=True)
class _DayOfMonth:
    """The day-of-month field: plain days plus the ``L``, ``LW`` and ``nW`` terms."""

    days: frozenset[int]
    is_last: bool = False  # L
    is_last_weekday: bool = False  # LW
    nearest_weekday_to: frozenset[int] = frozenset()  # nW

    def matches(self, year: int, month: int, day: int) -> bool:
        length = calendar.monthrange(year, month)[1]
        if day in self.days or (self.is_last and day == length):
            return True
        if _is_weekend(year, month, day):
            return False
        if self.is_last_weekday and day == _nearest_weekday(year, month, length, length):
            return True
        return any(
            target <= length and day == _nearest_weekday(year, month, target, length)
            for target in self.nearest_weekday_to
        )


@dataclass(frozen=True, slots=True)
class _DayOfWeek:
    """The day-of-week field (1 = Sunday): plain days plus ``nL`` and ``n#k`` terms."""

    days: frozenset[int]
    last_in_month: frozenset[int] = frozenset()  # nL
    nth_in_month: frozenset[tuple[int, int]] = frozenset()  # n#k as (n, k)

    def matches(self, year: int, month: int, day: int) -> bool:
        weekday = _day_of_week(year, month, day)
        if weekday in self.days:
            return True
        if weekday in self.last_in_month and day + 7 > calendar.monthrange(year, month)[1]:
            return True
        return (weekday, (day - 1) // 7 + 1) in self.nth_in_month


def _day_of_week(year: int, month: int, day: int) -> int:
    """1 = Sunday ... 7 = Saturday (Python's weekday() has Monday = 0)."""
    return (calendar.weekday(year, month, day) + 1) % 7 + 1


def _is_weekend(year: int, month: int, day: int) -> bool:
    return calendar.weekday(year, month, day) >= 5


def _nearest_weekday(year: int, month: int, target: int, length: int) -> int:
    """The Monday-Friday day nearest ``target`` without leaving the month (``nW``)."""
    weekday = calendar.weekday(year, month, target)
    if weekday == 5:  # Saturday: Friday before, or Monday after if the 1st
        return target - 1 if target > 1 else target + 2
    if weekday == 6:  # Sunday: Monday after, or Friday before if the last day
        return target + 1 if target < length else target - 2
    return target


@dataclass(frozen=True, slots=True)
class CronExpression:
    """``cron(...)``: the minutes its six fields match (UTC)."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    day_of_month: _DayOfMonth | None  # None: "?"
    months: tuple[int, ...]
    day_of_week: _DayOfWeek | None  # None: "?"
    years: tuple[int, ...]

    def next_fire_after(self, after_s: float, anchor_s: float = 0.0) -> float | None:
        """The first matching minute strictly after ``after_s`` (None: no more, by 2199)."""
        return self._search(floor_minute(after_s) + _MINUTE_S, forward=True)

    def last_fire_at_or_before(self, at_s: float, anchor_s: float = 0.0) -> float | None:
        """The latest matching minute at or before ``at_s`` (None: none since 1970)."""
        return self._search(floor_minute(at_s), forward=False)

    def _matches_day(self, year: int, month: int, day: int) -> bool:
        if self.day_of_month is not None:
            return self.day_of_month.matches(year, month, day)
        assert self.day_of_week is not None
        return self.day_of_week.matches(year, month, day)

    def _days(self, year: int, month: int) -> list[int]:
        length = calendar.monthrange(year, month)[1]
        return [day for day in range(1, length + 1) if self._matches_day(year, month, day)]

    def _search(self, bound_s: int, forward: bool) -> float | None:
        """The nearest matching minute from ``bound_s`` (inclusive) in one direction.

        Walks year, month, day, hour, minute in order; while every chosen value equals
        the bound's, the next field must stay on its side of the bound ("tight").
        """
        if bound_s < 0:
            return None
        bound = time.gmtime(bound_s)
        limits = (bound.tm_year, bound.tm_mon, bound.tm_mday, bound.tm_hour, bound.tm_min)

        def ordered(values: Sequence[int], level: int, tight: bool) -> Iterator[tuple[int, bool]]:
            for value in values if forward else reversed(values):
                if tight and (value < limits[level] if forward else value > limits[level]):
                    continue
                yield value, tight and value == limits[level]

        for year, tight_year in ordered(self.years, 0, True):
            for month, tight_month in ordered(self.months, 1, tight_year):
                for day, tight_day in ordered(self._days(year, month), 2, tight_month):
                    for hour, tight_hour in ordered(self.hours, 3, tight_day):
                        for minute, _ in ordered(self.minutes, 4, tight_hour):
                            return float(calendar.timegm((year, month, day, hour, minute, 0)))
        return None


ScheduleExpression = RateExpression | CronExpression


def parse_schedule_expression(text: str) -> ScheduleExpression:
    """Parse ``rate(...)`` or ``cron(...)`` as EventBridge rules accept them.

    Raises:
        ScheduleExpressionError: the expression is malformed; the message says where.
    """
    if not isinstance(text, str) or not text.strip():
        raise ScheduleExpressionError("the expression is empty")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ScheduleExpressionError(
            f"the expression is longer than {MAX_EXPRESSION_LENGTH} characters"
        )
    stripped = text.strip()
    if stripped.startswith("rate("):
        return _parse_rate(stripped)
    if stripped.startswith("cron("):
        return _parse_cron(stripped)
    raise ScheduleExpressionError(
        f"'{stripped}' is neither rate(<value> <unit>) nor cron(<six fields>)"
    )


def _parse_rate(text: str) -> RateExpression:
    match = _RATE.fullmatch(text)
    if match is None:
        raise ScheduleExpressionError(
            f"'{text}' is not rate(<value> <unit>), e.g. rate(5 minutes) or rate(1 hour)"
        )
    value_text, unit = match.groups()
    if not _NUMBER.fullmatch(value_text) or int(value_text) < 1:
        raise ScheduleExpressionError(
            f"rate value '{value_text}' must be a whole number of at least 1"
        )
    value = int(value_text)
    singular = unit.removesuffix("s")
    if singular not in _RATE_UNITS_S:
        raise ScheduleExpressionError(f"rate unit '{unit}' must be minute(s), hour(s) or day(s)")
    most = (_END_S - 1) // _RATE_UNITS_S[singular]
    if value > most:
        raise ScheduleExpressionError(
            f"rate value '{value_text}' is too large: at most {most} {singular}s, "
            f"as no tick comes after {YEAR_MAX}"
        )
    if value == 1 and unit != singular:
        raise ScheduleExpressionError(f"rate(1 {unit}): with value 1 the unit is '{singular}'")
    if value > 1 and unit == singular:
        raise ScheduleExpressionError(
            f"rate({value} {unit}): with a value above 1 the unit is '{singular}s'"
        )
    return RateExpression(text, value * _RATE_UNITS_S[singular])


def _parse_cron(text: str) -> CronExpression:
    match = _CRON.fullmatch(text)
    if match is None:
        raise ScheduleExpressionError(f"'{text}' is not cron(<six fields>)")
    fields = match.group(1).split()
    if len(fields) != 6:
        raise ScheduleExpressionError(
            "cron needs six fields (minutes hours day-of-month month day-of-week year), "
            f"got {len(fields)}"
        )
    minutes, hours, dom_text, months, dow_text, years = fields
    if (dom_text == "?") == (dow_text == "?"):
        raise ScheduleExpressionError(
            "exactly one of day-of-month and day-of-week must be '?' "
            f"(got '{dom_text}' and '{dow_text}')"
        )
    for field_text, spec in ((minutes, _MINUTES), (hours, _HOURS), (months, _MONTH),
                             (years, _YEAR)):  # fmt: skip
        if "?" in field_text:
            raise ScheduleExpressionError(f"{spec.name}: '?' is allowed only in the day fields")
    return CronExpression(
        text=text,
        minutes=_plain_field(minutes, _MINUTES),
        hours=_plain_field(hours, _HOURS),
        day_of_month=None if dom_text == "?" else _parse_day_of_month(dom_text),
        months=_plain_field(months, _MONTH),
        day_of_week=None if dow_text == "?" else _parse_day_of_week(dow_text),
        years=_plain_field(years, _YEAR),
    )


def _plain_field(text: str, spec: _FieldSpec) -> tuple[int, ...]:
    values: set[int] = set()
    for term in _terms(text, spec):
        if "#" in term or term in ("L", "LW") or (term[-1] in "LW" and term[:-1].isdigit()):
            raise ScheduleExpressionError(
                f"{spec.name}: '{term}': L, W and # are allowed only in the day fields"
            )
        values.update(_values(term, spec))
    return tuple(sorted(values))


def _parse_day_of_month(text: str) -> _DayOfMonth:
    days: set[int] = set()
    nearest: set[int] = set()
    is_last = is_last_weekday = False
    for term in _terms(text, _DAY_OF_MONTH):
        if term == "L":
            is_last = True
        elif term == "LW":
            is_last_weekday = True
        elif term.endswith("W"):
            nearest.add(_number(term[:-1], _DAY_OF_MONTH, term))
        elif "L" in term or "W" in term:
            raise ScheduleExpressionError(
                f"day-of-month: '{term}' is not a day; use L (last day), LW (last weekday) "
                "or nW (weekday nearest day n)"
            )
        elif "#" in term:
            raise ScheduleExpressionError("day-of-month: '#' is allowed only in day-of-week")
        else:
            days.update(_values(term, _DAY_OF_MONTH))
    return _DayOfMonth(frozenset(days), is_last, is_last_weekday, frozenset(nearest))


def _parse_day_of_week(text: str) -> _DayOfWeek:
    days: set[int] = set()
    last: set[int] = set()
    nth: set[tuple[int, int]] = set()
    for term in _terms(text, _DAY_OF_WEEK):
        if term == "L":
            days.add(_SATURDAY)
        elif term.endswith("L"):
            last.add(_number(term[:-1], _DAY_OF_WEEK, term))
        elif "#" in term:
            day_text, _, ordinal_text = term.partition("#")
            if ordinal_text not in ("1", "2", "3", "4", "5"):
                raise ScheduleExpressionError(
                    f"day-of-week: '{term}': the number after '#' must be 1-5"
                )
            nth.add((_number(day_text, _DAY_OF_WEEK, term), int(ordinal_text)))
        else:  # names contain L and W (WED, ...): a bad term fails as "not 1-7 or SUN-SAT"
            days.update(_values(term, _DAY_OF_WEEK))
    return _DayOfWeek(frozenset(days), frozenset(last), frozenset(nth))


def _terms(text: str, spec: _FieldSpec) -> list[str]:
    terms = text.upper().split(",")
    if any(not term for term in terms):
        raise ScheduleExpressionError(f"{spec.name}: '{text}' has an empty list item")
    if "?" in text:
        raise ScheduleExpressionError(f"{spec.name}: '?' must stand alone in its field")
    return terms


def _values(term: str, spec: _FieldSpec) -> list[int]:
    """The values of a ``*``, ``n``, ``a-b``, ``a/n``, ``*/n`` or ``a-b/n`` term."""
    span, slash, step_text = term.partition("/")
    step = 1
    if slash:
        if not spec.allows_step:
            raise ScheduleExpressionError(f"{spec.name}: '/' is not allowed in this field")
        if not _NUMBER.fullmatch(step_text) or int(step_text) < 1:
            raise ScheduleExpressionError(
                f"{spec.name}: '{term}': the increment after '/' must be a number of at least 1"
            )
        step = int(step_text)
    if span == "*":
        first, last = spec.low, spec.high
    elif "-" in span:
        first_text, _, last_text = span.partition("-")
        first, last = _number(first_text, spec, term), _number(last_text, spec, term)
        if first > last and not spec.is_cyclic:
            raise ScheduleExpressionError(f"{spec.name}: '{term}': the range starts after it ends")
    else:
        first = _number(span, spec, term)
        last = spec.high if slash else first
    return _walk(first, last, step, spec)


def _walk(first: int, last: int, step: int, spec: _FieldSpec) -> list[int]:
    """first, first+step, ... up to last; a range with first > last wraps past the top."""
    width = spec.high - spec.low + 1
    length = (last - first) % width if first > last else last - first
    return [spec.low + (first - spec.low + offset) % width for offset in range(0, length + 1, step)]


def _number(text: str, spec: _FieldSpec, term: str) -> int:
    """A field value written as a number or (months, days of the week) a name."""
    if text in spec.names:
        return spec.low + spec.names.index(text)
    if not _NUMBER.fullmatch(text):
        allowed = f"{spec.low}-{spec.high}"
        if spec.names:
            allowed += f" or {spec.names[0]}-{spec.names[-1]}"
        raise ScheduleExpressionError(f"{spec.name}: '{term}': '{text}' is not {allowed}")
    value = int(text)
    if not spec.low <= value <= spec.high:
        raise ScheduleExpressionError(
            f"{spec.name}: '{term}': {value} is outside {spec.low}-{spec.high}"
        )
    return value
