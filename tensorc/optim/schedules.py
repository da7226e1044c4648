"""Learning-rate schedules as functions of a step tensor (no recompiles)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..frontend import ops
from ..frontend.tensor import Tensor

Schedule = Callable[[Tensor], Any]


def constant(lr: float) -> Schedule:
    """``lr`` at every step."""
    return lambda step: lr


def warmup_cosine(base_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> Schedule:
    """Linear warmup to ``base_lr`` (step s gets ``base_lr * (s + 1) / warmup_steps``), then cosine decay to
    ``min_lr`` at ``total_steps`` (and ``min_lr`` after).

    >>> import tensorc as tc
    >>> f = warmup_cosine(1.0, 10, 110)
    >>> [round(float(f(tc.tensor(s, "float32"))), 3) for s in (0, 5, 10, 60, 110, 200)]
    [0.1, 0.6, 1.0, 0.5, 0.0, 0.0]
    """
    warmup_steps = max(int(warmup_steps), 0)
    decay_steps = max(int(total_steps) - warmup_steps, 1)

    def lr(step: Tensor) -> Tensor:
        s = ops.cast(step, "float32")
        warm = ops.mul(ops.add(s, 1.0), base_lr / max(warmup_steps, 1))
        progress = ops.clip(ops.div(ops.sub(s, float(warmup_steps)), float(decay_steps)), 0.0, 1.0)
        cosine = ops.add(min_lr, ops.mul(ops.add(ops.cos(ops.mul(progress, math.pi)), 1.0), 0.5 * (base_lr - min_lr)))
        return ops.where(ops.lt(s, float(warmup_steps)), warm, cosine)

    return lr
