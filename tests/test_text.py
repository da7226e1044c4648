"""Tokenizers: byte-level BPE (training, merge order, round trips, files) and the character tokenizer."""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tensorc.data import default_corpus
from tensorc.errors import TensorcError
from tensorc.text import (
    GPT2_SPLIT_PATTERN,
    ByteBPETokenizer,
    CharTokenizer,
    TokenizerError,
    load_tokenizer,
)
from tensorc.text.bpe_train import learn_merges

EOT = "<|endoftext|>"
PROPS = settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])

EDGE_CASES = [
    "", " ", "\n", "\x00", "a", "\r\n\t\x0b\x0c\x1c\x85\u2028", "🙂👍🏽👨‍👩‍👧", "日本語のテキスト", "한국어", "naïve café",
    "e\u0301\u0301", "x²³ Ⅻ ½", "__init__", "   leading and trailing   ", "it's they'll we've I'M", "\ufeff\ufffd\uffff",
    "\U0010ffff\U0001f600", "a" * 500, " " * 300 + "x", "!!!???...", "<|endoftext", "<|endoftext|><|endoftext|>",
]


@lru_cache(maxsize=1)
def corpus_tokenizer() -> ByteBPETokenizer:
    """A tokenizer trained on the default corpus at a small vocabulary (once per test process)."""
    return ByteBPETokenizer().train(default_corpus(), vocab_size=400)


def apply_merges_in_order(tok: ByteBPETokenizer, text: str) -> list[int]:
    """The oracle: every merge, in the order learned, applied to every chunk's bytes."""
    out: list[int] = []
    for chunk in tok.split_chunks(text):
        ids = list(chunk.encode("utf-8", "surrogatepass"))
        for k, (a, b) in enumerate(tok.merges):
            i, merged = 0, []
            while i < len(ids):
                if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
                    merged.append(256 + k)
                    i += 2
                else:
                    merged.append(ids[i])
                    i += 1
            ids = merged
        out += ids
    return out


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("text", EDGE_CASES)
def test_round_trip_edge_cases(text: str) -> None:
    tok = corpus_tokenizer()
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(0 <= i < tok.vocab_size for i in ids)


@PROPS
@given(st.text())
def test_round_trip_any_text(text: str) -> None:
    tok = corpus_tokenizer()
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text, allowed_special="none")) == text


@PROPS
@given(st.lists(st.text(max_size=30), min_size=1, max_size=6))
def test_round_trip_with_special_tokens_inserted(parts: list[str]) -> None:
    tok = corpus_tokenizer()
    text = EOT.join(parts)
    eot = tok.special_tokens[EOT]
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert ids.count(eot) == text.count(EOT)
    plain = tok.encode(text, allowed_special="none")
    assert eot not in plain and tok.decode(plain) == text


@PROPS
@given(st.text(alphabet=st.characters() | st.characters(categories=["Cs"]), max_size=40))
def test_lone_surrogates_encode_and_round_trip_with_surrogatepass(text: str) -> None:
    tok = corpus_tokenizer()
    ids = tok.encode(text)
    assert tok.decode(ids, errors="surrogatepass") == text
    if any("\ud800" <= c <= "\udfff" for c in text):
        assert "\ufffd" in tok.decode(ids)  # the default decode gives valid text: lone surrogates become U+FFFD


def test_decode_of_invalid_utf8_replaces() -> None:
    tok = corpus_tokenizer()
    assert tok.decode([0xFF, 65]) == "\ufffdA"
    assert tok.decode_bytes(tok.encode("€")) == "€".encode()


@PROPS
@given(st.text())
def test_chunks_join_back_and_tokens_never_cross_them(text: str) -> None:
    tok = corpus_tokenizer()
    chunks = tok.split_chunks(text)
    assert "".join(chunks) == text
    assert tok.encode(text) == [i for chunk in chunks for i in tok.encode(chunk)]


