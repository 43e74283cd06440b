"""Simulated Modbus load-management terminals and meters (TCP and RTU on a pty), built from the register maps."""

from __future__ import annotations

__all__: list[str] = []
