"""Execution against the DL/T 645 simulator over TCP and a real PostgreSQL: the simulator's
received frames are the oracle for what reached the meters."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from headend.control import imports
from headend.control.planner import approve_plan
from headend.control.roles import PermissionDenied
from headend.control.secrets import wire_forms
from headend.control.store import list_commands
from headend.control.transitions import Event
from protocols.dlt645.frame import Frame
from tests.control.conftest import (
    OPERATOR_CODE,
    PASSWORD,
    WORK_TIME,
    Bench,
    control_settings,
    secrets_store,
    seed_arrears,
)

pytestmark = pytest.mark.timeout(60)


def control_frames(bench: Bench, meter: str | None = None) -> list[Frame]:
    return [r.frame for r in bench.sim.received if r.frame.function == 0x1C and (meter is None or
                                                                              r.frame.address == meter)]


def frames_to(bench: Bench, meter: str) -> int:
    return sum(1 for r in bench.sim.received if r.frame.address == meter)


def rows(dsn: str, q: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(q, params)
        return cur.fetchall() if cur.description else []


async def plan_and_approve(ex: Any, planner_op: str = "alice", approver: str = "bob") -> int:
    async with ex.pool.connection() as conn:
        res = await ex.planner.plan(conn, WORK_TIME, operator=planner_op, dry_run=False)
        assert res.plan_id is not None
        await approve_plan(conn, ex.settings, res.plan_id, approver, "monthly arrears run")
        return int(res.plan_id)


async def test_plan_execute_confirms_blocks_and_never_sends_twice(bench: Bench) -> None:
    m = bench.sim.addresses
    seed_arrears(bench.dsn, [{"account": "A0", "meter": m[0], "exemptions": ["life_support"]},
                             {"account": "A1", "meter": m[1], "notice_delivered": None},
                             {"account": "A2", "meter": m[2]}, {"account": "A3", "meter": m[3]}])
    async with bench.executor() as ex:
        plan = await plan_and_approve(ex)
        report = await ex.execute_plan(plan, "alice")
        assert report.count("confirmed") == 2
        # blocked accounts: not a single frame reached their meters
        assert frames_to(bench, m[0]) == 0 and frames_to(bench, m[1]) == 0
        assert [bench.sim.meters[a].relay_open for a in m[:4]] == [False, False, True, True]
        n = len(bench.sim.received)
        again = await ex.execute_plan(plan, "alice")
        assert again.count("confirmed") == 2 and len(bench.sim.received) == n  # idempotent: nothing re-sent
        async with ex.pool.connection() as conn:  # planning again does not queue a second cut either
            res = await ex.planner.plan(conn, WORK_TIME, operator="alice", dry_run=False)
            assert res.commands == []
            assert {c.code for d in res.decisions if d.meter in m[2:4] for c in d.reasons} == {"in_progress"}
    audit = rows(bench.dsn, "SELECT operator, approver, reason, tx_frame, rx_frame FROM control_audit "
                            "WHERE action = 'command.confirm' ORDER BY id")
    assert len(audit) == 2
    for operator, approver, reason, tx, rx in audit:
        assert (operator, approver) == ("alice", "bob") and reason
        assert "** ** **" in tx and rx.startswith("68")
        assert not any(f in tx for f in wire_forms(PASSWORD) | wire_forms(OPERATOR_CODE))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        rows(bench.dsn, "UPDATE control_audit SET operator = 'x'")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        rows(bench.dsn, "DELETE FROM control_audit")


async def test_large_plan_needs_a_second_operator(bench: Bench) -> None:
    seed_arrears(bench.dsn, [{"account": f"A{i}", "meter": a} for i, a in enumerate(bench.sim.addresses)])
    async with bench.executor() as ex, ex.pool.connection() as conn:
        res = await ex.planner.plan(conn, WORK_TIME, operator="bob", dry_run=False)
        assert res.needs_second and res.n_cut == 6
        with pytest.raises(PermissionDenied, match="second operator"):
            await approve_plan(conn, ex.settings, int(res.plan_id or 0), "bob")
        with pytest.raises(PermissionDenied):
            await approve_plan(conn, ex.settings, int(res.plan_id or 0), "mallory")
        assert await approve_plan(conn, ex.settings, int(res.plan_id or 0), "carol") == 6
    assert bench.sim.received == []


async def test_interlock_rechecked_at_send_time(bench: Bench) -> None:
    m = bench.sim.addresses[0]
    seed_arrears(bench.dsn, [{"account": "A0", "meter": m}])
    async with bench.executor() as ex:
        plan = await plan_and_approve(ex)
        seed_arrears(bench.dsn, [{"account": "A0", "meter": m, "exemptions": ["dispute"]}])  # filed meanwhile
        report = await ex.execute_plan(plan, "alice")
    assert report.count("cancelled") == 1 and bench.sim.received == []
    assert "exemption dispute" in rows(bench.dsn, "SELECT reason FROM control_audit WHERE action = "
                                                  "'command.block'")[0][0]


async def test_silent_meter_ends_unknown_then_escalated_with_work_order(bench: Bench) -> None:
    m = bench.sim.addresses[0]
    bench.sim.set_fault(m, "silent")
    seed_arrears(bench.dsn, [{"account": "A0", "meter": m}])
    async with bench.executor() as ex:
        report = await ex.execute_plan(await plan_and_approve(ex), "alice")
    assert [(o.state, o.attempts) for o in report.outcomes] == [("escalated", 1)]  # no blind resend
    assert len(control_frames(bench, m)) == 1
    wo = rows(bench.dsn, "SELECT type, status FROM work_orders WHERE meter = %s", m)
    assert wo == [("disconnect_visit", "open")]
    states = [r[0] for r in rows(bench.dsn, "SELECT to_state FROM control_audit WHERE command_id IS NOT NULL "
                                            "ORDER BY id")]
    assert states == ["approved", "sent", "unknown", "escalated"]


async def test_password_error_fails_without_retry_and_raises_work_order(bench: Bench) -> None:
    m = bench.sim.addresses[1]
    seed_arrears(bench.dsn, [{"account": "A1", "meter": m}])
    async with bench.executor(secrets=secrets_store("999999")) as ex:
        report = await ex.execute_plan(await plan_and_approve(ex), "alice")
    assert [(o.state, o.attempts) for o in report.outcomes] == [("escalated", 1)]
    assert not bench.sim.meters[m].relay_open
    assert "password" in rows(bench.dsn, "SELECT last_error FROM control_commands")[0][0]
    assert rows(bench.dsn, "SELECT type FROM work_orders WHERE meter = %s", m) == [("disconnect_visit",)]
    refuse = rows(bench.dsn, "SELECT rx_frame FROM control_audit WHERE action = 'command.refuse'")
    assert refuse and refuse[0][0].split()[8] == "dc"  # abnormal reply to 1C recorded


async def test_wrong_readback_retries_once_then_escalates(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    m = bench.sim.addresses[2]
    meter = bench.sim.meters[m]
    monkeypatch.setattr(meter, "_apply_control", lambda command, operator: None)  # welded relay: accepts, stays
    seed_arrears(bench.dsn, [{"account": "A2", "meter": m}])
    async with bench.executor() as ex:
        report = await ex.execute_plan(await plan_and_approve(ex), "alice")
    assert [(o.state, o.attempts) for o in report.outcomes] == [("escalated", 2)]
    assert len(control_frames(bench, m)) == 2 and not meter.relay_open
    assert rows(bench.dsn, "SELECT relay_state FROM control_commands") == [("closed",)]
    assert rows(bench.dsn, "SELECT count(*) FROM work_orders WHERE meter = %s", m) == [(1,)]


async def test_reconnect_after_payment_within_window_never_blocked(bench: Bench) -> None:
    m = bench.sim.addresses[3]
    seed_arrears(bench.dsn, [{"account": "A3", "meter": m}])
    async with bench.executor() as ex:
        await ex.execute_plan(await plan_and_approve(ex), "alice")
        assert bench.sim.meters[m].relay_open
        paid_at = WORK_TIME + timedelta(hours=5)
        async with ex.pool.connection() as conn, conn.transaction():
            n, cleared = await imports.apply_payments(conn, [imports.PaymentRow("P1", "A3", Decimal("120"), paid_at)],
                                                      operator="billing")
        assert (n, cleared) == (1, ["A3"])
    night = WORK_TIME + timedelta(hours=13)  # 23:00 local: no cut would be allowed now
    async with bench.executor(now=night) as ex:
        report = await ex.run_due()
        assert [(o.kind, o.state) for o in report.outcomes] == [("reconnect", "confirmed")]
        assert (await ex.run_due()).outcomes == []  # nothing left, nothing re-sent
    assert not bench.sim.meters[m].relay_open
    (deadline, confirmed, approver), = rows(bench.dsn, "SELECT deadline_at, confirmed_at, approver FROM "
                                                       "control_commands WHERE kind = 'reconnect'")
    assert deadline == paid_at + timedelta(hours=24) and approver == "policy:auto-reconnect"
    assert paid_at < confirmed <= deadline
    assert rows(bench.dsn, "SELECT state FROM control_commands WHERE kind = 'disconnect'") == [("superseded",)]
    assert [f.data[8] for f in control_frames(bench, m)] == [0x1A, 0x1C]  # trip, then direct close


async def test_close_permit_policy_arms_the_relay(bench: Bench) -> None:
    m = bench.sim.addresses[4]
    seed_arrears(bench.dsn, [{"account": "A4", "meter": m}])
    async with bench.executor(control_settings(reconnect_mode="close_permit")) as ex:
        await ex.execute_plan(await plan_and_approve(ex), "alice")
        rows(bench.dsn, "UPDATE arrears SET cleared_at = now()")
        report = await ex.run_due()
    assert [o.state for o in report.outcomes] == ["confirmed"]
    assert bench.sim.meters[m].relay_open  # waiting for the customer
    assert bench.sim.meters[m].press_button() and not bench.sim.meters[m].relay_open


async def test_restart_mid_batch_resumes_instead_of_repeating(bench: Bench) -> None:
    m = bench.sim.addresses[:4]
    seed_arrears(bench.dsn, [{"account": f"A{i}", "meter": a} for i, a in enumerate(m)])
    async with bench.executor() as ex:
        plan = await plan_and_approve(ex, approver="carol")
        # A crash mid-batch: command 1 was recorded as sent and its frame went out; command 2 was
        # recorded as sent but the process died before the frame left; 3 and 4 never started.
        async with ex.pool.connection() as conn:
            cmds = await list_commands(conn, "plan_id = %s", (plan,))
            from headend.control import store

            for cmd in cmds[:2]:
                async with conn.transaction():
                    await store.transition(conn, cmd, Event.SEND, operator="alice", attempts=1)
        from protocols.client import RelayCommand, RelayRequest

        creds = secrets_store().credentials(m[0], "alice")
        from datetime import UTC, datetime

        await bench.client.relay_command(RelayRequest(m[0], RelayCommand.TRIP, datetime.now(UTC) + timedelta(
            minutes=5), creds, "alice"))
    async with bench.executor() as ex:  # the restarted executor
        report = await ex.execute_plan(plan, "alice")
    assert sorted(o.state for o in report.outcomes) == ["confirmed"] * 4
    assert [len(control_frames(bench, a)) for a in m] == [1, 1, 1, 1]  # nobody got a second trip
    assert all(bench.sim.meters[a].relay_open for a in m)
    trail = rows(bench.dsn, "SELECT command_id, action FROM control_audit WHERE command_id = %s ORDER BY id",
                 cmds[1].id)
    assert [a for _, a in trail] == ["command.approve", "command.send", "command.no_reply", "command.retry",
                                     "command.confirm"]


async def test_secrets_absent_from_logs_and_audit(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    from headend.control.secrets import install_log_masking

    caplog.set_level(5)  # TRACE: every frame, as --trace would show it
    store_ = secrets_store()
    install_log_masking(store_)
    m = bench.sim.addresses[5]
    bench.sim.set_fault(bench.sim.addresses[0], "silent")
    seed_arrears(bench.dsn, [{"account": "A5", "meter": m}, {"account": "A0", "meter": bench.sim.addresses[0]}])
    async with bench.executor(secrets=store_) as ex:
        await ex.execute_plan(await plan_and_approve(ex), "alice")
    assert bench.sim.meters[m].relay_open
    logged = caplog.text.lower()
    assert " 1c 10 35 ** ** **" in logged  # the trace dump of the trip is there, masked
    dump = " ".join(str(r) for r in rows(bench.dsn, "SELECT * FROM control_audit")).lower() + " " + " ".join(
        str(r) for r in rows(bench.dsn, "SELECT * FROM control_commands")).lower()
    for secret in (PASSWORD, OPERATOR_CODE):
        for form in wire_forms(secret):
            assert form.lower() not in logged, form
            assert form.lower() not in dump, form
    _ = logging


async def test_cancelled_mid_batch_then_restarted_sends_each_trip_once(fresh_dsn: str) -> None:
    """A real interruption: the executor task is cancelled while frames are on a slow line, then a new
    executor (a restarted process) runs the same plan. Every meter ends tripped by exactly one frame."""
    import asyncio

    from headend.control.directory import MeterDirectory, Route
    from headend.control.executor import Executor
    from protocols.dlt645.client import Dlt645Client
    from simulators.dlt645 import MeterBusSimulator

    async with MeterBusSimulator(6, transport="tcp", seed=6, line_time=True, baud=2400) as sim:
        seed_arrears(fresh_dsn, [{"account": f"A{i}", "meter": a} for i, a in enumerate(sim.addresses)])
        directory = MeterDirectory({a: Route(a, "bus-1", "dlt645", sim.url) for a in sim.addresses})

        def make(client: Dlt645Client) -> Executor:
            return Executor(fresh_dsn, control_settings(), directory, secrets_store(), clients={"bus-1": client},
                            now=lambda: WORK_TIME, pool_size=2)

        async with Dlt645Client.from_url(sim.url, timeout=1.0, breaker=False) as client, make(client) as ex:
            plan = await plan_and_approve(ex, approver="carol")
            task = asyncio.create_task(ex.execute_plan(plan, "alice"))
            while sum(1 for r in sim.received if r.frame.function == 0x1C) < 3:  # noqa: ASYNC110 (polls the sim)
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # somewhere inside the third command's exchange
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        done_before = sum(1 for a in sim.addresses if sim.meters[a].relay_open)
        assert 2 <= done_before < 6
        async with Dlt645Client.from_url(sim.url, timeout=1.0, breaker=False) as client, make(client) as ex:
            report = await ex.execute_plan(plan, "alice")
        assert all(sim.meters[a].relay_open for a in sim.addresses)
        assert [len([r for r in sim.received if r.frame.function == 0x1C and r.frame.address == a])
                for a in sim.addresses] == [1] * 6
        assert {o.state for o in report.outcomes} == {"confirmed"}


async def test_store_assets_give_the_meter_and_keep_power_blocks(bench: Bench) -> None:
    """Accounts known only to the store's asset tables: the meter comes from the current installation,
    and the account's keep-power flag (保电) blocks the cut."""
    m = bench.sim.addresses
    with psycopg.connect(bench.dsn, autocommit=True) as conn:
        cust = conn.execute("INSERT INTO customers (customer_no) VALUES ('C-1') RETURNING id").fetchone()[0]
        for i, keep in ((0, False), (1, True)):
            acc = conn.execute("INSERT INTO accounts (account_no, customer_id, keep_power) VALUES (%s, %s, %s) "
                               "RETURNING id", (f"S{i}", cust, keep)).fetchone()[0]
            sp = conn.execute("INSERT INTO service_points (sp_no, account_id) VALUES (%s, %s) RETURNING id",
                              (f"SP{i}", acc)).fetchone()[0]
            conn.execute("INSERT INTO meters (address) VALUES (%s) ON CONFLICT DO NOTHING", (m[i],))
            conn.execute("INSERT INTO meter_installations (meter, service_point_id, installed_at) "
                         "VALUES (%s, %s, now() - interval '1 year')", (m[i], sp))
            conn.execute("INSERT INTO arrears (account, amount, days_overdue, as_of) VALUES (%s, 99, 50, %s)",
                         (f"S{i}", WORK_TIME - timedelta(days=20)))
            conn.execute("INSERT INTO notices (account, kind, delivered_at, method) VALUES (%s, 'notice', %s, "
                         "'letter')", (f"S{i}", WORK_TIME - timedelta(days=9)))
    async with bench.executor() as ex, ex.pool.connection() as conn:
        res = await ex.planner.plan(conn, WORK_TIME, operator="alice", dry_run=True)
    by = {d.account: d for d in res.decisions}
    assert by["S0"].cut and by["S0"].meter == m[0]
    assert not by["S1"].cut and [c.code for c in by["S1"].reasons] == ["exemption.keep_power"]


