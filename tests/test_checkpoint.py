"""Checkpoints: round trips, strict loading, corrupt files, atomic saves under SIGKILL,
and resuming a jitted training run bit-exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tensorc as tc
from tensorc import nn, optim
from tensorc.checkpoint import FILENAME, CheckpointError, load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parent.parent


def model_params(seed: int = 0) -> dict:
    blk = nn.TransformerBlock(8, 2, 16)
    keys = tc.random.split(tc.random.key(seed), 3)
    return {"wte": nn.Embedding(11, 8).init(keys[0]), "blocks": [blk.init(keys[1]), blk.init(keys[2])],
            "ln_f": nn.LayerNorm(8).init()}


def assert_trees_equal(a, b):
    fa, fb = nn.named_parameters(a), nn.named_parameters(b)
    assert sorted(fa) == sorted(fb)
    for k in fa:
        x, y = np.asarray(fa[k]), np.asarray(fb[k])
        assert x.shape == y.shape and x.dtype == y.dtype, (k, x.shape, y.shape, x.dtype, y.dtype)
        np.testing.assert_array_equal(x, y, err_msg=k)


# ----------------------------------------------------------------------------- round trips


def test_round_trip_of_params_opt_state_step_key_and_config(tmp_path):
    params = model_params()
    opt = optim.AdamW(lr=1e-3)
    grads = tc.tree_map(lambda p: np.full(np.shape(p), 0.1, np.asarray(p).dtype), params)
    new_params, state = opt.update(grads, opt.init(params), params)
    new_params, state = tc.tree_map(np.asarray, new_params), tc.tree_map(np.asarray, state)
    key = tc.random.split(tc.random.key(5))[1]
    config = {"d_model": 8, "n_heads": 2, "blocks": [16, 16], "name": "tiny", "dropout": 0.1, "tied": True}
    path = save_checkpoint(tmp_path, new_params, state, step=123, rng_key=key, config=config, extra={"note": "x"})
    assert path == tmp_path / FILENAME and path.exists()
    assert os.listdir(tmp_path) == [FILENAME]  # no temporary file left behind

    ck = load_checkpoint(tmp_path, params_like=params, opt_state_like=opt.init(params))
    assert_trees_equal(ck.params, new_params)
    assert_trees_equal(ck.opt_state, state)
    assert isinstance(ck.params["blocks"], list) and ck.params["blocks"][1]["attn"]["qkv"]["weight"].shape == (24, 8)
    assert ck.opt_state["step"].shape == () and ck.opt_state["step"].dtype == np.int32 and int(ck.opt_state["step"]) == 1
    assert ck.step == 123
    assert ck.rng_key.dtype == np.uint32 and ck.rng_key.shape == (2,)
    np.testing.assert_array_equal(ck.rng_key, key.numpy())
    assert ck.config == config and ck.extra == {"note": "x"}
    # a restored key gives the same random numbers
    np.testing.assert_array_equal(tc.random.uniform(ck.rng_key, (4,)).numpy(), tc.random.uniform(key, (4,)).numpy())

    # without structure templates: flat dotted names
    flat = load_checkpoint(path)
    assert "blocks.1.mlp.fc.weight" in flat.params and "m.blocks.0.attn.qkv.bias" in flat.opt_state


def test_scalars_and_dtypes_round_trip(tmp_path):
    import ml_dtypes

    params = {"scale": np.float32(2.5), "count": np.array(7, np.int64), "half": np.ones(3, np.float16),
              "bf": np.array([1.5, -2.0], ml_dtypes.bfloat16), "f64": np.arange(4.0), "t": np.arange(6.0).reshape(2, 3).T,
              "tensor": tc.ones((2, 2))}
    save_checkpoint(tmp_path, params, step=np.int32(4))
    ck = load_checkpoint(tmp_path, params_like=params)
    for k, v in params.items():
        got, want = ck.params[k], np.asarray(v)
        assert got.shape == want.shape and got.dtype == want.dtype, k
        np.testing.assert_array_equal(got, want)
    assert ck.step == 4


def test_saving_over_an_existing_checkpoint_replaces_it(tmp_path):
    save_checkpoint(tmp_path, {"w": np.zeros((2, 2), np.float32)}, step=1, config={"v": 1})
    save_checkpoint(tmp_path, {"w": np.ones((3, 2), np.float32), "b": np.ones(2, np.float32)}, step=2, config={"v": 2})
    ck = load_checkpoint(tmp_path)
    assert ck.step == 2 and ck.config == {"v": 2}
    assert sorted(ck.params) == ["b", "w"] and ck.params["w"].shape == (3, 2)
    assert os.listdir(tmp_path) == [FILENAME]


def test_load_accepts_the_file_path_too(tmp_path):
    path = save_checkpoint(tmp_path / "nested" / "dir", {"w": np.ones(2, np.float32)})
    assert load_checkpoint(path).params["w"].tolist() == [1.0, 1.0]


# ----------------------------------------------------------------------------- strict loading


def test_strict_loading_names_missing_extra_and_mismatched(tmp_path):
    saved = {"a": np.ones((2, 3), np.float32), "b": np.ones(4, np.float32), "extra1": np.ones(1, np.float32),
             "blocks": [{"w": np.ones((5,), np.float32)}]}
    save_checkpoint(tmp_path, saved)
    like = {"a": np.ones((3, 2), np.float32), "b": np.ones(4, np.float64), "missing1": np.ones(1, np.float32),
            "blocks": [{"w": np.ones(5, np.float32)}, {"w": np.ones(5, np.float32)}]}
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path, params_like=like)
    msg = str(e.value)
    assert "missing (2): blocks.1.w, missing1" in msg
    assert "extra (1): extra1" in msg
    assert "a: checkpoint float32[2, 3] vs model float32[3, 2]" in msg
    assert "b: checkpoint float32[4] vs model float64[4]" in msg
    assert "blocks.0.w" not in msg


def test_strict_loading_checks_opt_state(tmp_path):
    params = {"w": np.ones((2, 2), np.float32)}
    save_checkpoint(tmp_path, params, optim.SGD(lr=0.1).init(params))
    with pytest.raises(CheckpointError, match=r"optimizer state(.|\n)*missing \(1\): momentum.w"):
        load_checkpoint(tmp_path, params_like=params, opt_state_like=optim.SGD(lr=0.1, momentum=0.9).init(params))


def test_non_strict_loading_keeps_model_values_for_missing_names(tmp_path):
    save_checkpoint(tmp_path, {"a": np.full(2, 7.0, np.float32), "unused": np.ones(1, np.float32)})
    like = {"a": np.zeros(2, np.float32), "new_head": np.full(3, 5.0, np.float32)}
    ck = load_checkpoint(tmp_path, params_like=like, strict=False)
    assert sorted(ck.params) == ["a", "new_head"]
    np.testing.assert_array_equal(ck.params["a"], [7.0, 7.0])
    np.testing.assert_array_equal(ck.params["new_head"], [5.0, 5.0, 5.0])


# ----------------------------------------------------------------------------- damaged files


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nowhere")


def test_truncated_and_corrupt_files_raise_checkpoint_error(tmp_path):
    params = {"w": np.arange(600, dtype=np.float32).reshape(20, 30), "b": np.zeros(3, np.float32)}
    path = save_checkpoint(tmp_path, params, optim.AdamW().init(params), step=12, config={"a": 1})
    good = path.read_bytes()
    header_len = int.from_bytes(good[:8], "little")
    damaged = [good[:n] for n in (0, 3, 8, 9, header_len // 2, header_len + 8, len(good) // 2, len(good) - 1)]
    damaged += [b"\xff" * 8 + good[8:], (1 << 40).to_bytes(8, "little") + good[8:], b"not a checkpoint at all" * 10]
    damaged.append(good.replace(b'"step":"12"', b'"step":"1F"'))  # the header still parses; its metadata does not
    damaged.append(good.replace(b'"config":"{\\"a\\": 1}"', b'"config":"{\\"a\\": 1]"'))
    rng = np.random.default_rng(0)
    for _ in range(150):  # single-byte damage anywhere in the header
        b = bytearray(good)
        b[int(rng.integers(0, header_len + 8))] = int(rng.integers(0, 256))
        damaged.append(bytes(b))
    for i, data in enumerate(damaged):
        path.write_bytes(data)
        try:
            ck = load_checkpoint(tmp_path, params_like=params, opt_state_like=optim.AdamW().init(params))
        except CheckpointError:
            continue
        # a byte flip that leaves a valid file (a digit of the data offsets, a letter in a name...) must
        # still have been checked against the model, so what loads has the right structure
        assert_trees_equal(tc.tree_map(np.zeros_like, ck.params), tc.tree_map(np.zeros_like, params)), i


def test_a_safetensors_file_that_is_not_a_checkpoint(tmp_path):
    from safetensors.numpy import save_file

    save_file({"w": np.ones(2, np.float32)}, str(tmp_path / FILENAME))
    with pytest.raises(CheckpointError, match="not a tensorc checkpoint"):
        load_checkpoint(tmp_path)


# ----------------------------------------------------------------------------- atomic saves under SIGKILL

def _writer(directory: str, start: int) -> None:
    """Save checkpoints back to back until killed; each is self-consistent: every value equals its step."""
    step = start
    while True:
        params = {"a": np.full((1024, 1024), step, np.float32), "b": np.full((512, 1024), step, np.float32)}
        save_checkpoint(directory, params, {"m": np.full(1024, step, np.float32)}, step=step, config={"step": step})
        step += 1


WRITER_SCRIPT = "import sys; from tests.test_checkpoint import _writer; _writer(sys.argv[1], int(sys.argv[2]))"


class _Writer:
    """The writer in a child process: forked where possible (fast: tensorc is already imported), else spawned."""

    def __init__(self, directory: Path, start: int) -> None:
        import multiprocessing

        if "fork" in multiprocessing.get_all_start_methods():
            self.proc = multiprocessing.get_context("fork").Process(target=_writer, args=(str(directory), start), daemon=True)
            self.proc.start()
            self.pid, self.alive = self.proc.pid, self.proc.is_alive
        else:
            env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
            self.proc = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(directory), str(start)], env=env, cwd=REPO)
            self.pid, self.alive = self.proc.pid, lambda: self.proc.poll() is None

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        if hasattr(self.proc, "join"):
            self.proc.join()
        else:
            self.proc.wait()


def _check_consistent(directory: Path) -> int:
    ck = load_checkpoint(directory)
    step = ck.step
    assert ck.config == {"step": step}
    for name, arr in [*ck.params.items(), *ck.opt_state.items()]:
        assert np.all(arr == step), f"{name} mixes steps: {np.unique(arr)[:5]} in checkpoint of step {step}"
    return step


def test_sigkill_mid_save_leaves_the_last_good_checkpoint(tmp_path):
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("needs SIGKILL")
    rng = np.random.default_rng()
    last_step, interrupted_writes = -1, 0
    for round_ in range(6):
        start = last_step + 1
        writer = _Writer(tmp_path, start)
        try:
            deadline = time.monotonic() + 60
            while not (tmp_path / FILENAME).exists() or _check_step(tmp_path) < start:  # this writer saved once
                assert writer.alive(), "the writer died"
                assert time.monotonic() < deadline, "the writer never saved"
                time.sleep(0.01)
            if round_ % 2:  # at a random moment
                time.sleep(float(rng.uniform(0.0, 0.4)))
            else:  # while a temporary file exists, i.e. mid-save
                while len(os.listdir(tmp_path)) < 2 and time.monotonic() < deadline:
                    time.sleep(0.0005)
                time.sleep(float(rng.uniform(0.0, 0.02)))
        finally:
            writer.kill()
        leftovers = [n for n in os.listdir(tmp_path) if n != FILENAME]
        interrupted_writes += bool(leftovers)
        for name in leftovers:  # temporary files (ours and safetensors') are hidden, never named like a checkpoint
            assert name.startswith(".") and not name.endswith(".safetensors"), name
        step = _check_consistent(tmp_path)
        assert step >= last_step
        last_step = step
        for name in leftovers:  # clean up, as a user (or the next run) may
            os.unlink(tmp_path / name)
    assert interrupted_writes >= 1, "no kill landed mid-save: the test checked nothing about atomicity"
    assert last_step >= 5


def _check_step(directory: Path) -> int:
    return load_checkpoint(directory).step  # a CheckpointError here means a save was not atomic


# ----------------------------------------------------------------------------- resuming exactly


def _mlp():
    fc1, fc2 = nn.Linear(6, 32), nn.Linear(32, 3)
    drop = nn.Dropout(0.1)

    def loss_fn(params, x, y, key):
        h = nn.functional.gelu(fc1(params["fc1"], x))
        h = drop({}, h, key=key, training=True)
        return nn.functional.cross_entropy(fc2(params["fc2"], h), y)

    k1, k2 = tc.random.split(tc.random.key(0), 2)
    return {"fc1": fc1.init(k1), "fc2": fc2.init(k2)}, loss_fn


def _batch(i: int):
    rng = np.random.default_rng(1000 + i)
    return rng.standard_normal((16, 6)).astype(np.float32), rng.integers(0, 3, 16).astype(np.int64)


def _make_step(loss_fn, opt):
    @tc.jit
    def train_step(params, opt_state, key, x, y):
        keys = tc.random.split(key, 2)
        loss, grads = tc.value_and_grad(loss_fn)(params, x, y, keys[1])
        grads, _ = optim.clip_grad_norm(grads, 1.0)
        params, opt_state = opt.update(grads, opt_state, params)
        return params, opt_state, keys[0], loss

    return train_step


def _train(step_fn, params, opt_state, key, first, n):
    for i in range(first, first + n):
        params, opt_state, key, _ = step_fn(params, opt_state, key, *_batch(i))
    return params, opt_state, key


def test_resume_from_checkpoint_is_bit_identical(tmp_path):
    n = 4
    params, loss_fn = _mlp()
    opt = optim.AdamW(lr=optim.warmup_cosine(3e-2, 2, 2 * n, 1e-3), weight_decay=0.1)
    key = tc.random.key(42).numpy()

    straight = _make_step(loss_fn, opt)
    p_ref, s_ref, k_ref = _train(straight, params, opt.init(params), key, 0, 2 * n)
    assert straight.compile_count == 1

    first = _make_step(loss_fn, opt)
    p_mid, s_mid, k_mid = _train(first, params, opt.init(params), key, 0, n)
    save_checkpoint(tmp_path, p_mid, s_mid, step=n, rng_key=k_mid, config={"d": 6})
    del p_mid, s_mid, k_mid

    ck = load_checkpoint(tmp_path, params_like=params, opt_state_like=opt.init(params))
    resumed = _make_step(loss_fn, opt)  # a fresh process would compile again
    p_res, s_res, k_res = _train(resumed, ck.params, ck.opt_state, ck.rng_key, ck.step, n)

    assert_trees_equal(p_res, p_ref)
    assert_trees_equal(s_res, s_ref)
    np.testing.assert_array_equal(k_res, k_ref)
    assert int(s_res["step"]) == 2 * n
    assert not np.array_equal(p_ref["fc1"]["weight"], params["fc1"]["weight"])
