"""On-demand reads through the running daemon (a serial port cannot be shared).

A running daemon registers itself in ``DATA_DIR/daemons/<name>.json`` with its local HTTP
endpoint and the channel URLs it owns (rewritten when leases change, removed on exit).
``headend read`` calls :func:`try_daemon_read` first: if a live daemon owns the port, the
read is queued on that bus at on-demand priority (ahead of backfill and scheduled reads)
and the result comes back over HTTP; otherwise it returns None and the command opens the
port itself.
"""

from __future__ import annotations

import json
import logging
import math
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from protocols import quantities
from protocols.arbitration import Priority
from protocols.client import MeterClient
from protocols.errors import (
    ConfigError,
    DeviceError,
    FrameError,
    HeadendError,
    LocalProtocolError,
    NoResponseError,
    TransportError,
    UnknownOutcomeError,
)

__all__ = [
    "Registration",
    "channel_key",
    "find_daemon",
    "raise_remote",
    "read_items_on_client",
    "registry_dir",
    "try_daemon_read",
]

LOGGER = logging.getLogger(__name__)


def registry_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "daemons"


def channel_key(url: str) -> str:
    """A URL reduced to what identifies the line: ``tcp://host:port`` or ``serial:///dev/x``."""
    p = urlsplit(url.strip())
    scheme = p.scheme.lower()
    if scheme == "serial":
        path = p.path or p.netloc
        return f"serial://{os.path.realpath(path) if path.startswith('/') else path}"
    host = (p.hostname or "").lower()
    if host in ("localhost", "::1"):
        host = "127.0.0.1"
    return f"{scheme}://{host}:{p.port or 0}"


class Registration:
    """This daemon's entry in the registry directory."""

    def __init__(self, data_dir: Path, name: str, endpoint: str) -> None:
        self.path = registry_dir(data_dir) / f"{name.replace('/', '_')}.json"
        self.name = name
        self.endpoint = endpoint

    def write(self, channels: Mapping[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({
            "name": self.name, "pid": os.getpid(), "endpoint": self.endpoint,
            "channels": {channel_key(url): name for name, url in channels.items()},
        }))
        tmp.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_daemon(data_dir: Path, url: str) -> tuple[str, str] | None:
    """(endpoint, channel name) of a live daemon owning ``url``, or None."""
    key = channel_key(url)
    d = registry_dir(data_dir)
    if not d.is_dir():
        return None
    for f in sorted(d.glob("*.json")):
        try:
            info = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if key in info.get("channels", {}) and _alive(int(info.get("pid", 0))):
            return str(info["endpoint"]), str(info["channels"][key])
    return None


# error types a daemon's answer may name (error_payload); anything else arrives as TransportError
_ERRORS: dict[str, type[HeadendError]] = {
    "NoResponseError": NoResponseError, "TransportError": TransportError, "ConfigError": ConfigError,
    "LocalProtocolError": LocalProtocolError, "UnknownOutcomeError": UnknownOutcomeError,
}


def raise_remote(err: Mapping[str, Any], default: str = "daemon request failed") -> None:
    """Raise the error a daemon reported (its ``error`` object) as the same exception type here."""
    kind = str(err.get("type", "HeadendError"))
    msg = str(err.get("message", default))
    if kind == "DeviceError":
        raise DeviceError(msg, code=int(err.get("code", 0)), flags=tuple(err.get("flags", ())))
    if kind == "FrameError":
        raise FrameError(str(err.get("reason", "format")), msg)
    raise _ERRORS.get(kind, TransportError)(msg)


def try_daemon_read(
    data_dir: Path, url: str, meter: str, items: Sequence[str], *, timeout: float = 60.0
) -> list[dict[str, Any]] | None:
    """Read through the daemon that owns ``url``; None when no daemon does (open the port yourself).

    Errors the meter or bus produced are raised as the same :class:`HeadendError` subclasses a
    direct read raises, so exit codes do not depend on the path taken.
    """
    found = find_daemon(Path(data_dir), url)
    if found is None:
        return None
    endpoint, channel = found
    body = json.dumps({"channel": channel, "meter": meter, "items": list(items)}).encode()
    req = urllib.request.Request(f"{endpoint}/read", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            payload = json.loads(exc.read())
        except ValueError:
            raise TransportError(f"daemon at {endpoint}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        LOGGER.warning("daemon at %s did not answer (%s); opening the port directly", endpoint, exc)
        return None
    if "error" in payload:
        raise_remote(payload["error"], "daemon read failed")
    rows: list[dict[str, Any]] = payload["items"]
    for r in rows:
        r.setdefault("via", f"daemon {payload.get('daemon', '')}".strip())
    return rows


def _num(v: float) -> float | None:
    return None if isinstance(v, float) and math.isnan(v) else v


async def read_items_on_client(
    client: MeterClient, meter: str, items: Sequence[str], priority: Priority = Priority.ON_DEMAND
) -> list[dict[str, Any]]:
    """The daemon side: the same item reads as ``headend read``, on the daemon's open client."""
    out: list[dict[str, Any]] = []
    for it in items:
        if quantities.is_known(it):
            (r,) = await client.read(meter, [it], priority=priority)
            out.append({
                "item": it, "quantity": r.quantity, "name": quantities.get(r.quantity).description,
                "value": _num(r.value), "unit": r.unit, "quality": r.quality.name or "GOOD",
                "meter": r.meter, "ts": r.ts.isoformat(),
            })
            continue
        decoded = getattr(client, "read_decoded", None)
        if decoded is None or len(it) != 8:
            raise LocalProtocolError(f"{it!r}: this channel reads quantity codes only")
        d: dict[str, Any] = await decoded(meter, it.upper(), priority=priority)
        d["item"] = it.upper()
        out.append(d)
    return out


def error_payload(exc: BaseException) -> dict[str, Any]:
    err: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, DeviceError):
        err.update(code=exc.code, flags=list(exc.flags))
    if isinstance(exc, FrameError):
        err["reason"] = exc.reason
    return err


__all__ += ["error_payload"]
