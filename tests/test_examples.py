"""The sequence-model example scripts run end to end with tiny settings and print their tables."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and typing look the module up by name
    spec.loader.exec_module(module)
    return module


def test_attention_bottleneck_prints_accuracy_by_length(capsys: pytest.CaptureFixture[str]) -> None:
    example = load_example("attention_bottleneck")
    accuracy = example.main(["--steps", "2", "--max-len", "8", "--bucket", "4", "--per-bucket", "2",
                             "--hidden", "8", "--d-model", "8", "--batch-size", "4"])
    out = capsys.readouterr().out
    assert set(accuracy) == {"seq2seq-none", "seq2seq-additive", "transformer"}
    assert all(len(row) == 2 and all(0.0 <= a <= 1.0 for a in row) for row in accuracy.values())
    assert "| length | seq2seq-none | seq2seq-additive | transformer |" in out
    assert re.search(r"^\| 1-4 \| [\d.]+% \| [\d.]+% \| [\d.]+% \|$", out, re.M)
    assert re.search(r"^\| 5-8 \|", out, re.M)
    assert "[transformer] step     2/2" in out


def test_attention_bottleneck_rejects_unknown_model() -> None:
    with pytest.raises(SystemExit):
        load_example("attention_bottleneck").main(["--models", "seq2seq-none,bogus"])


def test_compare_lms_prints_and_writes_the_ladder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = load_example("compare_lms")
    doc = tmp_path / "lm-ladder.md"
    rows = example.main(["--budget-seconds", "0.5", "--eval-chars", "128", "--models", "unigram,bigram,trigram,window,gpt",
                         "--doc", str(doc)])
    out = capsys.readouterr().out
    assert [r["model"] for r in rows] == ["unigram", "bigram", "trigram", "window", "gpt"]
    for r in rows:
        assert r["xent"] > 0 and abs(r["ppl"] - 2.718281828 ** r["xent"]) < 1e-6 * r["ppl"]
    assert rows[1]["xent"] < rows[0]["xent"]  # a bigram beats a unigram
    assert "| model | config | training | held-out chars scored | cross-entropy (nats/char) | perplexity |" in out
    assert re.search(r"^\| trigram \| add-ε, ε = [\d.e-]+ \| counts \| first 128 \| [\d.]+ \| [\d.]+ \|$", out, re.M)
    assert re.search(r"^  \[gpt\] stopped at step \d+", out, re.M)
    text = doc.read_text()
    assert "--budget-seconds 0.5" in text and "machine:" in text and "date:" in text
    assert "| window | mini preset |" in text
