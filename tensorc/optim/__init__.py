"""Optimizers written in the DSL, so they compile into the training step.

An optimizer is a pair of pure functions: ``init(params) -> state`` and
``update(grads, state, params) -> (new_params, new_state)``. The step count
lives in the state as a tensor, so learning-rate schedules change nothing
about the compiled program from step to step.

>>> import numpy as np, tensorc as tc
>>> opt = tc.optim.SGD(lr=0.1)
>>> params = {"w": np.ones(2, np.float32)}
>>> state = opt.init(params)
>>> new, state = opt.update({"w": np.full(2, 0.5, np.float32)}, state, params)
>>> new["w"].tolist()
[0.949999988079071, 0.949999988079071]
"""

from .clip import clip_grad_norm, global_norm
from .optimizers import SGD, Adam, AdamW, Optimizer
from .schedules import constant, warmup_cosine

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "clip_grad_norm", "constant", "global_norm", "warmup_cosine"]
