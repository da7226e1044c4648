"""What ``tc.jit(fn).lower(*args)`` offers about scheduling: kernels, buffers, report, DOT.

:class:`ScheduledLowering` is a mixin of :class:`~tensorc.frontend.jit.Lowered`;
it schedules ``lowered.optimized`` once, on first use, with the roles of the
arguments and outputs found by :mod:`~tensorc.schedule.roles`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..ir.registry import REGISTRY
from .kernel import Kernel
from .memory import Buffer
from .roles import argument_role, output_roles, primal_graph
from .scheduler import Schedule, schedule_graph


class ScheduledLowering:
    """Mixin: ``schedule``, ``kernels``, ``buffers``, ``report()`` and ``to_dot()``."""

    arg_roles: Mapping[str, str] | None = None
    source_fn: Callable[..., Any] | None = None
    _schedule: Schedule | None = None

    @property
    def schedule(self) -> Schedule:
        """The kernels and buffer plan of the optimized graph (computed once)."""
        if self._schedule is None:
            lowered: Any = self
            graph = lowered.optimized
            paths = [lowered.signature.paths[i] for i in lowered.array_positions]
            out_roles = output_roles(lowered.out_tree, self.source_fn)
            primal = primal_graph(self.source_fn, lowered.signature) if "gradient" in out_roles else None
            self._schedule = schedule_graph(graph, [argument_role(p, self.arg_roles) for p in paths], out_roles, primal)
        return self._schedule

    @property
    def kernels(self) -> list[Kernel]:
        """Scheduled kernels in launch order; ``kernel.pattern`` names the fused pattern."""
        return self.schedule.kernels

    @property
    def buffers(self) -> list[Buffer]:
        """Every buffer of the plan, with shape, dtype, bytes and role."""
        return self.schedule.buffers

    def report(self) -> str:
        """Kernels (ops, pattern, FLOPs, bytes, intensity), totals, memory by role, refused fusions,
        and what pattern fusion saved."""
        from .report import report

        return report(self.schedule) + "\n\n" + self.fusion_summary()

    def fusion_summary(self) -> str:
        """The fused ops found, and the kernel count with and without them."""
        from ..autodiff.fused import unfuse
        from ..passes.simplify import cse, dce, simplify

        lowered: Any = self
        graph = lowered.optimized
        fused = sorted({n.op for n in graph.nodes if REGISTRY[n.op].kind == "fused"})
        if not fused:
            return "pattern fusion\n  (no fused ops)"
        counts = {op: sum(1 for n in graph.nodes if n.op == op) for op in fused}
        plain = dce(cse(simplify(unfuse(graph))))
        unfused = schedule_graph(plain)
        lines = ["pattern fusion"]
        lines += [f"  {op} x{n}" for op, n in counts.items()]
        moved = sum(k.bytes for k in self.kernels)
        moved_plain = sum(k.bytes for k in unfused.kernels)
        lines.append(f"  with the fused ops: {len(self.kernels)} kernels, {moved:,} bytes moved, peak {self.schedule.plan.peak_bytes:,} B")
        lines.append(f"  decomposed into primitives: {len(unfused.kernels)} kernels, {moved_plain:,} bytes moved, "
                     f"peak {unfused.plan.peak_bytes:,} B")
        return "\n".join(lines)

    def to_dot(self) -> str:
        """Graphviz DOT text of the graph with one cluster per kernel."""
        from .dot import to_dot

        return to_dot(self.schedule)
