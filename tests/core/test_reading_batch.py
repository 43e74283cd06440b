"""Reading.batch (one poll's readings at once) builds exactly what the constructor builds."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from protocols.reading import Quality, Reading

TS = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def test_batch_equals_one_constructor_call_per_value() -> None:
    codes, units, values = ["voltage.a", "current.a", "relay.state"], ["V", "A", ""], [230.1, 5.25, 1.0]
    got = Reading.batch("LMT1@1", TS, codes, iter(values), units, Quality.SUSPECT, "modbus:x")
    want = [
        Reading("LMT1@1", c, TS, v, u, Quality.SUSPECT, "modbus:x")
        for c, v, u in zip(codes, values, units, strict=True)
    ]
    assert got == want
    assert [hash(r) for r in got] == [hash(r) for r in want]
    with pytest.raises(dataclasses.FrozenInstanceError):
        got[0].value = 1.0  # type: ignore[misc]
    assert Reading.batch("m", TS, [], [], []) == []


def test_batch_refuses_what_the_constructor_refuses() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Reading.batch("m", datetime(2026, 11, 27), ["voltage.a"], [1.0], ["V"])
    with pytest.raises(ValueError):  # one value short
        Reading.batch("m", TS, ["voltage.a", "voltage.b"], [1.0], ["V", "V"])
