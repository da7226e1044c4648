"""The ``tensorc`` command line.

    tensorc train gpt --preset tiny              # trains on the corpus that ships with Python
    tensorc generate --checkpoint runs/gpt --prompt "The " --top-p 0.9
    tensorc train seq2seq --preset tiny          # human-written dates -> ISO dates (generated)
    tensorc generate --checkpoint runs/seq2seq --prompt "04 march 1997"
    tensorc ir model.py:loss_fn --input x:f32[8,128] --input w:f32[128,64]
    tensorc run model.py:loss_fn --input x:f32[8,128] --input w:f32[128,64]
    tensorc version
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TensorcError

_SPEC = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*):(?P<dtype>[a-z0-9]+)\[(?P<shape>[0-9, ]*)\]$")


def parse_input_spec(spec: str) -> tuple[str, tuple[int, ...], str]:
    """``"x:f32[8,128]"`` -> ``("x", (8, 128), "float32")``."""
    from .ir import dtypes

    m = _SPEC.match(spec.strip())
    if not m:
        raise TensorcError(f"bad --input {spec!r}: expected NAME:DTYPE[D0,D1,...], e.g. x:f32[8,128]")
    try:
        dt = dtypes.dtype(m["dtype"])
    except TypeError:
        raise TensorcError(f"bad --input {spec!r}: unknown dtype {m['dtype']!r}") from None
    dims = tuple(int(d) for d in m["shape"].replace(" ", "").split(",") if d)
    return m["name"], dims, dt.name


def load_module(path: str) -> Any:
    """Import a Python file by path (its folder is importable while it loads)."""
    file = Path(path)
    if not file.exists():
        raise TensorcError(f"no such file: {path}")
    spec = importlib.util.spec_from_file_location(file.stem, file)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look their module up there
    sys.path.insert(0, str(file.parent.resolve()))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    return module


def load_function(target: str) -> Callable[..., Any]:
    """Load ``path/to/file.py:function`` (or ``module:function``)."""
    if ":" not in target:
        raise TensorcError(f"expected FILE:FUNCTION, got {target!r}")
    path, _, name = target.rpartition(":")
    if path.endswith(".py") or Path(path).exists():
        module = load_module(path)
    else:
        module = importlib.import_module(path)
    fn = getattr(module, name, None)
    if fn is None:
        raise TensorcError(f"{path} has no function {name!r}")
    return getattr(fn, "fn", fn)  # unwrap an @tc.jit function


def _example_inputs(specs: Sequence[str], seed: int) -> dict[str, np.ndarray]:
    from .ir import dtypes

    rng = np.random.default_rng(seed)
    out = {}
    for spec in specs:
        name, shape, dt = parse_input_spec(spec)
        if name in out:
            raise TensorcError(f"--input {name} is given twice")
        d = dtypes.dtype(dt)
        if d.is_float:
            out[name] = rng.standard_normal(shape).astype(d.np)
        elif d.is_bool:
            out[name] = rng.integers(0, 2, shape).astype(bool)
        else:
            out[name] = rng.integers(0, 8, shape).astype(d.np)
    return out


def _check_arity(fn: Callable[..., Any], inputs: dict[str, np.ndarray], target: str) -> None:
    """A clear message instead of a TypeError when --input does not fit the function."""
    import inspect

    try:
        inspect.signature(fn).bind(*inputs.values())
    except TypeError as e:
        try:
            params = ", ".join(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            params = "?"
        raise TensorcError(f"{target} takes ({params}); given {len(inputs)} --input: {e}") from None
    except ValueError:
        pass  # no signature to check (a builtin): let the call speak


def _cmd_ir(args: argparse.Namespace) -> int:
    from . import jit

    fn = load_function(args.function)
    inputs = _example_inputs(args.input, args.seed)
    _check_arity(fn, inputs, args.function)
    lowered = jit(fn).lower(*inputs.values())
    print(lowered.graph)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from . import config, jit

    fn = load_function(args.function)
    inputs = _example_inputs(args.input, args.seed)
    _check_arity(fn, inputs, args.function)
    with config(target=args.target):
        f = jit(fn)
        t0 = time.perf_counter()
        out = f(*inputs.values())
        dt = time.perf_counter() - t0
    from .frontend import pytree

    for i, leaf in enumerate(pytree.flatten(out)[0]):
        arr = np.asarray(leaf)
        print(f"output {i}: {arr.dtype}{list(arr.shape)}")
        print(np.array2string(arr, threshold=20, precision=5))
    print(f"(traced, compiled and ran on {args.target} in {dt * 1e3:.1f} ms)", file=sys.stderr)
    return 0


def parse_overrides(items: Sequence[str], defaults: dict[str, Any], model: str = "model") -> dict[str, Any]:
    """``["n_layer=1", "dropout=0.1"]`` -> ``{"n_layer": 1, "dropout": 0.1}``, each value parsed as the
    type of its entry in ``defaults`` (the preset's config); unknown keys are an error."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = (part.strip() for part in item.partition("="))
        if not sep or not key or not text:
            raise TensorcError(f"bad --override {item!r}: expected KEY=VALUE, e.g. n_layer=1")
        if key not in defaults or key == "vocab_size":  # the vocabulary comes from the tokenizer
            settable = ", ".join(k for k in defaults if k != "vocab_size")
            raise TensorcError(f"--override {item!r}: {model} has no config key {key!r} to set; keys: {settable}")
        kind = type(defaults[key])
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                value: Any = text.lower() in ("true", "1")
            else:
                value = kind(text)  # int("0.5") fails: an int key takes an int
        except ValueError:
            raise TensorcError(f"--override {item!r}: {key} expects {kind.__name__}, got {text!r}") from None
        out[key] = value
    return out


def _cmd_train(args: argparse.Namespace) -> int:
    from .training import find_recipe, settings_for, train

    recipe = find_recipe(args.model)
    if args.preset not in recipe.presets:
        raise TensorcError(f"{args.model} has no preset {args.preset!r}; presets: {', '.join(recipe.presets)}")
    overrides = parse_overrides(args.override, recipe.config_for(args.preset, 1), args.model)
    out = args.out or f"runs/{args.model}"
    # flags left out keep the recipe's defaults (its train_defaults), else TrainSettings'
    given = {name: getattr(args, name) for name in ("steps", "batch_size", "lr", "warmup", "eval_every")
             if getattr(args, name) is not None}
    settings = settings_for(
        recipe, preset=args.preset, data=args.data, out=out, resume=args.resume, target=args.target,
        seed=args.seed, time_budget=args.minutes * 60 if args.minutes else None, sample_tokens=args.sample_tokens,
        checkpoint_every=args.checkpoint_every, progress=not args.no_progress, overrides=overrides, **given,
    )
    result = train(recipe, settings)
    return 130 if result.interrupted else 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from .training import load_run

    recipe, model, params, task = load_run(args.checkpoint)
    print(task.respond(model, params, args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                       top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop=args.stop))
    return 0


def _cmd_compile(args: argparse.Namespace) -> int:
    from .cli_compile import compile_to_directory, model_program

    if ":" in Path(args.program).name:
        fn = load_function(args.program)
        inputs = _example_inputs(args.input, args.seed)
        _check_arity(fn, inputs, args.program)
        call_args: tuple = tuple(inputs.values())
        name = args.program
    else:
        if args.input:
            raise TensorcError("--input is for FILE.py:FUNCTION; a model file takes --preset (and --train)")
        fn, call_args = model_program(args.program, args.preset, args.train, args.batch_size, args.vocab_size,
                                      _raw_overrides(args.override))
        name = f"{Path(args.program).stem} ({args.preset}{', train step' if args.train else ', loss'})"
    print(compile_to_directory(fn, call_args, args.out, args.target, name))
    return 0


def _raw_overrides(items: Sequence[str]) -> dict:
    """KEY=VALUE pairs with int, then float, then str values (the recipe checks the keys)."""
    out: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise TensorcError(f"bad --override {item!r}: expected KEY=VALUE")
        for kind in (int, float):
            try:
                out[key] = kind(text)
                break
            except ValueError:
                continue
        else:
            out[key] = text
    return out


def _cmd_version(args: argparse.Namespace) -> int:
    from . import __version__

    print(f"tensorc {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every ``tensorc`` subcommand."""
    p = argparse.ArgumentParser(prog="tensorc", description="tensorc: a compiler for tensor programs")
    sub = p.add_subparsers(dest="command", required=True)
    for name, helptext, fn in [
        ("ir", "trace FILE:FUNCTION and print its IR", _cmd_ir),
        ("run", "trace, compile and run FILE:FUNCTION on random inputs", _cmd_run),
    ]:
        s = sub.add_parser(name, help=helptext)
        s.add_argument("function", help="FILE.py:FUNCTION or module:FUNCTION")
        s.add_argument("--input", action="append", default=[], metavar="NAME:DTYPE[SHAPE]",
                       help="an argument of the function, e.g. x:f32[8,128] (repeat for each)")
        s.add_argument("--seed", type=int, default=0, help="seed for the random example inputs")
        if name == "run":
            s.add_argument("--target", default="llvm", help="backend: llvm (default) or reference")
        s.set_defaults(func=fn)
    t = sub.add_parser("train", help="train a registered model (gpt, lstm, seq2seq, word2vec, ...)")
    t.add_argument("model", help="a registered model: gpt, rnn, lstm, gru, window, seq2seq, transformer, word2vec")
    t.add_argument("--preset", default="tiny", help="model size preset (gpt: tiny, mini, gpt2)")
    t.add_argument("--data", default=None, help="a UTF-8 text file (default: the corpus that ships with Python)")
    t.add_argument("--steps", type=int, default=None, help="total optimizer steps: default 2000, or the recipe's own")
    t.add_argument("--minutes", type=float, default=None, help="stop after this much training time")
    t.add_argument("--out", default=None, help="run directory (default runs/MODEL)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last")
    t.add_argument("--target", default=None, help="backend (default: tc.config target)")
    t.add_argument("--batch-size", type=int, default=None, help="default 16, or the recipe's own")
    t.add_argument("--lr", type=float, default=None, help="peak learning rate: default 1e-3, or the recipe's own")
    t.add_argument("--warmup", type=int, default=None, help="warmup steps: default 100, or the recipe's own")
    t.add_argument("--eval-every", type=int, default=None, help="validation interval: default 200, or the recipe's own")
    t.add_argument("--checkpoint-every", type=int, default=500)
    t.add_argument("--seed", type=int, default=1337)
    t.add_argument("--sample-tokens", type=int, default=300,
                   help="length of the sample printed at the end (0: none, and no demo for a model with its own task)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="change one field of the preset's model config, e.g. n_layer=1 (repeat for each)")
    t.set_defaults(func=_cmd_train)
    g = sub.add_parser("generate", help="sample text from a trained checkpoint (or translate a date, or find similar words)")
    g.add_argument("--checkpoint", required=True, help="a run directory or its last/ checkpoint")
    g.add_argument("--prompt", default="", help="text to continue (seq2seq/transformer: a date to translate; "
                   "word2vec: a word, or three for an analogy)")
    g.add_argument("--max-new-tokens", type=int, default=200)
    g.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--stop", default=None, help="stop at this token")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=_cmd_generate)
    c = sub.add_parser("compile", help="trace, optimize and schedule a program; write every stage to -o DIR")
    c.add_argument("program", help="FILE.py:FUNCTION (with --input specs) or a model file such as models/gpt.py")
    c.add_argument("--input", action="append", default=[], metavar="NAME:DTYPE[SHAPE]",
                   help="an argument of FUNCTION, e.g. x:f32[8,128] (repeat for each)")
    c.add_argument("--preset", default="tiny", help="model preset (model files)")
    c.add_argument("--train", action="store_true", help="compile the whole training step, not just the loss")
    c.add_argument("--batch-size", type=int, default=16)
    c.add_argument("--vocab-size", type=int, default=65)
    c.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="change one model config value")
    c.add_argument("--target", default="llvm", help="llvm (default) or reference (cuda is not built yet)")
    c.add_argument("-o", "--out", default=None, help="directory for the stages")
    c.add_argument("--seed", type=int, default=0, help="seed for the random example inputs")
    c.set_defaults(func=_cmd_compile)
    s = sub.add_parser("version", help="print the version")
    s.set_defaults(func=_cmd_version)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a TensorcError, 130 for Ctrl-C)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TensorcError as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
