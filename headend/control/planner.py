"""Planning: candidates -> rules -> limits -> a plan of ``planned`` commands (or a dry run).

A plan stores every decision with every reason (``control_plans.decisions``), so what was
decided, and why, can be shown later exactly as it was. Only accounts that pass every rule
become commands; a blocked account never gets a command row, hence never a frame. The
executor re-checks every rule at send time as well (time passes between plan and send).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from headend.control import audit, store
from headend.control.calendar import HolidayCalendar, load_calendar
from headend.control.config import ControlPolicy, ControlSettings
from headend.control.directory import MeterDirectory
from headend.control.roles import PermissionDenied, require_role
from headend.control.rules import AccountState, Check, Decision, apply_limits, evaluate, needs_second_approval
from headend.control.transitions import Event
from protocols.errors import HeadendError

__all__ = ["PlanResult", "Planner", "approve_plan", "cancel", "run_external_blocks"]

ExternalHook = Callable[[Sequence[Mapping[str, Any]], datetime], Any]


@dataclass(slots=True)
class PlanResult:
    at: datetime
    decisions: list[Decision]
    needs_second: bool
    plan_id: int | None = None
    commands: list[int] = field(default_factory=list)

    @property
    def n_cut(self) -> int:
        return sum(1 for d in self.decisions if d.cut)

    def as_dict(self) -> dict[str, Any]:
        return {"plan": self.plan_id, "at": self.at.isoformat(), "cut": self.n_cut,
                "not_cut": len(self.decisions) - self.n_cut, "needs_second_approval": self.needs_second,
                "commands": self.commands, "decisions": [d.as_dict() for d in self.decisions]}


def _load_hook(spec: str) -> ExternalHook:
    mod, _, fn = spec.partition(":")
    if not fn:
        raise HeadendError(f"external block hook {spec!r}: expected 'module:function' or 'cmd:program ...'")
    obj = getattr(importlib.import_module(mod), fn)
    if not callable(obj):
        raise HeadendError(f"external block hook {spec!r} is not callable")
    hook: ExternalHook = obj
    return hook


HOOK_TIMEOUT = 30.0


async def _run_command_hook(cmd: str, payload: dict[str, Any]) -> Mapping[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        *shlex.split(cmd), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(HOOK_TIMEOUT):
            out, err = await proc.communicate(json.dumps(payload).encode())
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise HeadendError(f"exit {proc.returncode}: {err.decode(errors='replace').strip()[:200]}")
    data = json.loads(out or b"{}")
    blocked = data.get("blocked", {}) if isinstance(data, dict) else {}
    if not isinstance(blocked, dict):
        raise HeadendError("'blocked' must be an object account -> reason")
    return blocked


async def run_external_blocks(
    hooks: Sequence[str | ExternalHook], accounts: Sequence[AccountState], at: datetime
) -> dict[str, list[str]]:
    """account -> reasons from every hook. A hook that fails blocks every account (fail safe)."""
    out: dict[str, list[str]] = {}
    payload = [{"account": a.account, "meter": a.meter, "bus": a.bus, "utility": a.utility} for a in accounts]
    for hook in hooks:
        name = hook if isinstance(hook, str) else getattr(hook, "__name__", "hook")
        try:
            if isinstance(hook, str) and hook.startswith("cmd:"):
                result: Any = await _run_command_hook(hook[4:], {"at": at.isoformat(), "accounts": payload})
            else:
                fn = _load_hook(hook) if isinstance(hook, str) else hook
                result = fn(payload, at)
                if inspect.isawaitable(result):
                    result = await result
            for acc, reason in dict(result or {}).items():
                reasons = reason if isinstance(reason, list | tuple) else [reason]
                out.setdefault(str(acc), []).extend(str(r) for r in reasons if r)
        except Exception as exc:  # fail safe: a broken hook blocks everything
            for a in accounts:
                out.setdefault(a.account, []).append(f"hook {name} failed ({type(exc).__name__}: {exc})")
    return out


class Planner:
    """Builds decisions for the accounts in arrears; optionally writes them as a plan."""

    def __init__(self, settings: ControlSettings, directory: MeterDirectory, *, timezone: str = "Asia/Shanghai",
                 hooks: Sequence[str | ExternalHook] | None = None) -> None:
        self.settings = settings
        self.directory = directory
        self.timezone = timezone
        self._hooks_override = hooks
        self._calendars: dict[str, HolidayCalendar] = {}

    def policy(self, utility: str | None) -> ControlPolicy:
        p = self.settings.policy(utility)
        return p if p.timezone else p.model_copy(update={"timezone": self.timezone})

    def calendar(self, utility: str) -> HolidayCalendar:
        if utility not in self._calendars:
            self._calendars[utility] = load_calendar(self.settings.holidays, utility, self.policy(utility).weekend)
        return self._calendars[utility]

    def hooks(self, utility: str) -> Sequence[str | ExternalHook]:
        return self._hooks_override if self._hooks_override is not None else self.policy(utility).external_blocks

    async def decide(self, accounts: Sequence[AccountState], at: datetime,
                     busy: Mapping[str, tuple[int, str, str]] | None = None) -> list[Decision]:
        """Every account's decision at ``at`` (rules + in-flight check), before volume limits."""
        external: dict[str, list[str]] = {}
        by_util: dict[str, list[AccountState]] = {}
        for a in accounts:
            by_util.setdefault(a.utility, []).append(a)
        for util, accs in by_util.items():
            if self.hooks(util):
                for k, v in (await run_external_blocks(self.hooks(util), accs, at)).items():
                    external.setdefault(k, []).extend(v)
        out: list[Decision] = []
        for a in accounts:
            d = evaluate(a, at, self.policy(a.utility), self.calendar(a.utility), external.get(a.account, ()))
            hit = (busy or {}).get(a.meter or "")
            if hit is not None:
                cid, kind, state = hit
                what = "already disconnected" if kind == "disconnect" and state in ("confirmed", "escalated") \
                    else f"{kind} command {cid} is {state}"
                d = replace(d, cut=False, checks=(*d.checks, Check("in_progress", False, f"meter {a.meter}: {what}")))
            out.append(d)
        return out

    def day_start(self, at: datetime, utility: str | None = None) -> datetime:
        tz = ZoneInfo(self.policy(utility).timezone or self.timezone)
        return datetime.combine(at.astimezone(tz).date(), time(0), tz)

    async def plan(self, conn: AsyncConnection[Any], at: datetime, *, operator: str, dry_run: bool = True,
                   accounts: Sequence[str] | None = None, reason: str = "arrears") -> PlanResult:
        require_role(self.settings, "plan", operator)
        states = await store.load_accounts(conn, self.directory, accounts)
        busy = await store.busy_meters(conn)
        decisions = await self.decide(states, at, busy)
        per_bus, total = await store.sent_today(conn, self.day_start(at))
        util_of = {a.account: a.utility for a in states}
        decisions = apply_limits(decisions, lambda d: self.policy(util_of.get(d.account)), per_bus, total)
        n_cut = sum(1 for d in decisions if d.cut)
        needs_second = needs_second_approval(n_cut, self.policy(None))
        result = PlanResult(at, decisions, needs_second)
        if dry_run:
            return result
        async with conn.transaction():
            cur = await conn.execute(
                """INSERT INTO control_plans (created_by, planned_for, reason, needs_second, n_cut, n_blocked,
                                              decisions) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id""",
                (operator, at, reason, needs_second, n_cut, len(decisions) - n_cut,
                 Jsonb([d.as_dict() for d in decisions])))
            row = await cur.fetchone()
            assert row is not None
            plan_id = int(row[0])
            for d in decisions:
                if not d.cut or d.meter is None:
                    continue
                cur = await conn.execute(
                    """INSERT INTO control_commands (plan_id, account, meter, bus, kind, command, state, operator,
                                                     reason) VALUES (%s, %s, %s, %s, 'disconnect', 'trip',
                                                     'planned', %s, %s)
                       ON CONFLICT DO NOTHING RETURNING id""",
                    (plan_id, d.account, d.meter, d.bus, operator, f"{reason}: {d.explain()}"[:2000]))
                r = await cur.fetchone()
                if r is not None:
                    result.commands.append(int(r[0]))
            await audit.record(conn, action="plan.create", operator=operator, plan_id=plan_id, reason=reason,
                               details={"cut": n_cut, "not_cut": len(decisions) - n_cut,
                                        "needs_second_approval": needs_second})
        result.plan_id = plan_id
        return result


