"""MQTT broker fixtures (owned by the MQTT adapter)."""
