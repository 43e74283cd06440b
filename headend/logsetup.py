"""Logging set-up: human or JSON lines, and a TRACE level for frame hex dumps."""

from __future__ import annotations

import json
import logging
import sys
import time

__all__ = ["TRACE", "JsonFormatter", "configure_logging", "trace_enabled"]

TRACE = 5  # below DEBUG: every frame sent and received, in hex (python-can and zigpy-znp do the same)
logging.addLevelName(TRACE, "TRACE")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for journald and log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        obj = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("channel", "meter", "plan", "operator"):
            if hasattr(record, key):
                obj[key] = getattr(record, key)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False)


class _TraceFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        return f"{t} {record.getMessage()}"


def configure_logging(level: str | int = "WARNING", *, json_lines: bool = False, trace: bool = False) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json_lines else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else getattr(logging, level.upper(), logging.INFO))
    if trace:
        # Frames are logged by the "headend.trace" logger at TRACE; show them plainly with timestamps.
        tlog = logging.getLogger("headend.trace")
        th = logging.StreamHandler(sys.stderr)
        th.setFormatter(_TraceFormatter())
        tlog.addHandler(th)
        tlog.setLevel(TRACE)
        tlog.propagate = False


def trace_enabled() -> bool:
    return logging.getLogger("headend.trace").isEnabledFor(TRACE)
