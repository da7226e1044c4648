"""Backends: reference (numpy), llvm, cuda."""
