"""ruff and mypy are part of the suite: a lint or type error fails CI like a failing test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["headend", "protocols", "mdm", "simulators"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_clean() -> None:
    r = _run("ruff", "check", *PACKAGES, "tests", "bench")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_clean() -> None:
    r = _run("mypy", *PACKAGES)
    assert r.returncode == 0, r.stdout + r.stderr
