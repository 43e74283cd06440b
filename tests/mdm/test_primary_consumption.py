"""Primary energy in the daily report: the meter's (secondary) kWh x the CT/PT multiplier in force.

One store (zone Asia/Shanghai), three local days 2026-11-01..03, reads loaded through `reads import`:
- A: CT 250/5 (multiplier 50), no installation record (the meter's own multiplier applies);
- R: CT 250/5, register reads only (daily differences);
- B1 -> B2: exchange at one service point on day 2 at 10:00, CT 100/5 (20) replaced by CT 200/5 (40);
- X: the same meter reinstalled on day 2 at 06:00 with a new CT (40 -> 80), interval reads;
- Y: as X with register reads only (register reset at the reinstallation);
- D: a whole-current meter (multiplier 1); U: reads of a meter not in the asset table.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from mdm.store import daily_consumption
from tests.mdm.conftest import Invoke

TZ = ZoneInfo("Asia/Shanghai")
D1, D2, D3 = date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)
QTY = "interval.energy.active.import"
A, R, B1, B2, X, Y, D, U = ("000000000050", "000000000051", "000000000101", "000000000102", "000000000200",
                            "000000000201", "000000000001", "000000000999")


def local(d: date, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(d.year, d.month, d.day, hour, minute, tzinfo=TZ)


def value(k: int) -> float:
    """Interval k of a day: 0.125 .. 0.5 kWh (exact binary fractions, so sums compare exactly)."""
    return (k % 4 + 1) * 0.125


def energy(ks: range, mult: float = 1.0) -> float:
    return sum(value(k) * mult for k in ks)


DAY = range(96)


def _service_point(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute("INSERT INTO service_points (sp_no) VALUES (%s) RETURNING id", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def _load(dsn: str, run: Invoke, tmp_path: Path) -> None:
    for meter, ct in ((A, "50"), (R, "50"), (B1, "20"), (B2, "40"), (X, "40"), (Y, "40"), (D, "1")):
        code, out, err = run("meters", "add", meter, "--ct", ct, "--json")
        assert code == 0, err
    with psycopg.connect(dsn, autocommit=True) as conn:
        installed = local(date(2026, 10, 1))
        sp_b, sp_x, sp_y = (_service_point(conn, n) for n in ("SP-B", "SP-X", "SP-Y"))
        for sp, meter in ((sp_b, B1), (sp_x, X), (sp_y, Y)):
            conn.execute("SELECT exchange_meter(%s, %s, %s, NULL, 0.0)", (sp, meter, installed))
        conn.execute("SELECT exchange_meter(%s, %s, %s, 5000.0, 0.0)", (sp_b, B2, local(D2, 10)))
        # the removed meter's asset record edited afterwards: its installation still says 20
        conn.execute("UPDATE meters SET multiplier = 25 WHERE address = %s", (B1,))
        # X and Y back from the lab with a new CT 400/5: reinstalled at 06:00 on day 2
        for sp, meter in ((sp_x, X), (sp_y, Y)):
            conn.execute("UPDATE meters SET ct_ratio = 80, multiplier = 80 WHERE address = %s", (meter,))
            conn.execute("SELECT exchange_meter(%s, %s, %s, 1010.0, 0.0)", (sp, meter, local(D2, 6)))
        # a meter that is not in the asset table (written straight into the store)
        conn.execute("INSERT INTO interval_reads (meter, quantity, ts, value, unit) "
                     "SELECT %s, %s, %s::timestamptz + make_interval(mins => 15 * k), 0.25, 'kWh' "
                     "FROM generate_series(0, 95) AS k", (U, QTY, local(D1)))

    lines = ["meter,quantity,ts,value"]
    for day in (D1, D2, D3):
        for k in DAY:
            ts = local(day) + timedelta(minutes=15 * k)
            meters = [A, X, D] + ([B1] if ts < local(D2, 10) else [B2])
            lines += [f"{m},{QTY},{ts.isoformat()},{value(k)}" for m in meters]
    for meter, regs in ((R, (100.0, 112.5, 130.25, 131.0)), (Y, (1000.0, 1010.0, 7.5, 20.0))):
        for i, v in enumerate(regs):  # 23:30 on 31 Oct .. 3 Nov
            lines.append(f"{meter},energy.active.import,{local(D1 + timedelta(days=i - 1), 23, 30).isoformat()},{v}")
    f = tmp_path / "reads.csv"
    f.write_text("\n".join(lines) + "\n")
    code, out, err = run("reads", "import", str(f), "--json")
    assert code == 0, err
    assert json.loads(out)["loaded"] == len(lines) - 1


# (meter, day) -> (kwh, source, multiplier, primary_kwh, multiplier_changed)
EXPECTED: dict[tuple[str, date], tuple[float, str, float | None, float | None, bool]] = {
    **{(A, d): (energy(DAY), "interval", 50.0, energy(DAY, 50), False) for d in (D1, D2, D3)},
    (R, D1): (12.5, "register", 50.0, 625.0, False),
    (R, D2): (17.75, "register", 50.0, 887.5, False),
    (R, D3): (0.75, "register", 50.0, 37.5, False),
    # the exchange: each meter keeps the multiplier of its own installation (not B1's edited 25)
    (B1, D1): (energy(DAY), "interval", 20.0, energy(DAY, 20), False),
    (B1, D2): (energy(range(40)), "interval", 20.0, energy(range(40), 20), False),
    (B2, D2): (energy(range(40, 96)), "interval", 40.0, energy(range(40, 96), 40), False),
    (B2, D3): (energy(DAY), "interval", 40.0, energy(DAY, 40), False),
    # reinstalled with a new CT: day 1 at the old 40 although the meter record now says 80;
    # day 2 split at 06:00 (interval 24 is the first at 80)
    (X, D1): (energy(DAY), "interval", 40.0, energy(DAY, 40), False),
    (X, D2): (energy(DAY), "interval", None, energy(range(24), 40) + energy(range(24, 96), 80), True),
    (X, D3): (energy(DAY), "interval", 80.0, energy(DAY, 80), False),
    # register days: the delta across the reinstallation is flagged, the days around it are not
    (Y, D1): (10.0, "register", 40.0, 400.0, False),
    (Y, D2): (7.5 - 1010.0, "register", None, None, True),
    (Y, D3): (12.5, "register", 80.0, 1000.0, False),
    **{(D, d): (energy(DAY), "interval", 1.0, energy(DAY), False) for d in (D1, D2, D3)},
    (U, D1): (24.0, "interval", None, None, False),
}


def test_expected_figures_are_what_they_say() -> None:
    """The table above, spelled out for the cases that matter (guards the helper arithmetic)."""
    assert EXPECTED[(A, D1)][0] == 30.0 and EXPECTED[(A, D1)][3] == 1500.0
    assert EXPECTED[(B1, D2)][3] == 250.0 and EXPECTED[(B2, D2)][3] == 700.0
    assert EXPECTED[(X, D2)][3] == 7.5 * 40 + 22.5 * 80 == 2100.0


def test_store_secondary_and_primary_per_day(fresh_dsn: str, run: Invoke, tmp_path: Path) -> None:
    _load(fresh_dsn, run, tmp_path)
    with psycopg.connect(fresh_dsn) as conn:
        rows = daily_consumption(conn, None, D1, D3)
        got = {(r["meter"], r["day"]): (r["kwh"], r["source"], r["multiplier"], r["primary_kwh"],
                                        r["multiplier_changed"]) for r in rows}
        assert got == EXPECTED
        # the existing fields are as before: the SQL functions' figures
        secondary = {(m, d): k for m, d, k, _ in conn.execute(
            "SELECT meter, day, kwh, intervals FROM daily_consumption(%s, %s)", (D1, D3))}
        assert all(got[key][0] == k for key, k in secondary.items())
        assert [r["intervals"] for r in rows if r["meter"] == X] == [96, 96, 96]
        # a meter filter and a one-day range give the same figures (day 3 of Y reaches back to day 2)
        one = daily_consumption(conn, [Y, B2], D3, D3)
        assert [(r["meter"], r["multiplier"], r["primary_kwh"]) for r in one] == [(B2, 40.0, energy(DAY, 40)),
                                                                                   (Y, 80.0, 1000.0)]


def test_reads_daily_json_csv_and_table(fresh_dsn: str, run: Invoke, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one line per table row
    _load(fresh_dsn, run, tmp_path)
    code, out, err = run("reads", "daily", "--from", "2026-11-01", "--to", "2026-11-03", "--json")
    assert code == 0, err
    doc = json.loads(out)
    got = {(d["meter"], date.fromisoformat(d["day"])): (d["kwh"], d["source"], d["multiplier"], d["primary_kwh"],
                                                        d["multiplier_changed"]) for d in doc["days"]}
    assert got == EXPECTED
    assert set(doc["days"][0]) == {"meter", "day", "kwh", "source", "intervals", "multiplier", "primary_kwh",
                                   "multiplier_changed"}

    code, out, _ = run("reads", "daily", "-m", f"{A},{X},{Y}", "--from", "2026-11-02", "--to", "2026-11-02", "--csv")
    assert code == 0
    table = list(csv.reader(io.StringIO(out)))
    # the original five columns first and unchanged, the new ones after them
    assert table[0] == ["meter", "day", "kwh", "source", "intervals", "multiplier", "primary_kwh",
                        "multiplier_changed"]
    assert table[1] == [A, "2026-11-02", "30.0", "interval", "96", "50.0", "1500.0", "False"]
    assert table[2] == [X, "2026-11-02", "30.0", "interval", "96", "", "2100.0", "True"]
    assert table[3] == [Y, "2026-11-02", "-1002.5", "register", "", "", "", "True"]

    code, out, _ = run("reads", "daily", "-m", f"{A},{X},{U}", "--from", "2026-11-01", "--to", "2026-11-02")
    assert code == 0
    lines = [line.replace("┃", "│") for line in out.splitlines()]  # header row: heavy borders
    cells = {(c[0], c[1]): c[2:] for c in ([x.strip() for x in line.strip("│").split("│")]
                                           for line in lines if line.startswith("│"))}
    assert cells[("meter", "day")] == ["kwh", "source", "intervals", "multiplier", "primary kwh"]
    assert cells[(A, "2026-11-02")] == ["30.000", "interval", "96", "50", "1500.000"]
    assert cells[(X, "2026-11-01")] == ["30.000", "interval", "96", "40", "1200.000"]
    assert cells[(X, "2026-11-02")] == ["30.000", "interval", "96", "changed", "2100.000"]
    assert cells[(U, "2026-11-01")] == ["24.000", "interval", "96", "unknown", ""]
    assert "multiplier changed within the day" in " ".join(out.split())