def test_custom_pattern_that_skips_text_still_round_trips() -> None:
    tok = ByteBPETokenizer(pattern=r"[a-z]+").train("abc abc abd, abc! " * 30, vocab_size=270, special_tokens=())
    assert tok.split_chunks("abc, X abd") == ["abc", ", X ", "abd"]
    for text in ["abc, X abd", "!!", "", "abc"]:
        assert tok.decode(tok.encode(text)) == text


# ----------------------------------------------------------------------------- merges and their order


def test_hand_worked_example() -> None:
    # aa (4 times, counting every position) -> 256; then ab and (256, a) tie at 2, the smaller pair (97, 98) wins
    # -> 257; then (256, 257) -> 258; then every pair occurs once and training stops (min_frequency=2).
    tok = ByteBPETokenizer().train("aaabdaaabac", vocab_size=300, special_tokens=())
    assert tok.merges == [(97, 97), (97, 98), (256, 257)]
    assert [tok.token_to_bytes(i) for i in (256, 257, 258)] == [b"aa", b"ab", b"aaab"]
    assert tok.vocab_size == 259
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]


def test_merges_apply_in_learned_order_not_longest_match() -> None:
    tok = ByteBPETokenizer().train("aaabdaaabac", vocab_size=259, special_tokens=())
    # "aab": aa was learned before ab, so aa wins, although ab would also match.
    assert tok.encode("aab") == [256, 98]
    swapped = ByteBPETokenizer([(97, 98), (97, 97)])
    assert swapped.encode("aab") == [97, 256]
    # "aaab" is one token, but "aaabb" never becomes (aaab)(b) by longest match of 'aab' etc.
    assert tok.encode("aaab") == [258]
    assert tok.encode("abaa") == [257, 256]


@settings(deadline=None, max_examples=60)
@given(st.text(alphabet="ab c\n", max_size=60))
def test_encode_matches_applying_every_merge_in_order(text: str) -> None:
    tok = small_ab_tokenizer()
    assert tok.encode(text) == apply_merges_in_order(tok, text)


@lru_cache(maxsize=1)
def small_ab_tokenizer() -> ByteBPETokenizer:
    rng = random.Random(0)
    text = "".join(rng.choice(["a", "b", "ab", "aab", " ", "c", "\n", " abba"]) for _ in range(3000))
    return ByteBPETokenizer().train(text, vocab_size=320, special_tokens=())


@settings(deadline=None, max_examples=30)
@given(st.text(max_size=200))
def test_corpus_tokenizer_matches_the_oracle(text: str) -> None:
    tok = corpus_tokenizer()
    assert tok.encode(text) == apply_merges_in_order(tok, text)


def test_training_is_deterministic_and_independent_of_chunk_order() -> None:
    counts = {b"hello": 5, b" world": 3, b" help": 4, b"held": 2, b"lowly": 2}
    merges = learn_merges(counts, 20)
    assert learn_merges(dict(reversed(list(counts.items()))), 20) == merges
    text = default_corpus()[:20_000]
    assert ByteBPETokenizer().train(text, 300).merges == ByteBPETokenizer().train(text, 300).merges


def test_learned_merges_compress_and_reach_the_vocab_size() -> None:
    tok = corpus_tokenizer()
    assert tok.vocab_size == 400 and len(tok.merges) == 400 - 256 - 1
    assert tok.special_tokens == {EOT: 399}
    text = default_corpus()[:10_000]
    assert len(tok.encode(text)) < 0.6 * len(text.encode())
    assert b" the" in {tok.token_to_bytes(i) for i in range(256, 399)}


def test_special_tokens_are_never_learned() -> None:
    tok = ByteBPETokenizer().train(("ab" + EOT) * 50, vocab_size=300)
    assert tok.merges == [(97, 98)]
    assert tok.encode("ab" + EOT + "ab") == [256, 257, 256]


