"""A separate ingesting process for the SIGKILL tests.

``python -m tests.mdm.ingest_child DSN SPOOL_DIR START STOP PROGRESS_FILE``: submits
readings(START, STOP) in chunks and, after each submit returns (= durable), writes the
number of acknowledged readings to PROGRESS_FILE. Exits 0 once everything is durable.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from mdm.ingest import Ingestor
from tests.mdm.helpers import readings

CHUNK = 20_000


async def main(dsn: str, spool: Path, start: int, stop: int, progress: Path) -> None:
    async with Ingestor(dsn, spool_dir=spool, batch_size=10_000, retry_for=0.5, replay_interval=0.1) as ing:
        for k in range(start, stop, CHUNK):
            await ing.submit(list(readings(k, min(k + CHUNK, stop))))
            tmp = progress.with_suffix(".tmp")
            tmp.write_text(str(min(k + CHUNK, stop)))
            os.replace(tmp, progress)
        while not await ing.wait_spool_drained(60):
            pass


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], Path(a[1]), int(a[2]), int(a[3]), Path(a[4])))
