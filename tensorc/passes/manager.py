"""The pass manager: named passes run in order, the verifier after each.

``TENSORC_DEBUG=5`` prints the IR after every pass; ``TENSORC_DUMP_DIR``
writes it to ``<dir>/<graph>.<nn>.<pass>.txt``. The verifier runs after each
pass when ``TENSORC_VERIFY=1`` (the test suite sets it) or at debug >= 5.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..config import config
from ..ir.node import Graph
from ..ir.verifier import verify

log = logging.getLogger("tensorc")

PassFn = Callable[[Graph], Graph]


@dataclass
class PassRecord:
    """What one pass did: name, time, node counts, whether it changed the graph."""
    name: str
    seconds: float
    nodes_before: int
    nodes_after: int
    changed: bool


@dataclass
class PassManager:
    """Runs ``passes`` (name, function) in order and records what each did."""

    passes: Sequence[tuple[str, PassFn]]
    history: list[PassRecord] = field(default_factory=list)

    def run(self, graph: Graph) -> Graph:
        debug, dump_dir = config.get("debug"), config.get("dump_dir")
        check = config.get("verify") or debug >= 5
        if check:
            verify(graph)
        for step, (name, fn) in enumerate(self.passes):
            t0 = time.perf_counter()
            before = len(graph.nodes)
            out = fn(graph)
            record = PassRecord(name, time.perf_counter() - t0, before, len(out.nodes), out is not graph)
            self.history.append(record)
            if check and out is not graph:
                verify(out)
            if debug >= 5:
                log.warning("tensorc: after %s (%d -> %d nodes):\n%s", name, before, record.nodes_after, out)
            if dump_dir:
                os.makedirs(dump_dir, exist_ok=True)
                with open(os.path.join(dump_dir, f"{graph.name}.{step:02d}.{name}.txt"), "w") as f:
                    f.write(str(out) + "\n")
            graph = out
        return graph

    def summary(self) -> str:
        return "\n".join(f"{r.name:<24} {r.nodes_before:>6} -> {r.nodes_after:<6} {r.seconds * 1e3:7.2f} ms"
                         + ("" if r.changed else "  (no change)") for r in self.history)


def default_passes() -> list[tuple[str, PassFn]]:
    """The standard pipeline, in order."""
    from .fusion import fuse_patterns
    from .simplify import cse, dce, simplify

    return [
        ("simplify", simplify),
        ("cse", cse),
        ("fuse_patterns", fuse_patterns),
        ("dce", dce),
    ]


def autodiff_prepasses() -> list[tuple[str, PassFn]]:
    """What runs on a forward graph before it is differentiated: pattern
    fusion first, so the backward of a fused node is fused too."""
    from .fusion import fuse_patterns
    from .simplify import cse, simplify

    return [("simplify", simplify), ("cse", cse), ("fuse_patterns", fuse_patterns)]


def optimize(graph: Graph, passes: Sequence[tuple[str, PassFn]] | None = None) -> tuple[Graph, PassManager]:
    """Run the pipeline over ``graph``; returns the result and the manager (for its history)."""
    pm = PassManager(list(passes) if passes is not None else default_passes())
    return pm.run(graph), pm