def test_train_returns_self_and_counts_specials_in_vocab_size() -> None:
    tok = ByteBPETokenizer()
    assert tok.train("hello hello hello", vocab_size=258, special_tokens=("<a>", "<b>")) is tok
    assert tok.merges == [] and tok.special_tokens == {"<a>": 256, "<b>": 257}
    with pytest.raises(TokenizerError, match="smaller than the 256 byte tokens"):
        ByteBPETokenizer().train("x", vocab_size=256)


def test_verbose_training_prints_merges(capsys: pytest.CaptureFixture[str]) -> None:
    ByteBPETokenizer().train("aaabdaaabac", vocab_size=259, special_tokens=(), verbose=True)
    assert "merge 1/3: b'a' + b'a' -> 256 b'aa' (count 4)" in capsys.readouterr().out


def test_allowed_special() -> None:
    tok = ByteBPETokenizer(special_tokens=[EOT, "<pad>"])
    assert tok.encode(f"x{EOT}<pad>", allowed_special={"<pad>"})[-1] == tok.special_tokens["<pad>"]
    assert tok.special_tokens[EOT] not in tok.encode(f"x{EOT}<pad>", allowed_special={"<pad>"})
    with pytest.raises(TokenizerError, match="not special tokens"):
        tok.encode("x", allowed_special={"<bos>"})
    with pytest.raises(TokenizerError, match="allowed_special"):
        tok.encode("x", allowed_special="<pad>")


def test_longer_special_token_wins_when_one_is_a_prefix() -> None:
    tok = ByteBPETokenizer(special_tokens=["<s>", "<s>x"])
    assert tok.encode("<s>x<s>") == [257, 256]


def test_bad_merge_lists_and_ids_are_errors() -> None:
    with pytest.raises(TokenizerError, match="does not exist yet"):
        ByteBPETokenizer([(97, 256)])
    with pytest.raises(TokenizerError, match="repeats merge 0"):
        ByteBPETokenizer([(97, 98), (97, 98)])
    tok = ByteBPETokenizer()
    for bad in ([256], [-1]):
        with pytest.raises(TokenizerError, match="out of range"):
            tok.decode(bad)
    with pytest.raises(TokenizerError, match="out of range"):
        tok.token_to_bytes(256)
    with pytest.raises(TokenizerError, match="expects a str"):
        tok.encode(b"bytes")  # type: ignore[arg-type]
    assert isinstance(TokenizerError("x"), TensorcError)


def test_decode_accepts_numpy_ids() -> None:
    tok = corpus_tokenizer()
    ids = np.array(tok.encode("numpy ids"), dtype=np.int64)
    assert tok.decode(ids) == "numpy ids"


# ----------------------------------------------------------------------------- files


def test_save_load_round_trip(tmp_path: Path) -> None:
    tok = corpus_tokenizer()
    path = tmp_path / "bpe.json"
    tok.save(path)
    state = json.loads(path.read_text(encoding="utf-8"))
    assert state["type"] == "byte_bpe" and state["version"] == 1 and state["vocab_size"] == 400
    assert state["merges"][0] == list(tok.merges[0]) and state["pattern"] == GPT2_SPLIT_PATTERN
    for loaded in (ByteBPETokenizer.load(path), load_tokenizer(path)):
        assert isinstance(loaded, ByteBPETokenizer)
        assert loaded.merges == tok.merges and loaded.special_tokens == tok.special_tokens
        for text in EDGE_CASES + [default_corpus()[:5000]]:
            assert loaded.encode(text) == tok.encode(text)


def _state() -> dict:
    return ByteBPETokenizer([(104, 105), (256, 33)], [EOT]).to_dict()


