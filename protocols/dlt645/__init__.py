"""DL/T 645-2007 (and -1997 reads): sans-I/O codec, DI registry, vendor quirks.

The codec modules (frame, formats, registry, records, events, services, connection,
quirks, describe) import neither asyncio nor serial; the asyncio client in
``protocols.dlt645.client`` and the simulators wrap them.
"""
