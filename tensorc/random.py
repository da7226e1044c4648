"""Counter-based random numbers: ``key``, ``split``, ``uniform``, ``normal``, ``bernoulli``.

Every random value is a pure function of a key (``u32[2]``) and the element's
position, defined by the integer Threefry-2x32 algorithm, so every backend
produces the same bits. Keys are never mutated: split them.

>>> import tensorc as tc
>>> k1, k2 = tc.random.split(tc.random.key(0))
>>> u = tc.random.uniform(k1, (3,))
>>> bool(((u >= 0) & (u < 1)).numpy().all())
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import TensorcError
from .frontend import ops
from .frontend.tensor import Tensor
from .frontend.tracing import apply
from .ir import dtypes


def key(seed: int) -> Tensor:
    """A key from an integer seed (any Python int; 64 bits are used)."""
    if not isinstance(seed, (int, np.integer)):
        raise TensorcError(f"random.key needs an integer seed, got {type(seed).__name__}")
    s = int(seed) & 0xFFFFFFFFFFFFFFFF
    return Tensor._concrete(np.array([s >> 32, s & 0xFFFFFFFF], dtype=np.uint32))


def _check_key(k: Any) -> Tensor:
    k = ops.as_tensor(k)
    if k.shape != (2,) or k.dtype != dtypes.uint32:
        raise TensorcError(f"a random key is a u32[2] tensor (from tc.random.key), got {k.dtype.short}{list(k.shape)}")
    return k


def bits(k: Any, shape: Any) -> Tensor:
    """Raw uint32 random bits of ``shape``."""
    return apply("random_bits", [_check_key(k)], {"shape": ops._shape_arg(shape)})


def split(k: Any, num: int = 2) -> Tensor:
    """``num`` new independent keys, as a ``u32[num, 2]`` tensor (index or unpack it)."""
    return bits(k, (num, 2))


def fold_in(k: Any, data: int) -> Tensor:
    """A new key derived from ``k`` and an integer (e.g. a step number)."""
    k = _check_key(k)
    # Hash the key first, then offset: adding data to the raw key would make
    # fold_in(key(s), t + 1) == fold_in(key(s + 1), t).
    hashed = bits(k, (2,))
    mixed = ops.add(hashed, Tensor._concrete(np.array([0, int(data) & 0xFFFFFFFF], dtype=np.uint32)))
    return bits(mixed, (2,))


def uniform(k: Any, shape: Any = (), dtype: Any = "float32", minval: float = 0.0, maxval: float = 1.0) -> Tensor:
    """Uniform floats in ``[minval, maxval)``, 24 random bits each."""
    dt = dtypes.dtype(dtype)
    if not dt.is_float:
        raise TensorcError(f"uniform needs a float dtype, got {dt.name}")
    b = bits(k, shape)
    unit = ops.mul(ops.cast(ops.floordiv(b, Tensor._concrete(np.uint32(256))), "float32"), 2.0 ** -24)
    if minval != 0.0 or maxval != 1.0:
        unit = ops.add(ops.mul(unit, maxval - minval), minval)
    return ops.cast(unit, dt)


def normal(k: Any, shape: Any = (), dtype: Any = "float32", mean: float = 0.0, std: float = 1.0) -> Tensor:
    """Standard normal samples (Box-Muller on two uniforms), scaled by ``std``, shifted by ``mean``."""
    shape = ops._shape_arg(shape)
    u = uniform(k, (2,) + shape, "float32")
    u1 = ops.sub(1.0, u[0])  # in (0, 1]: log is finite
    u2 = u[1]
    z = ops.mul(ops.sqrt(ops.mul(ops.log(u1), -2.0)), ops.cos(ops.mul(u2, 2 * math.pi)))
    if std != 1.0 or mean != 0.0:
        z = ops.add(ops.mul(z, std), mean)
    return ops.cast(z, dtype)


def bernoulli(k: Any, p: Any = 0.5, shape: Any = None) -> Tensor:
    """Booleans that are True with probability ``p``."""
    if shape is None:
        shape = ops.as_tensor(p).shape
    return ops.lt(uniform(k, shape), p)


def randint(k: Any, shape: Any, low: int, high: int, dtype: Any = "int64") -> Tensor:
    """Integers in ``[low, high)`` (slightly biased when the range is not a power of two and huge)."""
    if high <= low:
        raise TensorcError(f"randint needs low < high, got [{low}, {high})")
    b = ops.cast(bits(k, shape), "int64")
    return ops.cast(ops.add(ops.mod(b, high - low), low), dtype)


def permutation(k: Any, n: int) -> Tensor:
    """A random permutation of ``0..n-1`` (sort of random keys; eager only)."""
    keys = bits(k, (n,)).numpy()
    return Tensor._concrete(np.argsort(keys, kind="stable").astype(np.int64))
