"""The ``headend`` control commands end to end: CSV imports, plan (dry run), two-person approval, execute
with --trace, status, payments -> automatic reconnect, blocked manual disconnect (exit 9); and the
meter password / operator code never appear in any output."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headend.cli import app
from headend.control.secrets import wire_forms
from simulators.dlt645 import MeterBusSimulator
from tests.control.conftest import OPERATOR_CODE, PASSWORD

pytestmark = pytest.mark.timeout(90)


class ThreadedSim:
    """A simulator bus on its own event loop in a thread (the CLI runs asyncio.run in the main thread)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.sim: MeterBusSimulator | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        async with MeterBusSimulator(self.n, transport="tcp", seed=9) as sim:
            self.sim = sim
            self.ready.set()
            await asyncio.get_running_loop().run_in_executor(None, self.stop.wait)

    def __enter__(self) -> MeterBusSimulator:
        self.thread.start()
        assert self.ready.wait(10)
        assert self.sim is not None
        return self.sim

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture
def sim() -> Iterator[MeterBusSimulator]:
    with ThreadedSim(3) as s:
        yield s


def write_config(tmp: Path, dsn: str, sim: MeterBusSimulator) -> Path:
    meters = ", ".join(f'"{a}"' for a in sim.addresses)
    cfg = tmp / "headend.toml"
    cfg.write_text(f"""
timezone = "Asia/Shanghai"
[database]
dsn = "{dsn}"
[[daemon.channels]]
name = "bus-1"
url = "{sim.url}"
meters = [{meters}]
timeout = 0.3
[control.roles]
import = ["billing"]
plan = ["alice", "bob"]
approve = ["bob"]
execute = ["alice"]
[control.utilities.default]
business_start = 00:00:00
business_end = 23:59:59
cutoff = 23:59:59
no_cut_weekends = false
no_cut_holidays = false
no_cut_holiday_eve = false
approval_threshold = 1
""")
    return cfg


