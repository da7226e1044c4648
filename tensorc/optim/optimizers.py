"""SGD (with momentum), Adam and AdamW."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import TensorcError
from ..frontend import ops, pytree
from ..frontend.tensor import Tensor
from .schedules import constant

LR = float | Callable[[Tensor], Any]


def _schedule(lr: LR) -> Callable[[Tensor], Any]:
    return lr if callable(lr) else constant(float(lr))


def _zeros_like(tree: Any) -> Any:
    return pytree.tree_map(lambda p: np.zeros(np.shape(p), np.asarray(p).dtype), tree)


def _leaf_names(tree: Any) -> list[str]:
    """Dotted names (``blocks.0.attn.qkv.weight``, as ``tc.nn.named_parameters``) in pytree leaf order."""
    names: list[str] = []

    def rec(node: Any, prefix: str) -> None:
        spec = pytree._children(node)
        if spec is None:
            names.append(prefix)
            return
        kind, aux, children, labels = spec
        parts = [str(k) for k in aux] if kind == "dict" else [lab.strip(".[]") for lab in labels]
        for child, part in zip(children, parts):
            rec(child, f"{prefix}.{part}" if prefix else part)

    rec(tree, "")
    return names


# The step counter is int32: a float32 counter stops counting at 2**24 steps (and the schedule with it).
def _new_step() -> np.ndarray:
    return np.zeros((), np.int32)


def _lr_as(lr: Any, dtype: Any) -> Any:
    """A Python number stays a weak scalar (exact in float64); anything else (a tensor, a numpy
    scalar from a schedule) is cast to the parameter's dtype so it cannot promote it."""
    weak = isinstance(lr, (int, float)) and not isinstance(lr, np.generic)  # np.float64 subclasses float
    return lr if weak else ops.cast(ops.as_tensor(lr), dtype)


def _check_same_structure(grads: Any, params: Any) -> None:
    g, p = pytree.flatten(grads)[1], pytree.flatten(params)[1]
    if g != p:
        raise TensorcError(f"gradients have structure {g}, parameters {p}")


class Optimizer:
    """``init(params) -> state``; ``update(grads, state, params) -> (params, state)``."""

    def init(self, params: Any) -> dict[str, Any]:
        raise NotImplementedError

    def update(self, grads: Any, state: dict[str, Any], params: Any) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError

    def learning_rate(self, state: dict[str, Any]) -> Any:
        """The learning rate the next update will use."""
        return self.lr(ops.as_tensor(state["step"]))


class SGD(Optimizer):
    """``v = momentum * v + g (+ wd * p)``; ``p -= lr * v`` (or Nesterov's look-ahead)."""

    def __init__(self, lr: LR = 1e-2, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0) -> None:
        if nesterov and momentum <= 0:
            raise TensorcError("Nesterov momentum needs momentum > 0")
        self.lr, self.momentum, self.nesterov, self.weight_decay = _schedule(lr), momentum, nesterov, weight_decay

    def init(self, params: Any) -> dict[str, Any]:
        state: dict[str, Any] = {"step": _new_step()}
        if self.momentum:
            state["momentum"] = _zeros_like(params)
        return state

    def update(self, grads: Any, state: dict[str, Any], params: Any) -> tuple[Any, dict[str, Any]]:
        _check_same_structure(grads, params)
        step = ops.as_tensor(state["step"])
        lr = self.lr(step)
        g_leaves, tree = pytree.flatten(grads)
        p_leaves = pytree.flatten(params)[0]
        m_leaves = pytree.flatten(state["momentum"])[0] if self.momentum else [None] * len(p_leaves)
        new_p, new_m = [], []
        for g, p, m in zip(g_leaves, p_leaves, m_leaves):
            p = ops.as_tensor(p)
            g = ops.cast(ops.as_tensor(g), p.dtype)
            if self.weight_decay:
                g = ops.add(g, ops.mul(p, self.weight_decay))
            if self.momentum:
                m = ops.add(ops.mul(m, self.momentum), g)
                new_m.append(m)
                g = ops.add(g, ops.mul(m, self.momentum)) if self.nesterov else m
            new_p.append(ops.sub(p, ops.mul(g, _lr_as(lr, p.dtype))))
        new_state: dict[str, Any] = {"step": ops.add(step, 1)}
        if self.momentum:
            new_state["momentum"] = pytree.unflatten(tree, new_m)
        return pytree.unflatten(tree, new_p), new_state


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``p -= lr * (m̂ / (√v̂ + eps) + wd * p)``.

    ``decay_mask(name, param) -> bool`` picks which parameters decay, by dotted name
    (``blocks.0.attn.qkv.weight``) or value (default: those with two or more
    dimensions, i.e. not biases, norms' gains or scalars).
    """

    decoupled = True

    def __init__(self, lr: LR = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, decay_mask: Callable[[str, Any], bool] | None = None) -> None:
        self.lr, self.betas, self.eps, self.weight_decay = _schedule(lr), betas, eps, weight_decay
        self.decay_mask = decay_mask or (lambda name, p: np.ndim(p) >= 2)

    def init(self, params: Any) -> dict[str, Any]:
        return {"step": _new_step(), "m": _zeros_like(params), "v": _zeros_like(params)}

    def update(self, grads: Any, state: dict[str, Any], params: Any) -> tuple[Any, dict[str, Any]]:
        _check_same_structure(grads, params)
        b1, b2 = self.betas
        step = ops.add(ops.as_tensor(state["step"]), 1)
        lr = self.lr(ops.as_tensor(state["step"]))  # a Python float stays a weak scalar: exact in float64
        # Bias corrections in float64: in float32, 1 - 0.999**t cancels to ~1e-5 relative error at small t.
        corr1 = ops.sub(1.0, ops.pow(b1, ops.cast(step, "float64")))
        corr2 = ops.sub(1.0, ops.pow(b2, ops.cast(step, "float64")))
        p_leaves, tree = pytree.flatten(params)
        with_path = list(zip(_leaf_names(params), p_leaves))
        g_leaves = pytree.flatten(grads)[0]
        m_leaves, v_leaves = pytree.flatten(state["m"])[0], pytree.flatten(state["v"])[0]
        new_p, new_m, new_v = [], [], []
        for (path, p), g, m, v in zip(with_path, g_leaves, m_leaves, v_leaves):
            p = ops.as_tensor(p)
            g = ops.cast(ops.as_tensor(g), p.dtype)
            decay = self.weight_decay if self.decay_mask(path, p) else 0.0
            if decay and not self.decoupled:
                g = ops.add(g, ops.mul(p, decay))
            m = ops.add(ops.mul(m, b1), ops.mul(g, 1 - b1))
            v = ops.add(ops.mul(v, b2), ops.mul(ops.mul(g, g), 1 - b2))
            m_hat = ops.div(m, ops.cast(corr1, p.dtype))
            v_hat = ops.div(v, ops.cast(corr2, p.dtype))
            delta = ops.div(m_hat, ops.add(ops.sqrt(v_hat), self.eps))
            if decay and self.decoupled:
                delta = ops.add(delta, ops.mul(p, decay))
            new_p.append(ops.sub(p, ops.mul(delta, _lr_as(lr, p.dtype))))
            new_m.append(m)
            new_v.append(v)
        return pytree.unflatten(tree, new_p), {"step": step, "m": pytree.unflatten(tree, new_m), "v": pytree.unflatten(tree, new_v)}


class Adam(AdamW):
    """Adam; ``weight_decay`` here is the classic L2 term added to the gradient."""

    decoupled = False

    def __init__(self, lr: LR = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr, betas, eps, weight_decay, decay_mask=lambda name, p: True)
