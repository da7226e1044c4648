"""The encoder-decoder Transformer of "Attention is all you need", in tensorc's DSL.

Source and target tokens are embedded (scaled by √d_model) and added to the
fixed sinusoidal positions. The encoder is ``n_enc_layers`` blocks of
self-attention + feed-forward (ReLU); padding (``pad_id``) in the source is
masked out of every attention over it. The decoder is ``n_dec_layers`` blocks
of masked (causal) self-attention, cross-attention to the encoder's output and
a feed-forward; a linear layer gives the logits. Residual sub-layers are
post-LN as in the paper (``LayerNorm(x + f(x))``), or pre-LN with
``pre_ln=True`` (``x + f(LayerNorm(x))``, then a final LayerNorm on each stack).
The blocks are :class:`tensorc.nn.TransformerBlock`.

>>> import numpy as np, tensorc as tc
>>> cfg = TransformerConfig(src_vocab=9, tgt_vocab=7, d_model=8, n_heads=2, n_enc_layers=1, n_dec_layers=1, d_ff=16)
>>> model = Transformer(cfg)
>>> params = model.init(tc.random.key(0))
>>> model(params, np.array([[3, 4, 0]]), np.array([[1, 5, 6, 2]])).shape
(1, 4, 7)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

import tensorc as tc
import tensorc.nn.functional as F
from tensorc import nn

__all__ = ["Transformer", "TransformerConfig"]

Params = dict[str, Any]


@dataclass(frozen=True)
class TransformerConfig:
    """Sizes of the encoder-decoder; the defaults are the paper's base model scaled down."""

    src_vocab: int = 32
    tgt_vocab: int = 32
    d_model: int = 64
    n_heads: int = 4
    n_enc_layers: int = 2
    n_dec_layers: int = 2
    d_ff: int = 256
    max_len: int = 128  # the longest sequence the position table covers
    pre_ln: bool = False  # False: post-LN as in the paper
    dropout: float = 0.0
    activation: str = "relu"
    eps: float = 1e-5
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Transformer(nn.Module):
    """``model(params, src (B, S), tgt_in (B, T)) -> logits (B, T, V)``."""

    def __init__(self, config: TransformerConfig) -> None:
        c = self.config = config
        self.src_embedding = nn.Embedding(c.src_vocab, c.d_model, init_std=c.d_model ** -0.5)
        self.tgt_embedding = nn.Embedding(c.tgt_vocab, c.d_model, init_std=c.d_model ** -0.5)
        block = dict(d_ff=c.d_ff, pre_ln=c.pre_ln, activation=c.activation, dropout=c.dropout, eps=c.eps)
        self.encoder = [nn.TransformerBlock(c.d_model, c.n_heads, causal=False, **block) for _ in range(c.n_enc_layers)]
        self.decoder = [nn.TransformerBlock(c.d_model, c.n_heads, causal=True, cross_attention=True, **block)
                        for _ in range(c.n_dec_layers)]
        self.ln_enc = nn.LayerNorm(c.d_model, c.eps)  # pre-LN only: the stacks end un-normalised otherwise
        self.ln_dec = nn.LayerNorm(c.d_model, c.eps)
        self.head = nn.Linear(c.d_model, c.tgt_vocab)
        self.positions = nn.sinusoidal_positions(c.max_len, c.d_model)  # (max_len, C), fixed
        self._compiled: dict[str, Any] = {}

    def init(self, key: Any) -> Params:
        c = self.config
        keys = tc.random.split(key, 3 + c.n_enc_layers + c.n_dec_layers)
        params: Params = {
            "src_embedding": self.src_embedding.init(keys[0]),
            "tgt_embedding": self.tgt_embedding.init(keys[1]),
            "encoder": [blk.init(keys[3 + i]) for i, blk in enumerate(self.encoder)],
            "decoder": [blk.init(keys[3 + c.n_enc_layers + i]) for i, blk in enumerate(self.decoder)],
            "head": self.head.init(keys[2]),
        }
        if c.pre_ln:
            params["ln_enc"], params["ln_dec"] = self.ln_enc.init(), self.ln_dec.init()
        return params

    def _embed(self, table: nn.Embedding, weight: Params, ids: tc.Tensor, dropout_key: Any, training: bool) -> tc.Tensor:
        t = ids.shape[1]
        if t > self.config.max_len:
            raise tc.ShapeError(f"Transformer: sequence length {t} exceeds max_len {self.config.max_len}")
        x = table(weight, ids) * math.sqrt(self.config.d_model) + self.positions[:t]  # (B, T, C)
        return F.dropout(x, self.config.dropout, training, key=dropout_key) if training and self.config.dropout else x

    def source_mask(self, src: Any) -> tc.Tensor:
        """(B, 1, 1, S) bool, True on real source tokens: broadcasts over heads and queries."""
        src = tc.as_tensor(src)
        return tc.ne(src, self.config.pad_id).reshape(src.shape[0], 1, 1, src.shape[1])  # (B, 1, 1, S)

    def encode(self, params: Params, src: Any, *, key: Any = None, training: bool = False) -> tc.Tensor:
        """The encoder's output (B, S, C)."""
        src = tc.as_tensor(src)
        keys = tc.random.split(key, len(self.encoder) + 1) if key is not None else [None] * (len(self.encoder) + 1)
        mask = self.source_mask(src)  # (B, 1, 1, S)
        x = self._embed(self.src_embedding, params["src_embedding"], src, keys[-1], training)  # (B, S, C)
        for blk, p, k in zip(self.encoder, params["encoder"], keys):
            x = blk(p, x, mask=mask, key=k, training=training)  # (B, S, C)
        return self.ln_enc(params["ln_enc"], x) if self.config.pre_ln else x  # (B, S, C)

    def decode(self, params: Params, memory: Any, src_mask: Any, tgt_in: Any, *, key: Any = None,
               training: bool = False) -> tc.Tensor:
        """Logits (B, T, V) for ``tgt_in`` given the encoder output ``memory`` (B, S, C);
        causal: position t sees target tokens ≤ t only."""
        tgt_in = tc.as_tensor(tgt_in)
        b, t = tgt_in.shape
        keys = tc.random.split(key, len(self.decoder) + 1) if key is not None else [None] * (len(self.decoder) + 1)
        x = self._embed(self.tgt_embedding, params["tgt_embedding"], tgt_in, keys[-1], training)  # (B, T, C)
        for blk, p, k in zip(self.decoder, params["decoder"], keys):
            x = blk(p, x, context=memory, context_mask=src_mask, key=k, training=training)  # (B, T, C)
        if self.config.pre_ln:
            x = self.ln_dec(params["ln_dec"], x)  # (B, T, C)
        logits = self.head(params["head"], x.reshape(b * t, self.config.d_model))  # (B*T, V)
        return logits.reshape(b, t, self.config.tgt_vocab)  # (B, T, V)

    def __call__(self, params: Params, src: Any, tgt_in: Any, *, key: Any = None, training: bool = False) -> tc.Tensor:
        k_enc, k_dec = tc.random.split(key, 2) if key is not None else (None, None)
        memory = self.encode(params, src, key=k_enc, training=training)  # (B, S, C)
        return self.decode(params, memory, self.source_mask(src), tgt_in, key=k_dec, training=training)  # (B, T, V)

    def loss(self, params: Params, src: Any, tgt_in: Any, tgt_out: Any, *, key: Any = None,
             training: bool = False, label_smoothing: float = 0.0) -> tc.Tensor:
        """Mean cross-entropy per non-pad target token (the paper used label smoothing 0.1)."""
        logits = self(params, src, tgt_in, key=key, training=training)  # (B, T, V)
        return F.cross_entropy(logits, tgt_out, ignore_index=self.config.pad_id, label_smoothing=label_smoothing)

    def greedy_decode(self, params: Params, src: Any, max_len: int) -> np.ndarray:
        """Argmax decoding: tokens (B, max_len), ``pad_id`` after each row's ``eos``.

        The source is encoded once. The decoder runs on a fixed (B, max_len + 1)
        buffer (``bos`` then the tokens so far, padding after): causality makes
        the logits at step t independent of the padding, so one compiled
        program serves every step.
        """
        c = self.config
        if not self._compiled:
            self._compiled["encode"] = tc.jit(lambda p, s: (self.encode(p, s), self.source_mask(s)))
            self._compiled["decode"] = tc.jit(lambda p, m, sm, y: self.decode(p, m, sm, y))
        src = np.asarray(src, np.int64)
        b = src.shape[0]
        memory, src_mask = self._compiled["encode"](params, src)
        buffer = np.full((b, max_len + 1), c.pad_id, np.int64)
        buffer[:, 0] = c.bos_id
        done = np.zeros(b, bool)
        for t in range(max_len):
            logits = np.asarray(self._compiled["decode"](params, memory, src_mask, buffer[:, :max_len]))  # (B, L, V)
            token = np.argmax(logits[:, t], -1)  # (B,)
            buffer[:, t + 1] = np.where(done, c.pad_id, token)
            done |= token == c.eos_id
            if done.all():
                break
        return buffer[:, 1:]
