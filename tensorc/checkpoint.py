"""Checkpoints in the safetensors format (no pickle), written atomically.

A checkpoint directory holds ``checkpoint.safetensors``: every array under a
dotted name (``params.blocks.0.attn.qkv.weight``, ``opt.m.blocks.0...``,
``rng_key``) and, in the file's metadata, the step, the model config and a
format version as JSON. Saving writes a temporary file in the same directory,
fsyncs it and renames it over the old one, so a crash mid-save leaves the
previous checkpoint intact. Loading checks names, shapes and dtypes strictly
and says what is missing, extra or different.

>>> import tempfile, numpy as np, tensorc as tc
>>> d = tempfile.mkdtemp()
>>> path = save_checkpoint(d, {"w": np.ones((2, 2), np.float32)}, step=3, config={"n": 1})
>>> ck = load_checkpoint(d, params_like={"w": np.zeros((2, 2), np.float32)})
>>> ck.step, ck.config, ck.params["w"].sum()
(3, {'n': 1}, np.float32(4.0))
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from .errors import TensorcError
from .nn.modules import named_parameters, unflatten_parameters

FILENAME = "checkpoint.safetensors"
FORMAT_VERSION = 1


class CheckpointError(TensorcError):
    """A checkpoint is missing, corrupt, or does not fit the model."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns: parameters, optimizer state, step, RNG key, config."""
    params: Any
    opt_state: Any = None
    step: int = 0
    rng_key: np.ndarray | None = None
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _to_numpy(x: Any) -> np.ndarray:
    arr = np.asarray(x)
    # Not np.ascontiguousarray alone: it turns a 0-d array (a step counter) into shape (1,).
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)


def save_checkpoint(directory: str | os.PathLike, params: Any, opt_state: Any = None, step: int = 0,
                    rng_key: Any = None, config: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint into ``directory`` atomically; returns the file path.

    One process writes a directory at a time: temporary files that a killed
    writer left behind are removed first.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    for name, value in named_parameters(params).items():
        tensors[f"params.{name}"] = _to_numpy(value)
    if opt_state is not None:
        for name, value in named_parameters(opt_state).items():
            tensors[f"opt.{name}"] = _to_numpy(value)
    if rng_key is not None:
        tensors["rng_key"] = _to_numpy(rng_key)
    metadata = {"format": "tensorc-checkpoint", "version": str(FORMAT_VERSION), "step": str(int(step)),
                "config": json.dumps(config or {}, sort_keys=True), "extra": json.dumps(extra or {}, sort_keys=True)}
    final = directory / FILENAME
    # One writer per directory: temporary files left by a writer that was killed are garbage.
    for stale in directory.glob(".checkpoint-*.tmp"):
        stale.unlink(missing_ok=True)
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".tmp", dir=directory)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is an ordinary file
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_directory(directory)  # make the rename itself durable
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    return final


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_against(prefix: str, found: dict[str, np.ndarray], like: Any) -> None:
    want = {name: np.asarray(v) for name, v in named_parameters(like).items()}
    missing = sorted(set(want) - set(found))
    extra = sorted(set(found) - set(want))
    wrong = [f"{n}: checkpoint {found[n].dtype}{list(found[n].shape)} vs model {want[n].dtype}{list(want[n].shape)}"
             for n in sorted(set(want) & set(found)) if found[n].shape != want[n].shape or found[n].dtype != want[n].dtype]
    if missing or extra or wrong:
        lines = [f"checkpoint {prefix} do not fit the model:"]
        if missing:
            lines.append(f"  missing ({len(missing)}): {', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}")
        if extra:
            lines.append(f"  extra ({len(extra)}): {', '.join(extra[:20])}{' ...' if len(extra) > 20 else ''}")
        if wrong:
            lines.append("  different shape/dtype:\n    " + "\n    ".join(wrong[:20]))
        raise CheckpointError("\n".join(lines))


def load_checkpoint(directory: str | os.PathLike, params_like: Any = None, opt_state_like: Any = None,
                    strict: bool = True) -> Checkpoint:
    """Read a checkpoint. With ``params_like`` / ``opt_state_like`` (pytrees of
    arrays), the arrays are checked against them and returned in their structure. With
    ``strict=False`` names the checkpoint lacks keep their value from ``*_like`` and extra
    names are ignored."""
    path = Path(directory)
    if path.is_dir():
        path = path / FILENAME
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint: {e}") from None
    if metadata.get("format") != "tensorc-checkpoint":
        raise CheckpointError(f"{path} is a safetensors file but not a tensorc checkpoint")
    try:  # a damaged header can still parse as safetensors
        step = int(metadata.get("step", 0))
        config, extra = json.loads(metadata.get("config", "{}")), json.loads(metadata.get("extra", "{}"))
    except ValueError as e:
        raise CheckpointError(f"{path} has corrupt metadata: {e}") from None
    params = {k[len("params."):]: v for k, v in tensors.items() if k.startswith("params.")}
    opt = {k[len("opt."):]: v for k, v in tensors.items() if k.startswith("opt.")}
    if params_like is not None:
        if strict:
            _check_against("parameters", params, params_like)
        else:  # missing names keep the model's value instead of raising KeyError
            params = {**named_parameters(params_like), **params}
        params_tree: Any = unflatten_parameters(params, params_like)
    else:
        params_tree = params
    if opt_state_like is not None:
        if strict:
            _check_against("optimizer state", opt, opt_state_like)
        else:
            opt = {**named_parameters(opt_state_like), **opt}
        opt_tree: Any = unflatten_parameters(opt, opt_state_like)
    else:
        opt_tree = opt or None
    return Checkpoint(params=params_tree, opt_state=opt_tree, step=step, rng_key=tensors.get("rng_key"), config=config,
                      extra=extra)
