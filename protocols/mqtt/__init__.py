"""MQTT load-management terminals: topic/payload schema (:mod:`.schema`) and aiomqtt client (:mod:`.client`)."""
