"""Read-plan slot arithmetic: windows, jitter, DST days, freeze boundaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from headend.clocksync import crosses_boundary
from headend.fleetconfig import DaemonSettings
from headend.plans import PlanKind, ReadPlan, jitter_for, next_slot

BERLIN = ZoneInfo("Europe/Berlin")
SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_window_skips_slots_outside_it() -> None:
    plan = ReadPlan(name="night", kind=PlanKind.READ, every=900, window="01:00-02:00", quantities=["voltage.a"])
    after = datetime(2026, 11, 26, 10, 0, tzinfo=SHANGHAI)
    slot = next_slot(plan, SHANGHAI, "000000000001", after)
    assert slot.due.astimezone(SHANGHAI) == datetime(2026, 11, 27, 1, 0, tzinfo=SHANGHAI)
    # expires at the next slot, inside the window
    assert slot.expires.astimezone(SHANGHAI) == datetime(2026, 11, 27, 1, 15, tzinfo=SHANGHAI)
    last = next_slot(plan, SHANGHAI, "000000000001", datetime(2026, 11, 27, 1, 50, tzinfo=SHANGHAI))
    assert last.expires.astimezone(SHANGHAI) == datetime(2026, 11, 28, 1, 0, tzinfo=SHANGHAI) or \
        last.due.astimezone(SHANGHAI).hour == 1


def test_jitter_is_deterministic_and_bounded() -> None:
    values = [jitter_for(f"{i:012d}", "instant", 60.0) for i in range(500)]
    assert all(0 <= v < 60 for v in values)
    assert values == [jitter_for(f"{i:012d}", "instant", 60.0) for i in range(500)]
    assert max(values) - min(values) > 50  # spread over the slot, not bunched


def test_daily_slots_follow_local_midnight_over_dst() -> None:
    plan = ReadPlan(name="daily", kind=PlanKind.DAILY, offset=300)
    s1 = next_slot(plan, BERLIN, "m", datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN))
    s2 = next_slot(plan, BERLIN, "m", s1.due + timedelta(seconds=1))
    assert s1.start.astimezone(BERLIN).hour == 0 and s2.start.astimezone(BERLIN).hour == 0
    assert s2.start - s1.start == timedelta(hours=23)  # the spring-forward day is 23 h long
    s3 = next_slot(plan, BERLIN, "m", datetime(2026, 10, 24, 12, 0, tzinfo=BERLIN))
    s4 = next_slot(plan, BERLIN, "m", s3.due + timedelta(seconds=1))
    assert s4.start - s3.start == timedelta(hours=25)


def test_monthly_plan_on_billing_day() -> None:
    plan = ReadPlan(name="billing", kind=PlanKind.MONTHLY, billing_day=15, offset=600)
    s = next_slot(plan, SHANGHAI, "m", datetime(2026, 11, 26, tzinfo=SHANGHAI))
    assert s.start.astimezone(SHANGHAI) == datetime(2026, 12, 15, tzinfo=SHANGHAI)


def test_freeze_boundary_guard() -> None:
    near = datetime(2026, 11, 26, 23, 58, tzinfo=SHANGHAI).astimezone(UTC)
    assert crosses_boundary(near, near, SHANGHAI, 300, hourly=False)
    mid = datetime(2026, 11, 26, 14, 30, tzinfo=SHANGHAI).astimezone(UTC)
    assert not crosses_boundary(mid, mid + timedelta(seconds=150), SHANGHAI, 300, hourly=True)
    assert crosses_boundary(mid, mid + timedelta(minutes=29), SHANGHAI, 300, hourly=True)
    assert not crosses_boundary(mid, mid + timedelta(minutes=29), SHANGHAI, 300, hourly=False)


def test_config_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="unknown quantity codes: volts"):
        ReadPlan(name="x", kind=PlanKind.READ, every=60, quantities=["volts"])
    with pytest.raises(ValueError, match="needs 'every'"):
        ReadPlan(name="x", kind=PlanKind.PROFILE)
    with pytest.raises(ValueError, match="duplicate channel names: a"):
        DaemonSettings(channels=[{"name": "a", "url": "tcp://h:1"}, {"name": "a", "url": "tcp://h:2"}])
    with pytest.raises(ValueError, match="meter 000000000001 is on channels a and b"):
        DaemonSettings(channels=[{"name": "a", "url": "tcp://h:1", "meters": ["000000000001"]},
                                 {"name": "b", "url": "tcp://h:2", "meters": ["000000000001"]}])
