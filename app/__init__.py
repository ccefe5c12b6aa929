"""Junction: keeps a product's connections to third-party platforms alive."""

__version__ = "0.1.0"
