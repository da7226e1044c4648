"""Recurrent networks in tensorc's DSL: the Elman RNN, the machinery every
recurrent layer shares (stacking, bidirectionality, ``batch_first``), and the
recurrent language model that ``tensorc train rnn|lstm|gru`` trains.

The Elman cell is PyTorch's ``nn.RNN`` (``nonlinearity="tanh"``)::

    h_t = tanh(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh)

Parameters use PyTorch's names and layouts (``weight_ih_l0`` is
``[gates * hidden, input]``, ``_reverse`` marks the backward direction), so a
PyTorch state dict loads as it is (:func:`models.lstm.load_state_dict`).

The recurrence is one ``tc.scan`` per layer and direction: the step is traced
once, so compile time does not grow with the sequence length. The input
projection ``x W_ihᵀ + b_ih`` of all time steps is one matmul before the scan
(as cuDNN does); only ``h W_hhᵀ`` stays inside the loop.

>>> import numpy as np, tensorc as tc
>>> rnn = RNN(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, batch_first=True)
>>> params = rnn.init(tc.random.key(0))
>>> sorted(params)[:4]
['bias_hh_l0', 'bias_hh_l0_reverse', 'bias_hh_l1', 'bias_hh_l1_reverse']
>>> out, h_n = rnn(params, np.zeros((2, 5, 3), np.float32))
>>> out.shape, h_n.shape
((2, 5, 8), (4, 2, 4))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import tensorc as tc
import tensorc.nn.functional as F
from tensorc import nn

Params = dict[str, Any]
State = Any  # a hidden state: one tensor h, or a pair (h, c) for the LSTM


def uniform_init(key: Any, shape: tuple[int, ...], bound: float, dtype: Any) -> np.ndarray:
    """PyTorch's initializer for every recurrent weight and bias: U(-bound, bound), bound = 1/√hidden."""
    return np.asarray(tc.random.uniform(key, shape, minval=-bound, maxval=bound).numpy(), dtype=dtype)


# ----------------------------------------------------------------------------- one step of each cell
#
# A step takes the input projection of this time step, ``xw = x W_ihᵀ + b_ih``
# (computed for all steps at once, outside the loop), the previous state, and
# ``W_hhᵀ`` (transposed once, outside the loop), and returns the next state.


def _hidden_projection(h: tc.Tensor, w_hh_t: Any, b_hh: Any) -> tc.Tensor:
    hw = h @ w_hh_t  # (B, G*H)
    return hw if b_hh is None else hw + b_hh  # (B, G*H)


def elman_step(xw: tc.Tensor, h: tc.Tensor, w_hh_t: Any, b_hh: Any, nonlinearity: str = "tanh") -> tc.Tensor:
    """``h' = tanh(xw + h W_hhᵀ + b_hh)`` (or relu)."""
    pre = xw + _hidden_projection(h, w_hh_t, b_hh)  # (B, H)
    return tc.tanh(pre) if nonlinearity == "tanh" else tc.relu(pre)  # (B, H)


# ----------------------------------------------------------------------------- cells (one time step)


class RecurrentCell(nn.Module):
    """One time step with PyTorch's ``nn.RNNCell``-family parameters:
    ``weight_ih [G*H, I]``, ``weight_hh [G*H, H]``, ``bias_ih``, ``bias_hh [G*H]``."""

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, dtype: Any = np.float32) -> None:
        self.input_size, self.hidden_size, self.bias, self.dtype = input_size, hidden_size, bias, dtype

    def init(self, key: Any) -> Params:
        g, h, i = self.gates, self.hidden_size, self.input_size
        shapes = {"weight_ih": (g * h, i), "weight_hh": (g * h, h)}
        if self.bias:
            shapes.update(bias_ih=(g * h,), bias_hh=(g * h,))
        keys = tc.random.split(key, len(shapes))
        return {name: uniform_init(keys[k], s, 1 / math.sqrt(h), self.dtype) for k, (name, s) in enumerate(shapes.items())}

    def zero_state(self, batch: int, dtype: Any = None) -> State:
        """The zero state for ``batch`` rows, in ``dtype`` (default: the cell's)."""
        return tc.zeros(batch, self.hidden_size, dtype=dtype or np.dtype(self.dtype).name)  # (B, H)

    def step(self, xw: tc.Tensor, state: State, w_hh_t: Any, b_hh: Any) -> State:
        raise NotImplementedError

    def __call__(self, params: Params, x: Any, state: State = None) -> State:
        """The next state from input ``x`` (B, I) and ``state`` (zeros when None)."""
        x = tc.as_tensor(x)
        if state is None:
            state = self.zero_state(x.shape[0], x.dtype)
        xw = F.linear(x, params["weight_ih"], params.get("bias_ih"))  # (B, G*H)
        return self.step(xw, state, tc.transpose(params["weight_hh"], 0, 1), params.get("bias_hh"))


