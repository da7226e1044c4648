"""LSTM and GRU in tensorc's DSL, compatible with PyTorch's ``nn.LSTM`` / ``nn.GRU``.

Same arguments (``num_layers``, ``bidirectional``, ``batch_first``,
``dropout``), parameter names (``weight_ih_l0``, ``weight_hh_l0``,
``bias_ih_l0``, ``bias_hh_l0``, ``_reverse`` for the backward direction),
gate order and formulas, so a PyTorch state dict loads unchanged
(:func:`load_state_dict`, from safetensors or npz).

LSTM (gates stacked i, f, g, o in ``weight_ih`` [4H, I])::

    i = σ(W_ii x + b_ii + W_hi h + b_hi)     f = σ(W_if x + b_if + W_hf h + b_hf)
    g = tanh(W_ig x + b_ig + W_hg h + b_hg)  o = σ(W_io x + b_io + W_ho h + b_ho)
    c' = f * c + i * g                       h' = o * tanh(c')

GRU (gates r, z, n in ``weight_ih`` [3H, I]); note ``r`` multiplies
``W_hn h + b_hn``, bias included, exactly as PyTorch::

    r = σ(W_ir x + b_ir + W_hr h + b_hr)     z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

Each layer and direction is one ``tc.scan`` (see :mod:`models.rnn`).

>>> import numpy as np, tensorc as tc
>>> lstm = LSTM(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
>>> params = lstm.init(tc.random.key(0))
>>> params["weight_ih_l1_reverse"].shape
(16, 8)
>>> out, (h_n, c_n) = lstm(params, np.zeros((5, 2, 3), np.float32))
>>> out.shape, h_n.shape, c_n.shape
((5, 2, 8), (4, 2, 4), (4, 2, 4))
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

import tensorc as tc
from tensorc import nn

from .rnn import (
    RECURRENT_PRESETS,
    Params,
    RecurrentCell,
    RecurrentLayer,
    RecurrentLM,
    RecurrentLMConfig,
    RecurrentRecipe,
    State,
    _hidden_projection,
)

__all__ = ["GRU", "GRULM", "LSTM", "LSTMLM", "GRUCell", "LSTMCell", "RecurrentLMConfig", "gru_recipe", "gru_step",
           "load_state_dict", "lstm_recipe", "lstm_step", "read_tensors", "save_state_dict"]

# ----------------------------------------------------------------------------- one step of each cell


def lstm_step(xw: tc.Tensor, state: tuple[tc.Tensor, tc.Tensor], w_hh_t: Any, b_hh: Any) -> tuple[tc.Tensor, tc.Tensor]:
    """One LSTM step from ``xw = x W_ihᵀ + b_ih`` (B, 4H) and ``(h, c)``."""
    h, c = state  # (B, H) each
    gates = xw + _hidden_projection(h, w_hh_t, b_hh)  # (B, 4H)
    i, f, g, o = tc.chunk(gates, 4, dim=-1)  # (B, H) each, PyTorch's order
    c = tc.sigmoid(f) * c + tc.sigmoid(i) * tc.tanh(g)  # (B, H)
    h = tc.sigmoid(o) * tc.tanh(c)  # (B, H)
    return h, c


def gru_step(xw: tc.Tensor, h: tc.Tensor, w_hh_t: Any, b_hh: Any) -> tc.Tensor:
    """One GRU step from ``xw = x W_ihᵀ + b_ih`` (B, 3H) and ``h``."""
    x_r, x_z, x_n = tc.chunk(xw, 3, dim=-1)  # (B, H) each
    h_r, h_z, h_n = tc.chunk(_hidden_projection(h, w_hh_t, b_hh), 3, dim=-1)  # (B, H) each
    r = tc.sigmoid(x_r + h_r)  # (B, H)
    z = tc.sigmoid(x_z + h_z)  # (B, H)
    n = tc.tanh(x_n + r * h_n)  # (B, H), h_n includes b_hn
    return (1.0 - z) * n + z * h  # (B, H)


# ----------------------------------------------------------------------------- cells


class LSTMCell(RecurrentCell):
    """``torch.nn.LSTMCell``: ``cell(params, x, (h, c)) -> (h', c')``.

    >>> import numpy as np, tensorc as tc
    >>> cell = LSTMCell(3, 4)
    >>> h, c = cell(cell.init(tc.random.key(0)), np.ones((2, 3), np.float32))
    >>> h.shape, c.shape
    ((2, 4), (2, 4))
    """

    gates = 4

    def zero_state(self, batch: int, dtype: Any = None) -> State:
        zeros = super().zero_state(batch, dtype)  # (B, H)
        return zeros, zeros

    def step(self, xw: tc.Tensor, state: State, w_hh_t: Any, b_hh: Any) -> State:
        return lstm_step(xw, state, w_hh_t, b_hh)


class GRUCell(RecurrentCell):
    """``torch.nn.GRUCell``: ``cell(params, x, h) -> h'``.

    >>> import numpy as np, tensorc as tc
    >>> cell = GRUCell(3, 4)
    >>> cell(cell.init(tc.random.key(0)), np.ones((2, 3), np.float32)).shape
    (2, 4)
    """

    gates = 3

    def step(self, xw: tc.Tensor, state: State, w_hh_t: Any, b_hh: Any) -> State:
        return gru_step(xw, state, w_hh_t, b_hh)


# ----------------------------------------------------------------------------- layers


class LSTM(RecurrentLayer):
    """``torch.nn.LSTM`` (without ``proj_size``): ``lstm(params, x, (h0, c0)) -> (output, (h_n, c_n))``.

    ``x`` is (T, B, I), or (B, T, I) with ``batch_first``; ``output`` is
    (T, B, D*H); ``h_n`` and ``c_n`` are (num_layers*D, B, H).
    """

    cell_type = LSTMCell

    def split_state(self, state: Any, index: int) -> State:
        h0, c0 = state
        return tc.as_tensor(h0)[index], tc.as_tensor(c0)[index]  # (B, H) each

    def stack_states(self, finals: list[State]) -> Any:
        return tc.stack([h for h, _ in finals]), tc.stack([c for _, c in finals])  # (L*D, B, H) each

    def output_of(self, state: State) -> tc.Tensor:
        return state[0]  # h (B, H)


class GRU(RecurrentLayer):
    """``torch.nn.GRU``: ``gru(params, x, h0) -> (output, h_n)``; layouts as :class:`LSTM`."""

    cell_type = GRUCell


# ----------------------------------------------------------------------------- language models


class LSTMLM(RecurrentLM):
    """``embedding -> LSTM -> linear``; any ``config.cell`` is replaced by ``"lstm"``.

    >>> import numpy as np, tensorc as tc
    >>> model = LSTMLM(RecurrentLMConfig(vocab_size=7, n_embd=4, hidden_size=5, num_layers=2))
    >>> params = model.init(tc.random.key(0))
    >>> float(model.loss(params, np.zeros((2, 3), np.int64), np.ones((2, 3), np.int64))) > 0
    True
    """

    cell = "lstm"


class GRULM(RecurrentLM):
    """``embedding -> GRU -> linear``; any ``config.cell`` is replaced by ``"gru"``."""

    cell = "gru"


# ----------------------------------------------------------------------------- PyTorch state dicts


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def read_tensors(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Name -> array from a ``.safetensors`` file, a ``.npz`` file, or a mapping
    (a PyTorch ``state_dict()`` works as it is)."""
    if isinstance(source, Mapping):
        return {k: _to_numpy(v) for k, v in source.items()}
    path = Path(source)
    if not path.exists():
        raise tc.TensorcError(f"no such state-dict file: {path}")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return dict(load_file(str(path)))
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    raise tc.TensorcError(f"{path}: expected a .safetensors or .npz state dict")


