"""Property over rule and input combinations, against the simulator: a blocked account never gets a
frame (the simulator's received frames are the oracle), and a cut account ends with its relay open."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headend.control.directory import MeterDirectory, Route
from headend.control.executor import Executor
from headend.control.planner import approve_plan
from headend.control.rules import AccountState, Exemption, Notice
from protocols.dlt645.client import Dlt645Client
from simulators.dlt645 import MeterBusSimulator
from tests.control.conftest import control_settings, secrets_store
from tests.control.test_rules import oracle

SH = ZoneInfo("Asia/Shanghai")
TIMES = [datetime(2026, 11, 24, 10, 0, tzinfo=SH),  # Tuesday morning
         datetime(2026, 11, 24, 15, 0, tzinfo=SH),  # after the 14:00 cut-off
         datetime(2026, 11, 28, 10, 0, tzinfo=SH),  # Saturday
         datetime(2026, 11, 24, 7, 0, tzinfo=SH)]  # before business hours
KINDS = [None, None, "medical", "life_support", "critical", "keep_power", "dispute", "payment_plan"]

account_st = st.tuples(
    st.sampled_from(KINDS),  # exemption
    st.sampled_from([None, 2.0, 10.0]),  # notice age in days (None: no notice)
    st.sampled_from([0.0, 80.0]),  # amount
    st.sampled_from([10, 45]),  # days overdue
)


async def _scenario(dsn: str, accounts: list[tuple[str | None, float | None, float, int]], at: datetime,
                    external: bool) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for t in ("control_commands", "control_plans", "arrears", "notices", "exemptions", "control_accounts"):
            conn.execute(f"DELETE FROM {t}")
    async with MeterBusSimulator(len(accounts), transport="tcp", seed=5) as sim:
        addrs = sim.addresses
        states = []
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i, (kind, age, amount, days) in enumerate(accounts):
                acc = f"P{i}"
                conn.execute("INSERT INTO control_accounts (account, meter) VALUES (%s, %s)", (acc, addrs[i]))
                conn.execute("INSERT INTO arrears (account, amount, days_overdue, as_of) VALUES (%s, %s, %s, %s)",
                             (acc, amount, days, at - timedelta(days=30)))
                notices: tuple[Notice, ...] = ()
                if age is not None:
                    conn.execute("INSERT INTO notices (account, kind, delivered_at, method) VALUES "
                                 "(%s, 'notice', %s, 'letter')", (acc, at - timedelta(days=age)))
                    notices = (Notice("notice", at - timedelta(days=age), "letter"),)
                exemptions: tuple[Exemption, ...] = ()
                if kind is not None:
                    conn.execute("INSERT INTO exemptions (account, kind, since) VALUES (%s, %s, '-infinity')",
                                 (acc, kind))
                    exemptions = (Exemption(kind),)
                states.append(AccountState(acc, addrs[i], amount, days, notices=notices, exemptions=exemptions))
        settings_ = control_settings(approval_threshold=100)
        blocked_by_hook = {"P0"} if external else set()

        def weather(accounts: object, when: datetime) -> dict[str, str]:
            return {a: "forecast low -12 C" for a in blocked_by_hook}

        client = Dlt645Client.from_url(sim.url, timeout=0.3, inter_byte_timeout=0.1, breaker=False)
        async with client:
            directory = MeterDirectory({a: Route(a, "bus-1", "dlt645", sim.url) for a in addrs})
            ex = Executor(dsn, settings_, directory, secrets_store(), clients={"bus-1": client},
                          now=lambda: at.astimezone(UTC), hooks=[weather], pool_size=2)
            async with ex:
                async with ex.pool.connection() as aconn:
                    res = await ex.planner.plan(aconn, at, operator="alice", dry_run=False)
                    await approve_plan(aconn, settings_, int(res.plan_id or 0), "bob")
                await ex.execute_plan(int(res.plan_id or 0), "alice")
        policy = settings_.policy(None)
        for s, d in zip(states, sorted(res.decisions, key=lambda d: d.account), strict=True):
            expected = oracle(s, at, policy.model_copy(update={"timezone": "Asia/Shanghai"}),
                              ["x"] if s.account in blocked_by_hook else [])
            assert s.meter is not None
            got = [r for r in sim.received if r.frame.address == s.meter]
            assert d.cut == expected, d.explain()
            if d.cut:
                assert sim.meters[s.meter].relay_open, d.explain()
                assert sum(1 for r in got if r.frame.function == 0x1C) == 1
            else:
                assert got == [], f"{s.account} was blocked ({d.explain()}) but its meter got {len(got)} frames"
                assert not sim.meters[s.meter].relay_open


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(account_st, min_size=2, max_size=5), st.sampled_from(TIMES), st.booleans())
def test_blocked_accounts_never_get_a_frame(fresh_dsn: str, accounts: list[tuple[str | None, float | None,
                                                                               float, int]],
                                            at: datetime, external: bool) -> None:
    asyncio.run(_scenario(fresh_dsn, accounts, at, external))
