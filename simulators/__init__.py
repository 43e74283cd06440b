"""Simulated field equipment: a DL/T 645 meter bus (and, from other modules, Modbus/MQTT devices).

Shared pieces: :mod:`simulators.clock` (accelerated simulated time),
:mod:`simulators.loadprofile` (synthetic or CSV-replayed load) and
:mod:`simulators.faults` (fault injection specs). See docs/simulators.md.
"""

__all__: list[str] = []
