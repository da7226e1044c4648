"""The recipes with their own tasks: ``tensorc train seq2seq|transformer|word2vec``.

Each trains end to end through tensorc.training.train, resumes bit-identically,
and runs from the command line, with ``tensorc generate`` answering a prompt
(a date's ISO form; a word's nearest words)."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tqdm
from test_training import InterruptingBar, checkpoint_arrays, quiet, read_metrics

import tensorc as tc
from tensorc import cli
from tensorc.checkpoint import load_checkpoint
from tensorc.training import TrainSettings, find_recipe, load_for_generation, load_run, settings_for, train

NAMES = ["seq2seq", "transformer", "word2vec"]


def settings(out: Path, **kw: Any) -> TrainSettings:
    base = dict(preset="nano", out=str(out), steps=4, batch_size=4, warmup=1, eval_every=2, eval_batches=1,
                checkpoint_every=2, sample_tokens=0, progress=False)
    return TrainSettings(**{**base, **kw})


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


# ----------------------------------------------------------------------------- training through tensorc.training.train


@pytest.mark.parametrize("name", NAMES)
def test_resume_is_bit_identical_to_training_straight(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = find_recipe(name)
    straight = train(recipe, settings(tmp_path / "straight"), log=quiet)
    assert straight.step == 4 and not straight.interrupted and np.isfinite(straight.val_loss)

    monkeypatch.setattr(tqdm, "tqdm", InterruptingBar)  # the same run, stopped after 2 of its 4 steps
    monkeypatch.setattr(InterruptingBar, "stop_at", 2)
    first = train(recipe, settings(tmp_path / "resumed"), log=quiet)
    assert first.interrupted and first.step == 2
    monkeypatch.undo()
    lines: list[str] = []
    second = train(recipe, settings(tmp_path / "resumed", resume=True), log=lines.append)
    assert second.step == 4 and lines[0] == f"resumed from {tmp_path / 'resumed' / 'last'} at step 2"

    a, b = checkpoint_arrays(tmp_path / "straight"), checkpoint_arrays(tmp_path / "resumed")
    assert sorted(a) == sorted(b)
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    ma, mb = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    assert [m["step"] for m in mb] == [1, 2, 3, 4]
    for key in ("loss", "grad_norm", "lr", "val_loss", "val_exact_match"):
        assert [m.get(key) for m in ma] == [m.get(key) for m in mb], key
    ck = load_checkpoint(tmp_path / "resumed" / "last")
    assert ck.step == 4 and ck.config["recipe"] == name and ck.config["vocab"] == "vocab.json"
    assert (tmp_path / "resumed" / "loss.png").exists()


def test_date_runs_log_exact_match_and_print_the_demo(tmp_path: Path) -> None:
    lines: list[str] = []
    result = train(find_recipe("transformer"), settings(tmp_path, steps=2, sample_tokens=1), log=lines.append)
    assert not result.interrupted
    metrics = read_metrics(tmp_path)
    assert "val_exact_match" not in metrics[0] and 0.0 <= metrics[1]["val_exact_match"] <= 1.0
    assert re.match(r"step 2: train loss [\d.]+, validation loss [\d.]+, validation exact match [\d.]+; checkpoint in ",
                    lines[-2])
    demo = lines[-1].splitlines()
    assert re.fullmatch(r"held-out exact match: [\d.]+% of 4 dates \(days never seen in training\)", demo[0])
    assert len(demo) == 1 + 4 and all(" -> " in line for line in demo[1:])


def test_word2vec_demo_and_respond(tmp_path: Path) -> None:
    lines: list[str] = []
    train(find_recipe("word2vec"), settings(tmp_path, steps=2, sample_tokens=1), log=lines.append)
    assert lines[-1].startswith("nearest words (cosine similarity):\n  list: ")
    assert "analogy methods - method + function: " in lines[-1]
    recipe, model, params, task = load_run(tmp_path)
    assert task.words[:3] == ["the", "a", "is"]  # most frequent first
    nearest = task.respond(model, params, "List").splitlines()
    assert len(nearest) == 10 and "list" not in [line.split()[0] for line in nearest]
    assert len(task.respond(model, params, "methods method function").splitlines()) == 10
    with pytest.raises(tc.TensorcError, match="one word"):
        task.respond(model, params, "two words")
    with pytest.raises(tc.TensorcError, match="'zzyzx' not in the vocabulary"):
        task.respond(model, params, "zzyzx")


# ----------------------------------------------------------------------------- the task's data


def test_held_out_days_are_never_trained_on() -> None:
    from models.dates import random_dates, source_chars

    def ordinal(iso: str) -> int:
        return dt.date.fromisoformat(iso).toordinal()

    assert all(ordinal(iso) % 10 for _, iso in random_dates(2000, 0, "train"))
    assert all(ordinal(iso) % 10 == 0 for _, iso in random_dates(200, 0, "heldout"))
    pairs = random_dates(500, 1)
    assert {ordinal(iso) % 10 for _, iso in pairs} == set(range(10))  # no split: any day
    assert all(dt.date(1950, 1, 1) <= dt.date.fromisoformat(iso) <= dt.date(2049, 12, 31) for _, iso in pairs)
    known = set(source_chars().itos)
    assert all(set(text) <= known and len(text) <= 32 for text, _ in random_dates(2000, 2))


def test_batches_are_pure_functions_of_seed_and_step(tmp_path: Path) -> None:
    recipe = find_recipe("seq2seq")
    task = recipe.task(settings(tmp_path), tmp_path)
    cfg = recipe.config_for("nano", task.vocab_size)
    src, tgt_in, tgt = task.batch("train", 7, cfg)
    assert src.shape == (4, 32) and tgt.shape == (4, 11) and (tgt_in[:, 0] == 1).all()
    assert (tgt_in[:, 1:] == tgt[:, :-1]).all() and (tgt[:, -1] == 2).all()  # ten characters, then eos
    assert all(np.array_equal(u, v) for u, v in zip(task.batch("train", 7, cfg), (src, tgt_in, tgt)))
    assert not np.array_equal(task.batch("train", 8, cfg)[0], src)
    assert not np.array_equal(task.batch("val", 7, cfg)[0], src)
    with pytest.raises(tc.TensorcError, match="generates its data"):
        recipe.task(settings(tmp_path, data="text.txt"), tmp_path)


def test_config_and_settings_defaults() -> None:
    recipe = find_recipe("seq2seq")
    cfg = recipe.config_for("tiny", 49)
    assert (cfg["src_vocab"], cfg["tgt_vocab"], cfg["hidden_size"], cfg["attention"]) == (49, 14, 64, "additive")
    with pytest.raises(tc.TensorcError, match="tgt_vocab is set by the date task"):
        recipe.config_for("tiny", 49, tgt_vocab=20)
    with pytest.raises(tc.TensorcError, match="unknown transformer preset 'huge'"):
        find_recipe("transformer").config_for("huge", 49)
    assert settings_for(recipe).batch_size == 64 and settings_for(recipe, batch_size=8).batch_size == 8
    # gpt sets its steps and learning rate (the 10-minute tiny run); the other language models keep the general defaults
    assert settings_for(find_recipe("gpt")) == TrainSettings(steps=1400, lr=2e-3)
    assert settings_for(find_recipe("lstm")) == TrainSettings()


# ----------------------------------------------------------------------------- the command line


def test_cli_train_seq2seq_tiny_then_generate(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stdout, err = run_cli("train", "seq2seq", "--preset", "tiny", "--steps", "3", "--out", str(out), "--no-progress")
    assert code == 0, err
    assert "held-out exact match: " in stdout and "of 512 dates" in stdout  # the recipe's defaults: 8 batches of 64
    assert json.loads((out / "vocab.json").read_text())["target"][3:] == list("-0123456789")
    assert [m["step"] for m in read_metrics(out)] == [1, 2, 3]
    code, stdout, err = run_cli("generate", "--checkpoint", str(out), "--prompt", "04 march 1997")
    assert code == 0, err
    assert re.fullmatch(r"[-0-9^]{0,11}\n", stdout)
    assert run_cli("generate", "--checkpoint", str(out / "last"), "--prompt", "04 march 1997") == (0, stdout, "")
    code, _, err = run_cli("generate", "--checkpoint", str(out), "--prompt", "1997-03-04!")
    assert code == 2 and "'!-' never occurs in the dates this model read" in err
    code, _, err = run_cli("generate", "--checkpoint", str(out))
    assert code == 2 and "give a date to translate" in err
    with pytest.raises(tc.TensorcError, match="not a language model"):
        load_for_generation(out)


def test_cli_train_transformer_and_word2vec_then_generate(tmp_path: Path) -> None:
    flags = ["--preset", "nano", "--steps", "2", "--batch-size", "4", "--eval-every", "1", "--no-progress"]
    code, stdout, err = run_cli("train", "transformer", *flags, "--out", str(tmp_path / "tr"))
    assert code == 0 and "validation exact match" in stdout, err
    code, stdout, err = run_cli("generate", "--checkpoint", str(tmp_path / "tr"), "--prompt", "Tuesday, March 04, 1997")
    assert code == 0 and re.fullmatch(r"[-0-9^]{0,11}\n", stdout), err

    code, stdout, err = run_cli("train", "word2vec", *flags, "--override", "window=3", "--out", str(tmp_path / "w2v"))
    assert code == 0 and "nearest words" in stdout, err
    assert load_checkpoint(tmp_path / "w2v" / "last").config["model"]["window"] == 3
    code, stdout, err = run_cli("generate", "--checkpoint", str(tmp_path / "w2v"), "--prompt", "string")
    assert code == 0 and len(stdout.splitlines()) == 10, err
    code, _, err = run_cli("train", "word2vec", "--override", "vocab_size=5", "--out", str(tmp_path / "bad"))
    assert code == 2 and "no config key 'vocab_size'" in err


@pytest.mark.parametrize("module", ["models.dates", "models.word2vec"])
def test_module_doctests(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
