"""lure: Learn, Unlearn, Relearn on data that arrives in chunks."""

__version__ = "0.1.0"
