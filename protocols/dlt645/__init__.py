"""DL/T 645-2007 (and -1997 reads): sans-I/O codec, DI registry, vendor quirks.

Nothing in this package imports asyncio or serial; the client in
``protocols.dlt645.client`` and the simulators wrap it.
"""
