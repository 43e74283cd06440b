"""Protocol adapters: DL/T 645, Modbus and MQTT, and the pieces they share.

Codecs are sans-I/O (bytes in, events out). Transports and clients wrap them.
Every adapter turns what it reads into :class:`protocols.reading.Reading` objects
keyed by the shared quantity codes in :mod:`protocols.quantities`.
"""
