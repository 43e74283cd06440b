"""Channel URLs, settings layering (defaults < TOML < env) and exit-code mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from headend.exitcodes import ExitCode, exit_code_for
from headend.settings import load_settings
from protocols.errors import ConfigError, DeviceError, FrameError, NoResponseError, TransportError
from protocols.quantities import QUANTITIES, Kind, get
from protocols.transport.url import ChannelSpec


def test_serial_url_defaults_and_options() -> None:
    s = ChannelSpec.parse("serial:///dev/ttyUSB0")
    assert (s.scheme, s.path, s.baud, s.parity) == ("serial", "/dev/ttyUSB0", 2400, "E")
    s = ChannelSpec.parse("serial:///dev/pts/3?baud=9600&parity=n&timeout=0.5&turnaround=0.05")
    assert (s.baud, s.parity, s.timeout, s.turnaround) == (9600, "N", 0.5, 0.05)
    assert s.char_time() == pytest.approx(10 / 9600)
    assert ChannelSpec.parse("serial:///dev/x").char_time() == pytest.approx(11 / 2400)  # 8E1


def test_tcp_url() -> None:
    s = ChannelSpec.parse("tcp://127.0.0.1:8899?timeout=2")
    assert (s.scheme, s.host, s.port, s.timeout) == ("tcp", "127.0.0.1", 8899, 2.0)
    assert str(s) == "tcp://127.0.0.1:8899"


@pytest.mark.parametrize(
    "url",
    ["udp://1.2.3.4:5", "tcp://127.0.0.1", "serial://", "serial:///dev/x?parity=Q", "serial:///dev/x?bogus=1",
     "serial:///dev/x?baud=fast"],
)
def test_bad_urls_raise_config_error(url: str) -> None:
    with pytest.raises(ConfigError):
        ChannelSpec.parse(url)


def test_settings_layering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "h.toml"
    cfg.write_text('log_level = "DEBUG"\ntimezone = "Europe/Paris"\n[database]\ndsn = "postgresql://file/db"\n')
    monkeypatch.delenv("HEADEND_DATABASE__DSN", raising=False)
    s = load_settings(cfg)
    assert (s.log_level, s.timezone, s.database.dsn) == ("DEBUG", "Europe/Paris", "postgresql://file/db")
    monkeypatch.setenv("HEADEND_DATABASE__DSN", "postgresql://env/db")
    monkeypatch.setenv("HEADEND_LOG_LEVEL", "ERROR")
    s = load_settings(cfg)
    assert (s.log_level, s.database.dsn) == ("ERROR", "postgresql://env/db")


def test_settings_errors_are_clear(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[database]\ndsnn = 'x'\n")
    with pytest.raises(ConfigError, match=r"database\.dsnn"):
        load_settings(cfg)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[database\n")
    with pytest.raises(ConfigError):
        load_settings(broken)


def test_exit_codes_are_distinct_per_failure_kind() -> None:
    assert exit_code_for(NoResponseError("t")) is ExitCode.NO_RESPONSE
    assert exit_code_for(DeviceError("x", code=4)) is ExitCode.ABNORMAL
    assert exit_code_for(FrameError("checksum")) is ExitCode.BAD_FRAME
    assert exit_code_for(TransportError("x")) is ExitCode.TRANSPORT
    assert exit_code_for(ConfigError("x")) is ExitCode.CONFIG
    assert exit_code_for(ValueError("x")) is ExitCode.ERROR
    assert len({int(c) for c in ExitCode}) == len(ExitCode)


def test_quantity_table() -> None:
    assert get("energy.active.import").unit == "kWh"
    assert get("energy.active.import.t3").kind is Kind.REGISTER
    assert get("voltage.b").unit == "V"
    with pytest.raises(KeyError, match="unknown quantity"):
        get("energy.nope")
    assert all(q.code == code for code, q in QUANTITIES.items())
