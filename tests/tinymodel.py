"""The tests' tiny model: the package's builder (also used by the embedded demo)."""

from dpo_operator.embedded.tiny_model import build_tiny_model

__all__ = ["build_tiny_model"]
