"""The VEE runner end to end on the database: exceptions, estimates as versions, re-runs, work orders."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest

from mdm.vee.config import Thresholds, VeeConfig
from mdm.vee.runner import run_vee
from tests.vee.helpers import put

TZ = ZoneInfo("Asia/Shanghai")
DAY = datetime(2026, 3, 10, tzinfo=TZ)
CFG = VeeConfig(classes={"residential": Thresholds(history_days=7)})
Q = "interval.energy.active.import"


def profile(ts: datetime) -> float:
    h = ts.astimezone(TZ).hour + ts.astimezone(TZ).minute / 60
    return round(0.2 + 0.1 * math.sin(2 * math.pi * (h - 6) / 24), 4)


def load_meter(conn: psycopg.Connection, meter: str, *, gap: tuple[int, int] | None = None,
               spike_at: int | None = None, clock_offset: float | None = None, decrease: bool = False) -> None:
    start = DAY - timedelta(days=7)
    rows = []
    reg = 1000.0
    regs = []
    for i in range(8 * 96):
        ts = start + timedelta(minutes=15 * i)
        if i % 96 == 0:
            regs.append((meter, "energy.active.import", ts, round(reg, 4)))
        v = profile(ts)
        reg += v
        day_i = i - 7 * 96
        if gap and gap[0] <= day_i < gap[1]:
            continue
        if spike_at is not None and day_i == spike_at:
            v = 5.0
        rows.append((meter, Q, ts, v))
    regs.append((meter, "energy.active.import", DAY + timedelta(days=1), round(reg, 4)))
    if decrease:
        regs.append((meter, "energy.active.import", DAY + timedelta(hours=18), round(reg - 50, 4)))
    put(conn, "interval_reads", rows)
    put(conn, "register_reads", regs)
    if clock_offset is not None:
        put(conn, "register_reads", [(meter, "clock.offset", DAY + timedelta(hours=10), clock_offset)])


@pytest.fixture()
def fleet(conn: psycopg.Connection) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    m = {"clean": f"A{tag}", "faulty": f"B{tag}", "spiky": f"C{tag}"}
    load_meter(conn, m["clean"])
    load_meter(conn, m["faulty"], gap=(48, 60), clock_offset=400.0, decrease=True)
    load_meter(conn, m["spiky"], spike_at=80)
    return m


def test_run_stores_exceptions_estimates_and_orders(conn: psycopg.Connection, fleet: dict[str, str]) -> None:
    meters = list(fleet.values())
    s = run_vee(conn, DAY, DAY + timedelta(days=1), meters=meters, config=CFG, tz="Asia/Shanghai",
                now=DAY + timedelta(days=2))
    by_meter: dict[str, set[str]] = {}
    for r in s.records:
        by_meter.setdefault(r.meter, set()).add(r.rule)
    assert fleet["clean"] not in by_meter
    assert {"gap", "day_count", "clock_drift", "register_decrease"} <= by_meter[fleet["faulty"]]
    assert "spike" in by_meter[fleet["spiky"]]
    gap = next(r for r in s.records if r.rule == "gap")
    assert gap.values["missing"] == 12 and gap.start == DAY + timedelta(hours=12)
    dc = next(r for r in s.records if r.rule == "day_count")
    assert dc.values == {"found": 84, "expected": 96}
    stored = conn.execute("SELECT count(*) FROM vee_exceptions WHERE run_id = %s", (s.run_id,)).fetchone()
    assert stored == (len(s.records),)

    # the 12 missing intervals are estimated as new versions, raw untouched
    vers = conn.execute("SELECT ts, version, value, quality, method, operator FROM read_versions WHERE meter = %s "
                        "ORDER BY ts", (fleet["faulty"],)).fetchall()
    assert len(vers) == 12 and s.new_versions == 12 + 1  # the gap, and the rejected spike of the spiky meter
    assert all(v[1] == 1 and v[3] == 1 and v[4] in ("linear", "shape", "shape+scaled", "linear+scaled")
               for v in vers)
    for ts, _, value, *_ in vers:
        assert value == pytest.approx(profile(ts), abs=0.05)
    raw = conn.execute("SELECT count(*) FROM interval_reads WHERE meter = %s", (fleet["faulty"],)).fetchone()
    assert raw == (8 * 96 - 12,)

    # the spike is rejected: estimated like a missing value, the raw 5.0 kept in the store
    spk = conn.execute("SELECT value, reason FROM read_versions WHERE meter = %s", (fleet["spiky"],)).fetchall()
    assert len(spk) == 1 and spk[0][1].startswith("rejected") and spk[0][0] == pytest.approx(
        profile(DAY + timedelta(minutes=15 * 80)), abs=0.05)

    # work orders: one per meter and type
    orders = conn.execute("SELECT type, status FROM work_orders WHERE meter = %s ORDER BY type",
                          (fleet["faulty"],)).fetchall()
    assert orders == [("clock_error", "open"), ("manual_reread", "open"), ("meter_fault", "open")]

    # a second run changes nothing: same exception rows, no new versions, no new orders
    s2 = run_vee(conn, DAY, DAY + timedelta(days=1), meters=meters, config=CFG, tz="Asia/Shanghai",
                 now=DAY + timedelta(days=2))
    assert s2.new_versions == 0
    total = conn.execute("SELECT count(*) FROM vee_exceptions WHERE meter = ANY(%s)", (meters,)).fetchone()
    assert total == (len(s.records),)
    n_orders = conn.execute("SELECT count(*) FROM work_orders WHERE meter = ANY(%s)", (meters,)).fetchone()
    assert n_orders is not None and n_orders[0] == len(set(s.work_orders))


def test_prolonged_estimation_raises_its_own_exception(conn: psycopg.Connection) -> None:
    m = f"P{uuid.uuid4().hex[:8]}"
    load_meter(conn, m, gap=(0, 96))  # the whole day missing
    cfg = VeeConfig(classes={"residential": Thresholds(history_days=7, prolonged_estimated_intervals=48)})
    s = run_vee(conn, DAY, DAY + timedelta(days=1), meters=[m], config=cfg, now=DAY + timedelta(days=2))
    pro = [r for r in s.records if r.rule == "prolonged_estimation"]
    assert len(pro) == 1 and pro[0].values["estimated"] == 96
    # scaled to the midnight register reads: the day's estimate holds the register delta
    total = conn.execute("SELECT sum(value) FROM read_versions WHERE meter = %s", (m,)).fetchone()
    expected = sum(profile(DAY + timedelta(minutes=15 * i)) for i in range(96))
    assert total is not None and total[0] == pytest.approx(expected, rel=1e-6)


def test_exchange_and_multiplier_change_are_not_consumption(conn: psycopg.Connection) -> None:
    from tests.vee.helpers import install

    m = f"X{uuid.uuid4().hex[:8]}"
    sp = install(conn, m, meter_class="ct", installed_at=datetime(2020, 1, 1, tzinfo=TZ))
    conn.execute("UPDATE meter_installations SET multiplier = 40 WHERE meter = %s", (m,))
    load_meter(conn, m)
    # repaired in the lab (register reset) and reinstalled at 06:00 with a new CT ratio
    conn.execute("UPDATE meters SET multiplier = 80 WHERE address = %s", (m,))
    conn.execute("SELECT exchange_meter(%s, %s, %s, %s, %s)", (sp, m, DAY + timedelta(hours=6), 1234.0, 0.0))
    put(conn, "register_reads", [(m, "energy.active.import", DAY + timedelta(hours=12), 1.5)])
    conn.execute("DELETE FROM register_reads WHERE meter = %s AND ts = %s", (m, DAY + timedelta(days=1)))
    put(conn, "register_reads", [(m, "energy.active.import", DAY + timedelta(days=1), 3.2)])
    s = run_vee(conn, DAY, DAY + timedelta(days=1), meters=[m], config=CFG, now=DAY + timedelta(days=2))
    rules_found = {r.rule for r in s.records}
    assert {"meter_exchange", "multiplier_change"} <= rules_found
    assert "register_decrease" not in rules_found and "sum_register" not in rules_found
    mc = next(r for r in s.records if r.rule == "multiplier_change")
    assert mc.values == {"old": 40.0, "new": 80.0}


def test_register_drop_explained_by_a_fast_clock_is_not_a_meter_fault(conn: psycopg.Connection) -> None:
    m = f"F{uuid.uuid4().hex[:8]}"
    load_meter(conn, m, clock_offset=900.0)
    # a stored record stamped by the fast clock lands between live reads and looks 0.08 kWh lower
    t8 = DAY + timedelta(hours=8)
    reg = 1000 + sum(profile(DAY - timedelta(days=7) + timedelta(minutes=15 * i)) for i in range(7 * 96 + 32))
    put(conn, "register_reads", [(m, "energy.active.import", t8, round(reg, 2)),
                                 (m, "energy.active.import", t8 + timedelta(minutes=5), round(reg - 0.08, 2)),
                                 (m, "energy.active.import", t8 + timedelta(minutes=10), round(reg + 0.1, 2))])
    s = run_vee(conn, DAY, DAY + timedelta(days=1), meters=[m], config=CFG, now=DAY + timedelta(days=2))
    dec = [r for r in s.records if r.rule == "register_decrease"]
    assert dec and all(r.severity == "warning" and "clock is off" in r.explanation for r in dec)
    types = {t for (t,) in conn.execute("SELECT type FROM work_orders WHERE meter = %s", (m,)).fetchall()}
    assert "clock_error" in types and "meter_fault" not in types


def test_failed_read_jobs_and_a_silent_day_raise_comm_inspection(conn: psycopg.Connection) -> None:
    m = f"S{uuid.uuid4().hex[:8]}"
    load_meter(conn, m, gap=(0, 96))  # nothing for the whole day
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO read_jobs (meter, plan, slot, status, error) VALUES (%s, 'profile', %s, "
                        "'failed', 'NoResponseError')", [(m, DAY + timedelta(hours=h)) for h in range(8)])
    ok = f"O{uuid.uuid4().hex[:8]}"
    load_meter(conn, ok)
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO read_jobs (meter, plan, slot, status) VALUES (%s, 'profile', %s, %s)",
                        [(ok, DAY + timedelta(hours=h), "failed" if h % 2 else "ok") for h in range(8)])
    s = run_vee(conn, DAY, DAY + timedelta(days=1), meters=[m, ok], config=CFG, now=DAY + timedelta(days=2))
    cf = [r for r in s.records if r.rule == "comm_failure"]
    assert [r.meter for r in cf] == [m] and cf[0].values["failed_jobs"] == 8
    types = {t for (t,) in conn.execute("SELECT type FROM work_orders WHERE meter = %s", (m,)).fetchall()}
    assert "comm_inspection" in types and "manual_reread" not in types
    assert conn.execute("SELECT count(*) FROM work_orders WHERE meter = %s", (ok,)).fetchone() == (0,)


def test_manual_edits_are_validated_again_and_future_reads_flagged(conn: psycopg.Connection) -> None:
    from mdm.vee.versions import add_version

    m = f"E{uuid.uuid4().hex[:8]}"
    load_meter(conn, m)
    add_version(conn, m, Q, DAY + timedelta(hours=9), 50.0, method="manual", reason="typo in the handheld",
                operator="bob")
    put(conn, "interval_reads", [(m, Q, DAY + timedelta(days=30), 0.2)])  # stamped a month ahead
    s = run_vee(conn, DAY, DAY + timedelta(days=1), meters=[m], config=CFG, now=DAY + timedelta(days=2))
    got = {r.rule: r for r in s.records}
    assert "spike" in got and got["spike"].start == DAY + timedelta(hours=9)
    assert got["running_fast"].values["kwh"] == 50.0
    assert got["future"].start == DAY + timedelta(days=30)
    # the edit stays the final value (flagged for review, not overwritten by an estimate)
    top = conn.execute("SELECT method FROM read_versions WHERE meter = %s ORDER BY version DESC LIMIT 1",
                       (m,)).fetchone()
    assert top == ("manual",)


def test_dst_day_has_92_quarter_hours(conn: psycopg.Connection) -> None:
    ny = ZoneInfo("America/New_York")
    day = datetime(2026, 3, 8, tzinfo=ny)  # spring forward: 23 hours
    nxt = datetime(2026, 3, 9, tzinfo=ny)
    full, holed = f"N{uuid.uuid4().hex[:8]}", f"H{uuid.uuid4().hex[:8]}"
    t = day.astimezone(ZoneInfo("UTC"))
    stamps = []
    while t < nxt:
        stamps.append(t)
        t += timedelta(minutes=15)
    assert len(stamps) == 92
    put(conn, "interval_reads", [(full, Q, ts, 0.2) for ts in stamps])
    put(conn, "interval_reads", [(holed, Q, ts, 0.2) for i, ts in enumerate(stamps) if not 40 <= i < 44])
    cfg = VeeConfig(timezone="America/New_York", classes={"residential": Thresholds(history_days=1)})
    s = run_vee(conn, day, nxt, meters=[full, holed], config=cfg, now=nxt + timedelta(days=1), raise_orders=False)
    by = {(r.meter, r.rule): r for r in s.records}
    assert (full, "day_count") not in by and (full, "gap") not in by
    assert by[(holed, "day_count")].values == {"found": 88, "expected": 92}


def test_rollover_is_not_a_decrease_and_sums_across_it(conn: psycopg.Connection) -> None:
    m = f"R{uuid.uuid4().hex[:8]}"
    load_meter(conn, m)
    row = conn.execute("SELECT value FROM register_reads WHERE meter = %s AND ts = %s", (m, DAY)).fetchone()
    assert row is not None
    reg_max = round(row[0] + 3.0, 2)  # the register wraps 3 kWh into the day
    conn.execute("UPDATE register_reads SET value = value - %s WHERE meter = %s AND ts = %s",
                 (reg_max, m, DAY + timedelta(days=1)))
    cfg = VeeConfig(classes={"residential": Thresholds(history_days=7, register_max=reg_max)})
    s = run_vee(conn, DAY, DAY + timedelta(days=1), meters=[m], config=cfg, now=DAY + timedelta(days=2))
    rules_found = {r.rule for r in s.records}
    assert "register_rollover" in rules_found
    assert "register_decrease" not in rules_found and "sum_register" not in rules_found


def test_daemon_clock_flag_becomes_one_clock_order(conn: psycopg.Connection) -> None:
    m = f"K{uuid.uuid4().hex[:8]}"
    load_meter(conn, m)
    conn.execute("INSERT INTO meter_flags (meter, flag, detail) VALUES (%s, 'clock_off', %s)",
                 (m, '{"offset_s": 420}'))
    for _ in range(2):
        run_vee(conn, DAY, DAY + timedelta(days=1), meters=[m], config=CFG, now=DAY + timedelta(days=2))
    rows = conn.execute("SELECT type, jsonb_array_length(evidence) FROM work_orders WHERE meter = %s",
                        (m,)).fetchall()
    assert rows == [("clock_error", 1)]
