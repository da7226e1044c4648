"""tensorc.training and the ``tensorc train`` / ``tensorc generate`` commands: exact resume,
interruption (Ctrl-C, SIGTERM, SIGKILL mid-checkpoint), outputs, and the baselines."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tqdm

import tensorc as tc
from tensorc import cli
from tensorc.checkpoint import FILENAME, load_checkpoint
from tensorc.nn.modules import named_parameters
from tensorc.training import TrainSettings, bigram_baseline, find_recipe, heldout_loss, load_for_generation, train

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(n_layer=1, n_head=2, n_embd=16, block_size=16)
TINY_FLAGS = [f"--override={k}={v}" for k, v in TINY.items()]


def settings(out: Path, **kw: Any) -> TrainSettings:
    base = dict(preset="mini", out=str(out), steps=6, batch_size=4, warmup=2, eval_every=3, eval_batches=1,
                checkpoint_every=2, sample_tokens=0, progress=False, overrides=dict(TINY, dropout=0.1))
    return TrainSettings(**{**base, **kw})


def quiet(*args: Any) -> None:
    pass


def checkpoint_arrays(run: Path) -> dict[str, np.ndarray]:
    ck = load_checkpoint(run / "last")
    arrays = {f"params.{k}": v for k, v in named_parameters(ck.params).items()}
    arrays.update({f"opt.{k}": v for k, v in named_parameters(ck.opt_state).items()})
    return arrays


def read_metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


class InterruptingBar:
    """Stands in for tqdm: interrupts training once ``stop_at`` steps are done."""

    stop_at = 3
    how = "keyboard"

    def __init__(self, *args: Any, initial: int = 0, **kwargs: Any) -> None:
        self.n = initial

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.n == self.stop_at:
            if self.how == "keyboard":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)  # the handler raises here
            raise AssertionError("SIGTERM did not interrupt training")

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- resume and interruption


def test_resume_is_bit_identical_to_training_straight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = find_recipe("gpt")
    straight = train(recipe, settings(tmp_path / "straight"), log=quiet)
    assert straight.step == 6 and not straight.interrupted

    monkeypatch.setattr(tqdm, "tqdm", InterruptingBar)  # the same run, stopped after 3 of its 6 steps
    first = train(recipe, settings(tmp_path / "resumed"), log=quiet)
    assert first.interrupted and first.step == 3
    assert load_checkpoint(tmp_path / "resumed" / "last").step == 3
    monkeypatch.undo()
    second = train(recipe, settings(tmp_path / "resumed", resume=True), log=quiet)
    assert second.step == 6 and not second.interrupted

    a, b = checkpoint_arrays(tmp_path / "straight"), checkpoint_arrays(tmp_path / "resumed")
    assert sorted(a) == sorted(b)
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    assert load_checkpoint(tmp_path / "resumed" / "last").step == 6
    ma, mb = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    assert [m["step"] for m in mb] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "grad_norm", "lr", "val_loss"):
        assert [m.get(key) for m in ma] == [m.get(key) for m in mb], key
    assert straight.val_loss == second.val_loss


def test_resume_refuses_a_different_model(tmp_path: Path) -> None:
    recipe = find_recipe("gpt")
    train(recipe, settings(tmp_path, steps=1), log=quiet)
    with pytest.raises(tc.TensorcError, match="do not fit"):
        train(recipe, settings(tmp_path, steps=2, resume=True, overrides=dict(TINY, n_embd=8)), log=quiet)
    with pytest.raises(tc.TensorcError, match="model config"):  # same shapes, another dropout
        train(recipe, settings(tmp_path, steps=2, resume=True, overrides=dict(TINY, dropout=0.3)), log=quiet)
    with pytest.raises(tc.TensorcError, match="checkpoint"):
        train(recipe, settings(tmp_path / "empty", resume=True), log=quiet)


@pytest.mark.parametrize("how", ["keyboard", "sigterm"])
def test_interrupt_saves_a_checkpoint(how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tqdm, "tqdm", InterruptingBar)
    monkeypatch.setattr(InterruptingBar, "how", how)
    monkeypatch.setattr(InterruptingBar, "stop_at", 2)
    before = signal.getsignal(signal.SIGTERM)
    lines: list[str] = []
    result = train(find_recipe("gpt"), settings(tmp_path, checkpoint_every=100, sample_tokens=20), log=lines.append)
    assert result.interrupted and result.step == 2
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back
    assert load_checkpoint(tmp_path / "last").step == 2
    assert any("interrupted at step 2" in line for line in lines)
    assert not any(line.startswith("sample:") for line in lines)  # no sample after an interrupt
    assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2]


def _start_training(out: Path, resume: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tensorc.cli", "train", "gpt", "--preset", "mini", *TINY_FLAGS, "--steps", "100000",
           "--batch-size", "2", "--checkpoint-every", "1", "--eval-every", "100000", "--sample-tokens", "0",
           "--no-progress", "--out", str(out)] + (["--resume"] if resume else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_checkpoint(proc: subprocess.Popen, last: Path, after_step: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training exited early ({proc.returncode}):\n{proc.stdout.read()}")
        with contextlib.suppress(tc.TensorcError):
            if (last / FILENAME).exists() and load_checkpoint(last).step > after_step:
                return
        time.sleep(0.02)
    raise AssertionError("no checkpoint within 60 s")


def _saves_in_progress(last: Path) -> set[str]:
    """The temporary files of checkpoint saves under way (or abandoned by a kill)."""
    return {name for name in os.listdir(last) if name.startswith(".checkpoint-")}


def _stop_mid_save(proc: subprocess.Popen, last: Path) -> str:
    """Freeze ``proc`` (SIGSTOP) while it is writing a checkpoint; returns the temporary file's name."""
    stale = _saves_in_progress(last)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training exited early ({proc.returncode}):\n{proc.stdout.read()}")
        if _saves_in_progress(last) - stale:
            proc.send_signal(signal.SIGSTOP)
            writing = _saves_in_progress(last) - stale
            if writing:  # stopped before the rename: the save is cut short here
                return writing.pop()
            proc.send_signal(signal.SIGCONT)  # the save finished first: try the next one
        time.sleep(0.0002)
    raise AssertionError("never caught a checkpoint save in progress")


