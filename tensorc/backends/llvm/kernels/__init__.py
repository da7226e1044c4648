"""Library kernels of the LLVM backend (see :mod:`tensorc.backends.llvm.library`)."""
