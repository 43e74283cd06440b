"""ami-headend: the collection daemon, remote control and the ``headend`` CLI."""

__version__ = "0.1.0"
