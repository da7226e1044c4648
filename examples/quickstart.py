"""Quickstart: trace a small model, print its IR, run it, check it against numpy.

    python examples/quickstart.py
"""

from __future__ import annotations

import numpy as np

import tensorc as tc
import tensorc.nn.functional as F


def init_params(seed: int = 0, d_in: int = 16, d_hidden: int = 32, n_classes: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w1": (rng.standard_normal((d_in, d_hidden)) / np.sqrt(d_in)).astype(np.float32),
        "b1": np.zeros(d_hidden, np.float32),
        "w2": (rng.standard_normal((d_hidden, n_classes)) / np.sqrt(d_hidden)).astype(np.float32),
        "b2": np.zeros(n_classes, np.float32),
    }


@tc.jit
def loss_fn(params, x, y):
    h = F.gelu(x @ params["w1"] + params["b1"])  # (B, hidden)
    logits = h @ params["w2"] + params["b2"]  # (B, classes)
    return F.cross_entropy(logits, y)


def numpy_loss(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    from math import erf

    pre = x @ params["w1"] + params["b1"]
    h = pre * 0.5 * (1 + np.vectorize(erf)(pre / np.sqrt(2)))
    logits = h @ params["w2"] + params["b2"]
    logits = logits - logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


def main() -> int:
    params = init_params()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 16)).astype(np.float32)
    y = rng.integers(0, 4, size=8)
    lowered = loss_fn.lower(params, x, y)
    print(lowered.graph)
    loss = float(loss_fn(params, x, y))
    expected = numpy_loss(params, x, y)
    print(f"\ntensorc loss {loss:.6f}   numpy loss {expected:.6f}   target {tc.config.target}")
    if abs(loss - expected) > 1e-4 * max(1.0, abs(expected)):
        print("MISMATCH")
        return 1
    print("OK: tensorc matches numpy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
