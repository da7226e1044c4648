"""Neural-network building blocks written in the DSL."""

from . import functional

__all__ = ["functional"]
