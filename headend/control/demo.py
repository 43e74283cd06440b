"""Demo stage for ``headend demo``: one customer in arrears cut, then restored after payment.

A second customer on the same bus is on life support: the plan shows why it is not cut, and
its meter never receives a frame. The demo policy relaxes business hours (the demo runs at
any hour) and gives commands a long validity (the simulated meters run on an accelerated
clock); every other rule is the default one.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from rich.table import Table

from headend.control import imports
from headend.control.config import ControlPolicy, ControlSettings
from headend.control.directory import MeterDirectory
from headend.control.executor import Executor
from headend.control.planner import approve_plan
from headend.control.secrets import install_log_masking, load_secrets

__all__ = ["stage"]

#: The simulator's documented default level-2 password; a real deployment reads the secrets file.
_DEMO_SECRETS = {"HEADEND_METER_PASSWORD": "123456", "HEADEND_OPERATOR_CODE": "00000001"}


async def stage(ctx: Any) -> None:
    """Cut DEMO-0001 (meter 000000000001), refuse DEMO-0002 (life support), then pay and restore DEMO-0001."""
    settings = ctx.settings
    directory = MeterDirectory.from_settings(settings)
    bus = next(c for c in settings.daemon.channels if c.protocol == "dlt645")
    cut_meter, safe_meter = (m.address for m in bus.meter_configs()[:2])
    sim = next(s for s in ctx.sims if cut_meter in getattr(s, "meters", {}))
    tz = ZoneInfo(settings.timezone)
    policy = ControlPolicy(timezone=settings.timezone, business_start=dtime(0, 0), business_end=dtime(23, 59, 59),
                           cutoff=None, no_cut_weekends=False, no_cut_holidays=False, no_cut_holiday_eve=False,
                           command_valid_minutes=24 * 60, approval_threshold=0)
    control = ControlSettings(utilities={"default": policy},
                              roles={"import": ["billing"], "plan": ["demo-planner"], "approve": ["demo-approver"],
                                     "execute": ["demo-planner"]})
    secrets = load_secrets(None, _DEMO_SECRETS)
    install_log_masking(secrets)
    now = datetime.now(UTC)
    local = now.astimezone(tz).replace(tzinfo=None)
    notice = (local - timedelta(days=10)).isoformat(timespec="minutes")
    arrears_csv = ("account,meter,amount,days_overdue,notice_sent,notice_delivered,notice_method\n"
                   f"DEMO-0001,{cut_meter},312.40,48,{notice},{notice},letter\n"
                   f"DEMO-0002,{safe_meter},95.10,61,{notice},{notice},letter\n")
    rows, _ = imports.parse_arrears(arrears_csv, tz)
    ex_rows, _ = imports.parse_exemptions("account,kind,note\nDEMO-0002,life_support,home oxygen\n", tz)
    async with await psycopg.AsyncConnection.connect(ctx.dsn, autocommit=True) as conn, conn.transaction():
        await imports.apply_arrears(conn, rows, operator="billing", source="demo")
        await imports.apply_exemptions(conn, ex_rows, operator="billing", source="demo")
    frames_before = {a: sum(1 for r in sim.received if r.frame.address == a) for a in (cut_meter, safe_meter)}
    t0 = time.monotonic()
    executor = Executor(ctx.dsn, control, directory, secrets, timezone=settings.timezone, pool_size=2)
    async with executor as ex:
        async with ex.pool.connection() as aconn:
            plan = await ex.planner.plan(aconn, now, operator="demo-planner", dry_run=False,
                                         accounts=["DEMO-0001", "DEMO-0002"], reason="demo arrears run")
            await approve_plan(aconn, control, int(plan.plan_id or 0), "demo-approver", "demo")
        cut = await ex.execute_plan(int(plan.plan_id or 0), "demo-planner")
        cut_open = sim.meters[cut_meter].relay_open
        t_cut = time.monotonic() - t0
        async with ex.pool.connection() as aconn, aconn.transaction():
            pay = [imports.PaymentRow("DEMO-PAY-1", "DEMO-0001", Decimal("312.40"), datetime.now(UTC))]
            await imports.apply_payments(aconn, pay, operator="billing", source="demo")
        t1 = time.monotonic()
        restored = await ex.run_due()
        t_restore = time.monotonic() - t1
    frames_safe = sum(1 for r in sim.received if r.frame.address == safe_meter) - frames_before[safe_meter]
    blocked = next(d for d in plan.decisions if d.account == "DEMO-0002")
    table = Table(title="remote control: arrears run")
    for col in ("account", "meter", "decision", "why / outcome"):
        table.add_column(col)
    cut_state = cut.outcomes[0].state if cut.outcomes else "?"
    table.add_row("DEMO-0001", cut_meter, "cut", f"{cut_state}; relay {'open' if cut_open else 'CLOSED'}")
    table.add_row("DEMO-0002", safe_meter, "not cut", "; ".join(c.message for c in blocked.reasons))
    rec = [o for o in restored.outcomes if o.kind == "reconnect"]
    relay_now = "open" if sim.meters[cut_meter].relay_open else "closed"
    table.add_row("DEMO-0001", cut_meter, "paid -> reconnect", f"{rec[0].state if rec else 'none'}; relay {relay_now}")
    ctx.console.print(table)
    ctx.summary["remote cut (DEMO-0001)"] = f"{cut_state} in {t_cut:.1f} s, relay {'open' if cut_open else 'closed'}"
    ctx.summary["remote cut refused (DEMO-0002)"] = (
        f"{', '.join(c.code for c in blocked.reasons)}; frames to its meter: {frames_safe}")
    rec_state = rec[0].state if rec else "none"
    ctx.summary["reconnect after payment"] = f"{rec_state} in {t_restore:.1f} s, relay {relay_now}"
