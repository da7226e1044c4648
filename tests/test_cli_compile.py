"""`tensorc compile`: a user's function or a model file, every stage written out."""

from __future__ import annotations

from pathlib import Path

import pytest

from tensorc.cli import main

REPO = Path(__file__).resolve().parent.parent


def test_compile_a_function_writes_every_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "model.py"
    src.write_text("import tensorc as tc\n\ndef f(x, w):\n    return tc.softmax(x @ w, -1)\n")
    out = tmp_path / "build"
    assert main(["compile", f"{src}:f", "--input", "x:f32[8,16]", "--input", "w:f32[16,4]", "-o", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "kernels for llvm" in summary and "peak memory" in summary  # llvm is the default target
    kernels = (out / "kernels.txt").read_text()
    assert "matmul" in kernels and "runs as library" in kernels and "runs as loop" in kernels
    for name in ("graph.txt", "optimized.txt", "passes.txt", "report.txt", "kernels.txt", "graph.dot", "kernels.ll"):
        assert (out / name).stat().st_size > 0, name
    assert "matmul" in (out / "graph.txt").read_text()
    assert "kernel 0" in (out / "kernels.txt").read_text()
    assert (out / "graph.dot").read_text().startswith("digraph")


def test_compile_a_model_training_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["compile", str(REPO / "models" / "gpt.py"), "--preset", "mini", "--train", "--batch-size", "2",
            "--override", "n_layer=1", "--override", "n_embd=16", "--override", "block_size=8", "-o", str(tmp_path)]
    assert main(args) == 0
    summary = capsys.readouterr().out
    assert "train step" in summary
    for op in ("fused_attention_bwd", "fused_layernorm_bwd", "fused_softmax_xent_bwd"):
        assert op in summary
    report = (tmp_path / "report.txt").read_text()
    assert "parameter" in report and "optimizer_state" in report


def test_native_targets_say_plainly_they_are_not_built(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "m.py"
    src.write_text("def f(x):\n    return x * 2\n")
    assert main(["compile", f"{src}:f", "--input", "x:f32[4]", "--target", "cuda"]) == 2
    assert "not built yet" in capsys.readouterr().err


def test_llvm_target_writes_the_generated_ir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("llvmlite")
    src = tmp_path / "m.py"
    src.write_text("import tensorc as tc\n\ndef f(x):\n    return tc.tanh(x * 2.0 + 1.0)\n")
    assert main(["compile", f"{src}:f", "--input", "x:f32[64]", "--target", "llvm", "-o", str(tmp_path / "b")]) == 0
    assert "define" in (tmp_path / "b" / "kernels.ll").read_text()


def test_a_model_file_without_a_recipe_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "plain.py"
    src.write_text("x = 1\n")
    assert main(["compile", str(src)]) == 2
    assert "defines no `recipe`" in capsys.readouterr().err
