"""Checking gradients against central differences.

The tolerance table lives here, once. Checks run in float64 by default:
float inputs are converted, and asking for float32 warns, because central
differences in float32 can only catch gross errors.

| dtype   | eps  | atol | rtol |
|---------|------|------|------|
| float64 | 1e-6 | 1e-5 | 1e-3 |
| float32 | 1e-3 | 1e-2 | 1e-2 |

An element passes when ``|analytic - numeric| <= atol + rtol * |numeric|``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import TensorcError
from ..frontend import pytree
from ..frontend.ops import as_tensor
from ..frontend.tensor import Tensor


@dataclass(frozen=True)
class Tolerance:
    """Central-difference step and the tolerances one dtype is checked with."""
    eps: float
    atol: float
    rtol: float


TOLERANCES = {
    "float64": Tolerance(eps=1e-6, atol=1e-5, rtol=1e-3),
    "float32": Tolerance(eps=1e-3, atol=1e-2, rtol=1e-2),
}


class GradcheckError(TensorcError, AssertionError):
    """Analytic and numeric gradients disagree."""


def _prepare(args: tuple[Any, ...], dtype: str) -> tuple[list[Any], pytree.TreeDef, list[int]]:
    leaves, tree = pytree.flatten(args)
    out, float_pos = [], []
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, (Tensor, np.ndarray, np.generic, float)) and not isinstance(leaf, bool):
            arr = np.array(np.asarray(leaf))
            if arr.dtype.kind == "f" or isinstance(leaf, float) or str(arr.dtype) == "bfloat16":
                arr = arr.astype(dtype)
                float_pos.append(i)
            out.append(arr)
        else:
            out.append(leaf)
    return out, tree, float_pos


def gradcheck(fn: Callable[..., Any], *args: Any, eps: float | None = None, atol: float | None = None,
              rtol: float | None = None, dtype: str = "float64", seed: int = 0, raise_exception: bool = True) -> bool:
    """Compare ``tc.vjp`` gradients of ``fn`` with central differences.

    Every float leaf of ``args`` is checked, element by element; a non-scalar
    output is reduced by a fixed random projection. Returns True, or raises
    :class:`GradcheckError` naming the input, the element, and both values.

    >>> import tensorc as tc, numpy as np
    >>> tc.gradcheck(lambda x: tc.tanh(x).sum(), np.array([0.1, -0.7]))
    True
    """
    from ..frontend.jit import jit
    from .api import vjp

    if dtype not in TOLERANCES:
        raise TensorcError(f"gradcheck dtype must be one of {sorted(TOLERANCES)}, got {dtype!r}")
    if dtype != "float64":
        warnings.warn(f"gradcheck in {dtype}: central differences are imprecise; use float64 (the default)", stacklevel=2)
    tol = TOLERANCES[dtype]
    eps, atol, rtol = eps or tol.eps, atol if atol is not None else tol.atol, rtol if rtol is not None else tol.rtol
    leaves, tree, float_pos = _prepare(args, dtype)
    if not float_pos:
        raise TensorcError("gradcheck: no floating-point inputs to check")
    paths = [p for p, _ in pytree.flatten_with_path(args)[0]]
    primals = pytree.unflatten(tree, leaves)
    out, back = vjp(fn, *primals)
    out_leaves, out_tree = pytree.flatten(out)
    rng = np.random.default_rng(seed)
    projections = [rng.standard_normal(np.shape(o)).astype(np.asarray(o).dtype) if as_tensor(o).dtype.is_float
                   else np.zeros(np.shape(o), np.asarray(o).dtype) for o in out_leaves]
    analytic = _by_path(back(pytree.unflatten(out_tree, projections)), paths)

    def objective(*flat: Any) -> Any:
        o = fn(*pytree.unflatten(tree, list(flat)))
        total = None
        for leaf, r in zip(pytree.flatten(o)[0], projections):
            leaf = as_tensor(leaf)
            if leaf.dtype.is_float:
                term = (leaf * r).sum()
                total = term if total is None else total + term
        return total

    numeric_fn = jit(objective)
    for k, i in enumerate(float_pos):
        x = leaves[i]
        g_analytic = np.asarray(analytic[i]) if analytic[i] is not None else np.zeros_like(x)
        if g_analytic.shape != x.shape:
            raise GradcheckError(f"gradcheck: the gradient of input {_pretty(paths[i])} has shape {g_analytic.shape}, "
                                 f"the input {x.shape} (tensorc bug)")
        g_numeric = np.zeros(x.shape, np.float64)
        for idx in np.ndindex(*x.shape):
            orig = x[idx]
            x[idx] = orig + eps
            plus = float(numeric_fn(*leaves))
            x[idx] = orig - eps
            minus = float(numeric_fn(*leaves))
            x[idx] = orig
            g_numeric[idx] = (plus - minus) / (2 * eps)
        err = np.abs(g_analytic.astype(np.float64) - g_numeric)
        bad = err > atol + rtol * np.abs(g_numeric)
        if bad.any():
            where = tuple(int(v) for v in np.argwhere(bad)[0])
            msg = (f"gradcheck failed for input {_pretty(paths[i])} element {where}: analytic {float(g_analytic[where])!r} "
                   f"vs numeric {float(g_numeric[where])!r} (|diff| {err[where]:.3g} > atol {atol} + rtol {rtol} * |numeric|); "
                   f"{int(bad.sum())} of {bad.size} elements differ, max |diff| {err.max():.3g}")
            if raise_exception:
                raise GradcheckError(msg)
            return False
        del k
    return True


def _by_path(grads: Any, paths: list[str]) -> list[Any]:
    """One gradient per input leaf path. vjp gives None for integer/bool inputs and
    pytree.flatten drops None, so match by path instead of by position."""
    found = dict(pytree.flatten_with_path(grads)[0])
    return [found.get(p) for p in paths]


def _pretty(path: str) -> str:
    return "arg" + path[1:].replace("]", "", 1) if path.startswith("[") else path


def gradgradcheck(fn: Callable[..., Any], *args: Any, seed: int = 0, **kwargs: Any) -> bool:
    """Check second derivatives: gradcheck of ``args -> <w, J(args)ᵀ r>`` for fixed random r, w.

    >>> import tensorc as tc, numpy as np
    >>> tc.gradgradcheck(lambda x: (tc.exp(x) * x).sum(), np.array([0.3, -0.2]))
    True
    """
    from .api import vjp

    dtype = kwargs.get("dtype", "float64")
    leaves, tree, float_pos = _prepare(args, dtype)
    primals = pytree.unflatten(tree, leaves)
    out = fn(*primals)
    out_leaves, out_tree = pytree.flatten(out)
    rng = np.random.default_rng(seed + 1)
    r = [rng.standard_normal(np.shape(o)).astype(np.asarray(o).dtype) if as_tensor(o).dtype.is_float
         else np.zeros(np.shape(o), np.asarray(o).dtype) for o in out_leaves]
    w = {i: rng.standard_normal(np.shape(leaves[i])).astype(dtype) for i in float_pos}
    paths = [p for p, _ in pytree.flatten_with_path(primals)[0]]

    def first_order(*a: Any) -> Any:
        _, back = vjp(fn, *a)
        grads = _by_path(back(pytree.unflatten(out_tree, r)), paths)
        total = None
        for i in float_pos:
            if grads[i] is not None:
                term = (grads[i] * w[i]).sum()
                total = term if total is None else total + term
        return total

    return gradcheck(first_order, *primals, seed=seed, **kwargs)
