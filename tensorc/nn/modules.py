"""Modules: configuration objects whose parameters live in a separate pytree.

A module is called as ``module(params, x, ...)`` and makes its parameters
with ``module.init(key)``: a nested dict of numpy arrays whose dotted names
(``blocks.0.attn.qkv.weight``) are stable, so checkpoints and optimizers
address parameters by name. Keeping parameters outside the module keeps every
forward function pure, which is what ``tc.jit`` and ``tc.grad`` need.

Initializers (documented per module):

- ``Linear``: weight ~ U(-1/√in, 1/√in) and bias likewise (PyTorch's default),
  or N(0, ``init_std``) with zero bias when ``init_std`` is given (GPT-2 uses 0.02).
- ``Embedding``: N(0, 1), or N(0, ``init_std``).
- ``LayerNorm``: weight 1, bias 0.

>>> import tensorc as tc
>>> lin = tc.nn.Linear(3, 2)
>>> p = lin.init(tc.random.key(0))
>>> sorted(p), p["weight"].shape
(['bias', 'weight'], (2, 3))
>>> lin(p, np.ones((4, 3), np.float32)).shape
(4, 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import random
from ..errors import TensorcError
from ..frontend import ops
from ..frontend.tensor import Tensor
from . import functional as F

Params = dict[str, Any]


def _keys(key: Any, n: int) -> list[Any]:
    ks = random.split(key, n)
    return [ks[i] for i in range(n)]


def _np(t: Tensor, dtype: Any) -> np.ndarray:
    return np.asarray(t.numpy(), dtype=dtype)


class Module:
    """Base class: ``init(key) -> params`` and ``__call__(params, ...)``."""

    dtype: Any = np.float32

    def init(self, key: Any) -> Params:
        raise NotImplementedError

    def __call__(self, params: Params, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


class Linear(Module):
    """``y = x @ weight.T + bias`` with PyTorch's ``[out_features, in_features]`` weight."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init_std: float | None = None,
                 dtype: Any = np.float32) -> None:
        self.in_features, self.out_features, self.bias = in_features, out_features, bias
        self.init_std, self.dtype = init_std, dtype

    def init(self, key: Any) -> Params:
        kw, kb = _keys(key, 2)
        shape = (self.out_features, self.in_features)
        if self.init_std is None:
            bound = 1 / math.sqrt(self.in_features)
            p = {"weight": _np(random.uniform(kw, shape, minval=-bound, maxval=bound), self.dtype)}
            if self.bias:
                p["bias"] = _np(random.uniform(kb, (self.out_features,), minval=-bound, maxval=bound), self.dtype)
        else:
            p = {"weight": _np(random.normal(kw, shape, std=self.init_std), self.dtype)}
            if self.bias:
                p["bias"] = np.zeros(self.out_features, self.dtype)
        return p

    def __call__(self, params: Params, x: Any) -> Tensor:
        return F.linear(x, params["weight"], params.get("bias"))


class Embedding(Module):
    """A table of ``num_embeddings`` vectors of size ``embedding_dim``; ids are bounds-checked."""

    def __init__(self, num_embeddings: int, embedding_dim: int, init_std: float = 1.0, dtype: Any = np.float32) -> None:
        self.num_embeddings, self.embedding_dim, self.init_std, self.dtype = num_embeddings, embedding_dim, init_std, dtype

    def init(self, key: Any) -> Params:
        return {"weight": _np(random.normal(key, (self.num_embeddings, self.embedding_dim), std=self.init_std), self.dtype)}

    def __call__(self, params: Params, ids: Any) -> Tensor:
        return F.embedding(ids, params["weight"])


class LayerNorm(Module):
    """Layer normalization over the trailing ``normalized_shape`` axes."""

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5, elementwise_affine: bool = True,
                 dtype: Any = np.float32) -> None:
        self.shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps, self.affine, self.dtype = eps, elementwise_affine, dtype

    def init(self, key: Any = None) -> Params:
        if not self.affine:
            return {}
        return {"weight": np.ones(self.shape, self.dtype), "bias": np.zeros(self.shape, self.dtype)}

    def __call__(self, params: Params, x: Any) -> Tensor:
        return F.layer_norm(x, self.shape, params.get("weight"), params.get("bias"), self.eps)


class Dropout(Module):
    """Zeroes elements with probability ``p`` when ``training``; needs a ``key`` then."""

    def __init__(self, p: float = 0.1) -> None:
        self.p = p

    def init(self, key: Any = None) -> Params:
        return {}

    def __call__(self, params: Params, x: Any, *, key: Any = None, training: bool = False) -> Tensor:
        return F.dropout(x, self.p, training, key=key)


