"""finpulse: streaming financial sentiment and risk monitoring."""

__version__ = "0.1.0"
