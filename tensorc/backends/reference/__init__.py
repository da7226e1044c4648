"""The reference backend: numpy, op by op. The oracle for every test."""

from .interpreter import ReferenceExecutable, evaluate

__all__ = ["ReferenceExecutable", "evaluate"]