async def test_manual_disconnect_and_reconnect(bench: Bench) -> None:
    m = bench.sim.addresses[2]
    async with bench.executor() as ex:
        cid = await ex.create_command(m, "disconnect", operator="alice", reason="customer moved out")
        with pytest.raises(PermissionDenied, match="already has disconnect command"):
            await ex.create_command(m, "disconnect", operator="bob", reason="twice")
        with pytest.raises(PermissionDenied):
            await ex.create_command(m, "disconnect", operator="carol", reason="no execute role")
        assert [o.state for o in (await ex.execute_ids([cid], "alice")).outcomes] == ["confirmed"]
        assert bench.sim.meters[m].relay_open
        rid = await ex.create_command(m, "reconnect", operator="bob", reason="new tenant")
        assert [o.state for o in (await ex.execute_ids([rid], "bob")).outcomes] == ["confirmed"]
    assert not bench.sim.meters[m].relay_open
    assert rows(bench.dsn, "SELECT kind, state, operator, approver, reason FROM control_commands ORDER BY id") == [
        ("disconnect", "superseded", "alice", "alice", "customer moved out"),
        ("reconnect", "confirmed", "bob", "bob", "new tenant")]


async def test_field_order_completion_closes_the_command_and_allows_reconnect(bench: Bench) -> None:
    m = bench.sim.addresses[0]
    bench.sim.set_fault(m, "silent")
    seed_arrears(bench.dsn, [{"account": "A0", "meter": m}])
    async with bench.executor() as ex:
        await ex.execute_plan(await plan_and_approve(ex), "alice")
        (wo,), = rows(bench.dsn, "SELECT work_order_id FROM control_commands")
        from mdm.workorders import complete

        with psycopg.connect(bench.dsn) as conn:
            complete(conn, wo, operator="crew-7", outcome={"relay": "open", "finding": "cut at the box"})
            conn.commit()
        bench.sim.clear_fault(m)
        bench.sim.meters[m].relay_open = True  # the crew opened it on site
        await ex.run_due()
        assert rows(bench.dsn, "SELECT state, relay_state FROM control_commands") == [("confirmed", "open")]
        trail = rows(bench.dsn, "SELECT operator, reason FROM control_audit WHERE action = 'command.field_done'")
        assert trail == [("crew-7", f"field work order {wo} completed")]
        rows(bench.dsn, "UPDATE arrears SET cleared_at = now()")
        report = await ex.run_due()
    assert [(o.kind, o.state) for o in report.outcomes] == [("reconnect", "confirmed")]
    assert not bench.sim.meters[m].relay_open


