"""A small HTTP/1.1 server on asyncio streams for /health, /metrics and /read (local IPC).

No web framework: the daemon serves three tiny endpoints on 127.0.0.1, one request per
connection, bodies bounded. Handlers are ``async (method, path, query, body) -> (status,
content_type, bytes)``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["Handler", "HttpServer", "json_response"]

LOGGER = logging.getLogger(__name__)

Handler = Callable[[str, str, dict[str, list[str]], bytes], Awaitable[tuple[int, str, bytes]]]
MAX_BODY = 1 << 20
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
            500: "Internal Server Error", 503: "Service Unavailable", 504: "Gateway Timeout"}


def json_response(status: int, obj: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(obj, default=str).encode()


class HttpServer:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.routes: dict[str, Handler] = {}
        self._server: asyncio.Server | None = None

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(60):
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                length = min(int(headers.get("content-length", "0") or 0), MAX_BODY)
                body = await reader.readexactly(length) if length else b""
                parts = urlsplit(target)
                handler = self.routes.get(parts.path)
                if handler is None:
                    status, ctype, payload = json_response(404, {"error": f"no route {parts.path}"})
                else:
                    try:
                        status, ctype, payload = await handler(method, parts.path, parse_qs(parts.query), body)
                    except Exception as exc:
                        LOGGER.exception("HTTP handler %s failed", parts.path)
                        status, ctype, payload = json_response(500, {"error": str(exc)})
            writer.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError):
            pass
        finally:
            writer.close()