async def approve_plan(conn: AsyncConnection[Any], settings: ControlSettings, plan_id: int, approver: str,
                       reason: str = "") -> int:
    """planned -> approved for every command of the plan; the two-person rule when the plan is large."""
    require_role(settings, "approve", approver)
    async with conn.transaction():
        cur = await conn.execute("SELECT created_by, status, needs_second FROM control_plans WHERE id = %s FOR UPDATE",
                                 (plan_id,))
        row = await cur.fetchone()
        if row is None:
            raise HeadendError(f"no plan {plan_id}")
        created_by, status, needs_second = row
        if status != "planned":
            raise HeadendError(f"plan {plan_id} is {status}, not planned")
        if needs_second and approver == created_by:
            raise PermissionDenied(f"plan {plan_id} exceeds the approval threshold: it needs a second operator "
                                   f"(planned by {created_by})")
        n = 0
        for cmd in await store.list_commands(conn, "plan_id = %s AND state = 'planned'", (plan_id,)):
            await store.transition(conn, cmd, Event.APPROVE, operator=approver, approver=approver,
                                   reason=reason or cmd.reason)
            n += 1
        await conn.execute("UPDATE control_plans SET status = 'approved', approved_by = %s, approved_at = now() "
                           "WHERE id = %s", (approver, plan_id))
        await audit.record(conn, action="plan.approve", operator=approver, approver=approver, plan_id=plan_id,
                           reason=reason, details={"commands": n})
    return n


async def cancel(conn: AsyncConnection[Any], settings: ControlSettings, operator: str, reason: str, *,
                 plan_id: int | None = None, command_id: int | None = None) -> list[int]:
    """Cancel a plan's commands (or one command) that are still planned or approved; the rest is left
    as it is (a sent command is resolved by read-back, never dropped). Needs the approve role."""
    require_role(settings, "approve", operator)
    if not reason.strip():
        raise HeadendError("a reason is required")
    where, params = ("plan_id = %s", [plan_id]) if plan_id is not None else ("id = %s", [command_id])
    done: list[int] = []
    async with conn.transaction():
        for cmd in await store.list_commands(conn, f"{where} AND state IN ('planned', 'approved')", params):
            await store.transition(conn, cmd, Event.CANCEL, operator=operator, reason=reason)
            done.append(cmd.id)
        if plan_id is not None:
            await conn.execute("UPDATE control_plans SET status = 'cancelled' WHERE id = %s AND status IN "
                               "('planned', 'approved')", (plan_id,))
            await audit.record(conn, action="plan.cancel", operator=operator, plan_id=plan_id, reason=reason,
                               details={"commands": done})
    return done
