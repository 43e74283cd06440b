"""The write-ahead reading journal: append, checkpoint/retire, leftovers after a crash, damaged tails."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from mdm.ingest import Ingestor
from mdm.journal import ReadingJournal
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
