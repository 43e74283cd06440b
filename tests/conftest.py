"""Test-wide fixtures. Area fixtures live in plugin modules so areas do not edit one file."""

pytest_plugins = [
    "tests.fixtures_db",
    "tests.fixtures_mqtt",
]
