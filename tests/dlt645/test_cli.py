"""``headend read`` / ``probe`` / ``sim`` against a simulated bus running in a background thread."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from headend.cli import app
from headend.exitcodes import ExitCode
from simulators.dlt645 import MeterBusSimulator

runner = CliRunner()


class ThreadedSim:
    """A simulator on its own event loop in a thread, so the CLI can call asyncio.run()."""

    def __init__(self, **kw: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.sim = MeterBusSimulator(**kw)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> MeterBusSimulator:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.sim.start(), self.loop).result(5)
        return self.sim

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def bus_url() -> Iterator[str]:
    with ThreadedSim(meters=3, transport="tcp", faults="000000000003:silent") as sim:
        yield sim.url + "?timeout=0.3"


@pytest.fixture(scope="module")
def single_url() -> Iterator[str]:
    with ThreadedSim(addresses=["202401010042"], transport="pty") as sim:
        yield sim.url + "&timeout=0.3"


def test_read_json_dis_and_quantities(bus_url: str) -> None:
    r = runner.invoke(app, ["read", "000000000001", "00010000", "0201FF00", "energy.active.import", "--port", bus_url,
                            "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    items = doc["items"]
    assert doc["meter"] == "000000000001" and [i["item"] for i in items] == ["00010000", "0201FF00",
                                                                           "energy.active.import"]
    assert items[0]["unit"] == "kWh" and items[0]["value"] > 1000
    assert len(items[1]["values"]) == 3
    assert items[2]["value"] == pytest.approx(items[0]["value"], abs=0.05)


def test_read_table(bus_url: str) -> None:
    r = runner.invoke(app, ["read", "000000000002", "voltage.a", "0400010C", "04000503", "--port", bus_url])
    assert r.exit_code == 0, r.output
    assert "voltage" in r.stdout and " V " in r.stdout
    assert re.search(r"│ \d{3}\.\d +│ V", r.stdout)  # XXX.X V as the meter sends it (219.0, not 219)
    assert re.search(r"meter 000000000002, read \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", r.stdout)
    assert re.search(r"│ \d{4}-\d\d-\d\d \d\d:\d\d:\d\d +│", r.stdout)  # the meter's clock, no ISO 'T'


@pytest.mark.parametrize(
    ("args", "code", "word"),
    [
        (["000000000003", "00010000"], ExitCode.NO_RESPONSE, "no reply"),
        (["000000000001", "12345678"], ExitCode.ABNORMAL, "no_data"),
        (["000000000001", "not.a.quantity"], ExitCode.USAGE, "neither"),
    ],
)
def test_read_failures_have_distinct_codes(bus_url: str, args: list[str], code: int, word: str) -> None:
    r = runner.invoke(app, ["read", *args, "--port", bus_url])
    assert r.exit_code == code
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and word in lines[0]


def test_read_bad_port_and_bad_url() -> None:
    r = runner.invoke(app, ["read", "000000000001", "00010000", "--port", "tcp://127.0.0.1:1"])
    assert r.exit_code == ExitCode.TRANSPORT
    r = runner.invoke(app, ["read", "000000000001", "00010000", "--port", "ftp://x"])
    assert r.exit_code == ExitCode.CONFIG
    r = runner.invoke(app, ["read", "000000000001", "00010000", "--port", "tcp://127.0.0.1:99999"])
    assert r.exit_code == ExitCode.CONFIG and "out of range" in r.stderr  # one line, not a traceback


def test_probe_scan_and_wildcard(bus_url: str, single_url: str) -> None:
    r = runner.invoke(app, ["probe", "--port", bus_url, "--range", "000000000001-000000000004", "--timeout", "0.15",
                            "--json"])
    assert r.exit_code == 0, r.output
    assert [m["address"] for m in json.loads(r.stdout)["meters"]] == ["000000000001", "000000000002"]
    r = runner.invoke(app, ["probe", "--port", bus_url, "--range", "1-4", "--timeout", "0.15"])
    assert r.exit_code == 0 and "no answer from 2 of 4: 000000000003, 000000000004" in r.stdout
    r = runner.invoke(app, ["probe", "--port", single_url, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["meters"] == [{"address": "202401010042", "method": "read_address"}]
    # Several meters answering the wildcard collide: a one-line reason, not a wrong address.
    r = runner.invoke(app, ["probe", "--port", bus_url])
    assert r.exit_code in (ExitCode.BAD_FRAME, ExitCode.NO_RESPONSE)
    assert "--range" in r.stderr or "wildcard" in r.stderr


def test_probe_configured_channel(bus_url: str, tmp_path: Path) -> None:
    cfg = tmp_path / "headend.toml"
    url = bus_url.replace("?timeout=0.3", "?timeout=0.15")
    cfg.write_text(
        "[[daemon.channels]]\n"
        'name = "bus-a"\n'
        f'url = "{url}"\n'
        'meters = ["000000000001", "000000000003"]\n'
    )
    r = runner.invoke(app, ["--config", str(cfg), "probe", "--channel", "bus-a", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [m["address"] for m in doc["meters"]] == ["000000000001"]
    assert doc["missing"] == ["000000000003"]  # the silent one
    r = runner.invoke(app, ["--config", str(cfg), "probe", "--channel", "nope"])
    assert r.exit_code == ExitCode.CONFIG


def test_trace_shows_frames(bus_url: str) -> None:
    tlog = logging.getLogger("headend.trace")
    before = list(tlog.handlers)
    try:
        r = runner.invoke(app, ["--trace", "read", "000000000001", "02010100", "--port", bus_url])
    finally:  # the handler writes to the runner's stream, which closes with it
        for h in tlog.handlers[:]:
            if h not in before:
                tlog.removeHandler(h)
        tlog.setLevel(logging.NOTSET)
        tlog.propagate = True
    assert r.exit_code == 0
    assert " TX fe fe fe fe 68 01 00 00 00 00 00 68 11 04 33 34 34 35" in r.stderr
    assert " RX " in r.stderr


def test_sim_command_pty_prints_url() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "from headend.cli import main; main()", "sim", "dlt645", "--pty", "--meters", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("serial:///dev/") and "parity=N" in url
        r = runner.invoke(app, ["read", "000000000002", "04000401", "--port", url, "--json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["items"][0]["value"] == "000000000002"
    finally:
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(10)


def test_sim_command_tcp_prints_url_and_serves() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "from headend.cli import main; main()", "sim", "dlt645", "--tcp", "127.0.0.1:0",
         "--meters", "3", "--first", "7", "--faults", "000000000008:silent"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("tcp://127.0.0.1:") and not url.endswith(":0")
        r = runner.invoke(app, ["probe", "--port", url, "--range", "7-9", "--timeout", "0.2", "--json"])
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert [m["address"] for m in doc["meters"]] == ["000000000007", "000000000009"]
        assert doc["missing"] == ["000000000008"]
    finally:
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(10)


@pytest.mark.parametrize(
    ("args", "code", "word"),
    [
        ([], ExitCode.USAGE, "--tcp"),
        (["--tcp", "localhost"], ExitCode.USAGE, "HOST:PORT"),
        (["--pty", "--faults", "000000000001:melted"], ExitCode.USAGE, "kinds are"),
        (["--pty", "--tz", "Mars/Olympus"], ExitCode.USAGE, "time zone"),
        (["--pty", "--profile", "no-such-profile.csv"], ExitCode.USAGE, "no-such-profile.csv"),
    ],
)
def test_sim_bad_arguments_are_usage_errors(args: list[str], code: int, word: str) -> None:
    r = runner.invoke(app, ["sim", "dlt645", *args])
    assert r.exit_code == code
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and word in lines[0]


def test_sim_port_in_use_is_a_transport_error(bus_url: str) -> None:
    taken = bus_url.removeprefix("tcp://").split("?")[0]
    r = runner.invoke(app, ["sim", "dlt645", "--tcp", taken])
    assert r.exit_code == ExitCode.TRANSPORT and "in use" in r.stderr


def test_read_table_names_the_set_bits_of_status_words() -> None:
    from headend.commands.read import _fmt_value

    word3 = {"name": "word3", "value": 80, "flags": ["relay_open", "relay_command_open"]}
    assert _fmt_value(word3) == "80 (relay_open, relay_command_open)"
    assert _fmt_value({"values": [word3, {"name": "word4", "value": 0, "flags": []}]}) == (
        "word3=80 (relay_open, relay_command_open), word4=0")


def test_read_quantities_share_one_block_request() -> None:
    with ThreadedSim(meters=1, transport="tcp") as sim:
        r = runner.invoke(app, ["read", "000000000001", "voltage.a", "voltage.b", "00010000", "voltage.c",
                                "--port", sim.url, "--json"])
        assert r.exit_code == 0, r.output
        items = json.loads(r.stdout)["items"]
        assert [i["item"] for i in items] == ["voltage.a", "voltage.b", "00010000", "voltage.c"]  # as asked
        dis = [f.frame.data[:4][::-1].hex().upper() for f in sim.received]
        assert dis == ["0201FF00", "00010000"]  # the three voltages in one block read
