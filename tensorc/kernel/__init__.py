"""Kernel IR: loop nests lowered from scheduled kernels, fed to every native backend."""

from .ir import LoopFunc
from .lower import LoweredKernel, lower_kernel

__all__ = ["LoopFunc", "LoweredKernel", "lower_kernel"]
