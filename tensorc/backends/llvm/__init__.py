"""The LLVM CPU backend: loop nests compiled with llvmlite for the host CPU."""

from .executable import LLVMExecutable

__all__ = ["LLVMExecutable"]
