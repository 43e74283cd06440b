"""The cut rules: data plus pure evaluation. Every decision carries every reason.

Each :class:`Rule` is one line of the table :data:`RULES`: a code, a description and a
pure check over a :class:`CutContext`. :func:`evaluate` runs *all* rules (it never stops
at the first failure), so ``headend control plan --dry-run`` can list every reason an
account is or is not cut. Volume limits depend on the other accounts of the plan and are
applied afterwards by :func:`apply_limits`.

Reconnection is deliberately absent: restoring supply is never blocked by these rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from headend.control.calendar import HolidayCalendar
from headend.control.config import ControlPolicy

__all__ = [
    "MANUAL_RULES",
    "RULES",
    "AccountState",
    "Check",
    "CutContext",
    "Decision",
    "Exemption",
    "Notice",
    "Rule",
    "apply_limits",
    "evaluate",
    "needs_second_approval",
]

_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True, slots=True)
class Notice:
    kind: str  # "notice" | "renotice"
    delivered_at: datetime | None  # None: sent but delivery not confirmed
    method: str = ""  # letter, sms, call, visit, app ...


@dataclass(frozen=True, slots=True)
class Exemption:
    kind: str  # medical, life_support, critical, keep_power, dispute, payment_plan
    until: datetime | None = None  # None: open-ended
    note: str = ""

    def active(self, at: datetime) -> bool:
        return self.until is None or at < self.until


@dataclass(frozen=True, slots=True)
class AccountState:
    """What the rules know about one account at planning time."""

    account: str
    meter: str | None
    amount: float
    days_overdue: int
    utility: str = "default"
    bus: str = ""
    notices: tuple[Notice, ...] = ()
    exemptions: tuple[Exemption, ...] = ()
    cleared: bool = False  # billing says the arrears are cleared (paid, written off)


@dataclass(frozen=True, slots=True)
class CutContext:
    account: AccountState
    at: datetime  # aware
    policy: ControlPolicy
    calendar: HolidayCalendar
    external: tuple[str, ...] = ()  # reasons given by external block hooks for this account

    @property
    def local(self) -> datetime:
        return self.at.astimezone(ZoneInfo(self.policy.timezone)) if self.policy.timezone else self.at


@dataclass(frozen=True, slots=True)
class Check:
    """One rule's verdict: ``ok`` False blocks the cut; ``message`` says why, in words."""

    code: str
    ok: bool
    message: str


@dataclass(frozen=True, slots=True)
class Rule:
    code: str
    description: str
    check: Callable[[CutContext], list[Check]]


@dataclass(frozen=True, slots=True)
class Decision:
    account: str
    meter: str | None
    bus: str
    cut: bool
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def reasons(self) -> tuple[Check, ...]:
        """The blocking reasons (empty when the account is cut)."""
        return tuple(c for c in self.checks if not c.ok)

    def explain(self) -> str:
        if self.cut:
            return "cut: " + "; ".join(c.message for c in self.checks)
        return "not cut: " + "; ".join(c.message for c in self.reasons)

    def as_dict(self) -> dict[str, object]:
        return {
            "account": self.account,
            "meter": self.meter,
            "bus": self.bus,
            "cut": self.cut,
            "reasons": [{"code": c.code, "message": c.message} for c in self.reasons],
            "checks": [{"code": c.code, "ok": c.ok, "message": c.message} for c in self.checks],
        }


def _one(code: str, ok: bool, message: str) -> list[Check]:
    return [Check(code, ok, message)]


# -- the rules -------------------------------------------------------------------------
def _arrears(c: CutContext) -> list[Check]:
    a, p = c.account, c.policy
    out: list[Check] = []
    if a.cleared:
        out.append(Check("cleared", False, "arrears cleared by payment or billing"))
    ok = a.amount >= p.min_amount
    out.append(Check("amount", ok, f"arrears {a.amount:.2f} {'>=' if ok else '<'} threshold {p.min_amount:.2f}"))
    ok = a.days_overdue >= p.min_days_overdue
    out.append(Check("overdue", ok, f"{a.days_overdue} days overdue ({'>=' if ok else '<'} {p.min_days_overdue})"))
    return out