def test_killed_while_checkpointing_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    """A run that checkpoints every step, stopped in the middle of writing a checkpoint (at a
    random step), then SIGKILLed, twice (the second run resumes the first); then SIGTERM
    mid-save. Every time the last checkpoint loads and the next run resumes from it."""
    rng = random.Random(0)
    last = tmp_path / "last"
    step = 0
    for attempt, sig in enumerate([signal.SIGKILL, signal.SIGKILL, signal.SIGTERM]):
        proc = _start_training(tmp_path, resume=attempt > 0)
        try:
            _wait_for_checkpoint(proc, last, after_step=step)
            time.sleep(rng.uniform(0.0, 0.3))
            partial = _stop_mid_save(proc, last)
            proc.send_signal(sig)
            proc.send_signal(signal.SIGCONT)
            output, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if sig == signal.SIGTERM:
            assert proc.returncode == 130, output
            assert "interrupted at step" in output
            # (the interrupted save's temporary file may stay behind: SIGTERM between mkstemp and its try)
        else:
            assert proc.returncode == -signal.SIGKILL
            assert partial in _saves_in_progress(last)  # the kill did land mid-save
        ck = load_checkpoint(last)
        assert ck.step > step, "the resumed run did not continue"
        step = ck.step
        recipe, model, params, tokenizer = load_for_generation(tmp_path)
        assert all(np.isfinite(v).all() for v in named_parameters(params).values())
    # the metrics of the three runs form one history: steps logged past a checkpoint were dropped on resume
    steps = [m["step"] for m in read_metrics(tmp_path)]
    assert steps == list(range(1, len(steps) + 1)) and steps[-1] >= step


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path: Path) -> None:
    recipe = find_recipe("gpt")
    train(recipe, settings(tmp_path, steps=2), log=quiet)
    with open(tmp_path / "metrics.jsonl", "a") as f:  # as if killed after logging step 3, before checkpointing it
        f.write(json.dumps({"step": 3, "loss": 9.0}) + "\n" + '{"step": 4, "lo')
    train(recipe, settings(tmp_path, steps=4, resume=True), log=quiet)
    metrics = read_metrics(tmp_path)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert metrics[2]["loss"] != 9.0


# ----------------------------------------------------------------------------- the command line


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_cli_train_then_generate(tmp_path: Path) -> None:
    code, out, err = run_cli("train", "gpt", "--preset", "mini", *TINY_FLAGS, "--steps", "2", "--batch-size", "2",
                             "--eval-every", "1", "--sample-tokens", "5", "--no-progress", "--out", str(tmp_path))
    assert code == 0, err
    assert "sample:" in out and "step 2: train loss" in out
    metrics = read_metrics(tmp_path)
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        assert math.isfinite(m["loss"]) and math.isfinite(m["val_loss"])
        assert {"grad_norm", "lr", "tokens_per_s", "train_seconds"} <= set(m)
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "tokenizer.json").exists()
    ck = load_checkpoint(tmp_path / "last")
    assert ck.step == 2 and ck.config["recipe"] == "gpt" and ck.config["model"]["n_embd"] == 16

    code, out, err = run_cli("generate", "--checkpoint", str(tmp_path), "--prompt", "The", "--max-new-tokens", "5")
    assert code == 0, err
    text = out.rstrip("\n")
    assert text.startswith("The") and len(text) == 3 + 5
    # the same seed gives the same text; the last/ directory works as --checkpoint too
    again = run_cli("generate", "--checkpoint", str(tmp_path / "last"), "--prompt", "The", "--max-new-tokens", "5")
    assert again == (0, out, err)
    code, greedy, _ = run_cli("generate", "--checkpoint", str(tmp_path), "--prompt", "The", "--max-new-tokens", "5",
                              "--temperature", "0", "--top-k", "3", "--top-p", "0.9", "--stop", "e")
    assert code == 0 and greedy.startswith("The")


