"""One VJP rule per differentiable primitive, stored in the op registry.

A rule receives a :class:`VJPContext` (the node's input tensors, its output
tensor and attrs) and the output cotangent ``g``, and returns one cotangent
per input (None where an input gets no gradient). Rules are written with the
DSL's own ops, so the backward pass is an ordinary graph (fusable, and
differentiable again for higher-order gradients).

Conventions written down here once:

- ``max`` reductions and ``maximum``/``minimum`` split the gradient evenly
  between tied elements (as JAX and PyTorch do for ``maximum``).
- ``abs`` has gradient 0 at 0 (``sign(0) = 0``).
- ``pow(a, b)`` contributes ``log(a)`` to b's gradient only where ``a > 0``.
- ops marked non-differentiable (comparisons, ``floor``, ``sign``, integer
  ``floordiv``, sources) pass no gradient: their derivative is 0 almost everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..frontend import ops as F
from ..frontend.tensor import Tensor
from ..ir.node import Attrs, Node
from ..ir.registry import REGISTRY

Rule = Callable[["VJPContext", Tensor], tuple[Any, ...]]


@dataclass
class VJPContext:
    """What a VJP rule sees: the node, its input tensors, its output tensor(s) and attrs."""
    node: Node
    inputs: list[Any]  # Tensors (or tuples of Tensors)
    out: Any
    attrs: Attrs


def vjp_rule(*names: str) -> Callable[[Rule], Rule]:
    """Decorator: store the function as the VJP rule of the named ops in the registry."""
    def deco(fn: Rule) -> Rule:
        for name in names:
            REGISTRY[name].vjp = fn
        return fn

    return deco


# ----------------------------------------------------------------------------- elementwise


@vjp_rule("neg")
def _neg(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    return (F.neg(g),)


@vjp_rule("exp")
def _exp(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    return (F.mul(g, c.out),)


@vjp_rule("log")
def _log(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    return (F.div(g, c.inputs[0]),)


@vjp_rule("sqrt")
def _sqrt(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    return (F.div(F.mul(g, 0.5), c.out),)


@vjp_rule("rsqrt")
def _rsqrt(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    y = c.out
    return (F.mul(F.mul(g, -0.5), F.mul(F.mul(y, y), y)),)


@vjp_rule("reciprocal")
def _reciprocal(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    return (F.neg(F.mul(g, F.mul(c.out, c.out))),)


@vjp_rule("tanh")
def _tanh(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    return (F.mul(g, F.sub(1.0, F.mul(c.out, c.out))),)


@vjp_rule("sigmoid")
def _sigmoid(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    return (F.mul(g, F.mul(c.out, F.sub(1.0, c.out))),)


@vjp_rule("sin")
def _sin(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    return (F.mul(g, F.cos(c.inputs[0])),)


@vjp_rule("cos")
def _cos(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    return (F.neg(F.mul(g, F.sin(c.inputs[0]))),)


@vjp_rule("erf")
def _erf(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    x = c.inputs[0]
    return (F.mul(g, F.mul(F.exp(F.neg(F.mul(x, x))), 2 / math.sqrt(math.pi))),)


@vjp_rule("abs")
def _abs(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    return (F.mul(g, F.sign(c.inputs[0])),)


@vjp_rule("add")
def _add(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    return g, g


@vjp_rule("sub")
def _sub(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    return g, F.neg(g)


@vjp_rule("mul")
def _mul(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    a, b = c.inputs
    return F.mul(g, b), F.mul(g, a)


@vjp_rule("div")
def _div(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    a, b = c.inputs
    ga = F.div(g, b)
    return ga, F.neg(F.mul(ga, F.div(a, b)))


@vjp_rule("pow")
def _pow(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    a, b = c.inputs
    ga = F.mul(g, F.mul(b, F.pow(a, F.sub(b, 1.0))))
    positive = F.gt(a, 0.0)
    safe_a = F.where(positive, a, 1.0)
    gb = F.where(positive, F.mul(g, F.mul(c.out, F.log(safe_a))), 0.0)
    return ga, gb


def _tie_split(c: VJPContext, g: Tensor, first_wins: Any) -> tuple[Any, ...]:
    a, b = c.inputs
    wa = F.add(F.cast(first_wins, g.dtype), F.mul(F.cast(F.eq(a, b), g.dtype), 0.5))
    ga = F.mul(g, wa)
    return ga, F.sub(g, ga)


@vjp_rule("maximum")
def _maximum(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    return _tie_split(c, g, F.gt(c.inputs[0], c.inputs[1]))


@vjp_rule("minimum")
def _minimum(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    return _tie_split(c, g, F.lt(c.inputs[0], c.inputs[1]))


@vjp_rule("mod")
def _mod(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    a, b = c.inputs
    return g, F.neg(F.mul(g, F.floor(F.div(a, b))))


@vjp_rule("where")
def _where(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    cond = c.inputs[0]
    zero = F.zeros_like(g)
    return None, F.where(cond, g, zero), F.where(cond, zero, g)


@vjp_rule("cast")
def _cast(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    src = c.inputs[0].dtype
    return (F.cast(g, src) if src.is_float else None,)


# ----------------------------------------------------------------------------- reductions


def _unreduce(g: Tensor, in_shape: tuple[int, ...], axes: tuple[int, ...]) -> Tensor:
    kept = tuple(1 if i in axes else s for i, s in enumerate(in_shape))
    return F.broadcast_to(F.reshape(g, kept), in_shape)


@vjp_rule("sum")
def _sum(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    return (_unreduce(g, c.inputs[0].shape, c.attrs["axes"]),)


@vjp_rule("max")
def _max(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    x, axes = c.inputs[0], c.attrs["axes"]
    hit = F.cast(F.eq(x, _unreduce(c.out, x.shape, axes)), g.dtype)
    count = F.sum(hit, axes)
    return (F.mul(hit, _unreduce(F.div(g, count), x.shape, axes)),)


# ----------------------------------------------------------------------------- movement


@vjp_rule("reshape")
def _reshape(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    return (F.reshape(g, c.inputs[0].shape),)


@vjp_rule("permute")
def _permute(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    dims = c.attrs["dims"]
    inverse = [0] * len(dims)
    for i, d in enumerate(dims):
        inverse[d] = i
    return (F.permute(g, *inverse),)


@vjp_rule("expand")
def _expand(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    in_shape = c.inputs[0].shape
    axes = tuple(i for i, (a, b) in enumerate(zip(in_shape, g.shape)) if a != b)
    return (F.reshape(F.sum(g, axes), in_shape) if axes else g,)


@vjp_rule("slice")
def _slice(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    in_shape = c.inputs[0].shape
    starts, steps = c.attrs["starts"], c.attrs["steps"]
    if 0 in g.shape:
        return (F.zeros(in_shape, dtype=g.dtype),)
    # Put every element back at start + j * step: upsample strided axes with zeros, then pad.
    for axis, step in enumerate(steps):
        if step > 1:
            m = g.shape[axis]
            g = F.reshape(g, g.shape[:axis + 1] + (1,) + g.shape[axis + 1:])
            widths = [(0, 0)] * g.ndim
            widths[axis + 1] = (0, step - 1)
            g = F.pad(g, widths)
            g = F.reshape(g, g.shape[:axis] + (m * step,) + g.shape[axis + 2:])
            cut = [(0, 0)] * g.ndim
            cut[axis] = (0, -(step - 1))
            g = F.pad(g, cut)
    widths = [(a, n - a - m) for a, n, m in zip(starts, in_shape, g.shape)]
    return (F.pad(g, widths),)


@vjp_rule("pad")
def _pad(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    lo, hi = c.attrs["low"], c.attrs["high"]
    return (F.pad(g, [(-a, -b) for a, b in zip(lo, hi)]),)


@vjp_rule("concat")
def _concat(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    sizes = [t.shape[c.attrs["axis"]] for t in c.inputs]
    return tuple(F.split(g, sizes, c.attrs["axis"]))


# ----------------------------------------------------------------------------- matmul, gather


@vjp_rule("matmul")
def _matmul(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    a, b = c.inputs
    return F.matmul(g, F.transpose(b, -2, -1)), F.matmul(F.transpose(a, -2, -1), g)


@vjp_rule("gather")
def _gather(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    x, idx = c.inputs
    return F.scatter_add(F.zeros_like(x), idx, g, c.attrs["axis"]), None


@vjp_rule("scatter_add")
def _scatter_add(c: VJPContext, g: Tensor) -> tuple[Any, ...]:
    _, idx, _ = c.inputs
    return g, None, F.gather(g, idx, c.attrs["axis"])


# ----------------------------------------------------------------------------- scan (BPTT)


@vjp_rule("scan")
def _scan(c: VJPContext, g: list[Any]) -> tuple[Any, ...]:
    """Backpropagation through time as one reverse scan (see :mod:`tensorc.autodiff.scan`)."""
    from .scan import scan_vjp

    return scan_vjp(c, g)
