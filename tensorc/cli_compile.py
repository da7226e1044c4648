"""``tensorc compile``: trace a program, run the passes and the scheduler, and
write every stage to a directory a person can read.

Two forms:

- ``tensorc compile FILE.py:FUNCTION --input x:f32[8,128] ...``: a function of yours;
- ``tensorc compile models/gpt.py --preset tiny [--train]``: a model file that
  defines a ``recipe``; compiles its loss (or, with ``--train``, a whole
  training step: loss, gradients, clipping, AdamW) at the preset's size.

Written to ``-o DIR``: ``graph.txt`` (the traced IR), ``optimized.txt`` (after
the passes), ``passes.txt`` (what each pass did), ``report.txt`` (kernels,
fused patterns, FLOPs, bytes, peak memory by role, refused fusions),
``kernels.txt`` (each kernel's ops, and how it runs: a loop nest, a library
routine, a scan body or the reference semantics), ``graph.dot`` and, for
``--target llvm`` (the default), ``kernels.ll`` (the generated LLVM IR of the
loop-nest kernels; matmuls and fused ops run the LLVM backend's library
routines, see ``tensorc.backends.llvm.library``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CompileError, TensorcError

NATIVE_TARGETS = {"cuda": "the CUDA backend"}


def model_program(path: str, preset: str, train: bool, batch_size: int, vocab_size: int, overrides: dict[str, Any]) -> tuple[Any, tuple]:
    """(function, example arguments) for a model file's recipe at ``preset``."""
    from . import optim
    from . import random as tcrandom
    from .autodiff import value_and_grad
    from .cli import load_module

    module = load_module(path)
    recipe = getattr(module, "recipe", None)
    if recipe is None:
        raise TensorcError(f"{path} defines no `recipe`; compile a function instead with {path}:FUNCTION --input ...")
    if preset not in recipe.presets:
        raise TensorcError(f"{path}: no preset {preset!r}; presets: {', '.join(recipe.presets)}")
    cfg = recipe.config_for(preset, vocab_size, **overrides)
    model = recipe.build(cfg)
    params = model.init(tcrandom.key(0))
    rng = np.random.default_rng(0)
    x = rng.integers(0, vocab_size, (batch_size, cfg["block_size"]))
    y = rng.integers(0, vocab_size, (batch_size, cfg["block_size"]))
    if not train:
        def loss(params: Any, x: Any, y: Any) -> Any:
            return model.loss(params, x, y)

        return loss, (params, x, y)
    opt = optim.AdamW(3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    state = opt.init(params)

    def train_step(params: Any, opt_state: Any, x: Any, y: Any) -> Any:
        value, grads = value_and_grad(lambda p: model.loss(p, x, y))(params)
        grads, norm = optim.clip_grad_norm(grads, 1.0)
        params, opt_state = opt.update(grads, opt_state, params)
        return value, params, opt_state

    return train_step, (params, state, x, y)


def compile_to_directory(fn: Any, args: tuple, out: str | None, target: str, name: str) -> str:
    """Lower ``fn`` for ``args``, write the stages to ``out``; returns the summary text."""
    from .frontend.jit import jit

    if target in NATIVE_TARGETS:
        raise CompileError(f"--target {target}: {NATIVE_TARGETS[target]} is not built yet (an open issue); "
                           "use --target llvm or reference")
    if target not in ("reference", "llvm"):
        raise CompileError(f"unknown target {target!r}; targets: reference, llvm (cuda is an open issue)")
    t0 = time.perf_counter()
    jitted = jit(fn, arg_roles={"params": "parameter", "opt_state": "optimizer_state"})
    lowered = jitted.lower(*args)
    t_trace = time.perf_counter()
    optimized = lowered.optimized
    t_passes = time.perf_counter()
    schedule = lowered.schedule
    t_schedule = time.perf_counter()
    report = lowered.report()
    if out:
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        (d / "graph.txt").write_text(str(lowered.graph) + "\n")
        (d / "optimized.txt").write_text(str(optimized) + "\n")
        (d / "passes.txt").write_text(lowered.pass_manager.summary() + "\n")
        (d / "report.txt").write_text(report + "\n")
        exe = lowered.compile("llvm").executable if target == "llvm" else None
        how = exe.how if exe is not None else (lambda k: "reference")
        (d / "kernels.txt").write_text("\n\n".join(_kernel_text(k, how(k)) for k in schedule.kernels) + "\n")
        (d / "graph.dot").write_text(lowered.to_dot())
        if exe is not None:
            (d / "kernels.ll").write_text(exe.ir_text)
    totals = schedule.plan
    summary = [
        f"{name}: {len(lowered.graph.nodes)} nodes traced, {len(optimized.nodes)} after passes, "
        f"{len(schedule.kernels)} kernels for {target}",
        f"  trace {1e3 * (t_trace - t0):.0f} ms, passes {1e3 * (t_passes - t_trace):.0f} ms, "
        f"schedule {1e3 * (t_schedule - t_passes):.0f} ms",
        f"  {sum(k.flops for k in schedule.kernels):,} FLOPs, {sum(k.bytes for k in schedule.kernels):,} bytes moved, "
        f"peak memory {totals.peak_bytes:,} bytes",
    ]
    by_role = {role: n for role, n in totals.bytes_by_role().items() if n}
    summary.append("  memory by role: " + ", ".join(f"{role} {n:,} B" for role, n in by_role.items()))
    fused = [line.strip() for line in lowered.fusion_summary().splitlines()[1:]]
    summary += ["  " + line for line in fused]
    if out:
        extra = ", kernels.ll (LLVM IR)" if target == "llvm" else ""
        summary.append(f"  wrote graph.txt, optimized.txt, passes.txt, report.txt, kernels.txt, graph.dot{extra} to {out}")
    return "\n".join(summary)


def _kernel_text(kernel: Any, how: str) -> str:
    lines = [f"kernel {kernel.index}: {kernel.pattern}  ({kernel.flops:,} FLOPs, {kernel.bytes:,} bytes; runs as {how})"]
    lines += [f"  {n.op} {n.type_str}" + (f"  # {n.loc}" if n.loc else "") for n in kernel.nodes]
    return "\n".join(lines)