def _meter(c: CutContext) -> list[Check]:
    m = c.account.meter
    return _one("meter", bool(m), f"meter {m}" if m else "no meter linked to the account")


def _notice(c: CutContext) -> list[Check]:
    p = c.policy
    need = timedelta(days=p.notice_days)
    allowed = p.notice_methods
    best: Notice | None = None
    for n in c.account.notices:
        if n.kind != "notice" or n.delivered_at is None:
            continue
        if allowed is not None and n.method not in allowed:
            continue
        if c.at - n.delivered_at >= need and (best is None or n.delivered_at > best.delivered_at):  # type: ignore[operator]
            best = n
    if best is not None and best.delivered_at is not None:
        days = (c.at - best.delivered_at).total_seconds() / 86400
        return _one("notice", True, f"notice delivered by {best.method or 'unknown method'} {days:.1f} days before "
                                    f"(>= {p.notice_days:g})")
    delivered = [n for n in c.account.notices if n.kind == "notice" and n.delivered_at is not None]
    if not c.account.notices or not any(n.kind == "notice" for n in c.account.notices):
        msg = "no notice on record"
    elif not delivered:
        msg = "notice sent but delivery not confirmed"
    elif allowed is not None and all(n.method not in allowed for n in delivered):
        msg = f"notice delivered only by methods not accepted ({', '.join(sorted({n.method for n in delivered}))})"
    else:
        newest = max(n.delivered_at for n in delivered if n.delivered_at is not None)
        days = (c.at - newest).total_seconds() / 86400
        msg = f"notice delivered only {days:.1f} days before (< {p.notice_days:g})"
    return _one("notice", False, msg)


def _renotice(c: CutContext) -> list[Check]:
    h = c.policy.renotice_hours
    if h is None:
        return []
    window = timedelta(hours=h)
    for n in c.account.notices:
        if n.kind == "renotice" and n.delivered_at is not None and timedelta(0) <= c.at - n.delivered_at <= window:
            mins = (c.at - n.delivered_at).total_seconds() / 60
            return _one("renotice", True, f"re-notice delivered {mins:.0f} min before (within {h:g} h)")
    return _one("renotice", False, f"no re-notice delivered within {h:g} h before the cut")


def _hours(c: CutContext) -> list[Check]:
    p, t = c.policy, c.local.timetz().replace(tzinfo=None)
    ok = p.business_start <= t < p.business_end
    out = [Check("business_hours", ok, f"local time {t:%H:%M} {'inside' if ok else 'outside'} business hours "
                                       f"{p.business_start:%H:%M}-{p.business_end:%H:%M}")]
    if p.cutoff is not None:
        ok = t < p.cutoff
        out.append(Check("cutoff", ok, f"local time {t:%H:%M} {'before' if ok else 'at or after'} the daily "
                                       f"cut-off {p.cutoff:%H:%M}"))
    return out


def _days(c: CutContext) -> list[Check]:
    p, d = c.policy, c.local.date()
    out: list[Check] = []
    day = _DAY_NAMES[d.weekday()]
    if p.no_cut_weekends and c.calendar.is_weekend(d):
        out.append(Check("weekend", False, f"{d} is a {day} (weekend)"))
    if d.weekday() in p.no_cut_weekdays and d not in c.calendar.working_days:
        out.append(Check("weekday", False, f"no cuts on {day}s"))
    hol = c.calendar.holiday(d)
    if p.no_cut_holidays and hol is not None:
        out.append(Check("holiday", False, f"{d} is a holiday ({hol or 'unnamed'})"))
    eve = c.calendar.eve_of(d)
    if p.no_cut_holiday_eve and eve is not None:
        out.append(Check("holiday_eve", False, f"{d} is the eve of a holiday ({eve or 'unnamed'})"))
    if not out:
        out.append(Check("day", True, f"{d} ({day}) is a working day"))
    return out


def _exemptions(c: CutContext) -> list[Check]:
    blocking = set(c.policy.blocking_exemptions)
    out = [
        Check(f"exemption.{e.kind}", False,
              f"exemption {e.kind}" + (f" until {e.until:%Y-%m-%d}" if e.until else "")
              + (f" ({e.note})" if e.note else ""))
        for e in c.account.exemptions
        if e.active(c.at) and e.kind in blocking
    ]
    return out or _one("exemptions", True, "no active exemption")


