"""Simulated MQTT load-management terminals (``headend sim mqtt``): see :mod:`.fleet`."""

from simulators.mqtt.fleet import FleetFaults, FleetStats, MqttTerminalFleet, SimTerminal

__all__ = ["FleetFaults", "FleetStats", "MqttTerminalFleet", "SimTerminal"]
