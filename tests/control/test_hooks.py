"""External block hooks (e.g. a weather forecast): a Python callable or a command speaking JSON; fail safe."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from headend.control.planner import run_external_blocks
from headend.control.rules import AccountState

AT = datetime(2026, 11, 24, 2, tzinfo=UTC)
ACCS = [AccountState("A1", "000000000001", 100.0, 40, bus="b1"), AccountState("A2", "000000000002", 100.0, 40)]


def cold_snap(accounts: list[dict[str, object]], at: datetime) -> dict[str, str]:
    return {str(a["account"]): "forecast low -15 C within 24 h" for a in accounts if a["bus"] == "b1"}


async def test_python_hook_and_async_hook() -> None:
    async def regulator(accounts: list[dict[str, object]], at: datetime) -> dict[str, list[str]]:
        return {"A2": ["regulator moratorium"]}

    out = await run_external_blocks([cold_snap, regulator, "tests.control.test_hooks:cold_snap"], ACCS, AT)
    assert out == {"A1": ["forecast low -15 C within 24 h"] * 2, "A2": ["regulator moratorium"]}


async def test_command_hook_reads_json_from_stdin(tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "weather.py"
    script.write_text("import json, sys\nreq = json.load(sys.stdin)\n"
                      "print(json.dumps({'blocked': {a['account']: 'heat wave' for a in req['accounts']"
                      " if a['meter'].endswith('2')}}))\n")
    out = await run_external_blocks([f"cmd:{sys.executable} {script}"], ACCS, AT)
    assert out == {"A2": ["heat wave"]}


async def test_failing_hook_blocks_everyone() -> None:
    out = await run_external_blocks([f"cmd:{sys.executable} -c 'import sys; sys.exit(3)'",
                                     "no_such_module_xyz:hook"], ACCS, AT)
    assert set(out) == {"A1", "A2"}
    assert all(len(v) == 2 and all("failed" in r for r in v) for v in out.values())
