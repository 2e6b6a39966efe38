"""leaf: Learning to Focus (LeaF) for small language models."""

__version__ = "0.1.0"
