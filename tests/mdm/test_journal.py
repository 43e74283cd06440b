"""The write-ahead reading journal: append, checkpoint/retire, leftovers after a crash, damaged tails."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC
from pathlib import Path

import psycopg
import pytest

from mdm.ingest import Ingestor
from mdm.journal import ReadingJournal
from mdm.spool import encode_rows
from protocols.errors import ConfigError

from .helpers import db_checksum, expected_checksum, readings


def test_checkpointed_and_retired_records_are_gone(tmp_path: Path) -> None:
    j = ReadingJournal(tmp_path)
    j.append(list(readings(0, 100)))
    j.append([])  # nothing to record: no empty record written
    mark = j.checkpoint()
    j.append(list(readings(100, 150)))  # after the checkpoint: not covered by ``mark``
    j.retire(mark)
    j.close()
    again = ReadingJournal(tmp_path)
    left = [r for chunk in again.leftovers() for r in chunk]
    assert [r.value for r in left] == [r.value for r in readings(100, 150)]
    assert again.retire_leftovers() == 1
    again.close()
    assert list(ReadingJournal(tmp_path).leftovers()) == []


def test_one_writer_per_directory(tmp_path: Path) -> None:
    j = ReadingJournal(tmp_path)
    with pytest.raises(ConfigError, match="in use"):
        ReadingJournal(tmp_path)
    j.close()


def test_damaged_tail_is_reported_and_good_records_survive(tmp_path: Path) -> None:
    j = ReadingJournal(tmp_path)
    j.append(list(readings(0, 10)))
    j.append(list(readings(10, 20)))
    j.close()
    seg = next(tmp_path.glob("spool-*.log"))
    data = seg.read_bytes()
    seg.write_bytes(data[: len(data) - 7])  # the last record cut short, as by a crash mid-write
    again = ReadingJournal(tmp_path)
    left = [r for chunk in again.leftovers() for r in chunk]
    assert [r.meter for r in left] == [r.meter for r in readings(0, 10)]
    assert len(again.damage) == 1 and again.damage[0].reason == "truncated"
    assert again.damage[0].kept_as is not None and Path(again.damage[0].kept_as).exists()
    again.close()


async def test_replaying_leftovers_twice_stores_each_reading_once(fresh_dsn: str, tmp_path: Path) -> None:
    j = ReadingJournal(tmp_path / "journal")
    j.append(list(readings(0, 3000)))
    j.close()  # a run that died before submitting
    for _ in range(2):  # a restart that replays, dies before retiring, and replays again
        again = ReadingJournal(tmp_path / "journal")
        async with Ingestor(fresh_dsn) as ing:
            for chunk in again.leftovers():
                await ing.submit(chunk)
        again.close()
    again = ReadingJournal(tmp_path / "journal")
    again.retire_leftovers()
    again.close()
    with psycopg.connect(fresh_dsn) as conn:
        assert db_checksum(conn) == expected_checksum(conn, 3000)
    assert list(ReadingJournal(tmp_path / "journal").leftovers()) == []


REPO = Path(__file__).resolve().parents[2]


def _kill_after(dsn: str, data_dir: Path, n: int, wait_for: int, *extra: str, stored_at_least: int = 0) -> int:
    """Run the child producer, SIGKILL it once ``wait_for`` readings were handed over (and
    ``stored_at_least`` are in the database); return the count handed over."""
    progress = data_dir / "progress"
    child = subprocess.Popen([sys.executable, "-m", "tests.mdm.journal_child", dsn, str(data_dir), str(n),
                              str(progress), *extra], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if progress.exists() and int(progress.read_text() or 0) >= wait_for and (
                    not stored_at_least or _stored(dsn)[0] >= stored_at_least):
                break
            assert child.poll() is None, "child producer died"
            time.sleep(0.01)
        else:
            raise AssertionError("child producer made no progress")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    return int(progress.read_text())


async def _replay(dsn: str, data_dir: Path) -> None:
    journal = ReadingJournal(data_dir / "journal")
    async with Ingestor(dsn) as ing:
        for chunk in journal.leftovers():
            await ing.submit(chunk)
    journal.retire_leftovers()
    journal.close()


def _stored(dsn: str) -> tuple[int, tuple[int, str], tuple[int, str]]:
    with psycopg.connect(dsn) as conn:
        have = db_checksum(conn)
        return have[0], have, expected_checksum(conn, have[0])


async def test_sigkill_with_everything_buffered_loses_nothing(fresh_dsn: str, tmp_path: Path) -> None:
    handed = _kill_after(fresh_dsn, tmp_path, 5_000, 5_000, "--no-submit")
    assert handed == 5_000
    assert _stored(fresh_dsn)[0] == 0  # nothing reached the database before the kill
    await _replay(fresh_dsn, tmp_path)
    count, have, want = _stored(fresh_dsn)
    assert count == 5_000 and have == want


async def test_sigkill_while_submitting_loses_and_duplicates_nothing(fresh_dsn: str, tmp_path: Path) -> None:
    handed = _kill_after(fresh_dsn, tmp_path, 60_000, 30_000, stored_at_least=20_000)
    before = _stored(fresh_dsn)[0]
    assert 20_000 <= before < 60_000  # killed mid-run
    # segments whose readings were durable were retired while the producer ran
    journalled = sum(len(c) for c in ReadingJournal(tmp_path / "journal").leftovers())
    assert journalled < handed
    await _replay(fresh_dsn, tmp_path)
    count, have, want = _stored(fresh_dsn)
    # every reading handed over is stored once: the stored set is a prefix readings(0, k), k >= handed
    assert count >= handed and have == want
    assert count >= before and not list((tmp_path / "journal").glob("spool-*.log"))


def test_record_format_round_trip_and_older_json_records(tmp_path: Path) -> None:
    from datetime import datetime, timezone
    from datetime import timedelta as td

    from mdm.journal import decode_readings, encode_readings
    from protocols.reading import Quality, Reading

    cst = timezone(td(hours=8))
    rs = [Reading("000000000007", "energy.active.import", datetime(2026, 11, 27, 8, 0, 0, 123456, tzinfo=cst),
                  1234.56, "kWh", Quality.BACKFILLED | Quality.SUSPECT, "dlt645:bus-a"),
          Reading("T-9", "voltage.a", datetime(2026, 11, 27, 0, 0, tzinfo=UTC), float("nan"), "V", Quality.GOOD, "")]
    back = decode_readings(encode_readings(rs))
    assert [(r.meter, r.quantity, r.ts, r.unit, r.quality, r.source) for r in back] == \
        [(r.meter, r.quantity, r.ts, r.unit, r.quality, r.source) for r in rs]
    assert back[0].value == 1234.56 and back[1].value != back[1].value  # NaN survives
    j = ReadingJournal(tmp_path)
    j._spool.write_payload(encode_rows(rs[:1], ()))  # a JSON record, as the first journal version wrote
    j._spool.write_payload(b"?not a record format")  # checksummed, yet not ours: reported, not dropped silently
    j.close()
    again = ReadingJournal(tmp_path)
    got = [r for chunk in again.leftovers() for r in chunk]
    assert [(r.meter, r.ts) for r in got] == [(rs[0].meter, rs[0].ts)]
    assert [d.reason for d in again.damage] == ["payload"]
    again.close()
