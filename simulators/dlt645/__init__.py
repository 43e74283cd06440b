"""Simulated DL/T 645-2007 meter bus (pty or TCP), built on ``protocols.dlt645``. See docs/simulators.md."""

from simulators.dlt645.bus import BusStats, MeterBusSimulator, ReceivedFrame
from simulators.dlt645.meter import ControlEvent, SimMeter
from simulators.faults import Fault

__all__ = ["BusStats", "ControlEvent", "Fault", "MeterBusSimulator", "ReceivedFrame", "SimMeter"]
