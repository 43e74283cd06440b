"""Modbus RTU/TCP: register maps as data (:mod:`.maps`, sans-I/O) and the pymodbus-backed client (:mod:`.client`).

Import :mod:`protocols.modbus.client` only where a connection is needed: it is the one
module of the project that imports pymodbus.
"""

from __future__ import annotations

__all__: list[str] = []
