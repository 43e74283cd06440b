"""Holiday calendar and business hours: when a disconnection may happen at all.

The calendar is a file the utility maintains (TOML or CSV), never code::

    # holidays.toml
    [[holiday]]
    date = 2026-10-01
    name = "National Day"

    # holidays.csv
    date,name
    2026-10-01,National Day

Holidays may be listed per utility (``utility`` key/column, empty = every utility).
Days a government declares as working days in exchange for a bridge holiday (调休, a
Saturday that is a working day) are given with ``working = true`` / a ``working`` column.
"""

from __future__ import annotations

import csv
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from protocols.errors import ConfigError

__all__ = ["HolidayCalendar", "load_calendar"]


@dataclass(frozen=True, slots=True)
class HolidayCalendar:
    """Holidays (date -> name) and declared working days, for one utility."""

    holidays: dict[date, str] = field(default_factory=dict)
    working_days: frozenset[date] = frozenset()
    weekend: frozenset[int] = frozenset({5, 6})  # Monday=0 .. Sunday=6

    def holiday(self, d: date) -> str | None:
        return self.holidays.get(d)

    def is_weekend(self, d: date) -> bool:
        return d.weekday() in self.weekend and d not in self.working_days

    def is_rest_day(self, d: date) -> bool:
        """A holiday or a weekend day that is not a declared working day."""
        return d in self.holidays or self.is_weekend(d)

    def eve_of(self, d: date) -> str | None:
        """The name of the holiday that starts the next day, if ``d`` is its eve.

        Only the eve of a holiday counts here (a Friday is a separate, configurable rule).
        """
        return self.holidays.get(d + timedelta(days=1))

    def for_utility(self, utility: str, entries: Iterable[tuple[date, str, str, bool]]) -> HolidayCalendar:
        hol = dict(self.holidays)
        work = set(self.working_days)
        for d, name, util, working in entries:
            if util and util != utility:
                continue
            if working:
                work.add(d)
            else:
                hol[d] = name
        return HolidayCalendar(hol, frozenset(work), self.weekend)


def _parse_date(value: object, where: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise ConfigError(f"{where}: bad date {value!r} (expected YYYY-MM-DD)") from None


def _truthy(value: object) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "y", "working")


def read_calendar_entries(path: Path) -> list[tuple[date, str, str, bool]]:
    """(date, name, utility or "", working-day flag) rows from a TOML or CSV calendar file."""
    if not path.is_file():
        raise ConfigError(f"holiday calendar not found: {path}")
    out: list[tuple[date, str, str, bool]] = []
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as fh:
            for i, row in enumerate(csv.DictReader(fh), start=2):
                if not row.get("date"):
                    continue
                out.append((_parse_date(row["date"], f"{path}:{i}"), (row.get("name") or "").strip(),
                            (row.get("utility") or "").strip(), _truthy(row.get("working") or "")))
        return out
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    for i, item in enumerate(data.get("holiday", [])):
        if not isinstance(item, dict) or "date" not in item:
            raise ConfigError(f"{path}: holiday[{i}] needs a date")
        out.append((_parse_date(item["date"], f"{path}: holiday[{i}]"), str(item.get("name", "")),
                    str(item.get("utility", "")), bool(item.get("working", False))))
    return out


def load_calendar(path: Path | None, utility: str = "default", weekend: Iterable[int] = (5, 6)) -> HolidayCalendar:
    """The calendar for one utility; no file means weekends only."""
    base = HolidayCalendar(weekend=frozenset(weekend))
    if path is None:
        return base
    return base.for_utility(utility, read_calendar_entries(path))
