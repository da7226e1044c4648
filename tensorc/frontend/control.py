"""``tc.scan``: a loop whose body is traced once into a Graph.

An RNN over 1,000 steps is one ``scan`` node, so compile time does not grow
with sequence length, and autodiff turns it into one reverse scan.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import TensorcError
from ..ir.dtypes import type_str
from ..ir.node import Graph
from . import pytree
from .ops import as_tensor
from .tensor import Tensor
from .tracing import apply, trace_scope


def scan(fn: Callable[[Any, Any], tuple[Any, Any]], init: Any, xs: Any = None, length: int | None = None,
         reverse: bool = False) -> tuple[Any, Any]:
    """Loop ``carry, y = fn(carry, x)`` over the leading axis of ``xs``.

    Returns ``(final_carry, ys)`` where ``ys`` stacks every step's ``y`` along a
    new leading axis (as ``jax.lax.scan``). ``carry`` must keep its structure,
    shapes and dtypes from step to step.

    >>> import tensorc as tc
    >>> total, running = tc.scan(lambda c, x: (c + x, c + x), tc.tensor(0.0), tc.arange(4.0))
    >>> float(total), running.tolist()
    (6.0, [0.0, 1.0, 3.0, 6.0])
    """
    init_leaves, init_tree = pytree.flatten(init)
    x_leaves, x_tree = pytree.flatten(xs)
    init_t = [as_tensor(v) for v in init_leaves]
    x_t = [as_tensor(v) for v in x_leaves]
    if length is None:
        if not x_t:
            raise TensorcError("scan: give xs or length")
        length = x_t[0].shape[0] if x_t[0].ndim else -1
    for i, x in enumerate(x_t):
        if x.ndim == 0 or x.shape[0] != length:
            raise TensorcError(f"scan: xs leaf {i} has shape {x.shape}; every leaf needs leading dim {length}")
    name = getattr(fn, "__name__", "body")
    with trace_scope(f"scan_{name}") as body_trace:
        carry_params = [body_trace.new_param(t.shape, t.dtype, f"carry{i}") for i, t in enumerate(init_t)]
        x_params = [body_trace.new_param(t.shape[1:], t.dtype, f"x{i}") for i, t in enumerate(x_t)]
        carry_in = pytree.unflatten(init_tree, [Tensor._traced(p, body_trace) for p in carry_params])
        x_in = pytree.unflatten(x_tree, [Tensor._traced(p, body_trace) for p in x_params])
        result = fn(carry_in, x_in)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TensorcError(f"scan: {name} must return a pair (new_carry, y), got {type(result).__name__}")
        new_carry, y = result
        carry_leaves, carry_tree = pytree.flatten(new_carry)
        if carry_tree != init_tree:
            raise TensorcError(f"scan: {name} returned a carry of structure {carry_tree}, but init has {init_tree}")
        carry_out = [as_tensor(v, t.dtype) for v, t in zip(carry_leaves, init_t)]
        for i, (c, t) in enumerate(zip(carry_out, init_t)):
            if c.shape != t.shape or c.dtype != t.dtype:
                raise TensorcError(
                    f"scan: {name} changes carry leaf {i} from {type_str(t.shape, t.dtype)} to {type_str(c.shape, c.dtype)}; "
                    "the carry must keep its shape and dtype (cast it, or give init the right dtype)"
                )
        y_leaves, y_tree = pytree.flatten(y)
        y_t = [as_tensor(v) for v in y_leaves]
        outputs = [body_trace.lift(t) for t in carry_out + y_t]
    consts = list(body_trace.captured)
    const_params = [body_trace._capture_nodes[id(t)] for t in consts]
    body = Graph(const_params + carry_params + x_params, outputs, name=f"scan_{name}")
    outs = apply("scan", consts + init_t + x_t, {
        "body": body, "n_consts": len(consts), "n_carry": len(init_t), "length": length, "reverse": bool(reverse)})
    outs = list(outs) if isinstance(outs, tuple) else [outs]
    return pytree.unflatten(init_tree, outs[:len(init_t)]), pytree.unflatten(y_tree, outs[len(init_t):])
