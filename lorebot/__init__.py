"""lorebot's shared kernel: settings, domain types, errors, assets and the CLI."""

__version__ = "0.1.0"
