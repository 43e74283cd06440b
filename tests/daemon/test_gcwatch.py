"""GC pauses are timed per generation, and a long one is logged with its length."""

from __future__ import annotations

import gc
import logging

import pytest

from headend.gcwatch import GcWatch


def test_collections_are_timed_and_long_ones_logged(caplog: pytest.LogCaptureFixture) -> None:
    w = GcWatch(log_above=0.0)  # every collection counts as long here
    w.install()
    w.install()  # idempotent: one callback, not two
    try:
        with caplog.at_level(logging.INFO, logger="headend.gcwatch"):
            gc.collect(2)
    finally:
        w.remove()
    assert w.counts[2] == 1 and w.seconds[2] > 0 and w.worst >= w.seconds[2]
    assert any("generation 2 collection took" in r.getMessage() for r in caplog.records)
    before = list(w.counts)
    gc.collect(2)
    assert w.counts == before  # removed: no longer called
