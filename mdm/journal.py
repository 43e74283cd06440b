"""Write-ahead journal of readings handed to the store but not yet durable in it.

A producer that buffers readings before :meth:`mdm.ingest.Ingestor.submit` (the daemon batches
for a fraction of a second so that one COPY carries many meters) would lose that buffer if the
process were killed. With a journal, every reading is appended to a local file the moment it is
accepted, before it is buffered; the records are retired once the ingestor has made them durable
(database or spool). At the next start the records still on disk are submitted again. The
ingest is idempotent, so a record whose readings did reach the database before the kill changes
nothing the second time.

The journal is the spool's segment format (checksummed records, damaged tails reported and kept)
written without ``fsync``: it survives the death of the process, not a power cut. After a power
cut the meters still hold what matters for billing (registers, frozen values, load profile),
and backfill re-reads it.

Usage (one writer per directory, like the spool)::

    journal = ReadingJournal(data_dir / "journal")
    for readings in journal.leftovers():        # at start: what a killed run left
        await ingestor.submit(readings)
    journal.retire_leftovers()
    ...
    journal.append(readings)                    # as readings arrive, before buffering
    mark = journal.checkpoint()                 # when the whole buffer is taken for submit
    await ingestor.submit(buffered)
    journal.retire(mark)                        # durable now
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from mdm.spool import Spool, SpoolDamage, decode_rows
from protocols.reading import Reading

__all__ = ["ReadingJournal"]

LOGGER = logging.getLogger(__name__)


class ReadingJournal:
    """Append-only journal of not-yet-durable readings, in segment files under ``directory``."""

    def __init__(self, directory: Path | str) -> None:
        self._spool = Spool(Path(directory), fsync=False)
        # segments left by an earlier run: replayed by the owner, then retired
        self._leftovers = self._spool.rotate()
        self._issued: set[Path] = set()  # closed segments handed out by checkpoint(), not yet retired
        self.damage: list[SpoolDamage] = []
        self.appended = 0

    @property
    def directory(self) -> Path:
        return self._spool.directory

    def leftovers(self) -> Iterator[list[Reading]]:
        """Readings of the records an earlier run left, record by record (damaged ones reported)."""
        for seg in self._leftovers:
            for payload, damage in self._spool.read(seg):
                if damage is not None:
                    self.damage.append(damage)
                    continue
                regs, ints = decode_rows(payload)
                yield regs + ints

    def retire_leftovers(self) -> int:
        """Delete the earlier run's segments (call once their readings are durable)."""
        n = len(self._leftovers)
        for seg in self._leftovers:
            self._spool.remove(seg)
        self._leftovers = []
        return n

    def append(self, readings: Sequence[Reading]) -> None:
        """Record ``readings`` (one write; no fsync) before they are buffered anywhere."""
        if readings:
            self._spool.write_record(readings, ())
            self.appended += len(readings)

    def checkpoint(self) -> list[Path]:
        """Close the active segment; return the segments closed since the last checkpoint.

        Together with the segments of earlier checkpoints not yet retired they hold every reading
        appended so far.
        """
        new = [p for p in self._spool.rotate() if p not in self._leftovers and p not in self._issued]
        self._issued.update(new)
        return new

    def retire(self, segments: Sequence[Path]) -> None:
        """Delete segments whose readings are all durable in the store."""
        for seg in segments:
            self._spool.remove(seg)
            self._issued.discard(seg)

    def pending_bytes(self) -> int:
        return self._spool.stats().bytes

    def close(self) -> None:
        self._spool.close()
