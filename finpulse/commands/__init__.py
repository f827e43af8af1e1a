"""One module per ``finpulse`` subcommand; each exposes ``register(subparsers)``."""
