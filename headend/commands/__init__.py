"""``headend`` subcommands, one module per command group; each exposes ``register(app)``."""