@pytest.mark.parametrize("flag, message", [
    ("--override=n_layer=x", "n_layer expects int"),
    ("--override=nope=1", "no config key 'nope'"),
    ("--override=vocab_size=5", "no config key 'vocab_size'"),
    ("--override=n_layer", "KEY=VALUE"),
    ("--override=bias=maybe", "bias expects bool"),
    ("--override=bias=false", "bias=False is not supported"),
    ("--override=n_head=3", "divisible"),
])
def test_cli_train_bad_overrides(flag: str, message: str, tmp_path: Path) -> None:
    code, out, err = run_cli("train", "gpt", "--preset", "mini", flag, "--steps", "1", "--out", str(tmp_path))
    assert code == 2 and message in err, err


def test_cli_errors(tmp_path: Path) -> None:
    code, _, err = run_cli("train", "nosuchmodel", "--out", str(tmp_path))
    assert code == 2 and "no model named 'nosuchmodel'" in err
    code, _, err = run_cli("train", "gpt", "--preset", "huge", "--out", str(tmp_path))
    assert code == 2 and "no preset 'huge'" in err
    code, _, err = run_cli("generate", "--checkpoint", str(tmp_path / "missing"))
    assert code == 2 and "no checkpoint" in err


def test_parse_overrides() -> None:
    defaults = dict(n_layer=2, dropout=0.0, bias=True, eps=1e-5)
    got = cli.parse_overrides(["n_layer=1", "dropout=0.25", "bias=false", "eps = 1e-6"], defaults)
    assert got == dict(n_layer=1, dropout=0.25, bias=False, eps=1e-6)
    assert type(got["n_layer"]) is int and type(got["dropout"]) is float
    assert cli.parse_overrides(["dropout=1"], defaults) == dict(dropout=1.0)
    with pytest.raises(tc.TensorcError, match="n_layer expects int"):
        cli.parse_overrides(["n_layer=1.5"], defaults)


# ----------------------------------------------------------------------------- baselines


def test_bigram_baseline_by_hand() -> None:
    train_ids, heldout = np.array([0, 1, 0, 1, 2]), np.array([0, 1, 2, 2])
    # counts: 0->1 twice, 1->0 once, 1->2 once; rows 0 and 1 have 2 transitions, row 2 none
    for eps in (0.5, 1.0):
        p01 = (2 + eps) / (2 + 3 * eps)
        p12 = (1 + eps) / (2 + 3 * eps)
        p22 = eps / (0 + 3 * eps)
        want = -(math.log(p01) + math.log(p12) + math.log(p22)) / 3
        nll, best = bigram_baseline(train_ids, heldout, 3, epsilons=(eps,))
        assert best == eps and nll == pytest.approx(want, rel=1e-12)
    nll, best = bigram_baseline(train_ids, heldout, 3, epsilons=(0.5, 1.0))
    half = bigram_baseline(train_ids, heldout, 3, epsilons=(0.5,))[0]
    one = bigram_baseline(train_ids, heldout, 3, epsilons=(1.0,))[0]
    assert nll == min(half, one) and best == (0.5 if half < one else 1.0)


class MeanOf:
    """A stand-in model whose "loss" is the mean of its targets (or inputs): the mean over
    windows then says exactly which tokens the windows covered, and how often."""

    def __init__(self, of: str) -> None:
        self.of = of

    def loss(self, params: Any, x: Any, y: Any) -> tc.Tensor:
        return tc.mean(tc.cast(y if self.of == "y" else x, "float64"))


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_heldout_loss_uses_non_overlapping_windows(batch_size: int) -> None:
    tokens = np.random.default_rng(0).integers(0, 50, 23)  # 22 targets: 5 windows of 4, 2 left over
    block = 4
    covered = 5 * block
    assert heldout_loss(MeanOf("y"), {}, tokens, block, batch_size) == pytest.approx(tokens[1:covered + 1].mean(), rel=1e-12)
    assert heldout_loss(MeanOf("x"), {}, tokens, block, batch_size) == pytest.approx(tokens[:covered].mean(), rel=1e-12)


def test_heldout_loss_of_a_gpt_is_the_mean_window_loss() -> None:
    recipe = find_recipe("gpt")
    model = recipe.build(recipe.config_for("mini", 11, **TINY))
    params = model.init(tc.random.key(0))
    tokens = np.random.default_rng(1).integers(0, 11, 16 * 5 + 3)
    per_window = [float(model.loss(params, tokens[i * 16:(i + 1) * 16][None], tokens[i * 16 + 1:(i + 1) * 16 + 1][None]))
                  for i in range(5)]
    assert heldout_loss(model, params, tokens, 16, batch_size=2) == pytest.approx(np.mean(per_window), rel=1e-5)