def sinusoidal_positions(length: int, dim: int, base: float = 10000.0) -> np.ndarray:
    """The fixed encodings of "Attention is all you need": sin on even, cos on odd features.

    >>> sinusoidal_positions(4, 6).shape
    (4, 6)
    """
    pos = np.arange(length)[:, None]
    i = np.arange(0, dim, 2)[None, :]
    angle = pos / base ** (i / dim)
    out = np.zeros((length, dim), np.float32)
    out[:, 0::2] = np.sin(angle)
    out[:, 1::2] = np.cos(angle[:, : dim // 2])
    return out


class LearnedPositions(Module):
    """A learned position table (GPT's ``wpe``): ``N(0, init_std)``."""

    def __init__(self, max_len: int, dim: int, init_std: float = 0.02, dtype: Any = np.float32) -> None:
        self.table = Embedding(max_len, dim, init_std, dtype)

    def init(self, key: Any) -> Params:
        return self.table.init(key)

    def __call__(self, params: Params, length: int, offset: Any = 0) -> Tensor:
        ids = ops.add(ops.iota((length,), 0), offset)
        return F.embedding(ids, params["weight"])


class MultiHeadAttention(Module):
    """Multi-head attention: self (one fused QKV projection, or separate q/k/v) or cross.

    ``__call__(params, x, context=None, mask=None, key=None, training=False)``:
    queries from ``x`` (B, T, C), keys/values from ``context`` (B, S, C) or ``x``.
    """

    def __init__(self, d_model: int, n_heads: int, causal: bool = False, fused_qkv: bool = True, bias: bool = True,
                 dropout: float = 0.0, init_std: float | None = None, out_init_std: float | None = None,
                 dtype: Any = np.float32) -> None:
        if d_model % n_heads:
            raise TensorcError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.d_model, self.n_heads, self.causal, self.fused_qkv = d_model, n_heads, causal, fused_qkv
        self.dropout = dropout
        if fused_qkv:
            self.qkv = Linear(d_model, 3 * d_model, bias, init_std, dtype)
        else:
            self.q, self.k, self.v = (Linear(d_model, d_model, bias, init_std, dtype) for _ in range(3))
        self.proj = Linear(d_model, d_model, bias, out_init_std if out_init_std is not None else init_std, dtype)

    def init(self, key: Any) -> Params:
        k1, k2, k3, k4 = _keys(key, 4)
        if self.fused_qkv:
            return {"qkv": self.qkv.init(k1), "proj": self.proj.init(k4)}
        return {"q": self.q.init(k1), "k": self.k.init(k2), "v": self.v.init(k3), "proj": self.proj.init(k4)}

    def _heads(self, t: Tensor) -> Tensor:
        b, n, c = t.shape
        return ops.reshape(t, (b, n, self.n_heads, c // self.n_heads)).permute(0, 2, 1, 3)  # (B, nh, n, hs)

    def __call__(self, params: Params, x: Any, context: Any = None, mask: Any = None, *, key: Any = None,
                 training: bool = False, cache: tuple[Any, Any] | None = None, pos: Any = None) -> Any:
        """With ``cache=(k_cache, v_cache)`` (each (B, nh, max_len, hs)) and ``pos``,
        the new keys/values are written at positions ``pos, pos+1, ...``, attention
        runs over everything cached so far, and ``(y, new_cache)`` is returned.
        ``pos`` is a Python int (prefill) or an int tensor with T == 1 (a decode
        step compiled once for every position)."""
        x = ops.as_tensor(x)
        b, t, c = x.shape
        if self.fused_qkv and context is None:
            q, k, v = ops.split(self.qkv(params["qkv"], x), c, -1)  # 3 x (B, T, C)
        elif self.fused_qkv:
            w, bias = params["qkv"]["weight"], params["qkv"].get("bias")
            q = F.linear(x, w[:c], None if bias is None else bias[:c])
            kv = F.linear(context, w[c:], None if bias is None else bias[c:])  # (B, S, 2C)
            k, v = ops.split(kv, c, -1)
        else:
            src = x if context is None else context
            q, k, v = self.q(params["q"], x), self.k(params["k"], src), self.v(params["v"], src)
        attn_key, drop_key = (_keys(key, 2) if key is not None else (None, None))
        qh, kh, vh = self._heads(q), self._heads(k), self._heads(v)  # (B, nh, T, hs)
        new_cache = None
        if cache is not None:
            if context is not None:
                raise TensorcError("a KV cache is for self-attention only")
            qh, kh, vh, mask, causal, new_cache = self._with_cache(qh, kh, vh, cache, pos, mask)
        else:
            causal = self.causal and context is None
        y = F.scaled_dot_product_attention(
            qh, kh, vh, attn_mask=mask, dropout_p=self.dropout if training else 0.0, is_causal=causal, dropout_key=attn_key,
        )  # (B, nh, T, hs)
        y = ops.reshape(y.permute(0, 2, 1, 3), (b, t, c))  # (B, T, C)
        y = self.proj(params["proj"], y)
        if training and self.dropout:
            y = F.dropout(y, self.dropout, training, key=drop_key)
        return (y, new_cache) if cache is not None else y

    def _with_cache(self, qh: Tensor, kh: Tensor, vh: Tensor, cache: tuple[Any, Any], pos: Any, mask: Any) -> tuple:
        k_cache, v_cache = ops.as_tensor(cache[0]), ops.as_tensor(cache[1])
        t, max_len = qh.shape[2], k_cache.shape[2]
        if isinstance(pos, int):
            if pos + t > max_len:
                raise TensorcError(f"KV cache of length {max_len} cannot hold positions {pos}..{pos + t - 1}")
            widths = [(0, 0), (0, 0), (pos, max_len - pos - t), (0, 0)]
            slot = ops.reshape(ops.logical_and(ops.ge(ops.iota((max_len,), 0), pos), ops.lt(ops.iota((max_len,), 0), pos + t)),
                               (1, 1, max_len, 1))
            k_cache = ops.where(slot, ops.pad(kh, widths), k_cache)
            v_cache = ops.where(slot, ops.pad(vh, widths), v_cache)
            if pos == 0 and mask is None:  # prefill: the new tokens only see each other
                return qh, kh, vh, None, self.causal, (k_cache, v_cache)
            key_pos = ops.iota((t, max_len), 1)
            query_pos = ops.add(ops.iota((t, max_len), 0), pos)
            last_written = pos + t - 1
        else:
            if t != 1:
                raise TensorcError("a decode step with a tensor position takes one token (T == 1)")
            pos = ops.as_tensor(pos)
            slot = ops.reshape(ops.eq(ops.iota((max_len,), 0, pos.dtype), pos), (1, 1, max_len, 1))
            k_cache = ops.where(slot, kh, k_cache)  # (B, nh, max_len, hs)
            v_cache = ops.where(slot, vh, v_cache)
            key_pos = ops.iota((1, max_len), 1, pos.dtype)
            query_pos = last_written = ops.broadcast_to(pos, (1, max_len))
        # causal: a query sees keys up to its own position; otherwise every position written so far
        allowed = ops.le(key_pos, query_pos if self.causal else last_written)
        if mask is not None:
            allowed = ops.logical_and(allowed, mask)
        return qh, k_cache, v_cache, allowed, False, (k_cache, v_cache)


class FeedForward(Module):
    """``Linear(d, d_ff) -> activation -> Linear(d_ff, d)``; activation relu, gelu or gelu_tanh."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", dropout: float = 0.0, bias: bool = True,
                 init_std: float | None = None, out_init_std: float | None = None, dtype: Any = np.float32) -> None:
        if activation not in ("relu", "gelu", "gelu_tanh"):
            raise TensorcError(f"activation must be relu, gelu or gelu_tanh, got {activation!r}")
        self.activation, self.dropout = activation, dropout
        self.fc = Linear(d_model, d_ff, bias, init_std, dtype)
        self.proj = Linear(d_ff, d_model, bias, out_init_std if out_init_std is not None else init_std, dtype)

    def init(self, key: Any) -> Params:
        k1, k2 = _keys(key, 2)
        return {"fc": self.fc.init(k1), "proj": self.proj.init(k2)}

    def __call__(self, params: Params, x: Any, *, key: Any = None, training: bool = False) -> Tensor:
        h = self.fc(params["fc"], x)
        if self.activation == "relu":
            h = F.relu(h)
        else:
            h = F.gelu(h, approximate="tanh" if self.activation == "gelu_tanh" else "none")
        y = self.proj(params["proj"], h)
        return F.dropout(y, self.dropout, training, key=key) if training and self.dropout else y


class TransformerBlock(Module):
    """Self-attention (+ optional cross-attention) and a feed-forward, each with a
    residual; pre-LN (GPT-2) by default, post-LN ("Attention is all you need") with ``pre_ln=False``."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int | None = None, causal: bool = False, pre_ln: bool = True,
                 cross_attention: bool = False, activation: str = "gelu", dropout: float = 0.0, eps: float = 1e-5,
                 init_std: float | None = None, out_init_std: float | None = None, dtype: Any = np.float32) -> None:
        d_ff = d_ff or 4 * d_model
        self.pre_ln, self.cross = pre_ln, cross_attention
        self.ln1 = LayerNorm(d_model, eps, dtype=dtype)
        self.attn = MultiHeadAttention(d_model, n_heads, causal, dropout=dropout, init_std=init_std,
                                       out_init_std=out_init_std, dtype=dtype)
        if cross_attention:
            self.ln_cross = LayerNorm(d_model, eps, dtype=dtype)
            self.cross_attn = MultiHeadAttention(d_model, n_heads, False, dropout=dropout, init_std=init_std,
                                                 out_init_std=out_init_std, dtype=dtype)
        self.ln2 = LayerNorm(d_model, eps, dtype=dtype)
        self.mlp = FeedForward(d_model, d_ff, activation, dropout, init_std=init_std, out_init_std=out_init_std, dtype=dtype)

    def init(self, key: Any) -> Params:
        k1, k2, k3 = _keys(key, 3)
        p = {"ln1": self.ln1.init(), "attn": self.attn.init(k1), "ln2": self.ln2.init(), "mlp": self.mlp.init(k2)}
        if self.cross:
            p["ln_cross"] = self.ln_cross.init()
            p["cross_attn"] = self.cross_attn.init(k3)
        return p

    def __call__(self, params: Params, x: Any, context: Any = None, mask: Any = None, context_mask: Any = None, *,
                 key: Any = None, training: bool = False, cache: tuple[Any, Any] | None = None, pos: Any = None) -> Any:
        """``cache``/``pos`` as in :class:`MultiHeadAttention`; with a cache, returns ``(x, new_cache)``."""
        k1, k2, k3 = _keys(key, 3) if key is not None else (None, None, None)
        new_cache: list[Any] = []

        def self_attention(h: Tensor) -> Tensor:
            if cache is None:
                return self.attn(params["attn"], h, mask=mask, key=k1, training=training)
            y, c = self.attn(params["attn"], h, mask=mask, key=k1, training=training, cache=cache, pos=pos)
            new_cache.append(c)
            return y

        def sublayer(name_ln: str, fn: Any, h: Tensor) -> Tensor:
            ln = getattr(self, name_ln)
            if self.pre_ln:
                return ops.add(h, fn(ln(params[name_ln], h)))
            return ln(params[name_ln], ops.add(h, fn(h)))

        x = sublayer("ln1", self_attention, ops.as_tensor(x))
        if self.cross:
            if context is None:
                raise TensorcError("this block has cross-attention: pass context=")
            x = sublayer("ln_cross", lambda h: self.cross_attn(params["cross_attn"], h, context, context_mask, key=k3,
                                                                training=training), x)
        x = sublayer("ln2", lambda h: self.mlp(params["mlp"], h, key=k2, training=training), x)
        return (x, new_cache[0]) if cache is not None else x


def named_parameters(params: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts/lists of arrays to ``{"blocks.0.attn.qkv.weight": array}``.

    >>> sorted(named_parameters({"h": [{"w": 1}, {"w": 2}], "b": 3}))
    ['b', 'h.0.w', 'h.1.w']
    """
    out: dict[str, Any] = {}
    if isinstance(params, dict):
        for k, v in params.items():
            out.update(named_parameters(v, f"{prefix}{k}."))
    elif isinstance(params, (list, tuple)):
        for i, v in enumerate(params):
            out.update(named_parameters(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = params
    return out


def unflatten_parameters(flat: dict[str, Any], like: Any, prefix: str = "") -> Any:
    """Rebuild the structure of ``like`` from dotted names (inverse of :func:`named_parameters`)."""
    if isinstance(like, dict):
        return {k: unflatten_parameters(flat, v, f"{prefix}{k}.") for k, v in like.items()}
    if isinstance(like, (list, tuple)):
        return type(like)(unflatten_parameters(flat, v, f"{prefix}{i}.") for i, v in enumerate(like))
    return flat[prefix[:-1]]


def count_parameters(params: Any) -> int:
    """The number of scalars in a parameter pytree."""
    return int(sum(np.size(v) for v in named_parameters(params).values()))
