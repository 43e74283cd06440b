"""The cut rules as pure functions: each rule alone, every reason listed, and properties over combinations."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from headend.control.calendar import HolidayCalendar, load_calendar
from headend.control.config import ControlPolicy
from headend.control.rules import (
    MANUAL_RULES,
    RULES,
    AccountState,
    Decision,
    Exemption,
    Notice,
    apply_limits,
    evaluate,
    needs_second_approval,
)

SH = ZoneInfo("Asia/Shanghai")
TUESDAY_10 = datetime(2026, 11, 24, 10, 0, tzinfo=SH)
CAL = HolidayCalendar({date(2026, 10, 1): "National Day", date(2026, 12, 25): "Test Day"})
P = ControlPolicy(timezone="Asia/Shanghai", notice_days=7, min_days_overdue=30, no_cut_weekdays=[4])


def acct(**kw: object) -> AccountState:
    base: dict[str, object] = {"account": "A1", "meter": "000000000001", "amount": 150.0, "days_overdue": 40,
                               "bus": "bus-1",
                               "notices": (Notice("notice", TUESDAY_10 - timedelta(days=8), "letter"),)}
    base.update(kw)
    return AccountState(**base)  # type: ignore[arg-type]


def codes(d: Decision) -> set[str]:
    return {c.code for c in d.reasons}


def test_clean_account_is_cut_with_every_check_explained() -> None:
    d = evaluate(acct(), TUESDAY_10, P, CAL)
    assert d.cut and not d.reasons
    assert {c.code for c in d.checks} >= {"amount", "overdue", "meter", "notice", "business_hours", "cutoff", "day",
                                          "exemptions", "external"}
    assert "notice delivered by letter 8.0 days before" in d.explain()


def test_every_blocking_reason_is_listed_not_just_the_first() -> None:
    sat_eve = datetime(2026, 12, 24, 15, 0, tzinfo=SH)  # Thursday 15:00, eve of a holiday, after cut-off
    a = acct(amount=0.0, days_overdue=3, notices=(), exemptions=(Exemption("medical"), Exemption("dispute")))
    d = evaluate(a, sat_eve, P, CAL, external=["forecast high 38 C"])
    assert not d.cut
    assert codes(d) == {"amount", "overdue", "notice", "cutoff", "holiday_eve", "exemption.medical",
                        "exemption.dispute", "external"}
    assert "external block: forecast high 38 C" in d.explain()


def test_each_rule_alone() -> None:
    cases = {
        "notice": acct(notices=(Notice("notice", TUESDAY_10 - timedelta(days=3), "sms"),)),
        "meter": acct(meter=None),
        "cleared": acct(cleared=True),
    }
    for code, a in cases.items():
        d = evaluate(a, TUESDAY_10, P, CAL)
        assert codes(d) == {code}, (code, d.explain())
    assert codes(evaluate(acct(), TUESDAY_10.replace(hour=7), P, CAL)) == {"business_hours"}
    assert codes(evaluate(acct(), TUESDAY_10.replace(hour=14, minute=30), P, CAL)) == {"cutoff"}
    assert codes(evaluate(acct(), datetime(2026, 11, 28, 10, tzinfo=SH), P, CAL)) == {"weekend"}
    assert codes(evaluate(acct(), datetime(2026, 11, 27, 10, tzinfo=SH), P, CAL)) == {"weekday"}  # Friday
    early = acct(notices=(Notice("notice", datetime(2026, 9, 1, tzinfo=SH), "letter"),))
    assert codes(evaluate(early, datetime(2026, 10, 1, 10, tzinfo=SH), P, CAL)) == {"holiday"}
    assert codes(evaluate(early, datetime(2026, 9, 30, 10, tzinfo=SH), P, CAL)) == {"holiday_eve"}
    for kind in ("medical", "life_support", "critical", "keep_power", "dispute", "payment_plan"):
        assert codes(evaluate(acct(exemptions=(Exemption(kind),)), TUESDAY_10, P, CAL)) == {f"exemption.{kind}"}


def test_notice_delivery_and_method() -> None:
    undelivered = acct(notices=(Notice("notice", None, "letter"),))
    assert "delivery not confirmed" in evaluate(undelivered, TUESDAY_10, P, CAL).explain()
    p = P.model_copy(update={"notice_methods": ["letter", "visit"]})
    sms_only = acct(notices=(Notice("notice", TUESDAY_10 - timedelta(days=9), "sms"),))
    assert "not accepted" in evaluate(sms_only, TUESDAY_10, p, CAL).explain()


def test_renotice_window() -> None:
    p = P.model_copy(update={"renotice_hours": 1.0})
    base = acct()
    assert codes(evaluate(base, TUESDAY_10, p, CAL)) == {"renotice"}
    ok = acct(notices=(*base.notices, Notice("renotice", TUESDAY_10 - timedelta(minutes=30), "call")))
    assert evaluate(ok, TUESDAY_10, p, CAL).cut
    late = acct(notices=(*base.notices, Notice("renotice", TUESDAY_10 - timedelta(hours=3), "call")))
    assert codes(evaluate(late, TUESDAY_10, p, CAL)) == {"renotice"}


def test_expired_exemption_does_not_block() -> None:
    a = acct(exemptions=(Exemption("medical", until=TUESDAY_10 - timedelta(days=1)),))
    assert evaluate(a, TUESDAY_10, P, CAL).cut


def test_manual_rules_skip_arrears_but_keep_protections() -> None:
    a = AccountState("", "000000000001", 0.0, 0, exemptions=(Exemption("life_support"),))
    d = evaluate(a, TUESDAY_10, P, CAL, rules=MANUAL_RULES)
    assert codes(d) == {"exemption.life_support"}
    assert evaluate(AccountState("", "m", 0.0, 0), TUESDAY_10, P, CAL, rules=MANUAL_RULES).cut


def test_calendar_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    t = tmp_path / "h.toml"
    t.write_text('[[holiday]]\ndate = 2026-10-01\nname = "National Day"\n'
                 '[[holiday]]\ndate = 2026-10-10\nname = "Bridge"\nworking = true\n'
                 '[[holiday]]\ndate = 2026-11-02\nname = "Utility B day"\nutility = "b"\n')
    c = tmp_path / "h.csv"
    c.write_text("date,name,utility,working\n2026-10-01,National Day,,\n2026-10-10,Bridge,,yes\n")
    for path in (t, c):
        cal = load_calendar(path, "a")
        assert cal.holiday(date(2026, 10, 1)) == "National Day"
        assert cal.eve_of(date(2026, 9, 30)) == "National Day"
        assert not cal.is_weekend(date(2026, 10, 10))  # a Saturday declared a working day
        assert cal.holiday(date(2026, 11, 2)) is None
    assert load_calendar(t, "b").holiday(date(2026, 11, 2)) == "Utility B day"


def test_limits_per_bus_and_day() -> None:
    p = P.model_copy(update={"batch_per_bus": 2, "max_per_bus_day": 3, "max_per_day": 4})
    ds = [evaluate(acct(account=f"A{i}", bus=f"b{i % 2}"), TUESDAY_10, p, CAL) for i in range(8)]
    out = apply_limits(ds, lambda _d: p, {"b0": 2}, used_today=2)
    cut = [d for d in out if d.cut]
    assert [d.account for d in cut] == ["A0", "A1"]  # b0 has 1 left today, the day 2
    assert {c.code for d in out if not d.cut for c in d.reasons} == {"limit.bus_day", "limit.day"}
    big = p.model_copy(update={"max_per_bus_day": 100, "max_per_day": 100})
    out = apply_limits(ds, lambda _d: big)
    assert [d.account for d in out if d.cut] == ["A0", "A1", "A2", "A3"]
    assert "batch size 2" in out[4].explain()
    assert needs_second_approval(11, P) and not needs_second_approval(10, P)


# -- property: the decision equals an independent restatement of the rules ---------------------------
@st.composite
def scenario(draw: st.DrawFn) -> tuple[AccountState, datetime, ControlPolicy, list[str]]:
    day = date(2026, 9, 25) + timedelta(days=draw(st.integers(0, 100)))
    at = datetime.combine(day, time(draw(st.integers(0, 23)), draw(st.sampled_from([0, 29, 59]))), SH)
    notices = []
    if draw(st.booleans()):
        age = draw(st.floats(0, 20))
        delivered = None if draw(st.integers(0, 5)) == 0 else at - timedelta(days=age)
        notices.append(Notice("notice", delivered, draw(st.sampled_from(["letter", "sms"]))))
    if draw(st.booleans()):
        notices.append(Notice("renotice", at - timedelta(hours=draw(st.floats(0, 5))), "call"))
    kinds = draw(st.lists(st.sampled_from(["medical", "life_support", "critical", "keep_power", "dispute",
                                           "payment_plan", "other"]), max_size=2))
    ex = tuple(Exemption(k, until=None if draw(st.booleans()) else at + timedelta(days=draw(st.integers(-3, 3))))
               for k in kinds)
    a = AccountState("A", draw(st.sampled_from(["000000000001", None])), draw(st.sampled_from([0.0, 5.0, 300.0])),
                     draw(st.integers(0, 90)), notices=tuple(notices), exemptions=ex, cleared=draw(st.booleans()))
    p = ControlPolicy(timezone="Asia/Shanghai", min_amount=10, notice_days=draw(st.sampled_from([3, 7])),
                      renotice_hours=draw(st.sampled_from([None, 1.0])),
                      no_cut_weekdays=draw(st.sampled_from([[], [4]])),
                      no_cut_holiday_eve=draw(st.booleans()), cutoff=draw(st.sampled_from([None, time(14)])))
    external = draw(st.lists(st.sampled_from(["heat wave", "storm"]), max_size=1))
    return a, at, p, external


def oracle(a: AccountState, at: datetime, p: ControlPolicy, external: list[str]) -> bool:
    """The rules restated independently (plain reading of docs/control.md)."""
    lt = at.astimezone(SH)
    d = lt.date()
    if a.cleared or a.amount < p.min_amount or a.days_overdue < p.min_days_overdue or not a.meter:
        return False
    if not any(n.kind == "notice" and n.delivered_at is not None and at - n.delivered_at >= timedelta(
            days=p.notice_days) for n in a.notices):
        return False
    if p.renotice_hours is not None and not any(
            n.kind == "renotice" and n.delivered_at is not None
            and timedelta(0) <= at - n.delivered_at <= timedelta(hours=p.renotice_hours) for n in a.notices):
        return False
    if not (time(8, 30) <= lt.time() < time(17)) or (p.cutoff is not None and lt.time() >= p.cutoff):
        return False
    if d.weekday() >= 5 or d.weekday() in p.no_cut_weekdays or d in CAL.holidays:
        return False
    if p.no_cut_holiday_eve and d + timedelta(days=1) in CAL.holidays:
        return False
    if any(e.kind != "other" and (e.until is None or at < e.until) for e in a.exemptions):
        return False
    return not external


@settings(max_examples=300, deadline=None)
@given(scenario())
def test_decision_matches_independent_oracle(case: tuple[AccountState, datetime, ControlPolicy, list[str]]) -> None:
    a, at, p, external = case
    d = evaluate(a, at, p, CAL, external)
    assert d.cut == oracle(a, at, p, external), d.explain()
    assert d.cut == (not d.reasons)  # a blocked decision always says why
    assert all(c.message for c in d.checks)
    assert {r.code for r in RULES} == {"arrears", "meter", "notice", "renotice", "hours", "days", "exemptions",
                                       "external"}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["b0", "b1", "b2"]), st.booleans()), max_size=40),
       st.integers(1, 5), st.integers(1, 8), st.integers(1, 20), st.integers(0, 6))
def test_limits_never_exceeded(items: list[tuple[str, bool]], batch: int, per_bus: int, per_day: int,
                               used: int) -> None:
    p = P.model_copy(update={"batch_per_bus": batch, "max_per_bus_day": per_bus, "max_per_day": per_day})
    base = [evaluate(acct(account=f"A{i}", bus=b, cleared=not ok), TUESDAY_10, p, CAL)
            for i, (b, ok) in enumerate(items)]
    out = apply_limits(base, lambda _d: p, {"b0": used}, used)
    cut = [d for d in out if d.cut]
    assert all(d.cut <= b.cut for d, b in zip(out, base, strict=True))  # limits only ever remove cuts
    assert len(cut) + used <= max(per_day, used)
    for bus in ("b0", "b1", "b2"):
        n = sum(1 for d in cut if d.bus == bus)
        assert n <= batch and n + (used if bus == "b0" else 0) <= max(per_bus, used if bus == "b0" else 0)
    _ = UTC
