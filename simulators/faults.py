"""Fault injection specs, shared by every simulator (DL/T 645 bus, Modbus, MQTT).

A device can carry several faults at once. The CLI form is a comma-separated list of
``DEVICE:KIND[=VALUE]`` items, e.g. ``000000000003:silent,000000000005:slow=0.8``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Fault", "FaultSet", "FaultSpec", "parse_faults"]


class Fault(StrEnum):
    SILENT = "silent"  # never replies
    GARBAGE = "garbage"  # value: number of random bytes sent before the reply (default 8)
    BAD_CHECKSUM = "bad_checksum"  # reply with a corrupted checksum
    SLOW = "slow"  # value: extra reply delay in seconds
    CLOCK_DRIFT = "clock_drift"  # value: seconds gained per hour (negative = loses)
    CLOCK_OFFSET = "clock_offset"  # value: fixed clock error in seconds
    ABNORMAL = "abnormal"  # value: error byte sent in an abnormal reply to every request (default 1)


_DEFAULTS: dict[Fault, float] = {
    Fault.SILENT: 0.0,
    Fault.GARBAGE: 8.0,
    Fault.BAD_CHECKSUM: 0.0,
    Fault.SLOW: 1.0,
    Fault.CLOCK_DRIFT: 60.0,
    Fault.CLOCK_OFFSET: 300.0,
    Fault.ABNORMAL: 1.0,
}


@dataclass(frozen=True, slots=True)
class FaultSpec:
    kind: Fault
    value: float = 0.0

    @classmethod
    def make(cls, kind: Fault | str, value: float | None = None) -> FaultSpec:
        k = Fault(kind)
        return cls(k, _DEFAULTS[k] if value is None else float(value))


class FaultSet:
    """The faults currently set on one device (at most one per kind)."""

    def __init__(self, specs: Iterable[FaultSpec] = ()) -> None:
        self._by_kind: dict[Fault, FaultSpec] = {s.kind: s for s in specs}

    def set(self, kind: Fault | str, value: float | None = None) -> None:
        spec = FaultSpec.make(kind, value)
        self._by_kind[spec.kind] = spec

    def clear(self, kind: Fault | str | None = None) -> None:
        if kind is None:
            self._by_kind.clear()
        else:
            self._by_kind.pop(Fault(kind), None)

    def has(self, kind: Fault) -> bool:
        return kind in self._by_kind

    def value(self, kind: Fault, default: float = 0.0) -> float:
        s = self._by_kind.get(kind)
        return s.value if s is not None else default

    def __bool__(self) -> bool:
        return bool(self._by_kind)

    def __iter__(self) -> Iterator[FaultSpec]:
        return iter(self._by_kind.values())

    def __repr__(self) -> str:
        return "FaultSet(" + ", ".join(f"{s.kind}={s.value:g}" for s in self._by_kind.values()) + ")"


def parse_faults(text: str | Mapping[str, str | Iterable[str]] | None) -> dict[str, list[FaultSpec]]:
    """``"dev:kind[=value],dev:kind"`` (or a mapping ``dev -> "kind[=v]"`` / list of them) to specs."""
    out: dict[str, list[FaultSpec]] = {}
    if not text:
        return out
    items: list[tuple[str, str]] = []
    if isinstance(text, str):
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            dev, sep, kind = part.partition(":")
            if not sep or not dev or not kind:
                raise ValueError(f"bad fault {part!r}: use DEVICE:KIND[=VALUE]")
            items.append((dev.strip(), kind.strip()))
    else:
        for dev, kinds in text.items():
            for k in [kinds] if isinstance(kinds, str) else kinds:
                items.append((dev, k))
    for dev, kind in items:
        name, _, val = kind.partition("=")
        try:
            spec = FaultSpec.make(name.strip().lower(), float(val) if val else None)
        except ValueError:
            raise ValueError(f"bad fault {dev}:{kind}: kinds are {', '.join(f.value for f in Fault)}") from None
        out.setdefault(dev, []).append(spec)
    return out