async def test_cancelled_plan_sends_nothing(bench: Bench) -> None:
    from headend.control.planner import cancel

    seed_arrears(bench.dsn, [{"account": "A0", "meter": bench.sim.addresses[0]},
                             {"account": "A1", "meter": bench.sim.addresses[1]}])
    async with bench.executor() as ex:
        plan = await plan_and_approve(ex)
        async with ex.pool.connection() as conn:
            assert len(await cancel(conn, ex.settings, "bob", "storm warning", plan_id=plan)) == 2
        with pytest.raises(PermissionDenied):
            await ex.execute_plan(plan, "alice")
    assert bench.sim.received == []
    assert rows(bench.dsn, "SELECT DISTINCT state FROM control_commands") == [("cancelled",)]


async def test_payment_dated_before_the_arrears_import_still_clears(bench: Bench) -> None:
    """Billing's arrears snapshot is imported at 10:00; the customer paid at 09:00 and the payment file
    arrives at 11:00: the payment is news to the arrears figure and must clear it."""
    seed_arrears(bench.dsn, [{"account": "A0", "meter": bench.sim.addresses[0]}])
    rows(bench.dsn, "UPDATE arrears SET as_of = now(), imported_at = now()")
    async with bench.executor() as ex, ex.pool.connection() as conn, conn.transaction():
        from datetime import UTC, datetime

        pay = [imports.PaymentRow("EARLY", "A0", Decimal("120"), datetime.now(UTC) - timedelta(hours=1))]
        assert (await imports.apply_payments(conn, pay, operator="billing"))[1] == ["A0"]
        # an old payment, imported before this arrears figure, does not count
        rows(bench.dsn, "INSERT INTO arrears (account, amount, days_overdue) VALUES ('B0', 50, 40)")
    rows(bench.dsn, "INSERT INTO payments (reference, account, amount, paid_at, imported_at) VALUES "
                    "('OLD', 'B0', 50, now() - interval '40 days', now() - interval '39 days')")
    async with bench.executor() as ex, ex.pool.connection() as conn, conn.transaction():
        new = [imports.PaymentRow("NEW", "B0", Decimal("1"), datetime.now(UTC))]
        assert (await imports.apply_payments(conn, new, operator="billing"))[1] == []