def test_cli_end_to_end(tmp_path: Path, fresh_dsn: str, sim: MeterBusSimulator,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADEND_METER_PASSWORD", PASSWORD)
    monkeypatch.setenv("HEADEND_OPERATOR_CODE", OPERATOR_CODE)
    monkeypatch.delenv("HEADEND_OPERATOR", raising=False)
    cfg = write_config(tmp_path, fresh_dsn, sim)
    a = sim.addresses
    (tmp_path / "arrears.csv").write_text(
        "account,meter,amount,days_overdue,notice_sent,notice_delivered,notice_method\n"
        f"C1,{a[0]},230.50,60,2020-01-01T09:00,2020-01-02T09:00,letter\n"
        f"C2,{a[1]},99.00,45,2020-01-01T09:00,2020-01-02T09:00,letter\n"
        f"C3,{a[2]},120.00,45,,,\n"
        "C4,,12.00,abc,,,\n")
    (tmp_path / "exemptions.csv").write_text("account,kind,note\nC2,life_support,oxygen concentrator\n")
    runner = CliRunner()
    outputs: list[str] = []

    def run(*args: str, code: int = 0, operator: str | None = "alice") -> str:
        argv = ["-c", str(cfg), *args] + (["--operator", operator] if operator else [])
        r = runner.invoke(app, argv)
        outputs.append(r.output)
        if "--trace" in args:  # configure_logging leaves its trace handler on a stream CliRunner closes
            tlog = logging.getLogger("headend.trace")
            for h in list(tlog.handlers):
                tlog.removeHandler(h)
            tlog.propagate = True
            tlog.setLevel(logging.NOTSET)
        assert r.exit_code == code, (args, r.exit_code, r.output)
        return r.output

    out = run("arrears", "import", str(tmp_path / "arrears.csv"), "--json", operator="billing", code=10)
    assert json.loads(out)["applied"] == 3 and "line 5" in json.loads(out)["rejected"][0]
    run("arrears", "import", str(tmp_path / "arrears.csv"), code=9, operator="mallory")  # no import role
    run("arrears", "exemptions", str(tmp_path / "exemptions.csv"), operator="billing")
    dry = json.loads(run("control", "plan", "--dry-run", "--json"))
    assert dry["plan"] is None and dry["cut"] == 1
    why = {d["account"]: [r["code"] for r in d["reasons"]] for d in dry["decisions"]}
    assert why == {"C1": [], "C2": ["exemption.life_support"], "C3": ["notice"]}
    assert sim.received == []  # a dry run touches no meter
    human = run("control", "plan", "--dry-run")
    assert "life_support" in human and "1 to cut, 2 not cut" in human
    plan = json.loads(run("control", "plan", "--json", operator="bob"))["plan"]
    run("control", "approve", str(plan), code=9, operator="alice")  # not an approver
    run("control", "execute", str(plan), code=9)  # not approved yet: refused, nothing sent
    run("control", "approve", str(plan), operator="bob")
    out = run("--trace", "control", "execute", str(plan), "--json")
    res = json.loads(out[out.index("{"):])
    assert "68 1c 10 35 ** ** ** ** ** ** **" in out  # the --trace dump of the trip, secrets masked
    assert res["states"] == {"confirmed": 1} and sim.meters[a[0]].relay_open
    assert {r.frame.address for r in sim.received} == {a[0]}
    run("control", "disconnect", "--meter", a[1], "--reason", "safety inspection", code=9)  # life support
    assert {r.frame.address for r in sim.received} == {a[0]}
    status = json.loads(run("control", "status", "--json", operator=None))
    assert {(c["kind"], c["state"]) for c in status["counts"]} == {("disconnect", "confirmed"),
                                                                  ("disconnect", "cancelled")}
    (tmp_path / "payments.csv").write_text("reference,account,amount,paid_at\nR1,C1,230.50,2030-01-01T10:00\n")
    pay = json.loads(run("payments", "import", str(tmp_path / "payments.csv"), "--json", operator="billing"))
    assert pay["cleared_accounts"] == ["C1"] and len(pay["reconnect_commands"]) == 1
    assert [o["state"] for o in pay["reconnect_outcomes"]] == ["confirmed"]
    assert not sim.meters[a[0]].relay_open  # restored automatically
    run("payments", "import", str(tmp_path / "payments.csv"), operator="billing")  # idempotent
    assert sum(1 for r in sim.received if r.frame.function == 0x1C) == 2
    run("control", "rules", operator=None)
    trail = json.loads(run("control", "audit", "--meter", a[0], "--json", operator=None))
    assert [r["action"] for r in trail][:4] == ["command.approve", "command.send", "command.confirm",
                                                "command.create.reconnect"]
    assert trail[2]["tx_frame"].count("**") == 8 and trail[2]["approver"] == "bob"
    plan2 = json.loads(run("control", "plan", "--json", operator="bob"))["plan"]  # nothing left to cut
    assert json.loads(run("control", "cancel", str(plan2), "--reason", "test", "--json", operator="bob")) == {
        "cancelled": []}
    run("control", "cancel", str(plan2), "--reason", "test", code=9)  # alice may not approve/cancel
    everything = "\n".join(outputs).lower()
    assert "68 1c 10" not in everything or "** ** **" in everything
    for secret in (PASSWORD, OPERATOR_CODE):
        for form in wire_forms(secret):
            assert form.lower() not in everything, form


@pytest.mark.parametrize("argv", [
    ["control", "--help"], ["control", "plan", "--help"], ["control", "approve", "--help"],
    ["control", "execute", "--help"], ["control", "disconnect", "--help"], ["control", "reconnect", "--help"],
    ["control", "run-due", "--help"], ["control", "status", "--help"], ["control", "rules", "--help"],
    ["control", "cancel", "--help"], ["control", "audit", "--help"],
    ["arrears", "import", "--help"], ["arrears", "exemptions", "--help"], ["arrears", "list", "--help"],
    ["payments", "import", "--help"],
])
def test_help(argv: list[str]) -> None:
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 0 and "Usage" in r.output


def test_operator_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEADEND_OPERATOR", raising=False)
    r = CliRunner().invoke(app, ["control", "plan", "--dry-run"])
    assert r.exit_code == 9 and "operator" in r.output


def test_import_from_sql_table(tmp_path: Path, fresh_dsn: str, sim: MeterBusSimulator) -> None:
    import psycopg

    cfg = write_config(tmp_path, fresh_dsn, sim)
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA billing")
        conn.execute("CREATE TABLE billing.overdue (account text, meter text, amount numeric, days_overdue int, "
                     "notice_delivered timestamptz, notice_method text)")
        conn.execute("INSERT INTO billing.overdue VALUES ('T1', %s, 88.5, 40, now() - interval '9 days', 'sms'), "
                     "('T2', NULL, 12, 70, NULL, NULL)", (sim.addresses[0],))
        conn.execute("CREATE VIEW billing.paid AS SELECT 'PAY-9'::text AS reference, 'T1'::text AS account, "
                     "88.5::numeric AS amount, now() AS paid_at")
    r = CliRunner().invoke(app, ["-c", str(cfg), "arrears", "import", "--table", "billing.overdue", "--json",
                                 "--operator", "billing"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["applied"] == 2
    r = CliRunner().invoke(app, ["-c", str(cfg), "arrears", "list", "--json"])
    rows = {x["account"]: x for x in json.loads(r.output)}
    assert rows["T1"]["meter"] == sim.addresses[0] and rows["T1"]["notices"] == 1 and rows["T2"]["meter"] is None
    r = CliRunner().invoke(app, ["-c", str(cfg), "payments", "import", "--table", "billing.paid", "--json",
                                 "--operator", "billing"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["cleared_accounts"] == ["T1"]
