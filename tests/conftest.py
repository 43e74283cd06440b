"""Test-wide fixtures. Area fixtures live in plugin modules so areas do not edit one file."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest_plugins = [
    "tests.fixtures_db",
    "tests.fixtures_mqtt",
]


@pytest.fixture(autouse=True)
def _no_log_masking_leak() -> Iterator[None]:
    """Secret masking of log records is process-global (installed by any remote-control run,
    including the demo's stage); take it down after every test so other tests see plain logs."""
    yield
    from headend.control.secrets import uninstall_log_masking

    uninstall_log_masking()
