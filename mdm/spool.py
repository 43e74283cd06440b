"""Durable local spool: append-only segment files of checksummed records.

Used by :class:`mdm.ingest.Ingestor` when the database is unreachable. A record is one
batch of rows; it is written with ``write`` + ``fsync`` before the readings it holds are
acknowledged. Segments are replayed in order and deleted once every record is in the
database.

Record layout (little-endian)::

    b"HSP1" | u32 payload length | u32 crc32(payload) | payload (UTF-8 JSON)

payload = ``{"r": [[meter, quantity, ts_us, value, unit, quality, source], ...],
"i": [...interval rows...]}`` with ``ts_us`` microseconds since the Unix epoch (UTC).

A damaged record (truncated by a crash, or a checksum mismatch) is never silently dropped:
the reader reports it (:class:`SpoolDamage`), copies the damaged bytes to
``damaged/<segment>.<offset>.bin`` and resynchronises on the next record marker, so good
records after the damage are still replayed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from protocols.errors import ConfigError
from protocols.reading import Quality, Reading

__all__ = ["MAGIC", "Spool", "SpoolDamage", "SpoolStats", "decode_rows", "encode_rows"]

LOGGER = logging.getLogger(__name__)

MAGIC = b"HSP1"
_HEADER = struct.Struct("<4sII")
_SEGMENT = re.compile(r"^spool-(\d{12})\.log$")
_MAX_RECORD = 512 * 1024 * 1024
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)



@dataclass(frozen=True, slots=True)
class SpoolDamage:
    """A damaged stretch of a segment: where, how long, why, and where its bytes were kept."""

    segment: str
    offset: int
    length: int
    reason: str  # truncated | checksum | marker | payload
    kept_as: str | None


@dataclass(frozen=True, slots=True)
class SpoolStats:
    segments: int
    bytes: int
    records_written: int  # by this process since open
    spooling: bool  # new batches go to the spool (database down, or replay in progress)


def _ts_us(ts: datetime) -> int:
    d = ts - _EPOCH
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def encode_rows(registers: Sequence[Reading], intervals: Sequence[Reading]) -> bytes:
    def enc(rows: Sequence[Reading]) -> list[list[Any]]:
        return [[r.meter, r.quantity, _ts_us(r.ts), r.value, r.unit, int(r.quality), r.source] for r in rows]

    return json.dumps({"r": enc(registers), "i": enc(intervals)}, separators=(",", ":")).encode()


def decode_rows(payload: bytes) -> tuple[list[Reading], list[Reading]]:
    obj = json.loads(payload)

    def dec(rows: list[list[Any]]) -> list[Reading]:
        return [
            Reading(str(m), str(q), _EPOCH + timedelta(microseconds=int(t)), float(v), str(u), Quality(int(fl)),
                    str(s))
            for m, q, t, v, u, fl, s in rows
        ]

    return dec(obj.get("r", [])), dec(obj.get("i", []))


class Spool:
    """Segment files in ``directory``; one process at a time (an exclusive ``flock``).

    ``fsync=False`` keeps records in the OS page cache only: they survive the death of this
    process (kill -9), not a power cut. :class:`mdm.journal.ReadingJournal` uses that.
    """

    def __init__(self, directory: Path, *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lockfile: IO[str] | None = open(self.directory / ".lock", "a+")
        try:
            fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lockfile.close()
            self._lockfile = None
            raise ConfigError(f"spool directory {self.directory} is in use by another process") from None
        self._lock = threading.Lock()
        self._active: IO[bytes] | None = None
        self._active_path: Path | None = None
        self._next = max((self._seq(p) for p in self.segments()), default=0) + 1
        self.records_written = 0
        # spooling: batches go to the spool instead of the database (set while any segment is pending)
        self.spooling = bool(self.segments())

    @staticmethod
    def _seq(p: Path) -> int:
        m = _SEGMENT.match(p.name)
        return int(m.group(1)) if m else 0

    def segments(self) -> list[Path]:
        """Segment files in replay order (the active one last)."""
        return sorted((p for p in self.directory.iterdir() if _SEGMENT.match(p.name)), key=self._seq)

    # -- writing ---------------------------------------------------------------------------------

    def _append_locked(self, payload: bytes) -> None:
        if self._active is None:
            self._active_path = self.directory / f"spool-{self._next:012d}.log"
            self._next += 1
            self._active = open(self._active_path, "ab")
        rec = _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload
        self._active.write(rec)
        self._active.flush()
        if self.fsync:
            os.fsync(self._active.fileno())
        self.records_written += 1

    def append(self, registers: Sequence[Reading], intervals: Sequence[Reading]) -> None:
        """Write one record durably and switch to spooling mode (the database is down)."""
        payload = encode_rows(registers, intervals)
        with self._lock:
            self._append_locked(payload)
            self.spooling = True

    def write_payload(self, payload: bytes) -> None:
        """Append one record of the caller's own encoding, without touching the spooling mode (journal use)."""
        with self._lock:
            self._append_locked(payload)

    def append_if_spooling(self, registers: Sequence[Reading], intervals: Sequence[Reading]) -> bool:
        """While spooling (keeps arrival order during an outage and its replay): append, True."""
        if not self.spooling:
            return False
        payload = encode_rows(registers, intervals)
        with self._lock:
            if not self.spooling:
                return False
            self._append_locked(payload)
            return True

    def rotate(self) -> list[Path]:
        """Close the active segment; return every closed segment, oldest first, for replay."""
        with self._lock:
            self._close_active()
            return self.segments()

    def finish_if_empty(self) -> bool:
        """Leave spooling mode if nothing is pending (no segment on disk, nothing being appended)."""
        with self._lock:
            if self._active is None and not self.segments():
                self.spooling = False
                return True
            return False

    def _close_active(self) -> None:
        if self._active is not None:
            self._active.close()
            self._active = None
            self._active_path = None

    def close(self) -> None:
        with self._lock:
            self._close_active()
        if self._lockfile is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_UN)
            self._lockfile.close()
            self._lockfile = None

    def stats(self) -> SpoolStats:
        segs = self.segments()
        size = 0
        for p in segs:
            with contextlib.suppress(FileNotFoundError):
                size += p.stat().st_size
        return SpoolStats(len(segs), size, self.records_written, self.spooling)

    # -- reading ---------------------------------------------------------------------------------

    def _keep(self, segment: Path, offset: int, data: bytes) -> str:
        dest = self.directory / "damaged"
        dest.mkdir(exist_ok=True)
        path = dest / f"{segment.name}.{offset}.bin"
        path.write_bytes(data)
        return str(path)

    def read(self, segment: Path) -> Iterator[tuple[bytes, SpoolDamage | None]]:
        """Yield ``(payload, None)`` per good record and ``(b"", damage)`` per damaged stretch."""
        data = segment.read_bytes()
        pos = 0
        n = len(data)
        while pos < n:
            reason = None
            if n - pos < _HEADER.size:
                reason = "truncated"
            else:
                magic, length, crc = _HEADER.unpack_from(data, pos)
                if magic != MAGIC or length > _MAX_RECORD:
                    reason = "marker"
                elif pos + _HEADER.size + length > n:
                    reason = "truncated"
                else:
                    payload = data[pos + _HEADER.size : pos + _HEADER.size + length]
                    if zlib.crc32(payload) != crc:
                        reason = "checksum"
                    else:
                        yield payload, None
                        pos += _HEADER.size + length
                        continue
            # damaged: skip to the next plausible record marker (or the end) and report the gap
            nxt = data.find(MAGIC, pos + 1)
            end = n if nxt < 0 else nxt
            if reason == "truncated" and nxt >= 0:
                reason = "checksum"  # a record cut short and followed by another one
            kept = self._keep(segment, pos, data[pos:end])
            dmg = SpoolDamage(str(segment), pos, end - pos, reason or "marker", kept)
            LOGGER.error(
                "spool %s: damaged %s at offset %d (%d bytes), kept as %s",
                segment.name, dmg.reason, pos, end - pos, kept,
            )
            yield b"", dmg
            pos = end

    def remove(self, segment: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            segment.unlink()