def _external(c: CutContext) -> list[Check]:
    return [Check("external", False, f"external block: {r}") for r in c.external] or _one(
        "external", True, "no external block")


#: The table of cut rules, evaluated in this order; every one always runs.
RULES: tuple[Rule, ...] = (
    Rule("arrears", "arrears above the amount threshold and overdue long enough, not cleared", _arrears),
    Rule("meter", "the account has a meter to act on", _meter),
    Rule("notice", "a disconnection notice was delivered at least N days before", _notice),
    Rule("renotice", "where configured, a re-notice within M hours before the cut", _renotice),
    Rule("hours", "inside business hours and before the daily cut-off", _hours),
    Rule("days", "not a weekend, blocked weekday, holiday or holiday eve", _days),
    Rule("exemptions", "no medical, life-support, critical, keep-power, dispute or payment-plan exemption",
         _exemptions),
    Rule("external", "no external block (weather, regulator, ...)", _external),
)


#: Rules for a manual disconnect (not for arrears: no amount or notice rules, but the same protections).
MANUAL_RULES: tuple[str, ...] = ("hours", "days", "exemptions", "external")


def evaluate(
    account: AccountState,
    at: datetime,
    policy: ControlPolicy,
    calendar: HolidayCalendar,
    external: Sequence[str] = (),
    rules: Sequence[str] | None = None,
) -> Decision:
    """Pure: the decision for one account at ``at`` (aware), with every check's verdict.

    ``rules`` restricts evaluation to those rule codes (manual disconnects use :data:`MANUAL_RULES`).
    """
    if at.tzinfo is None:
        raise ValueError("evaluate() needs an aware datetime")
    ctx = CutContext(account, at, policy, calendar, tuple(external))
    checks = tuple(ch for rule in RULES if rules is None or rule.code in rules for ch in rule.check(ctx))
    return Decision(account.account, account.meter, account.bus, all(ch.ok for ch in checks), checks)


def local_day(at: datetime, policy: ControlPolicy) -> date:
    return (at.astimezone(ZoneInfo(policy.timezone)) if policy.timezone else at).date()


def apply_limits(
    decisions: Iterable[Decision],
    policy_of: Callable[[Decision], ControlPolicy],
    used_bus_today: Mapping[str, int] | None = None,
    used_today: int = 0,
) -> list[Decision]:
    """Volume limits, in order: the plan batch per bus, the daily cap per bus, the daily cap.

    ``used_*`` count cuts already sent today. Pure; the excess gets a blocking reason.
    """
    used_bus = dict(used_bus_today or {})
    in_plan: dict[str, int] = {}
    total = used_today
    out: list[Decision] = []
    for d in decisions:
        if not d.cut:
            out.append(d)
            continue
        p = policy_of(d)
        extra: list[Check] = []
        n_plan = in_plan.get(d.bus, 0)
        n_bus = used_bus.get(d.bus, 0)
        if n_plan >= p.batch_per_bus:
            extra.append(Check("limit.batch", False, f"bus {d.bus or '?'} already has {n_plan} cuts in this plan "
                                                     f"(batch size {p.batch_per_bus})"))
        if n_bus >= p.max_per_bus_day:
            extra.append(Check("limit.bus_day", False, f"bus {d.bus or '?'} already has {n_bus} cuts today "
                                                       f"(limit {p.max_per_bus_day})"))
        if total >= p.max_per_day:
            extra.append(Check("limit.day", False, f"{total} cuts already today (limit {p.max_per_day})"))
        if extra:
            out.append(replace(d, cut=False, checks=d.checks + tuple(extra)))
            continue
        in_plan[d.bus] = n_plan + 1
        used_bus[d.bus] = n_bus + 1
        total += 1
        out.append(d)
    return out


def needs_second_approval(n_cuts: int, policy: ControlPolicy) -> bool:
    """A plan with more cuts than the threshold must be approved by someone other than its planner."""
    return n_cuts > policy.approval_threshold
