"""Channel URLs: ``serial:///dev/ttyUSB0?baud=2400&parity=E`` and ``tcp://host:port``.

Every protocol adapter parses its channel with :meth:`ChannelSpec.parse`, so the
same URL syntax works for DL/T 645, Modbus RTU/TCP and any later transport.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import parse_qs, urlsplit

from protocols.errors import ConfigError

__all__ = ["ChannelSpec"]

_PARITIES = {"N", "E", "O", "M", "S"}


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    scheme: str  # "serial", "tcp" or "virtual" (in-process)
    path: str = ""  # serial device path
    host: str = ""
    port: int = 0
    baud: int = 2400
    parity: str = "E"  # DL/T 645 lines run 8E1; a pty rejects even parity, so tests pass parity=N
    bytesize: int = 8
    stopbits: int = 1
    timeout: float = 1.0  # response timeout, seconds
    inter_byte_timeout: float = 0.5  # DL/T 645-2007 allows up to 500 ms between bytes
    turnaround: float = 0.0  # wait after a reply before the next request (bus turnaround)

    @classmethod
    def parse(cls, url: str) -> ChannelSpec:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            timeout = float(q.pop("timeout", 1.0))
            ibt = float(q.pop("inter_byte_timeout", 0.5))
            turnaround = float(q.pop("turnaround", 0.0))
            if scheme == "serial":
                path = parts.path or parts.netloc
                if not path:
                    raise ConfigError(f"serial URL needs a device path: {url!r}")
                parity = q.pop("parity", "E").upper()
                if parity not in _PARITIES:
                    raise ConfigError(f"parity must be one of {sorted(_PARITIES)}: {url!r}")
                spec = cls(
                    scheme="serial",
                    path=path,
                    baud=int(q.pop("baud", 2400)),
                    parity=parity,
                    bytesize=int(q.pop("bytesize", 8)),
                    stopbits=int(q.pop("stopbits", 1)),
                    timeout=timeout,
                    inter_byte_timeout=ibt,
                    turnaround=turnaround,
                )
            elif scheme == "tcp":
                if not parts.hostname or parts.port is None:
                    raise ConfigError(f"tcp URL needs host and port: {url!r}")
                spec = cls(
                    scheme="tcp",
                    host=parts.hostname,
                    port=parts.port,
                    baud=int(q.pop("baud", 2400)),
                    timeout=timeout,
                    inter_byte_timeout=ibt,
                    turnaround=turnaround,
                )
            elif scheme == "virtual":
                # In-process bus (tests, simulators): virtual://NAME, see protocols.transport.virtual.
                if not parts.netloc:
                    raise ConfigError(f"virtual URL needs a name: {url!r}")
                spec = cls(scheme="virtual", host=parts.netloc, baud=int(q.pop("baud", 2400)), timeout=timeout,
                           inter_byte_timeout=ibt, turnaround=turnaround)
            else:
                raise ConfigError(f"unknown channel scheme {scheme!r} in {url!r} (use serial:// or tcp://)")
        except ValueError as exc:
            raise ConfigError(f"bad channel URL {url!r}: {exc}") from None
        if q:
            raise ConfigError(f"unknown channel options {sorted(q)} in {url!r}")
        return spec

    def with_options(self, **kw: object) -> ChannelSpec:
        return replace(self, **kw)  # type: ignore[arg-type]

    @property
    def name(self) -> str:
        if self.scheme == "virtual":
            return f"virtual:{self.host}"
        return self.path if self.scheme == "serial" else f"{self.host}:{self.port}"

    def char_time(self) -> float:
        """Seconds per character on the line: start + data + parity + stop bits."""
        bits = 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits
        return bits / self.baud

    def __str__(self) -> str:
        if self.scheme == "serial":
            return f"serial://{self.path}?baud={self.baud}&parity={self.parity}"
        if self.scheme == "virtual":
            return f"virtual://{self.host}"
        return f"tcp://{self.host}:{self.port}"