class RNNCell(RecurrentCell):
    """The Elman cell, ``torch.nn.RNNCell``: ``h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)``.

    >>> import numpy as np, tensorc as tc
    >>> cell = RNNCell(3, 4)
    >>> cell(cell.init(tc.random.key(0)), np.ones((2, 3), np.float32)).shape
    (2, 4)
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 dtype: Any = np.float32) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise tc.TensorcError(f"RNN nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, dtype)
        self.nonlinearity = nonlinearity

    def step(self, xw: tc.Tensor, state: State, w_hh_t: Any, b_hh: Any) -> State:
        return elman_step(xw, state, w_hh_t, b_hh, self.nonlinearity)


# ----------------------------------------------------------------------------- layers (a whole sequence)


class RecurrentLayer(nn.Module):
    """Stacked, optionally bidirectional recurrence over a sequence, as PyTorch's
    ``nn.RNN``/``nn.LSTM``/``nn.GRU``: same arguments, parameter names, and
    input/output layouts.

    ``__call__(params, x, state=None, *, key=None, training=False)`` takes
    ``x`` of shape (T, B, I), or (B, T, I) with ``batch_first``, and returns
    ``(output, h_n)``: ``output`` (T, B, D*H) holds the last layer's hidden
    state at every step (both directions concatenated), ``h_n``
    (num_layers*D, B, H) the final state of every layer and direction.
    """

    cell_type: type[RecurrentCell] = RecurrentCell

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, dtype: Any = np.float32) -> None:
        if num_layers < 1:
            raise tc.TensorcError(f"num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise tc.TensorcError(f"dropout must be in [0, 1), got {dropout}")
        self.input_size, self.hidden_size, self.num_layers, self.bias = input_size, hidden_size, num_layers, bias
        self.batch_first, self.dropout, self.bidirectional, self.dtype = batch_first, dropout, bidirectional, dtype
        self.num_directions = 2 if bidirectional else 1
        self.cells = [self.make_cell(input_size if layer == 0 else hidden_size * self.num_directions)
                      for layer in range(num_layers)]

    def make_cell(self, input_size: int) -> RecurrentCell:
        return self.cell_type(input_size, self.hidden_size, self.bias, dtype=self.dtype)

    def suffix(self, layer: int, direction: int) -> str:
        return f"_l{layer}" + ("_reverse" if direction else "")

    def init(self, key: Any) -> Params:
        keys = tc.random.split(key, self.num_layers * self.num_directions)
        params: Params = {}
        for layer, cell in enumerate(self.cells):
            for d in range(self.num_directions):
                cell_params = cell.init(keys[layer * self.num_directions + d])
                params.update({name + self.suffix(layer, d): value for name, value in cell_params.items()})
        return params

    # The state of one layer and direction is what the cell carries (h, or (h, c));
    # these convert between that and the stacked (num_layers*D, B, H) form.
    def split_state(self, state: Any, index: int) -> State:
        return tc.as_tensor(state)[index]  # (B, H)

    def stack_states(self, finals: list[State]) -> Any:
        return tc.stack(finals)  # (L*D, B, H)

    def output_of(self, state: State) -> tc.Tensor:
        return state

    def run_direction(self, params: Params, layer: int, direction: int, x: tc.Tensor, state0: State) -> tuple[State, tc.Tensor]:
        """One layer, one direction over the whole sequence: (final state, hidden states (T, B, H))."""
        cell, sfx = self.cells[layer], self.suffix(layer, direction)
        t, b, i = x.shape
        w_hh_t = tc.transpose(params["weight_hh" + sfx], 0, 1)  # (H, G*H), transposed once, outside the loop
        b_hh = params.get("bias_hh" + sfx)
        xw = F.linear(x.reshape(t * b, i), params["weight_ih" + sfx], params.get("bias_ih" + sfx))  # (T*B, G*H)
        xw = xw.reshape(t, b, xw.shape[-1])  # (T, B, G*H)

        def step(state: State, xw_t: tc.Tensor) -> tuple[State, tc.Tensor]:
            new_state = cell.step(xw_t, state, w_hh_t, b_hh)
            return new_state, self.output_of(new_state)  # (B, H)

        return tc.scan(step, state0, xw, reverse=bool(direction))

    def __call__(self, params: Params, x: Any, state: Any = None, *, key: Any = None, training: bool = False) -> tuple[tc.Tensor, Any]:
        x = tc.as_tensor(x)
        if x.ndim != 3:
            raise tc.ShapeError(f"{type(self).__name__} takes a (T, B, I) input (or (B, T, I) with batch_first), got {x.shape}")
        if self.batch_first:
            x = tc.transpose(x, 0, 1)  # (T, B, I)
        b = x.shape[1]
        dropping = training and self.dropout > 0.0 and self.num_layers > 1
        if dropping and key is None:
            raise tc.TensorcError(f"{type(self).__name__} with dropout needs key= when training")
        keys = tc.random.split(key, self.num_layers) if dropping else None
        finals: list[State] = []
        for layer in range(self.num_layers):
            outputs = []
            for d in range(self.num_directions):
                index = layer * self.num_directions + d
                state0 = self.cells[layer].zero_state(b, x.dtype) if state is None else self.split_state(state, index)
                final, ys = self.run_direction(params, layer, d, x, state0)  # ys: (T, B, H)
                finals.append(final)
                outputs.append(ys)
            x = outputs[0] if len(outputs) == 1 else tc.concat(outputs, axis=-1)  # (T, B, D*H)
            if dropping and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True, key=keys[layer])  # (T, B, D*H)
        if self.batch_first:
            x = tc.transpose(x, 0, 1)  # (B, T, D*H)
        return x, self.stack_states(finals)


class RNN(RecurrentLayer):
    """The Elman RNN over a sequence, ``torch.nn.RNN`` (tanh or relu)."""

    cell_type = RNNCell

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh", bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, dtype: Any = np.float32) -> None:
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, dtype)

    def make_cell(self, input_size: int) -> RecurrentCell:
        return RNNCell(input_size, self.hidden_size, self.bias, self.nonlinearity, self.dtype)


# ----------------------------------------------------------------------------- the language model


@dataclass(frozen=True)
class RecurrentLMConfig:
    """A recurrent LM: token embedding -> ``num_layers`` of ``cell`` -> linear to the vocabulary."""

    cell: str = "lstm"  # "rnn", "lstm" or "gru"
    vocab_size: int = 65
    block_size: int = 64  # the training window length (the model itself takes any length)
    n_embd: int = 64
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.0  # on the embeddings, between layers, and before the output layer

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recurrent_layer(cell: str, input_size: int, hidden_size: int, num_layers: int = 1, **kwargs: Any) -> RecurrentLayer:
    """``RNN``, ``LSTM`` or ``GRU`` by name."""
    if cell == "rnn":
        return RNN(input_size, hidden_size, num_layers, **kwargs)
    if cell in ("lstm", "gru"):
        from . import lstm  # lstm builds on this module; import it only when asked for

        return (lstm.LSTM if cell == "lstm" else lstm.GRU)(input_size, hidden_size, num_layers, **kwargs)
    raise tc.TensorcError(f"unknown recurrent cell {cell!r}; cells: rnn, lstm, gru")


class RecurrentLM(nn.Module):
    """``embedding -> RNN/LSTM/GRU -> linear``: ŷ⁽ᵗ⁾ = softmax(U h⁽ᵗ⁾ + b₂).

    Parameters: ``embedding.weight``, ``rnn.weight_ih_l0``…, ``head.weight``,
    ``head.bias`` — the state-dict names of the PyTorch module with attributes
    ``embedding``, ``rnn`` (``batch_first=True``) and ``head``.

    >>> import numpy as np, tensorc as tc
    >>> model = RecurrentLM(RecurrentLMConfig(cell="rnn", vocab_size=7, n_embd=4, hidden_size=5))
    >>> params = model.init(tc.random.key(0))
    >>> model(params, np.zeros((2, 3), np.int64)).shape
    (2, 3, 7)
    """

    cell: str | None = None  # subclasses fix the cell: RNNLM, LSTMLM, GRULM

    def __init__(self, config: RecurrentLMConfig) -> None:
        if self.cell is not None and config.cell != self.cell:
            config = RecurrentLMConfig(**{**config.to_dict(), "cell": self.cell})
        self.config = c = config
        self.embedding = nn.Embedding(c.vocab_size, c.n_embd)
        self.rnn = recurrent_layer(c.cell, c.n_embd, c.hidden_size, c.num_layers, batch_first=True, dropout=c.dropout)
        self.head = nn.Linear(c.hidden_size, c.vocab_size)

    def init(self, key: Any) -> Params:
        k_emb, k_rnn, k_head = tc.random.split(key, 3)
        return {"embedding": self.embedding.init(k_emb), "rnn": self.rnn.init(k_rnn), "head": self.head.init(k_head)}

    def initial_state(self, batch: int) -> Any:
        """Zeros in the layout ``rnn`` takes: (L, B, H), or a pair of them for the LSTM."""
        return self.rnn.stack_states([cell.zero_state(batch) for cell in self.rnn.cells])

    def forward_with_state(self, params: Params, idx: Any, state: Any = None, *, key: Any = None,
                           training: bool = False) -> tuple[tc.Tensor, Any]:
        """Logits (B, T, V) and the final hidden state, starting from ``state`` (zeros when None)."""
        idx = tc.as_tensor(idx)
        b, t = idx.shape
        dropping = training and self.config.dropout > 0.0
        if dropping and key is None:
            raise tc.TensorcError(f"{type(self).__name__} with dropout {self.config.dropout} needs key= when training")
        k_in, k_rnn, k_out = tc.random.split(key, 3) if dropping else (None, None, None)
        x = self.embedding(params["embedding"], idx)  # (B, T, E)
        if dropping:
            x = F.dropout(x, self.config.dropout, True, key=k_in)  # (B, T, E)
        h, state = self.rnn(params["rnn"], x, state, key=k_rnn, training=training)  # (B, T, H)
        if dropping:
            h = F.dropout(h, self.config.dropout, True, key=k_out)  # (B, T, H)
        logits = self.head(params["head"], h.reshape(b * t, self.config.hidden_size))  # (B*T, V)
        return logits.reshape(b, t, self.config.vocab_size), state  # (B, T, V)

    def __call__(self, params: Params, idx: Any, state: Any = None, *, key: Any = None, training: bool = False) -> tc.Tensor:
        return self.forward_with_state(params, idx, state, key=key, training=training)[0]  # (B, T, V)

    def loss(self, params: Params, idx: Any, targets: Any, *, key: Any = None, training: bool = False) -> tc.Tensor:
        """Mean next-token cross-entropy over (B, T), in nats per token."""
        return F.cross_entropy(self(params, idx, key=key, training=training), targets)


class RNNLM(RecurrentLM):
    """The RNN LM of the lectures: h⁽ᵗ⁾ = tanh(W_h h⁽ᵗ⁻¹⁾ + W_e e⁽ᵗ⁾ + b₁), ŷ⁽ᵗ⁾ = softmax(U h⁽ᵗ⁾ + b₂),
    the same weights at every step; any ``config.cell`` is replaced by ``"rnn"``."""

    cell = "rnn"


class StatefulGenerator:
    """Generation that carries the hidden state: the prompt goes through once
    (prefill, one scan), then each new token costs one compiled single-step call,
    compiled once for the model and reused for every position."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._prefill = tc.jit(lambda params, idx: self._last(*model.forward_with_state(params, idx)))
        self._decode = tc.jit(lambda params, token, state: self._last(*model.forward_with_state(params, token, state)))

    @staticmethod
    def _last(logits: tc.Tensor, state: Any) -> tuple[tc.Tensor, Any]:
        return logits[:, -1], state  # (B, V)

    def generate(self, params: Params, prompt: list[int], max_new_tokens: int, *, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int = 0, stop_token: int | None = None) -> list[int]:
        """``prompt`` followed by up to ``max_new_tokens`` sampled tokens (stops after ``stop_token``)."""
        tokens = list(prompt)
        if not tokens:
            raise tc.TensorcError("generate needs a non-empty prompt")
        rng = np.random.default_rng(seed)
        logits, state = self._prefill(params, np.asarray([tokens], np.int64))
        for i in range(max_new_tokens):
            nxt = tc.sampling.sample_next(np.asarray(logits)[0], temperature, top_k, top_p, rng)
            tokens.append(nxt)
            if nxt == stop_token or i == max_new_tokens - 1:
                break
            logits, state = self._decode(params, np.asarray([[nxt]], np.int64), state)
        return tokens


