"""pystrument: the command line and the server-side settings."""

__version__ = "0.1.0"