@pytest.mark.parametrize("content, message", [
    (b"", "invalid JSON"),
    (b'{"type": "byte_bpe", "version": 1, "merges": [[1, 2]', "invalid JSON at line 1"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[1, 2, 3]", "expected a JSON object"),
    (json.dumps({**_state(), "type": "sentencepiece"}).encode(), "unknown tokenizer type 'sentencepiece'"),
    (json.dumps({**_state(), "version": 99}).encode(), "unsupported byte_bpe tokenizer version 99"),
    (json.dumps({k: v for k, v in _state().items() if k != "merges"}).encode(), "missing field 'merges'"),
    (json.dumps({**_state(), "merges": "ab"}).encode(), "field 'merges' should be list"),
    (json.dumps({**_state(), "merges": [[104, 105, 1]]}).encode(), "merge 0 should be a list of two token ids"),
    (json.dumps({**_state(), "merges": [[104, 999]]}).encode(), "does not exist yet"),
    (json.dumps({**_state(), "merges": [[104, True]]}).encode(), "pair of token ids"),
    (json.dumps({**_state(), "vocab_size": 5}).encode(), "vocab_size is 5"),
    (json.dumps({**_state(), "special_tokens": {EOT: 7}}).encode(), "do not follow the merges"),
    (json.dumps({**_state(), "pattern": "(unclosed"}).encode(), "bad pre-tokenization pattern"),
])
def test_corrupt_files_raise_clear_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "tok.json"
    path.write_bytes(content)
    with pytest.raises(TokenizerError, match=message) as info:
        load_tokenizer(path)
    assert str(path) in str(info.value)
    if b"sentencepiece" not in content:
        with pytest.raises(TokenizerError, match=message):
            ByteBPETokenizer.load(path)


def test_missing_file_and_wrong_kind(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="cannot read tokenizer file .*No such file"):
        load_tokenizer(tmp_path / "missing.json")
    CharTokenizer("abc").save(tmp_path / "char.json")
    with pytest.raises(TokenizerError, match="expected a tokenizer of type 'byte_bpe', the file says 'char'"):
        ByteBPETokenizer.load(tmp_path / "char.json")


# ----------------------------------------------------------------------------- characters


@PROPS
@given(st.text(min_size=1), st.data())
def test_char_round_trip(vocab_text: str, data: st.DataObject) -> None:
    tok = CharTokenizer.from_text(vocab_text)
    assert tok.chars == sorted(set(vocab_text)) and tok.vocab_size == len(set(vocab_text))
    text = data.draw(st.text(alphabet=st.sampled_from(tok.chars)))
    ids = tok.encode(text)
    assert tok.decode(ids) == text and all(0 <= i < tok.vocab_size for i in ids)


def test_char_unknown_characters() -> None:
    tok = CharTokenizer.from_text(default_corpus())
    with pytest.raises(TokenizerError, match=r"character '🙂' \(U\+1F642\) at index 3 is not in the vocabulary"):
        tok.encode("abc🙂")
    unk = CharTokenizer("abc", unk="<unk>")
    assert unk.vocab_size == 4 and unk.encode("axb") == [0, 3, 1] and unk.decode([0, 3, 1]) == "a<unk>b"
    inside = CharTokenizer("abc?", unk="?")
    assert inside.vocab_size == 4 and inside.encode("az") == [1, 0]
    with pytest.raises(TokenizerError, match="out of range"):
        CharTokenizer("abc").decode([3])
    with pytest.raises(TokenizerError, match="single characters"):
        CharTokenizer(["ab", "c"])


def test_char_save_load(tmp_path: Path) -> None:
    for tok in (CharTokenizer("hello, wörld 🙂\n\x00"), CharTokenizer("abc", unk="<unk>")):
        tok.save(tmp_path / "c.json")
        loaded = load_tokenizer(tmp_path / "c.json")
        assert isinstance(loaded, CharTokenizer) and loaded.chars == tok.chars and loaded.unk == tok.unk
        assert loaded.encode("lol") == tok.encode("lol")
    state = CharTokenizer("abc").to_dict()
    (tmp_path / "bad.json").write_text(json.dumps({**state, "chars": ["b", "a"]}))
    with pytest.raises(TokenizerError, match="sorted order"):
        load_tokenizer(tmp_path / "bad.json")