async def test_two_executors_at_once_send_each_trip_once(bench: Bench) -> None:
    import asyncio

    seed_arrears(bench.dsn, [{"account": f"A{i}", "meter": a} for i, a in enumerate(bench.sim.addresses)])
    async with bench.executor() as ex1, bench.executor() as ex2:
        plan = await plan_and_approve(ex1, approver="carol")
        r1, r2 = await asyncio.gather(ex1.execute_plan(plan, "alice"), ex2.execute_plan(plan, "bob"))
        r3 = await ex2.execute_plan(plan, "bob")  # and once more afterwards
    assert [len(control_frames(bench, a)) for a in bench.sim.addresses] == [1] * 6
    assert all(o.state == "confirmed" for o in r1.outcomes + r2.outcomes + r3.outcomes)
    assert len({o.command_id for o in r1.outcomes + r2.outcomes}) == 6


async def test_daily_bus_limit_rechecked_at_send_time(bench: Bench) -> None:
    """Planned under a generous limit, executed after the utility lowered it to 2 cuts per bus per day."""
    seed_arrears(bench.dsn, [{"account": f"A{i}", "meter": a} for i, a in enumerate(bench.sim.addresses[:4])])
    async with bench.executor() as ex:
        plan = await plan_and_approve(ex, approver="carol")
    async with bench.executor(control_settings(max_per_bus_day=2)) as ex:
        report = await ex.execute_plan(plan, "alice")
    assert sorted(o.state for o in report.outcomes) == ["cancelled", "cancelled", "confirmed", "confirmed"]
    assert len(control_frames(bench)) == 2
    assert rows(bench.dsn, "SELECT count(*) FROM control_audit WHERE action = 'command.block' "
                           "AND reason LIKE '%%cuts today (limit 2)%%'") == [(2,)]
