"""A daemon-side producer killed with SIGKILL in the journal tests.

``python -m tests.mdm.journal_child DSN DATA_DIR N PROGRESS_FILE [--no-submit]``: hands
readings(0, N) to the daemon's :class:`headend.daemon.IngestSink` (journal on, real ingestor) in
chunks of 500, writing the count handed over to PROGRESS_FILE after each ``put``; then idles
until killed. ``--no-submit`` never starts the sink's submit loop, so everything stays buffered.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from headend.daemon import IngestSink
from mdm.ingest import Ingestor
from mdm.journal import ReadingJournal
from tests.mdm.helpers import readings

CHUNK = 500


async def main(dsn: str, data_dir: Path, n: int, progress: Path, submit: bool) -> None:
    journal = ReadingJournal(data_dir / "journal")
    async with Ingestor(dsn, spool_dir=data_dir / "spool") as ing:
        sink = IngestSink(ing, batch=2_000, journal=journal)
        runner = asyncio.create_task(sink.run()) if submit else None
        for k in range(0, n, CHUNK):
            await sink.put(list(readings(k, min(k + CHUNK, n))))
            tmp = progress.with_suffix(".tmp")
            tmp.write_text(str(min(k + CHUNK, n)))
            os.replace(tmp, progress)
            await asyncio.sleep(0.01)
        await asyncio.sleep(3600)  # killed before this ends
        if runner is not None:
            runner.cancel()


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], Path(a[1]), int(a[2]), Path(a[3]), "--no-submit" not in a))