def generate(model: Any, params: Params, prompt: list[int], max_new_tokens: int, **sampling: Any) -> list[int]:
    """Sample from a recurrent LM (see :class:`StatefulGenerator`); the compiled
    steps are kept on the model, so later calls do not compile again."""
    gen = getattr(model, "_generator", None)
    if gen is None:
        gen = model._generator = StatefulGenerator(model)
    return gen.generate(params, prompt, max_new_tokens, **sampling)


# ----------------------------------------------------------------------------- recipes for `tensorc train`

RECURRENT_PRESETS: dict[str, dict[str, Any]] = {
    "nano": dict(block_size=16, n_embd=8, hidden_size=16, num_layers=1),  # tests and smoke runs
    "mini": dict(block_size=32, n_embd=32, hidden_size=64, num_layers=1),
    "tiny": dict(block_size=64, n_embd=64, hidden_size=256, num_layers=1),  # the size benchmarks/lstm_step.py times
    "small": dict(block_size=128, n_embd=128, hidden_size=512, num_layers=2, dropout=0.1),
}


@dataclass
class RecurrentRecipe:
    """How ``tensorc train <cell>`` and ``tensorc generate`` build and sample a recurrent LM."""

    name: str
    presets: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(RECURRENT_PRESETS))
    model_type: Callable[[RecurrentLMConfig], Any] = RecurrentLM

    def config_for(self, preset: str, vocab_size: int, **overrides: Any) -> dict[str, Any]:
        if preset not in self.presets:
            raise tc.TensorcError(f"unknown {self.name} preset {preset!r}; presets: {', '.join(self.presets)}")
        if overrides.get("cell", self.name) != self.name:
            raise tc.TensorcError(f"the {self.name} recipe trains cell={self.name!r}; use `tensorc train {overrides['cell']}`")
        return RecurrentLMConfig(**{**self.presets[preset], **overrides, "cell": self.name, "vocab_size": vocab_size}).to_dict()

    def build(self, config: dict[str, Any]) -> Any:
        return self.model_type(RecurrentLMConfig(**config))

    def generate(self, model: Any, params: Any, prompt: list[int], max_new_tokens: int, **sampling: Any) -> list[int]:
        return generate(model, params, prompt, max_new_tokens, **sampling)


recipe = RecurrentRecipe("rnn", dict(RECURRENT_PRESETS), RNNLM)
