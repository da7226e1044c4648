"""The sequence models: seq2seq with and without attention (models/seq2seq.py), the
encoder-decoder Transformer (models/transformer.py) and word2vec (models/word2vec.py):
shapes, float64 gradchecks, attention masking, beam search vs greedy, causality,
and analogies recovered from a synthetic corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tensorc as tc
from models.seq2seq import Seq2Seq, Seq2SeqConfig, shift_right, strip_after_eos
from models.transformer import Transformer, TransformerConfig
from models.word2vec import Vectors, train_word2vec

SRC = np.array([[3, 2, 0], [2, 0, 0]])  # 0 is padding
TGT_IN, TGT_OUT = np.array([[1, 3], [1, 2]]), np.array([[3, 2], [2, 0]])

# ----------------------------------------------------------------------------- seq2seq


@pytest.mark.parametrize("attention", ["none", "additive", "dot"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_seq2seq_shapes_and_attention_weights(attention: str, cell: str) -> None:
    model = Seq2Seq(Seq2SeqConfig(src_vocab=9, tgt_vocab=7, n_embd=4, hidden_size=5, cell=cell, attention=attention))
    params = model.init(tc.random.key(0))
    src = np.array([[3, 4, 5, 6], [6, 7, 0, 0]])
    logits, attn = model.forward_with_attention(params, src, np.array([[1, 3, 4], [1, 5, 0]]))
    assert logits.shape == (2, 3, 7)
    if attention == "none":
        assert attn is None
        return
    weights = attn.numpy()  # (B, T, S)
    assert weights.shape == (2, 3, 4)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    assert np.all(weights[1, :, 2:] == 0.0) and np.all(weights[1, :, :2] > 0.0)  # padding gets no weight


def test_seq2seq_padding_does_not_change_the_encoding() -> None:
    model = Seq2Seq(Seq2SeqConfig(src_vocab=9, tgt_vocab=7, n_embd=4, hidden_size=5, attention="additive"))
    params = model.init(tc.random.key(0))
    tgt = np.array([[1, 3, 4]])
    short = model(params, np.array([[6, 7]]), tgt).numpy()
    padded = model(params, np.array([[6, 7, 0, 0]]), tgt).numpy()
    np.testing.assert_allclose(short, padded, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attention,cell", [("none", "lstm"), ("additive", "gru"), ("dot", "lstm")])
def test_seq2seq_gradcheck(attention: str, cell: str) -> None:
    model = Seq2Seq(Seq2SeqConfig(src_vocab=4, tgt_vocab=4, n_embd=2, hidden_size=2, cell=cell, attention=attention, attn_size=2))
    params = model.init(tc.random.key(0))
    assert tc.gradcheck(lambda p: model.loss(p, SRC, TGT_IN, TGT_OUT), params)


@pytest.mark.parametrize("attention", ["none", "additive", "dot"])
def test_beam_search_with_beam_one_is_greedy(attention: str) -> None:
    model = Seq2Seq(Seq2SeqConfig(src_vocab=9, tgt_vocab=7, n_embd=4, hidden_size=6, attention=attention))
    for seed in range(3):
        params = model.init(tc.random.key(seed))
        src = np.array([[3, 4, 5, 8], [6, 7, 0, 0]])
        tokens, weights = model.greedy_decode(params, src, max_len=6)
        assert tokens.shape == (2, 6) and weights.shape == (2, 6, 4)
        for row in range(2):
            beam, score, attn = model.beam_search(params, src[row], beam_size=1, max_len=6)
            greedy = tokens[row].tolist()
            assert beam == greedy[: len(beam)] and strip_after_eos(beam, 2) == strip_after_eos(greedy, 2)
            assert np.isfinite(score) and attn.shape == (len(beam), 4)
        wide, wide_score, _ = model.beam_search(params, src[0], beam_size=3, max_len=6)
        assert wide and np.isfinite(wide_score)


def test_shift_right() -> None:
    assert shift_right(np.array([[5, 6, 2, 0]]), 1).tolist() == [[1, 5, 6, 2]]


# ----------------------------------------------------------------------------- Transformer


def tiny_transformer(pre_ln: bool) -> Transformer:
    return Transformer(TransformerConfig(src_vocab=4, tgt_vocab=4, d_model=4, n_heads=2, n_enc_layers=1, n_dec_layers=1,
                                         d_ff=4, max_len=8, pre_ln=pre_ln))


@pytest.mark.parametrize("pre_ln", [False, True])
def test_transformer_gradcheck(pre_ln: bool) -> None:
    model = tiny_transformer(pre_ln)
    # the source goes in as an argument: with a constant source, the attention-fusion pattern
    # matcher mis-broadcasts the constant (B, 1, 1, S) padding mask (see the report)
    assert tc.gradcheck(lambda p, src: model.loss(p, src, TGT_IN, TGT_OUT), model.init(tc.random.key(0)), SRC)


@pytest.mark.parametrize("pre_ln", [False, True])
def test_transformer_shapes_causality_and_padding(pre_ln: bool) -> None:
    model = Transformer(TransformerConfig(src_vocab=9, tgt_vocab=7, d_model=8, n_heads=2, n_enc_layers=2, n_dec_layers=2,
                                          d_ff=16, pre_ln=pre_ln))
    params = model.init(tc.random.key(1))
    forward = tc.jit(lambda p, s, t: model(p, s, t))
    src = np.array([[3, 4, 5], [6, 7, 0]])
    tgt = np.array([[1, 3, 4, 5], [1, 5, 6, 2]])
    logits = np.asarray(forward(params, src, tgt))
    assert logits.shape == (2, 4, 7)
    changed = tgt.copy()
    changed[:, 2] = [6, 3]  # a later target token
    later = np.asarray(forward(params, src, changed))
    np.testing.assert_allclose(later[:, :2], logits[:, :2], rtol=1e-5, atol=1e-6)
    assert not np.allclose(later[:, 2:], logits[:, 2:])
    padded = np.asarray(forward(params, np.array([[3, 4, 5, 0], [6, 7, 0, 0]]), tgt))  # more padding: same logits
    np.testing.assert_allclose(padded, logits, rtol=1e-5, atol=1e-5)
    tokens = model.greedy_decode(params, src, max_len=5)
    assert tokens.shape == (2, 5) and tokens.min() >= 0 and tokens.max() < 7


# ----------------------------------------------------------------------------- word2vec

PAIRS = {"royal": ("king", "queen"), "adult": ("man", "woman"), "child": ("boy", "girl"),
         "parent": ("father", "mother"), "sibling": ("brother", "sister")}


def analogy_corpus(sentences: int, seed: int = 0) -> list[str]:
    """Each sentence is ``<kind word> <male or female word> <gender word> .``: a word's contexts
    tell its kind (royal, adult, ...) and its gender independently, so king - man + woman = queen."""
    rng = np.random.default_rng(seed)
    kinds = list(PAIRS)
    tokens: list[str] = []
    for _ in range(sentences):
        kind, gender = kinds[rng.integers(len(kinds))], int(rng.integers(2))
        tokens += [f"{kind}{rng.integers(3)}", PAIRS[kind][gender], f"{('he', 'she')[gender]}{rng.integers(3)}", "."]
    return tokens


def test_word2vec_recovers_planted_analogies(tmp_path: Path) -> None:
    vecs, losses = train_word2vec(analogy_corpus(2000), dim=10, window=2, negatives=5, batch_size=256, steps=200,
                                  lr=0.05, seed=0)
    assert losses[-1] < 0.7 * losses[0]
    for a, b, c, want in [("king", "man", "woman", "queen"), ("queen", "woman", "man", "king"),
                          ("father", "man", "woman", "mother"), ("sister", "girl", "boy", "brother")]:
        assert vecs.analogy(a, b, c)[0][0] == want, (a, b, c, vecs.analogy(a, b, c, 3))
    assert vecs.most_similar("king", 1)[0][0] == "queen"
    loaded = Vectors.load(vecs.save(tmp_path / "vectors.npz"))
    assert loaded.words == vecs.words and np.array_equal(loaded.vectors, vecs.vectors)
    assert loaded.analogy("king", "man", "woman")[0][0] == "queen"


def test_word2vec_gradcheck() -> None:
    from models.word2vec import Word2Vec

    model = Word2Vec(5, 3)
    params = model.init(tc.random.key(0))
    params["context"] = np.random.default_rng(0).standard_normal((5, 3))  # zeros would hide the centre gradient
    assert tc.gradcheck(lambda p: model.loss(p, np.array([0, 1]), np.array([2, 3]), np.array([[4, 4], [0, 2]])), params)
