"""The frontend: Tensor, tracing, jit, pytrees, source locations."""