def load_state_dict(module: Any, source: str | os.PathLike[str] | Mapping[str, Any], *, prefix: str = "",
                    strict: bool = True) -> Params:
    """Parameters for ``module`` from a PyTorch-layout state dict.

    ``module`` is any of this package's modules (``LSTM``, ``GRU``, ``RNN``,
    the cells, the language models): the state dict must hold exactly the
    names of ``nn.named_parameters(module.init(key))`` (after ``prefix``, e.g.
    ``"rnn."`` to take an LSTM out of a bigger model), with the same shapes.
    ``strict=False`` ignores names the module does not have. Arrays are cast
    to the module's dtype.

    >>> import numpy as np, tensorc as tc
    >>> gru = GRU(2, 3)
    >>> sd = {k: np.zeros(v.shape) for k, v in tc.nn.named_parameters(gru.init(tc.random.key(0))).items()}
    >>> sorted(load_state_dict(gru, sd))
    ['bias_hh_l0', 'bias_ih_l0', 'weight_hh_l0', 'weight_ih_l0']
    """
    like = module.init(tc.random.key(0))
    expected = nn.named_parameters(like)
    tensors = {k[len(prefix):]: v for k, v in read_tensors(source).items() if k.startswith(prefix)}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or (strict and unexpected):
        raise tc.TensorcError(f"state dict does not fit {type(module).__name__}: missing {missing}, unexpected {unexpected}")
    flat = {}
    for name, ref in expected.items():
        value = np.asarray(tensors[name])
        if value.shape != ref.shape:
            raise tc.TensorcError(f"state dict {prefix}{name}: shape {value.shape}, {type(module).__name__} expects {ref.shape}")
        flat[name] = np.ascontiguousarray(value, dtype=ref.dtype)
    return nn.unflatten_parameters(flat, like)


def save_state_dict(params: Params, path: str | os.PathLike[str], *, prefix: str = "") -> Path:
    """Write ``params`` under their PyTorch names (``rnn.weight_ih_l0``…) as ``.safetensors`` or ``.npz``."""
    path = Path(path)
    flat = {prefix + k: np.ascontiguousarray(np.asarray(v)) for k, v in nn.named_parameters(params).items()}
    if path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file(flat, str(path))
    elif path.suffix == ".npz":
        np.savez(path, **flat)
    else:
        raise tc.TensorcError(f"{path}: expected a .safetensors or .npz file name")
    return path


# ----------------------------------------------------------------------------- recipes for `tensorc train`

lstm_recipe = RecurrentRecipe("lstm", dict(RECURRENT_PRESETS), LSTMLM)
gru_recipe = RecurrentRecipe("gru", dict(RECURRENT_PRESETS), GRULM)
