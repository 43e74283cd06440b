"""Meter data store: schema (plain-SQL migrations), ingest, queries, VEE and work orders."""

from __future__ import annotations

__all__: list[str] = []
