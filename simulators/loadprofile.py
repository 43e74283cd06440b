"""Load profiles that drive simulated meters: average demand (kW) per interval of simulated time.

- :class:`SyntheticProfile`: a household curve (night base, morning and evening peaks,
  weekend shift) with seeded noise, deterministic per (seed, meter index, interval).
- :class:`CsvProfile`: replays a real series from a CSV (plain or .gz) given at run time,
  e.g. the SGSC households (30-min kWh per customer), the UCI house (15-min kWh) or the
  SMUD meters (15-min kW). Each simulated meter replays one series (customer), cycling
  when the series ends, aligned on the time of day.

Nothing here copies data into the repository: CSV paths are options.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Protocol

__all__ = ["CsvProfile", "LoadProfile", "SyntheticProfile", "load_csv_series"]


class LoadProfile(Protocol):
    def demand_kw(self, meter_index: int, t: datetime) -> float:
        """Average active demand (kW, >= 0) of the interval containing ``t``."""
        ...


@dataclass(frozen=True, slots=True)
class SyntheticProfile:
    seed: int = 0
    base_kw: float = 0.35
    peak_kw: float = 2.2
    interval_s: int = 900

    def demand_kw(self, meter_index: int, t: datetime) -> float:
        slot = int(t.timestamp()) // self.interval_s
        rng = random.Random(hash((self.seed, meter_index, slot)))
        scale = _meter_scale(self.seed, meter_index)
        h = (t.hour + t.minute / 60.0) % 24
        weekend = t.weekday() >= 5
        morning = math.exp(-(((h - (8.5 if weekend else 7.5)) / 1.2) ** 2))
        evening = math.exp(-(((h - 19.0) / 2.0) ** 2))
        midday = 0.35 * math.exp(-(((h - 13.0) / 2.5) ** 2)) if weekend else 0.0
        kw = self.base_kw + self.peak_kw * (0.55 * morning + evening + midday)
        return max(0.02, scale * kw * (0.8 + 0.4 * rng.random()))


@lru_cache(maxsize=65536)
def _meter_scale(seed: int, meter_index: int) -> float:
    """A meter's household size (0.6..1.4), fixed per (seed, meter): seeded once, not per interval."""
    return 0.6 + 0.8 * random.Random(hash((seed, meter_index))).random()


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return io.TextIOWrapper(open(path, "rb"), encoding="utf-8")


_TIME_COLS = ("reading_datetime_local", "timestamp_utc", "interval_start_local", "timestamp", "time", "datetime", "ts")
_KWH_COLS = ("general_supply_kwh", "kwh", "energy_kwh")
_KW_COLS = ("kw", "demand_kw", "power_kw")
_GROUP_COLS = ("customer_id", "meter", "meter_id")


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


def load_csv_series(path: str | Path, max_series: int = 64, max_rows: int = 2_000_000) -> list[tuple[str, list[float]]]:
    """Read ``(series_id, [kW per interval])`` lists and the interval from a CSV.

    The first element returned per series is the series id. Values in kWh are turned
    into average kW using the interval length found in the data. Missing values become
    the previous value. Returns at most ``max_series`` series, in file order.
    """
    series, _ = _load(Path(path), max_series, max_rows)
    return series


def _load(path: Path, max_series: int, max_rows: int) -> tuple[list[tuple[str, list[float]]], tuple[int, int]]:
    with _open_text(path) as fh:
        reader = csv.DictReader(fh)
        cols = {c.lower(): c for c in (reader.fieldnames or [])}
        tcol = next((cols[c] for c in _TIME_COLS if c in cols), None)
        vcol = next((cols[c] for c in _KWH_COLS if c in cols), None)
        is_kwh = vcol is not None
        if vcol is None:
            vcol = next((cols[c] for c in _KW_COLS if c in cols), None)
        gcol = next((cols[c] for c in _GROUP_COLS if c in cols), None)
        if tcol is None or vcol is None:
            raise ValueError(f"{path.name}: need a time column and a kWh or kW column, got {reader.fieldnames}")
        data: dict[str, list[tuple[datetime, float | None]]] = {}
        for n, row in enumerate(reader):
            if n >= max_rows:
                break
            key = row[gcol] if gcol else "1"
            if key not in data:
                if len(data) >= max_series:
                    continue
                data[key] = []
            raw = row[vcol].strip()
            data[key].append((_parse_ts(row[tcol]), float(raw) if raw not in ("", "NA", "nan") else None))
    out: list[tuple[str, list[float]]] = []
    interval = 1800
    first_tod = 0
    for key, rows in data.items():
        rows.sort(key=lambda r: r[0])
        if len(rows) < 2:
            continue
        steps = sorted((b[0] - a[0]).total_seconds() for a, b in itertools.pairwise(rows))
        interval = int(steps[len(steps) // 2]) or 1800
        # Start each series at its first midnight so replay lines up with the time of day.
        start = next((i for i, r in enumerate(rows) if r[0].hour == 0 and r[0].minute == 0), 0)
        first_tod = 0 if rows[start][0].hour == 0 and rows[start][0].minute == 0 else (
            rows[0][0].hour * 3600 + rows[0][0].minute * 60
        )
        vals: list[float] = []
        last = 0.0
        for _, v in rows[start:]:
            if v is None:
                v = last
            last = v
            vals.append(max(0.0, v * 3600.0 / interval) if is_kwh else max(0.0, v))
        out.append((key, vals))
    if not out:
        raise ValueError(f"{path.name}: no usable series")
    return out, (interval, first_tod)


class CsvProfile:
    """Replay real series; meter ``i`` replays series ``i mod n``, cycling, aligned on time of day."""

    def __init__(self, path: str | Path, max_series: int = 64) -> None:
        self.path = Path(path)
        series, (interval, tod) = _load(self.path, max_series, 2_000_000)
        self.series_ids: Sequence[str] = [s[0] for s in series]
        self._values = [s[1] for s in series]
        self.interval_s = interval
        self._tod = tod

    def demand_kw(self, meter_index: int, t: datetime) -> float:
        vals = self._values[meter_index % len(self._values)]
        midnight = t.replace(hour=0, minute=0, second=0, microsecond=0)
        days = (midnight.date().toordinal()) % max(1, len(vals) * self.interval_s // 86400)
        secs = days * 86400 + (t - midnight).total_seconds() - self._tod
        return vals[int(secs // self.interval_s) % len(vals)]

    def __repr__(self) -> str:
        return f"CsvProfile({self.path.name}, series={len(self._values)}, interval={self.interval_s}s)"


