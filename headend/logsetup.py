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


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time (test runners swap it), marked as ours."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:  # StreamHandler.__init__ assigns it
        pass


def _replace_own_handler(logger: logging.Logger, handler: logging.Handler | None) -> None:
    # Only handlers this module installed are replaced, so embedding code (and pytest's
    # log capture) keeps its own.
    for h in list(logger.handlers):
        if isinstance(h, _StderrHandler):
            logger.removeHandler(h)
    if handler is not None:
        logger.addHandler(handler)


def configure_logging(level: str | int = "WARNING", *, json_lines: bool = False, trace: bool = False) -> None:
    root = logging.getLogger()
    handler = _StderrHandler()
    handler.setFormatter(
        JsonFormatter() if json_lines else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.setLevel(level if isinstance(level, int) else getattr(logging, level.upper(), logging.INFO))
    _replace_own_handler(root, handler)
    if root.level == logging.NOTSET or root.level > handler.level:
        root.setLevel(handler.level)
    tlog = logging.getLogger("headend.trace")
    if trace:
        # Frames are logged by the "headend.trace" logger at TRACE; show them plainly with timestamps.
        th = _StderrHandler()
        th.setFormatter(_TraceFormatter())
        _replace_own_handler(tlog, th)
        tlog.setLevel(TRACE)
        tlog.propagate = False
    else:
        _replace_own_handler(tlog, None)
        tlog.setLevel(logging.NOTSET)
        tlog.propagate = True


def trace_enabled() -> bool:
    return logging.getLogger("headend.trace").isEnabledFor(TRACE)
