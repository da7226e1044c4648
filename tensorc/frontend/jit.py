"""``tc.jit``: trace a Python function into a Graph, compile it once per
argument signature, run it on the selected backend.

Array leaves of the arguments (numpy arrays, numpy scalars, Tensors) become
graph inputs; every other leaf (Python numbers, strings, None) is *static*:
part of the cache key and baked into the graph.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import config
from ..errors import CompileError, DTypeError, TensorcError
from ..ir import dtypes
from ..ir.dtypes import type_str
from ..ir.node import Graph
from ..schedule.lowered import ScheduledLowering
from . import pytree
from .tensor import Tensor
from .tracing import current_trace, is_traced, trace_scope

log = logging.getLogger("tensorc")


def _is_array_leaf(x: Any) -> bool:
    return isinstance(x, (np.ndarray, np.generic, Tensor))


def _leaf_sig(x: Any) -> Any:
    if isinstance(x, Tensor):
        return ("array", x.shape, x.dtype)
    if isinstance(x, (np.ndarray, np.generic)):
        try:
            return ("array", tuple(np.shape(x)), dtypes.dtype(np.asarray(x).dtype))
        except TypeError as e:
            raise DTypeError(f"jit argument of dtype {np.asarray(x).dtype}: {e}") from None
    try:
        hash(x)
    except TypeError:
        raise TensorcError(f"jit argument {x!r} of type {type(x).__name__} is neither an array nor hashable static data") from None
    return ("static", type(x).__name__, x)


@dataclass(frozen=True)
class Signature:
    """What a compiled graph was specialised for: structure, shapes, dtypes, statics."""

    treedef: pytree.TreeDef
    paths: tuple[str, ...] = field(compare=False)  # for messages only: derived from treedef and names
    leaves: tuple[Any, ...] = ()
    arg_names: tuple[str, ...] = field(default=(), compare=False)

    @staticmethod
    def of(args: tuple[Any, ...], kwargs: dict[str, Any], arg_names: Sequence[str] = ()) -> Signature:
        with_path, treedef = pytree.flatten_with_path((args, kwargs))
        return Signature(treedef, tuple(_pretty_path(p, arg_names) for p, _ in with_path), tuple(_leaf_sig(v) for _, v in with_path),
                         tuple(arg_names))

    def describe(self, i: int) -> str:
        kind, a, b = self.leaves[i]
        return type_str(a, b) if kind == "array" else f"static {b!r}"

    def diff(self, other: Signature) -> str:
        """Why ``other`` differs from this one, in words."""
        if self.treedef != other.treedef:
            path, a, b = _first_tree_difference(self.treedef, other.treedef)
            where = {"": "arguments", "[0]": "positional arguments", "[1]": "keyword arguments"}.get(path) or _pretty_path(path, self.arg_names)
            return f"argument structure changed: {where}: {_tree_str(a)} -> {_tree_str(b)}"
        for i, (a, b) in enumerate(zip(self.leaves, other.leaves)):
            if a != b:
                return f"{self.paths[i]}: {self.describe(i)} -> {other.describe(i)}"
        return "no difference"


def _first_tree_difference(a: pytree.TreeDef, b: pytree.TreeDef, path: str = "") -> tuple[str, pytree.TreeDef, pytree.TreeDef]:
    """The path (as pytree labels it) of the outermost place two structures differ, and each side there."""
    if a.kind != b.kind or a.aux != b.aux or len(a.children) != len(b.children):
        return path, a, b
    for i, (ca, cb) in enumerate(zip(a.children, b.children)):
        if ca != cb:
            label = f"[{a.aux[i]!r}]" if a.kind == "dict" else f".{a.aux[0]._fields[i]}" if a.kind == "namedtuple" else f"[{i}]"
            return _first_tree_difference(ca, cb, path + label)
    return path, a, b


def _tree_str(td: pytree.TreeDef) -> str:
    if td.kind == "custom" and td.aux[0] is _Static:  # a static_argnums argument: show its value
        return f"static {td.aux[1]!r}"
    return str(td)


def _pretty_path(path: str, arg_names: Sequence[str] = ()) -> str:
    # Paths look like "[0][1]['w']" for (args, kwargs); show "arg1['w']" (or the
    # parameter's name, "params['w']") and "x" for a keyword argument.
    if path.startswith("[0]["):
        idx, _, tail = path[4:].partition("]")
        i = int(idx)
        return (arg_names[i] if i < len(arg_names) else f"arg{i}") + tail
    if path.startswith("[1]["):
        key, _, tail = path[4:].partition("]")
        return key.strip("'\"") + tail
    return path


def _arg_names(fn: Callable[..., Any]) -> list[str]:
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    names = []
    for p in params:
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
        elif p.kind == p.VAR_POSITIONAL:
            break
    return names


class Lowered(ScheduledLowering):
    """A traced function: its Graph, and how arguments/results map onto it."""

    def __init__(self, fn_name: str, graph: Graph, signature: Signature, array_positions: list[int], out_tree: pytree.TreeDef) -> None:
        self.name = fn_name
        self.graph = graph
        self.signature = signature
        self.array_positions = array_positions
        self.out_tree = out_tree
        self._optimized: Graph | None = None
        self.pass_manager: Any = None

    @property
    def optimized(self) -> Graph:
        """The graph after the pass pipeline (simplify, CSE, DCE, fusion)."""
        if self._optimized is None:
            from ..passes import optimize

            self._optimized, self.pass_manager = optimize(self.graph)
        return self._optimized

    def compile(self, target: str | None = None) -> Compiled:
        """Compile for ``target`` (default: ``tc.config.target``)."""
        target = target or config.get("target")
        t0 = time.perf_counter()
        if target == "reference":
            from ..backends.reference import ScheduledExecutable

            self.optimized  # noqa: B018  (runs the passes, timed apart from scheduling)
            t_passes = time.perf_counter()
            exe = ScheduledExecutable(self.schedule)
        elif target == "llvm":
            from ..backends.llvm import LLVMExecutable

            self.optimized  # noqa: B018
            t_passes = time.perf_counter()
            exe = LLVMExecutable(self.schedule)
        else:
            raise CompileError(f"unknown or not yet available target {target!r}; available: 'reference', 'llvm'")
        if config.get("debug") >= 1:
            from ..schedule.report import log_schedule

            t_end = time.perf_counter()
            log_schedule(self.schedule, self.name, target, {"passes": t_passes - t0, "schedule": t_end - t_passes,
                                                            "total": t_end - t0}, config.get("debug"))
        return Compiled(self, exe)

    def as_text(self) -> str:
        return str(self.graph)

    def __repr__(self) -> str:
        return f"<Lowered {self.name}: {len(self.graph.nodes)} nodes>"


class Compiled:
    """An executable for one signature: call it with arguments of that signature."""

    def __init__(self, lowered: Lowered, executable: Any) -> None:
        self.lowered = lowered
        self.executable = executable

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Arguments compiled as static_argnums are wrapped as Jitted wraps them, so they compare equal.
        arg_defs = self.lowered.signature.treedef.children[0].children
        args = tuple(_Static(a) if i < len(arg_defs) and arg_defs[i].kind == "custom" and arg_defs[i].aux[0] is _Static else a
                     for i, a in enumerate(args))
        sig = Signature.of(args, kwargs, self.lowered.signature.arg_names)
        if sig != self.lowered.signature:
            raise TensorcError(
                f"{self.lowered.name} was compiled for different arguments: {self.lowered.signature.diff(sig)}\n"
                f"  expected structure: {self.lowered.signature.treedef}"
            )
        return self.run_flat(pytree.flatten((args, kwargs))[0])

    def run_flat(self, leaves: Sequence[Any]) -> Any:
        arrays = [np.asarray(leaves[i]) for i in self.lowered.array_positions]
        outs = self.executable(*arrays)
        return pytree.unflatten(self.lowered.out_tree, outs)


def trace_to_graph(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], name: str,
                   arg_names: Sequence[str] = ()) -> tuple[Graph, list[int], pytree.TreeDef]:
    """Trace ``fn`` on abstract versions of the array leaves of its arguments."""
    with_path, treedef = pytree.flatten_with_path((args, kwargs))
    with trace_scope(name) as trace:
        positions, traced_leaves = [], []
        for i, (path, leaf) in enumerate(with_path):
            if _is_array_leaf(leaf):
                sig = _leaf_sig(leaf)
                node = trace.new_param(sig[1], sig[2], _pretty_path(path, arg_names))
                traced_leaves.append(Tensor._traced(node, trace))
                positions.append(i)
            else:
                traced_leaves.append(leaf)
        t_args, t_kwargs = pytree.unflatten(treedef, traced_leaves)
        result = fn(*t_args, **t_kwargs)
        out_leaves, out_tree = pytree.flatten(result)
        out_nodes = []
        for j, leaf in enumerate(out_leaves):
            if not isinstance(leaf, Tensor):
                try:
                    from .ops import as_tensor

                    leaf = as_tensor(leaf)
                except TensorcError:
                    raise TensorcError(f"{name} returned a {type(leaf).__name__} at output leaf {j}; return tensors or arrays") from None
            out_nodes.append(trace.lift(leaf))
    if trace.captured:
        raise TensorcError(f"{name} uses tensors traced by an enclosing function; call it inside that function instead")
    return Graph(trace.params, out_nodes, name=name), positions, out_tree


class Jitted:
    """A function compiled on first call for each argument signature."""

    def __init__(self, fn: Callable[..., Any], static_argnums: Sequence[int] = (), target: str | None = None,
                 arg_roles: dict[str, str] | None = None) -> None:
        self.fn = fn
        self.static_argnums = tuple(static_argnums)
        self.target = target
        self.arg_roles = arg_roles
        self.name = getattr(fn, "__name__", "fn")
        self._cache: dict[tuple[Signature, str], Compiled] = {}
        self._last: Signature | None = None
        self._arg_names = _arg_names(fn)
        self.compile_count = 0
        functools.update_wrapper(self, fn)

    def _static_wrap(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(_Static(a) if i in self.static_argnums else a for i, a in enumerate(args))

    def lower(self, *args: Any, **kwargs: Any) -> Lowered:
        """Trace for these arguments without compiling; ``.graph`` prints the IR."""
        args = self._static_wrap(args)
        sig = Signature.of(args, kwargs, self._arg_names)
        fn = self.fn

        def call(*a: Any, **k: Any) -> Any:
            return fn(*[v.value if isinstance(v, _Static) else v for v in a], **k)

        graph, positions, out_tree = trace_to_graph(call, args, kwargs, self.name, self._arg_names)
        if config.get("verify"):
            from ..ir.verifier import verify

            verify(graph)
        lowered = Lowered(self.name, graph, sig, positions, out_tree)
        lowered.arg_roles, lowered.source_fn = self.arg_roles, self.fn
        return lowered

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if current_trace() is not None or any(is_traced(x) for x in pytree.flatten((args, kwargs))[0]):
            return self.fn(*args, **kwargs)  # inside another trace: inline
        target = self.target or config.get("target")
        wrapped = self._static_wrap(args)
        sig = Signature.of(wrapped, kwargs, self._arg_names)
        key = (sig, target)
        compiled = self._cache.get(key)
        if compiled is None:
            if self._last is not None:
                log.info("jit(%s): recompiling (#%d) because %s", self.name, self.compile_count + 1, self._last.diff(sig))
            compiled = self.lower(*args, **kwargs).compile(target)
            self._cache[key] = compiled
            self.compile_count += 1
        self._last = sig
        return compiled.run_flat(pytree.flatten((wrapped, kwargs))[0])


@dataclass(frozen=True)
class _Static:
    value: Any

    def __hash__(self) -> int:
        return hash(("static", self.value))

    def __repr__(self) -> str:
        return repr(self.value)


pytree.register_pytree_node(_Static, lambda s: ([], s.value), lambda aux, _: _Static(aux))


def jit(fn: Callable[..., Any] | None = None, *, static_argnums: Sequence[int] | int = (), target: str | None = None,
        arg_roles: dict[str, str] | None = None) -> Any:
    """Compile ``fn`` on first call per argument signature.

    ``arg_roles`` names what array arguments are for the buffer plan and the
    report (``{"w": "parameter", "m": "optimizer_state"}``); by default an
    argument called ``params`` holds parameters and ``opt_state`` optimizer state.

    >>> import numpy as np, tensorc as tc
    >>> f = tc.jit(lambda x: (x * 2).sum())
    >>> float(f(np.ones(3, np.float32)))
    6.0
    >>> print(f.lower(np.ones(3, np.float32)).graph)  # doctest: +ELLIPSIS
    graph <lambda>(%x: f32[3]) -> (f32[]):
    ...
    """
    if isinstance(static_argnums, int):
        static_argnums = (static_argnums,)
    if fn is None:
        return lambda f: Jitted(f, static_argnums, target, arg_roles)
    return Jitted(fn, static_argnums, target, arg_roles)
