"""Fixtures for the control tests: a DL/T 645 simulator bus over TCP, a migrated database, an executor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from headend.control.config import ControlPolicy, ControlSettings
from headend.control.directory import MeterDirectory, Route
from headend.control.executor import Executor
from headend.control.secrets import SecretStore, load_secrets
from protocols.dlt645.client import Dlt645Client
from simulators.dlt645 import MeterBusSimulator

#: A Tuesday 10:00 in Shanghai: inside business hours, before the cut-off, no holiday.
WORK_TIME = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
PASSWORD = "123456"  # the simulator's default level-2 password
OPERATOR_CODE = "13572468"


def policy(**kw: Any) -> ControlPolicy:
    base: dict[str, Any] = {"timezone": "Asia/Shanghai", "notice_days": 7, "min_days_overdue": 30,
                            "approval_threshold": 3, "max_attempts": 2, "readback_attempts": 2}
    base.update(kw)
    return ControlPolicy(**base)


def control_settings(**kw: Any) -> ControlSettings:
    return ControlSettings(utilities={"default": policy(**kw)},
                           roles={"import": ["alice", "bob"], "plan": ["alice", "bob"], "approve": ["bob", "carol"],
                                  "execute": ["alice", "bob"]})


def secrets_store(password: str = PASSWORD) -> SecretStore:
    return load_secrets(None, {"HEADEND_METER_PASSWORD": password, "HEADEND_OPERATOR_CODE": OPERATOR_CODE})


@dataclass
class Bench:
    sim: MeterBusSimulator
    client: Dlt645Client
    directory: MeterDirectory
    dsn: str

    def executor(self, settings: ControlSettings | None = None, *, now: datetime = WORK_TIME,
                 secrets: SecretStore | None = None, clock: Callable[[], datetime] | None = None) -> Executor:
        return Executor(self.dsn, settings or control_settings(), self.directory, secrets or secrets_store(),
                        clients={"bus-1": self.client}, now=clock or (lambda: now), pool_size=2)


@pytest.fixture
async def bench(fresh_dsn: str) -> AsyncIterator[Bench]:
    async with MeterBusSimulator(6, transport="tcp", seed=3) as sim:
        client = Dlt645Client.from_url(sim.url, timeout=0.3, inter_byte_timeout=0.1, breaker=False)
        async with client:
            directory = MeterDirectory({a: Route(a, "bus-1", "dlt645", sim.url) for a in sim.addresses})
            yield Bench(sim, client, directory, fresh_dsn)


def seed_arrears(dsn: str, rows: list[dict[str, Any]], at: datetime = WORK_TIME) -> None:
    """Accounts in arrears with a notice delivered 10 days before ``at`` (unless given)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for r in rows:
            conn.execute("INSERT INTO control_accounts (account, meter, utility) VALUES (%s, %s, 'default') "
                         "ON CONFLICT (account) DO UPDATE SET meter = EXCLUDED.meter", (r["account"], r["meter"]))
            conn.execute("INSERT INTO arrears (account, amount, days_overdue, as_of) VALUES (%s, %s, %s, %s) "
                         "ON CONFLICT (account) DO UPDATE SET amount = EXCLUDED.amount",
                         (r["account"], r.get("amount", 120.0), r.get("days_overdue", 45),
                          at - timedelta(days=20)))
            delivered = r.get("notice_delivered", at - timedelta(days=10))
            if delivered is not None:
                conn.execute("INSERT INTO notices (account, kind, sent_at, delivered_at, method) "
                             "VALUES (%s, 'notice', %s, %s, 'letter') ON CONFLICT DO NOTHING",
                             (r["account"], delivered, delivered))
            for kind in r.get("exemptions", []):
                conn.execute("INSERT INTO exemptions (account, kind, since) VALUES (%s, %s, '-infinity') "
                             "ON CONFLICT DO NOTHING",
                             (r["account"], kind))
