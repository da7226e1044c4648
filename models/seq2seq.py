"""Recurrent encoder-decoder (seq2seq) models in tensorc's DSL, with or without attention.

The encoder embeds the source and runs an LSTM or GRU over it (PyTorch's
layouts, :mod:`models.lstm`); padding (``pad_id``) is skipped: a padded step
keeps the previous state, so the final state is the one after the last real
token. The decoder is a conditional language model trained with teacher
forcing (its input at step t is the true target token t-1). Three variants
(``Seq2SeqConfig.attention``):

- ``"none"``: the encoder's final state initialises the decoder; that single
  vector is the information bottleneck of the lectures.
- ``"additive"`` (Bahdanau et al. 2015): before each step the previous decoder
  state s_{t-1} scores every encoder output h_j with
  ``e_tj = vᵀ tanh(W_q s_{t-1} + W_k h_j)``; the context ``c_t = Σ_j α_tj h_j``
  (α = softmax over the real source positions) is fed with the embedding,
  and the output layer reads ``[s_t; c_t]``.
- ``"dot"`` (Luong et al. 2015): after the step, ``e_tj = s_t · h_j``;
  ``h̃_t = tanh(W_c [c_t; s_t])`` is both the output layer's input and, fed
  back with the next embedding, the decoder's "input feeding".

The decoder is one ``tc.scan`` over the target steps; its body captures the
encoder outputs (and the additive attention's projected keys, computed once
outside the loop) and computes the attention inside. Attention weights come
back (B, T, S) for plotting. Decoding: :meth:`Seq2Seq.greedy_decode` (a batch)
and :meth:`Seq2Seq.beam_search` (one source), both built on one compiled
decoder step.

>>> import numpy as np, tensorc as tc
>>> model = Seq2Seq(Seq2SeqConfig(src_vocab=9, tgt_vocab=7, n_embd=4, hidden_size=5, attention="dot"))
>>> params = model.init(tc.random.key(0))
>>> src = np.array([[3, 4, 5, 0], [6, 7, 0, 0]])  # 0 is padding
>>> logits, attn = model.forward_with_attention(params, src, np.array([[1, 3, 4], [1, 5, 0]]))
>>> logits.shape, attn.shape
((2, 3, 7), (2, 3, 4))
>>> np.allclose(attn.numpy().sum(-1), 1.0), float(attn.numpy()[1, :, 2:].max())
(True, 0.0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

import tensorc as tc
import tensorc.nn.functional as F
from tensorc import nn

from .lstm import GRU, LSTM, GRUCell, LSTMCell

__all__ = ["Seq2Seq", "Seq2SeqConfig", "shift_right", "strip_after_eos"]

Params = dict[str, Any]
ATTENTIONS = ("none", "additive", "dot")


@dataclass(frozen=True)
class Seq2SeqConfig:
    """An encoder-decoder: embeddings, one LSTM/GRU layer each side, optional attention."""

    src_vocab: int = 32
    tgt_vocab: int = 32
    n_embd: int = 32
    hidden_size: int = 64
    cell: str = "lstm"  # "lstm" or "gru"
    attention: str = "additive"  # "none", "additive" (Bahdanau) or "dot" (Luong)
    attn_size: int | None = None  # the additive attention's hidden size (default: hidden_size)
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shift_right(targets: np.ndarray, bos_id: int) -> np.ndarray:
    """Teacher-forcing decoder inputs: ``bos`` then the targets without their last token.

    >>> shift_right(np.array([[5, 6, 2]]), bos_id=1).tolist()
    [[1, 5, 6]]
    """
    targets = np.asarray(targets)
    return np.concatenate([np.full((targets.shape[0], 1), bos_id, targets.dtype), targets[:, :-1]], axis=1)


def strip_after_eos(tokens: Any, eos_id: int) -> list[int]:
    """The tokens up to (without) the first ``eos_id``.

    >>> strip_after_eos([4, 5, 2, 0, 0], eos_id=2)
    [4, 5]
    """
    out = []
    for t in np.asarray(tokens).tolist():
        if t == eos_id:
            break
        out.append(int(t))
    return out


class Seq2Seq(nn.Module):
    """An RNN encoder-decoder; ``model(params, src, tgt_in) -> logits (B, T, V)``.

    Parameters: ``src_embedding``, ``encoder`` (``weight_ih_l0``…, as PyTorch's
    ``nn.LSTM``/``nn.GRU``), ``tgt_embedding``, ``decoder`` (as ``nn.LSTMCell``/
    ``nn.GRUCell``), ``attention`` (``query``, ``key``, ``score`` for additive;
    ``combine`` for dot) and ``head``.
    """

    def __init__(self, config: Seq2SeqConfig) -> None:
        c = self.config = config
        if c.cell not in ("lstm", "gru"):
            raise tc.TensorcError(f"Seq2Seq cell must be 'lstm' or 'gru', got {c.cell!r}")
        if c.attention not in ATTENTIONS:
            raise tc.TensorcError(f"Seq2Seq attention must be one of {ATTENTIONS}, got {c.attention!r}")
        e, h = c.n_embd, c.hidden_size
        self.src_embedding = nn.Embedding(c.src_vocab, e)
        self.tgt_embedding = nn.Embedding(c.tgt_vocab, e)
        self.encoder = (LSTM if c.cell == "lstm" else GRU)(e, h)
        decoder_input = e if c.attention == "none" else e + h  # the context (additive) or h̃ (dot) is fed in
        self.decoder = (LSTMCell if c.cell == "lstm" else GRUCell)(decoder_input, h)
        if c.attention == "additive":
            a = c.attn_size or h
            self.attention = {"query": nn.Linear(h, a, bias=False), "key": nn.Linear(h, a), "score": nn.Linear(a, 1, bias=False)}
        elif c.attention == "dot":
            self.attention = {"combine": nn.Linear(2 * h, h)}
        else:
            self.attention = {}
        self.head = nn.Linear(2 * h if c.attention == "additive" else h, c.tgt_vocab)
        self._compiled: dict[str, Any] = {}

    def init(self, key: Any) -> Params:
        keys = tc.random.split(key, 5 + len(self.attention))
        params = {
            "src_embedding": self.src_embedding.init(keys[0]),
            "encoder": self.encoder.init(keys[1]),
            "tgt_embedding": self.tgt_embedding.init(keys[2]),
            "decoder": self.decoder.init(keys[3]),
            "head": self.head.init(keys[4]),
        }
        if self.attention:
            params["attention"] = {name: layer.init(keys[5 + i]) for i, (name, layer) in enumerate(self.attention.items())}
        return params

    # ------------------------------------------------------------------------- encoder

    def _hidden(self, state: Any) -> tc.Tensor:
        return state[0] if self.config.cell == "lstm" else state  # (B, H)

    def encode(self, params: Params, src: Any) -> tuple[dict[str, tc.Tensor], Any]:
        """The decoder's memory ``{"outputs" (B, S, H), "mask" (B, S), "keys" (B, S, A) for additive}``
        and the encoder's final state (after each row's last non-pad token)."""
        src = tc.as_tensor(src)
        b, s = src.shape
        p = params["encoder"]
        cell = self.encoder.cells[0]
        mask = tc.ne(src, self.config.pad_id)  # (B, S) True on real tokens
        x = tc.transpose(self.src_embedding(params["src_embedding"], src), 0, 1)  # (S, B, E)
        xw = F.linear(x.reshape(s * b, self.config.n_embd), p["weight_ih_l0"], p["bias_ih_l0"])  # (S*B, G*H)
        xw = xw.reshape(s, b, xw.shape[-1])  # (S, B, G*H)
        w_hh_t = tc.transpose(p["weight_hh_l0"], 0, 1)  # (H, G*H), transposed once, outside the loop
        b_hh = p["bias_hh_l0"]

        def encoder_step(state: Any, inputs: tuple[tc.Tensor, tc.Tensor]) -> tuple[Any, tc.Tensor]:
            xw_t, real_t = inputs  # (B, G*H), (B,)
            keep = tc.reshape(real_t, (b, 1))  # (B, 1)
            new = cell.step(xw_t, state, w_hh_t, b_hh)
            new = tc.tree_map(lambda n, o: tc.where(keep, n, o), new, state)  # padding keeps the state
            return new, self._hidden(new)  # (B, H)

        final, outputs = tc.scan(encoder_step, cell.zero_state(b, x.dtype), (xw, tc.transpose(mask, 0, 1)))
        memory = {"outputs": tc.transpose(outputs, 0, 1), "mask": mask}  # (B, S, H), (B, S)
        if self.config.attention == "additive":
            h = self.config.hidden_size
            keys = self.attention["key"](params["attention"]["key"], memory["outputs"].reshape(b * s, h))  # (B*S, A)
            memory["keys"] = keys.reshape(b, s, keys.shape[-1])  # (B, S, A)
        return memory, final

    def initial_carry(self, final_state: Any) -> tuple[Any, tc.Tensor]:
        """The decoder's first carry: (state, feed); ``feed`` is h̃ for dot attention, unused otherwise."""
        h = self._hidden(final_state)  # (B, H)
        return final_state, tc.zeros_like(h)  # feed (B, H)

    # ------------------------------------------------------------------------- decoder

    @staticmethod
    def _attend(scores: tc.Tensor, memory: dict[str, tc.Tensor]) -> tuple[tc.Tensor, tc.Tensor]:
        """Context (B, H) and weights (B, S) from scores (B, S); padding gets weight 0."""
        alpha = tc.softmax(tc.where(memory["mask"], scores, float("-inf")), -1)  # (B, S)
        context = (tc.unsqueeze(alpha, -1) * memory["outputs"]).sum(1)  # (B, H)
        return context, alpha

    def decoder_step(self, params: Params, memory: dict[str, tc.Tensor], carry: tuple[Any, tc.Tensor],
                     emb_t: tc.Tensor) -> tuple[tuple[Any, tc.Tensor], tuple[tc.Tensor, tc.Tensor | None]]:
        """One target step from the embedded previous token ``emb_t`` (B, E):
        ``(new carry, (features for the output layer, attention weights (B, S) or None))``."""
        state, feed = carry
        p, kind = params.get("attention"), self.config.attention
        if kind == "none":
            state = self.decoder(params["decoder"], emb_t, state)
            return (state, feed), (self._hidden(state), None)  # (B, H)
        if kind == "additive":
            b, s, a = memory["keys"].shape
            query = self.attention["query"](p["query"], self._hidden(state))  # (B, A), from s_{t-1}
            energy = tc.tanh(memory["keys"] + tc.unsqueeze(query, 1))  # (B, S, A)
            scores = self.attention["score"](p["score"], energy.reshape(b * s, a)).reshape(b, s)  # (B, S)
            context, alpha = self._attend(scores, memory)  # (B, H), (B, S)
            state = self.decoder(params["decoder"], tc.concat([emb_t, context], -1), state)
            return (state, feed), (tc.concat([self._hidden(state), context], -1), alpha)  # (B, 2H)
        state = self.decoder(params["decoder"], tc.concat([emb_t, feed], -1), state)  # input feeding of h̃_{t-1}
        h = self._hidden(state)  # (B, H)
        scores = (memory["outputs"] * tc.unsqueeze(h, 1)).sum(-1)  # (B, S), s_t · h_j
        context, alpha = self._attend(scores, memory)  # (B, H), (B, S)
        attentional = tc.tanh(self.attention["combine"](p["combine"], tc.concat([context, h], -1)))  # (B, H), h̃_t
        return (state, attentional), (attentional, alpha)

    def forward_with_attention(self, params: Params, src: Any, tgt_in: Any) -> tuple[tc.Tensor, tc.Tensor | None]:
        """Teacher-forced logits (B, T, V) and attention weights (B, T, S) (None without attention)."""
        tgt_in = tc.as_tensor(tgt_in)
        b, t = tgt_in.shape
        memory, final = self.encode(params, src)
        emb = tc.transpose(self.tgt_embedding(params["tgt_embedding"], tgt_in), 0, 1)  # (T, B, E)

        def target_step(carry: Any, emb_t: tc.Tensor) -> tuple[Any, Any]:
            carry, (features, alpha) = self.decoder_step(params, memory, carry, emb_t)
            return carry, (features if alpha is None else (features, alpha))

        _, ys = tc.scan(target_step, self.initial_carry(final), emb)
        features, alphas = (ys, None) if self.config.attention == "none" else ys  # (T, B, F), (T, B, S)
        logits = self.head(params["head"], features.reshape(t * b, features.shape[-1]))  # (T*B, V)
        logits = tc.transpose(logits.reshape(t, b, self.config.tgt_vocab), 0, 1)  # (B, T, V)
        return logits, None if alphas is None else tc.transpose(alphas, 0, 1)  # (B, T, S)

    def __call__(self, params: Params, src: Any, tgt_in: Any) -> tc.Tensor:
        return self.forward_with_attention(params, src, tgt_in)[0]  # (B, T, V)

    def loss(self, params: Params, src: Any, tgt_in: Any, tgt_out: Any, *, key: Any = None, training: bool = False) -> tc.Tensor:
        """Mean cross-entropy per non-pad target token (nats). ``key`` and ``training`` are
        accepted, as every model's loss takes them (``tensorc train``), and unused: no dropout."""
        return F.cross_entropy(self(params, src, tgt_in), tgt_out, ignore_index=self.config.pad_id)

    # ------------------------------------------------------------------------- decoding

    def step_logits(self, params: Params, memory: dict[str, tc.Tensor], carry: Any, token: Any) -> tuple[Any, ...]:
        """One decoding step from the previous tokens (B,): ``(logits (B, V), carry, weights (B, S) or zeros)``."""
        emb = self.tgt_embedding(params["tgt_embedding"], token)  # (B, E)
        carry, (features, alpha) = self.decoder_step(params, memory, carry, emb)
        if alpha is None:
            alpha = tc.zeros_like(memory["outputs"].sum(-1))  # (B, S)
        return self.head(params["head"], features), carry, alpha  # (B, V)

    def _jitted(self) -> tuple[Any, Any]:
        if not self._compiled:
            self._compiled["start"] = tc.jit(lambda p, src: self._start(p, src))
            self._compiled["step"] = tc.jit(lambda p, memory, carry, token: self.step_logits(p, memory, carry, token))
        return self._compiled["start"], self._compiled["step"]

    def _start(self, params: Params, src: Any) -> tuple[dict[str, tc.Tensor], Any]:
        memory, final = self.encode(params, src)
        return memory, self.initial_carry(final)

    def greedy_decode(self, params: Params, src: Any, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Argmax decoding of a batch: tokens (B, max_len) (``pad_id`` after each row's ``eos``)
        and attention weights (B, max_len, S). Each step is one call of a compiled step."""
        c = self.config
        start, step = self._jitted()
        src = np.asarray(src, np.int64)
        memory, carry = start(params, src)
        b = src.shape[0]
        token = np.full(b, c.bos_id, np.int64)
        done = np.zeros(b, bool)
        tokens, weights = np.full((b, max_len), c.pad_id, np.int64), np.zeros((b, max_len, src.shape[1]))
        for t in range(max_len):
            logits, carry, alpha = step(params, memory, carry, token)
            token = np.argmax(np.asarray(logits), -1).astype(np.int64)  # (B,)
            tokens[:, t] = np.where(done, c.pad_id, token)
            weights[:, t] = np.where(done[:, None], 0.0, np.asarray(alpha))
            done |= token == c.eos_id
            if done.all():
                break
        return tokens, weights

    def beam_search(self, params: Params, src: Any, beam_size: int = 4, max_len: int = 32,
                    length_penalty: float = 0.0) -> tuple[list[int], float, np.ndarray]:
        """Beam search for one source sequence (S,): ``(tokens ending in eos if one was
        emitted, log-probability, attention weights (len, S))``. Hypotheses are ranked by
        ``logp / len**length_penalty``. Each step keeps the ``beam_size`` best live
        extensions; a hypothesis that emits ``eos`` is set aside, and the search stops
        once ``beam_size`` are set aside (or at ``max_len``). With ``beam_size=1``
        this is greedy decoding."""
        c = self.config
        start, step = self._jitted()
        src = np.asarray(src, np.int64).reshape(1, -1)
        memory, carry = start(params, np.repeat(src, beam_size, 0))
        k = beam_size
        scores = np.full(k, -np.inf)
        scores[0] = 0.0  # all rows start identical: expand only the first
        hyps: list[list[int]] = [[] for _ in range(k)]
        hyp_attn: list[list[np.ndarray]] = [[] for _ in range(k)]
        finished: list[tuple[float, list[int], list[np.ndarray]]] = []
        token = np.full(k, c.bos_id, np.int64)

        def rank(score: float, length: int) -> float:
            return score / max(length, 1) ** length_penalty

        for t in range(max_len):
            logits, carry, alpha = step(params, memory, carry, token)
            logits = np.asarray(logits, np.float64)
            logp = logits - np.logaddexp.reduce(logits, -1, keepdims=True)  # (K, V)
            total = (scores[:, None] + logp).reshape(-1)  # (K*V,)
            order = np.argsort(-total, kind="stable")[: 2 * k]  # ties: the lowest index, as argmax
            rows, new_scores, new_tokens = [], [], []
            for flat in order:
                if not np.isfinite(total[flat]):
                    break
                row, tok = divmod(int(flat), logp.shape[1])
                seq, att = hyps[row] + [tok], hyp_attn[row] + [np.asarray(alpha)[row]]
                if tok == c.eos_id:
                    finished.append((float(total[flat]), seq, att))
                elif len(rows) < k:
                    rows.append(row)
                    new_scores.append(float(total[flat]))
                    new_tokens.append((tok, seq, att))
                if len(rows) == k:
                    break
            if len(finished) >= k or not rows or t == max_len - 1:
                break
            index = np.array(rows + [rows[0]] * (k - len(rows)))
            carry = tc.tree_map(lambda a, index=index: np.asarray(a)[index], carry)  # reorder the states to the survivors
            scores = np.array(new_scores + [-np.inf] * (k - len(rows)))
            hyps = [seq for _, seq, _ in new_tokens] + [[] for _ in range(k - len(rows))]
            hyp_attn = [att for _, _, att in new_tokens] + [[] for _ in range(k - len(rows))]
            token = np.array([tok for tok, _, _ in new_tokens] + [c.pad_id] * (k - len(rows)), np.int64)
        if not finished:  # nothing reached eos within max_len: rank the live hypotheses
            finished = [(score, seq, att) for score, (_, seq, att) in zip(new_scores, new_tokens)]
        best = max(finished, key=lambda f: rank(f[0], len(f[1])))
        return best[1], best[0], np.array(best[2]).reshape(len(best[1]), src.shape[1])
